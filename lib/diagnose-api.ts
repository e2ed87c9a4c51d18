/**
 * `kubemend diagnose`'s read of the API, as facts: the Nodes, the pods the detectors look at,
 * the CNI DaemonSets (and calico-node's IP autodetection), and Calico's IPAM objects. Pure:
 * raw objects in (as the API lists them), facts out; activities/diagnose.ts does the reads.
 * The input types are structural, so no Kubernetes client is needed to test this.
 */
import { calicoVethName } from './calico';
import { type NodeLike, type NodeObjectFacts, nodeObjectFacts } from './node-object';

export type Cni = 'flannel' | 'calico' | 'weave';

export interface PodFacts {
  namespace: string;
  name: string;
  /** spec.nodeName; '' when unscheduled. */
  node: string;
  phase: string | null;
  hostNetwork: boolean;
  podIP: string | null;
  /** Calico's host-side veth name for this pod (lib/calico.ts); only when Calico is installed. */
  calicoVeth?: string;
}

export interface CniPodFacts {
  cni: Cni;
  namespace: string;
  name: string;
  /** metadata.uid: a delete names it as a precondition, so a retry never deletes the pod's replacement. */
  uid?: string;
  node: string;
  phase: string | null;
  ready: boolean;
  restarts: number;
  /** The container waiting reason ("CrashLoopBackOff") and message, and the last termination message. */
  waitingReason: string | null;
  message: string | null;
  /**
   * The last line of the last termination message: with terminationMessagePolicy
   * FallbackToLogsOnError, the kubelet puts the tail of a failed container's log there, so
   * this is the line it died with, read through the API.
   */
  lastLog?: string | null;
}

export interface CalicoAllocation {
  ip: string;
  handle: string | null;
  namespace: string | null;
  pod: string | null;
  /** The node the allocation names (attributes), else the block's affinity host. */
  node: string | null;
}

export interface DiagnoseApiFacts {
  nodes: Array<{ name: string } & NodeObjectFacts>;
  /** Pods on a node that are not host-network (the ones with a pod-network interface). */
  pods: PodFacts[];
  cniPods: CniPodFacts[];
  /** CNI DaemonSets found: which CNIs the cluster runs. */
  cniDaemonSets: Array<{ cni: Cni; namespace: string; name: string }>;
  /** calico-node's IP_AUTODETECTION_METHOD; null if unset ("first-found"). Absent without calico-node. */
  calicoAutodetection?: { daemonSet: string; method: string | null };
  /** Calico IPAM in KDD mode; null where its CRDs are not installed. */
  calicoIpam: { blocks: Array<{ name: string; cidr: string; affinity: string | null; allocations: CalicoAllocation[] }>; handles: string[]; affinities: Array<{ node: string; cidr: string; state: string | null }> } | null;
}

export interface PodLike {
  metadata?: { name?: string; namespace?: string; uid?: string };
  spec?: { nodeName?: string; hostNetwork?: boolean };
  status?: {
    phase?: string;
    podIP?: string;
    containerStatuses?: Array<{
      ready?: boolean;
      restartCount?: number;
      state?: { waiting?: { reason?: string; message?: string } };
      lastState?: { terminated?: { reason?: string; message?: string } };
    }>;
  };
}

export interface DaemonSetLike {
  metadata?: { name?: string; namespace?: string };
  spec?: { template?: { spec?: { containers?: Array<{ name?: string; env?: Array<{ name?: string; value?: string }> }> } } };
}

interface BlockLike {
  metadata?: { name?: string };
  spec?: { cidr?: string; affinity?: string; allocations?: Array<number | null>; attributes?: Array<{ handle_id?: string; secondary?: Record<string, string> }> };
}
interface HandleLike {
  spec?: { handleID?: string };
}
interface AffinityLike {
  spec?: { node?: string; cidr?: string; state?: string };
}

export interface RawApi {
  nodes: NodeLike[];
  pods: PodLike[];
  daemonSets: DaemonSetLike[];
  /** null where the CRD is not installed (404). */
  ipamBlocks: BlockLike[] | null;
  ipamHandles: HandleLike[] | null;
  blockAffinities: AffinityLike[] | null;
}

/** Which CNI a DaemonSet or its pods belong to, by the names the CNIs' manifests use. */
export function cniOf(name: string): Cni | null {
  if (/^(kube-)?flannel(-ds)?(-|$)/.test(name)) return 'flannel';
  if (/^calico-node(-|$)/.test(name)) return 'calico';
  if (/^weave-net(-|$)/.test(name)) return 'weave';
  return null;
}

