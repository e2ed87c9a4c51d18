/**
 * What kubemend reads from a Node object, and how it checks it against what SSH found on
 * the node (pure: no I/O, unit-tested). The input type is structural, so workflows can use
 * these functions without importing a Kubernetes client.
 */

/** The parts of a v1 Node that kubemend reads. */
export interface NodeLike {
  metadata?: { name?: string; labels?: Record<string, string> };
  spec?: { unschedulable?: boolean; podCIDR?: string; podCIDRs?: string[]; taints?: Array<{ key?: string; value?: string; effect?: string }> };
  status?: {
    addresses?: Array<{ type?: string; address?: string }>;
    conditions?: Array<{ type?: string; status?: string; reason?: string; lastHeartbeatTime?: string | Date }>;
    nodeInfo?: { machineID?: string; bootID?: string; kubeletVersion?: string };
  };
}

/** A label that keeps kubemend's hands off a node, whatever the run asks. */
export const EXCLUDE_LABEL = 'kubemend.io/exclude';
export const CONTROL_PLANE_LABEL = 'node-role.kubernetes.io/control-plane';

export interface NodeObjectFacts {
  /** The Ready condition's status: "True", "False", "Unknown", or null if the kubelet never posted one. */
  ready: string | null;
  readyReason: string | null;
  unschedulable: boolean;
  internalIPs: string[];
  podCIDRs: string[];
  machineId: string | null;
  bootId: string | null;
  kubeletVersion: string | null;
  controlPlane: boolean;
  excluded: boolean;
  taints: string[];
}

export function nodeObjectFacts(n: NodeLike): NodeObjectFacts {
  const ready = n.status?.conditions?.find((c) => c.type === 'Ready');
  const labels = n.metadata?.labels ?? {};
  return {
    ready: ready?.status ?? null,
    readyReason: ready?.reason ?? null,
    unschedulable: n.spec?.unschedulable === true,
    internalIPs: (n.status?.addresses ?? []).filter((a) => a.type === 'InternalIP' && a.address).map((a) => a.address!),
    podCIDRs: n.spec?.podCIDRs?.length ? [...n.spec.podCIDRs] : n.spec?.podCIDR ? [n.spec.podCIDR] : [],
    machineId: n.status?.nodeInfo?.machineID || null,
    bootId: n.status?.nodeInfo?.bootID || null,
    kubeletVersion: n.status?.nodeInfo?.kubeletVersion || null,
    controlPlane: CONTROL_PLANE_LABEL in labels,
    excluded: labels[EXCLUDE_LABEL] === 'true',
    taints: (n.spec?.taints ?? []).map((t) => `${t.key ?? ''}${t.value ? `=${t.value}` : ''}:${t.effect ?? ''}`),
  };
}

/**
 * Where the API's view of a node disagrees with what SSH found on it, or with the other
 * nodes: each line is a problem for the probe report.
 */
export function crossCheck(
  ssh: { machineId: string | null; bootId: string | null },
  api: NodeObjectFacts | null,
  others: ReadonlyArray<{ name: string; api: NodeObjectFacts | null }>,
): string[] {
  if (!api) return ['no Node object of this name: the node is not registered (never joined, or deleted)'];
  const out: string[] = [];
  if (api.ready !== 'True') out.push(`Node is not Ready (Ready=${api.ready ?? 'never reported'}${api.readyReason ? `, ${api.readyReason}` : ''})`);
  if (ssh.machineId && api.machineId && ssh.machineId !== api.machineId) out.push(`the kubelet reports machine-id ${api.machineId}, the node has ${ssh.machineId} (kubelet not restarted since it changed?)`);
  if (ssh.bootId && api.bootId && ssh.bootId !== api.bootId) out.push(`the kubelet reports boot id ${api.bootId}, the node has ${ssh.bootId} (kubelet not running since the last boot?)`);
  for (const ip of api.internalIPs) {
    const same = others.filter((o) => o.api?.internalIPs.includes(ip)).map((o) => o.name);
    if (same.length) out.push(`InternalIP ${ip} is also the InternalIP of ${same.join(', ')} (seed 001: nodes advertise a NAT address)`);
  }
  return out;
}
