/**
 * Which pods a drain evicts, skips or refuses, as `kubectl drain` decides (pure). DaemonSet
 * pods would come straight back and mirror pods belong to the kubelet: both are skipped.
 * Pods with emptyDir data lose it, and pods no controller owns are not recreated: both are
 * refused unless the run says so (--delete-emptydir-data, --force), as kubectl does.
 */
export interface PodLike {
  metadata?: { name?: string; namespace?: string; uid?: string; annotations?: Record<string, string>; ownerReferences?: Array<{ kind?: string; controller?: boolean }> };
  spec?: { volumes?: Array<{ name?: string; emptyDir?: unknown }> };
  status?: { phase?: string; conditions?: Array<{ type?: string; status?: string }> };
}

export interface DrainOptions {
  deleteEmptyDirData: boolean;
  force: boolean;
}

export interface DrainDecision {
  evict: Array<{ namespace: string; name: string; uid: string }>;
  skip: Array<{ pod: string; why: string }>;
  refuse: Array<{ pod: string; why: string }>;
  /** Pods already out of service on a NotReady node: not evicted, not waited for. */
  leave: Array<{ pod: string; why: string }>;
}

/** Why a drain leaves a pod that is not Ready on a node that is not Ready. */
export const LEFT_ON_NOT_READY_NODE = "not Ready on a NotReady node: already out of service (out of its Services' endpoints), and no kubelet answers to carry out an eviction; it restarts on the node when its kubelet is back";

export const MIRROR_POD_ANNOTATION = 'kubernetes.io/config.mirror';

/**
 * `nodeReady`: the Node's Ready condition is True. On a node that is not (its kubelet does not
 * answer), a pod that is not Ready either is already out of service: an eviction would wait
 * for a kubelet that cannot carry it out, and its PodDisruptionBudget, which counts it as
 * unhealthy already, may block it for ever. Such pods are left (as the node lifecycle
 * controller leaves them); a pod still Ready there is drained as anywhere.
 */
export function drainDecision(pods: readonly PodLike[], opts: DrainOptions, nodeReady = true): DrainDecision {
  const out: DrainDecision = { evict: [], skip: [], refuse: [], leave: [] };
  for (const p of pods) {
    const ns = p.metadata?.namespace ?? 'default';
    const name = p.metadata?.name ?? '';
    const id = `${ns}/${name}`;
    const controller = p.metadata?.ownerReferences?.find((o) => o.controller);
    if (p.metadata?.annotations && MIRROR_POD_ANNOTATION in p.metadata.annotations) {
      out.skip.push({ pod: id, why: 'mirror pod (static pod of the kubelet)' });
      continue;
    }
    if (controller?.kind === 'DaemonSet') {
      out.skip.push({ pod: id, why: 'DaemonSet-managed' });
      continue;
    }
    const podReady = p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
    if (!nodeReady && !podReady) {
      out.leave.push({ pod: id, why: LEFT_ON_NOT_READY_NODE });
      continue;
    }
    const finished = p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed';
    if (!controller && !finished && !opts.force) {
      out.refuse.push({ pod: id, why: 'not managed by a controller (nothing would recreate it; --force evicts it anyway)' });
      continue;
    }
    const emptyDir = (p.spec?.volumes ?? []).filter((v) => v.emptyDir !== undefined).map((v) => v.name);
    if (emptyDir.length && !finished && !opts.deleteEmptyDirData) {
      out.refuse.push({ pod: id, why: `has emptyDir data (${emptyDir.join(', ')}) that eviction deletes (--delete-emptydir-data allows it)` });
      continue;
    }
    out.evict.push({ namespace: ns, name, uid: p.metadata?.uid ?? '' });
  }
  return out;
}
