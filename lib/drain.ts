/**
 * Which pods a drain evicts, skips or refuses, as `kubectl drain` decides (pure). DaemonSet
 * pods would come straight back and mirror pods belong to the kubelet: both are skipped.
 * Pods with emptyDir data lose it, and pods no controller owns are not recreated: both are
 * refused unless the run says so (--delete-emptydir-data, --force), as kubectl does.
 */
export interface PodLike {
  metadata?: { name?: string; namespace?: string; uid?: string; annotations?: Record<string, string>; ownerReferences?: Array<{ kind?: string; controller?: boolean }> };
  spec?: { volumes?: Array<{ name?: string; emptyDir?: unknown }> };
  status?: { phase?: string };
}

export interface DrainOptions {
  deleteEmptyDirData: boolean;
  force: boolean;
}

export interface DrainDecision {
  evict: Array<{ namespace: string; name: string; uid: string }>;
  skip: Array<{ pod: string; why: string }>;
  refuse: Array<{ pod: string; why: string }>;
}

export const MIRROR_POD_ANNOTATION = 'kubernetes.io/config.mirror';

export function drainDecision(pods: readonly PodLike[], opts: DrainOptions): DrainDecision {
  const out: DrainDecision = { evict: [], skip: [], refuse: [] };
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
