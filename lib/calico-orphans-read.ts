/**
 * calico-orphans' reads, parsed (activities only: Calico's veth names need sha1, which
 * workflow code does not import): pods, IPAMBlocks and IPAMHandles as the API lists them, and
 * what `ip -j -d link`, `ip -j route`, `ip -j netns list-id` and `crictl inspectp -o json`
 * print on a node. Structural inputs, no client types; unit-tested without I/O.
 */
import { calicoVethName, CALICO_VETH_PREFIX } from './calico';
import type { CalicoAllocation, CalicoBlock, CalicoHandle, CalicoPod, NodeSandbox, NodeVeth } from './calico-orphans';
import { nthAddress } from './diagnose-api';

// ---------------------------------------------------------------------------------------
// Parsing what the API and the node print (structural inputs, no client types)

interface BlockLike {
  metadata?: { name?: string; resourceVersion?: string };
  spec?: { cidr?: string; affinity?: string; allocations?: Array<number | null>; attributes?: Array<{ handle_id?: string; secondary?: Record<string, string> | null }> };
}
interface HandleLike {
  metadata?: { name?: string; resourceVersion?: string };
  spec?: { handleID?: string; block?: Record<string, number> };
}
interface PodLike {
  metadata?: { name?: string; namespace?: string; uid?: string; deletionTimestamp?: unknown; ownerReferences?: Array<{ kind?: string; name?: string; uid?: string; controller?: boolean }> };
  spec?: { nodeName?: string; hostNetwork?: boolean };
  status?: { phase?: string; podIP?: string; podIPs?: Array<{ ip?: string }> };
}

export function calicoPodOf(p: PodLike): CalicoPod {
  const owner = (p.metadata?.ownerReferences ?? []).find((o) => o.controller);
  const ips = (p.status?.podIPs ?? []).map((x) => x.ip ?? '').filter(Boolean);
  if (ips.length === 0 && p.status?.podIP) ips.push(p.status.podIP);
  return {
    namespace: p.metadata?.namespace ?? '',
    name: p.metadata?.name ?? '',
    uid: p.metadata?.uid ?? '',
    node: p.spec?.nodeName ?? '',
    phase: p.status?.phase ?? null,
    hostNetwork: !!p.spec?.hostNetwork,
    deleting: !!p.metadata?.deletionTimestamp,
    ips,
    controller: owner ? { kind: owner.kind ?? '', name: owner.name ?? '', uid: owner.uid ?? '' } : null,
    veth: calicoVethName(p.metadata?.namespace ?? '', p.metadata?.name ?? ''),
  };
}

export function calicoBlockOf(b: BlockLike): CalicoBlock {
  const cidr = b.spec?.cidr ?? '';
  const host = b.spec?.affinity?.startsWith('host:') ? b.spec.affinity.slice(5) : null;
  const attrs = b.spec?.attributes ?? [];
  const allocations: CalicoAllocation[] = [];
  (b.spec?.allocations ?? []).forEach((a, ordinal) => {
    if (a === null || a === undefined) return;
    const at = attrs[a];
    const s = at?.secondary ?? {};
    allocations.push({ ordinal, ip: nthAddress(cidr, ordinal) ?? `${cidr}#${ordinal}`, handle: at?.handle_id ?? null, namespace: s.namespace ?? null, pod: s.pod ?? null, node: s.node ?? host, type: s.type ?? null });
  });
  return { name: b.metadata?.name ?? '', cidr, affinityHost: host, resourceVersion: b.metadata?.resourceVersion ?? '', allocations };
}

export const calicoHandleOf = (h: HandleLike): CalicoHandle => ({ name: h.metadata?.name ?? '', handleID: h.spec?.handleID ?? '', resourceVersion: h.metadata?.resourceVersion ?? '', block: h.spec?.block ?? {} });

/** `ip -j -d link show type veth`: the cali ones (a link's peer netns id is link_netnsid). */
export function parseVeths(linksJson: string, routesJson: string): NodeVeth[] {
  const links = JSON.parse(linksJson || '[]') as Array<{ ifindex?: number; ifname?: string; link_netnsid?: number; operstate?: string }>;
  const routes = JSON.parse(routesJson || '[]') as Array<{ dst?: string; dev?: string }>;
  return links
    .filter((l) => l.ifname?.startsWith(CALICO_VETH_PREFIX))
    .map((l) => ({
      name: l.ifname!,
      ifindex: l.ifindex ?? -1,
      peerNetnsId: typeof l.link_netnsid === 'number' ? l.link_netnsid : null,
      operstate: l.operstate ?? 'UNKNOWN',
      routes: routes.filter((r) => r.dev === l.ifname && r.dst).map((r) => r.dst!),
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** `ip -j netns list-id`: the named netns the node's namespace has an id for. */
export function parseNetnsIds(json: string): Array<{ nsid: number; name: string }> {
  const list = JSON.parse(json || '[]') as Array<{ nsid?: number; name?: string }>;
  return list.filter((x) => typeof x.nsid === 'number' && x.name).map((x) => ({ nsid: x.nsid!, name: x.name! }));
}

/** `crictl inspectp -o json <id>`: the sandbox's metadata, state and network namespace (containerd's info.runtimeSpec). */
export function parseInspectp(json: string): NodeSandbox {
  const o = JSON.parse(json) as {
    status?: { id?: string; state?: string; metadata?: { name?: string; namespace?: string } };
    info?: { runtimeSpec?: { linux?: { namespaces?: Array<{ type?: string; path?: string }> } } };
  };
  const ns = o.info?.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')?.path ?? null;
  const namespace = o.status?.metadata?.namespace ?? '';
  const name = o.status?.metadata?.name ?? '';
  return { id: o.status?.id ?? '', namespace, name, state: o.status?.state ?? '', netns: ns || null, veth: namespace && name ? calicoVethName(namespace, name) : null };
}