/** The n-th address of an IPv4 CIDR ("192.168.201.0/26", 10 -> "192.168.201.10"). */
export function nthAddress(cidr: string, n: number): string | null {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(cidr);
  if (!m) return null;
  const base = ((Number(m[1]) << 24) >>> 0) + (Number(m[2]) << 16) + (Number(m[3]) << 8) + Number(m[4]);
  const v = (base + n) >>> 0;
  return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
}

export function apiFacts(raw: RawApi): DiagnoseApiFacts {
  const cniDaemonSets = raw.daemonSets.flatMap((d) => {
    const cni = cniOf(d.metadata?.name ?? '');
    return cni ? [{ cni, namespace: d.metadata?.namespace ?? '', name: d.metadata?.name ?? '' }] : [];
  });
  const calicoDs = raw.daemonSets.find((d) => cniOf(d.metadata?.name ?? '') === 'calico');
  const calico = !!calicoDs || (raw.ipamBlocks?.length ?? 0) > 0;
  const env = calicoDs?.spec?.template?.spec?.containers?.flatMap((c) => c.env ?? []) ?? [];
  const pods: PodFacts[] = raw.pods
    .filter((p) => p.spec?.nodeName && !p.spec.hostNetwork)
    .map((p) => {
      const namespace = p.metadata?.namespace ?? '';
      const name = p.metadata?.name ?? '';
      return { namespace, name, node: p.spec?.nodeName ?? '', phase: p.status?.phase ?? null, hostNetwork: false, podIP: p.status?.podIP ?? null, ...(calico ? { calicoVeth: calicoVethName(namespace, name) } : {}) };
    });
  const cniPods: CniPodFacts[] = raw.pods.flatMap((p) => {
    const cni = cniOf(p.metadata?.name ?? '');
    if (!cni) return [];
    const cs = p.status?.containerStatuses ?? [];
    const waiting = cs.find((c) => c.state?.waiting)?.state?.waiting;
    const terminated = cs.find((c) => c.lastState?.terminated?.message)?.lastState?.terminated;
    const lastLog = terminated?.message?.split('\n').map((l) => l.trim()).filter(Boolean).pop()?.slice(0, 500) ?? null;
    return [{
      cni,
      namespace: p.metadata?.namespace ?? '',
      name: p.metadata?.name ?? '',
      ...(p.metadata?.uid ? { uid: p.metadata.uid } : {}),
      node: p.spec?.nodeName ?? '',
      phase: p.status?.phase ?? null,
      ready: cs.length > 0 && cs.every((c) => c.ready),
      restarts: cs.reduce((a, c) => a + (c.restartCount ?? 0), 0),
      waitingReason: waiting?.reason ?? null,
      message: (waiting?.message ?? terminated?.message ?? null)?.slice(0, 500) ?? null,
      lastLog,
    }];
  });
  const calicoIpam =
    raw.ipamBlocks === null
      ? null
      : {
          blocks: raw.ipamBlocks.map((b) => {
            const cidr = b.spec?.cidr ?? '';
            const host = b.spec?.affinity?.startsWith('host:') ? b.spec.affinity.slice(5) : null;
            const attrs = b.spec?.attributes ?? [];
            const allocations: CalicoAllocation[] = [];
            (b.spec?.allocations ?? []).forEach((a, ordinal) => {
              if (a === null || a === undefined) return;
              const at = attrs[a];
              allocations.push({ ip: nthAddress(cidr, ordinal) ?? `${cidr}#${ordinal}`, handle: at?.handle_id ?? null, namespace: at?.secondary?.namespace ?? null, pod: at?.secondary?.pod ?? null, node: at?.secondary?.node ?? host });
            });
            return { name: b.metadata?.name ?? '', cidr, affinity: host, allocations };
          }),
          handles: (raw.ipamHandles ?? []).map((h) => h.spec?.handleID ?? '').filter(Boolean),
          affinities: (raw.blockAffinities ?? []).map((a) => ({ node: a.spec?.node ?? '', cidr: a.spec?.cidr ?? '', state: a.spec?.state ?? null })),
        };
  return {
    nodes: raw.nodes.map((n) => ({ name: n.metadata?.name ?? '', ...nodeObjectFacts(n) })),
    pods,
    cniPods,
    cniDaemonSets,
    ...(calicoDs ? { calicoAutodetection: { daemonSet: `${calicoDs.metadata?.namespace}/${calicoDs.metadata?.name}`, method: env.find((e) => e.name === 'IP_AUTODETECTION_METHOD')?.value ?? null } } : {}),
    calicoIpam,
  };
}
