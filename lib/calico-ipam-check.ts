/**
 * `calicoctl ipam check`, as a pure function over Calico's KDD objects (crd.projectcalico.org/v1
 * IPPools, IPAMBlocks, IPAMHandles, BlockAffinities) and the Pods and Nodes, for clusters where
 * calicoctl is not at hand. Raw objects in, as the API lists them; a report out. IPv4 only: what
 * it cannot check it lists in `unchecked`, and then the report is not `ok` (fail closed).
 *
 * The rules, and where they come from (projectcalico/calico; v3.29.3 is the version the lab's
 * ClusterInformation names, "master" is the tree of 2026-08):
 *
 * - In use (calicoctl check.go): a Node's tunnel addresses (Calico's Node spec, which in KDD is
 *   the Node's annotations projectcalico.org/IPv4IPIPTunnelAddr, IPv4VXLANTunnelAddr and
 *   IPv4WireguardInterfaceAddr, libcalico-go k8s/resources/node.go); every workload endpoint's
 *   addresses, where in KDD a workload endpoint is a Pod that is scheduled and not hostNetwork
 *   (conversion.go IsValidCalicoWorkloadEndpoint), its addresses status.podIPs, else
 *   status.podIP, else the annotations cni.projectcalico.org/podIPs, then podIP (getPodIPs),
 *   and none once it has finished (phase Failed, Succeeded or Completed, or being deleted with
 *   the podIP annotation emptied: IsFinished); and an allocation whose handle is
 *   "windows-reserved-ipam-handle" ("Reserved for Windows").
 * - Leaked: an allocated address that nothing above uses, whatever its attributes: an allocation
 *   without pod attributes, or a tunnel address whose Node does not name it, is leaked as any
 *   other (check.go; its test "holds a tunnel address only when its node's spec names it").
 *   master skips an allocation cooling down (attribute releasedAt set). Each leak says what
 *   kube-controllers' GC would take it for (ipam_allocation.go: pod if namespace and pod are
 *   set, tunnel by the type attribute, windows-reserved by handle, else other), because the GC
 *   is more careful than the check: it keeps a tunnel address while its node exists and an
 *   allocation without pod attributes always.
 * - In use, not allocated: split as calicoctl splits it, by whether the address is inside an
 *   active (not disabled) IPPool; both count as problems there. An address with several owners
 *   is printed by calicoctl and not counted; here it is reported too (`sharedIps`).
 * - Handles: a handle object that no allocation names is leaked (counted by calicoctl); a handle
 *   an allocation names with no handle object is missing (printed by calicoctl, not counted;
 *   counted here). Handles match by spec.handleID, as the KDD backend keys them (ipam_handle.go).
 * - Blocks (master's validateBlock): an allocation pointing at no attribute, an attribute no
 *   allocation points at, an unallocated ordinal outside the block, listed twice, or also
 *   allocated, and allocated + unallocated not covering the block; here every reason is listed,
 *   not only the first, and a block whose allocations array is not its size is invalid too.
 *
 * kubemend's own (not in calicoctl), from libcalico-go's bookkeeping:
 * - A handle's per-block count (spec.block, kept by incrementBlock/decrementBlock in
 *   ipam_handle.go) must equal the ordinals in that block whose attribute names the handle.
 * - Affinities (libcalico-go claims a block by writing a pending BlockAffinity, then the block,
 *   then confirming; release marks pendingDeletion first): a live block affine to host:X needs a
 *   live BlockAffinity for X and its CIDR; a confirmed affinity needs its block, affine to the
 *   same node; a block or affinity for a node that no longer exists is one kube-controllers
 *   releases (ipam.go checkAllocations). Pending states are in flight and not reported.
 *
 * Not covered: Calico-managed LoadBalancer addresses (calicoctl v3.30+), KubeVirt VMs and
 * Multus networks (master), releasedAt in the future (needs a clock), IPv6.
 */
import { nthAddress } from './diagnose-api';

export const WINDOWS_RESERVED_HANDLE = 'windows-reserved-ipam-handle';
export const CALICO_POD_IP_ANNOTATION = 'cni.projectcalico.org/podIP';
export const CALICO_POD_IPS_ANNOTATION = 'cni.projectcalico.org/podIPs';
/** Where KDD keeps a Calico Node's IPv4 tunnel addresses (libcalico-go k8s/resources/node.go). */
export const NODE_TUNNEL_ANNOTATIONS = ['projectcalico.org/IPv4IPIPTunnelAddr', 'projectcalico.org/IPv4VXLANTunnelAddr', 'projectcalico.org/IPv4WireguardInterfaceAddr'] as const;
/** The `type` attribute calico-node gives its tunnel addresses (libcalico-go model/block.go). */
const TUNNEL_TYPES = new Set(['ipipTunnelAddress', 'vxlanTunnelAddress', 'vxlanV6TunnelAddress', 'wireguardTunnelAddress', 'wireguardV6TunnelAddress']);
/** The handles calico-node's allocateip gives them ("ipip-tunnel-addr-<node>"), for allocations older than the type attribute. */
const TUNNEL_HANDLE = /^(ipip|vxlan|wireguard)-tunnel-addr-/;

export interface IpPoolLike {
  metadata?: { name?: string };
  spec?: { cidr?: string; blockSize?: number; disabled?: boolean };
}
export interface IpamBlockLike {
  metadata?: { name?: string };
  spec?: {
    cidr?: string;
    affinity?: string | null;
    strictAffinity?: boolean;
    allocations?: Array<number | null>;
    unallocated?: number[];
    attributes?: Array<{ handle_id?: string | null; secondary?: Record<string, string> | null; releasedAt?: string | null }>;
    sequenceNumber?: number;
    deleted?: boolean;
  };
}
export interface IpamHandleLike {
  metadata?: { name?: string };
  spec?: { handleID?: string; block?: Record<string, number> };
}
export interface BlockAffinityLike {
  metadata?: { name?: string };
  spec?: { cidr?: string; node?: string; state?: string; deleted?: string | boolean };
}
export interface IpamPodLike {
  metadata?: { namespace?: string; name?: string; annotations?: Record<string, string>; deletionTimestamp?: string | Date | null };
  spec?: { nodeName?: string; hostNetwork?: boolean };
  status?: { phase?: string; podIP?: string; podIPs?: Array<{ ip?: string }> };
}
export interface IpamNodeLike {
  metadata?: { name?: string; annotations?: Record<string, string> };
}

export interface IpamCheckInput {
  pools: IpPoolLike[];
  blocks: IpamBlockLike[];
  handles: IpamHandleLike[];
  /** Without them, the affinity checks are not made. */
  affinities?: BlockAffinityLike[];
  pods: IpamPodLike[];
  nodes: IpamNodeLike[];
}

export type AllocationKind = 'pod' | 'tunnel' | 'windows-reserved' | 'other';

export interface IpamAllocation {
  ip: string;
  /** The block's CIDR. */
  block: string;
  ordinal: number;
  handle: string | null;
  namespace: string | null;
  pod: string | null;
  /** The node the attributes name, else the block's affinity host. */
  node: string | null;
  kind: AllocationKind;
  /** The node is not the block's affinity host. */
  borrowed: boolean;
  coolingDown: boolean;
}

export interface InUseIp {
  ip: string;
  /** "Pod(ns/name)", "Node(name)", "Reserved for Windows". */
  owners: string[];
}

export type AffinityProblemKind = 'block-without-affinity' | 'affinity-without-block' | 'affinity-host-mismatch' | 'block-of-missing-node' | 'affinity-of-missing-node';

export interface IpamCheckReport {
  ok: boolean;
  counts: { blocks: number; allocations: number; activePools: number; inUseIps: number; handles: number };
  /** Allocated in IPAM, used by nothing. */
  leaked: IpamAllocation[];
  /** Used by a pod or node, inside an active pool, with no allocation. */
  inUseWithoutAllocation: InUseIp[];
  /** Used by a pod or node, with no allocation, outside every active pool. */
  outsideActivePools: InUseIp[];
  /** One address, more than one owner. */
  sharedIps: InUseIp[];
  /** Handle objects no allocation names. */
  leakedHandles: Array<{ handle: string; name: string }>;
  /** Handles allocations name that have no handle object. */
  missingHandles: Array<{ handle: string; ips: string[] }>;
  handleCountMismatches: Array<{ handle: string; block: string; recorded: number; actual: number }>;
  invalidBlocks: Array<{ block: string; reason: string }>;
  affinityProblems: Array<{ kind: AffinityProblemKind; node: string; block: string }>;
  /** What this check could not read (not IPv4, unparsable); the report is not ok while any. */
  unchecked: string[];
  /** One line per problem, for people. */
  problems: string[];
}

const ip4 = (s: string): number | null => {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  const o = m.slice(1).map(Number);
  return o.some((x) => x > 255) ? null : ((o[0] << 24) >>> 0) + (o[1] << 16) + (o[2] << 8) + o[3];
};
const ip4String = (v: number) => [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
/** An address as calicoctl normalises it (an "a.b.c.d/32" becomes "a.b.c.d"); null if not IPv4. */
const normaliseIp = (s: string): string | null => {
  const v = ip4(s.replace(/\/\d+$/, '').trim());
  return v === null ? null : ip4String(v);
};
const cidr4 = (s: string): { base: number; size: number } | null => {
  const m = /^(.+)\/(\d+)$/.exec(s);
  const base = m ? ip4(m[1]) : null;
  const prefix = m ? Number(m[2]) : NaN;
  if (base === null || !(prefix >= 0 && prefix <= 32)) return null;
  const size = 2 ** (32 - prefix);
  return { base: base - (base % size), size };
};
const byIp = <T extends { ip: string }>(a: T, b: T) => (ip4(a.ip) ?? 0) - (ip4(b.ip) ?? 0);

/** A pod's addresses as KDD makes them a workload endpoint's; [] for a pod Calico shows no endpoint for, or a finished one. */
export function podIps(p: IpamPodLike): string[] {
  if (!p.spec?.nodeName || p.spec.hostNetwork) return [];
  const ann = p.metadata?.annotations ?? {};
  const phase = p.status?.phase;
  if (phase === 'Failed' || phase === 'Succeeded' || phase === 'Completed') return [];
  if (p.metadata?.deletionTimestamp && ann[CALICO_POD_IP_ANNOTATION] === '') return [];
  const fromStatus = (p.status?.podIPs ?? []).map((x) => x.ip ?? '').filter(Boolean);
  if (fromStatus.length) return fromStatus;
  if (p.status?.podIP) return [p.status.podIP];
  if (ann[CALICO_POD_IPS_ANNOTATION]) return ann[CALICO_POD_IPS_ANNOTATION].split(',');
  return ann[CALICO_POD_IP_ANNOTATION] ? [ann[CALICO_POD_IP_ANNOTATION]] : [];
}

export function checkCalicoIpam(input: IpamCheckInput): IpamCheckReport {
  const unchecked: string[] = [];
  const invalidBlocks: IpamCheckReport['invalidBlocks'] = [];
  const allocations: IpamAllocation[] = [];
  const allocsByIp = new Map<string, IpamAllocation[]>();
  const inUse = new Map<string, string[]>();
  const namedUnchecked = new Set<string>();
  const use = (ip: string, owner: string) => inUse.set(ip, [...(inUse.get(ip) ?? []), owner]);

  for (const b of input.blocks) {
    const cidr = b.spec?.cidr ?? '';
    const net = cidr4(cidr);
    if (!net) {
      unchecked.push(`IPAMBlock ${b.metadata?.name ?? '?'}: CIDR "${cidr}" is not IPv4`);
      // Its handles are not leaked for want of an IPv4 allocation.
      for (const at of b.spec?.attributes ?? []) if (at.handle_id) namedUnchecked.add(at.handle_id);
      continue;
    }
    const affinity = b.spec?.affinity ?? '';
    const host = affinity.startsWith('host:') ? affinity.slice(5) : null;
    const slots = b.spec?.allocations ?? [];
    const attrs = b.spec?.attributes ?? [];
    const unallocated = b.spec?.unallocated ?? [];
    const invalid = (reason: string) => invalidBlocks.push({ block: cidr, reason });
    if (slots.length !== net.size) invalid(`has ${slots.length} allocation slots for ${net.size} addresses`);
    const pointedAt = new Set<number>();
    slots.forEach((a, ordinal) => {
      if (a === null || a === undefined) return;
      const at = Number.isInteger(a) && a >= 0 ? attrs[a] : undefined;
      if (at) pointedAt.add(a);
      else invalid(`allocation ${ordinal} indexes a nonexistent attribute ${a}`);
      const handle = at?.handle_id ?? null;
      const sec = at?.secondary ?? {};
      const node = sec.node || host;
      const kind: AllocationKind =
        handle === WINDOWS_RESERVED_HANDLE ? 'windows-reserved' : sec.namespace && sec.pod ? 'pod' : TUNNEL_TYPES.has(sec.type ?? '') || TUNNEL_HANDLE.test(handle ?? '') ? 'tunnel' : 'other';
      const ip = nthAddress(cidr, ordinal) ?? `${cidr}#${ordinal}`;
      const alloc: IpamAllocation = { ip, block: cidr, ordinal, handle, namespace: sec.namespace || null, pod: sec.pod || null, node: node || null, kind, borrowed: (node || null) !== host, coolingDown: !!at?.releasedAt };
      allocations.push(alloc);
      allocsByIp.set(ip, [...(allocsByIp.get(ip) ?? []), alloc]);
      if (kind === 'windows-reserved') use(ip, 'Reserved for Windows');
    });
    attrs.forEach((_, i) => {
      if (!pointedAt.has(i)) invalid(`attribute ${i} is not indexed by any allocation`);
    });
    const seen = new Set<number>();
    for (const o of unallocated) {
      if (!(Number.isInteger(o) && o >= 0 && o < slots.length)) invalid(`ordinal ${o} is in unallocated but outside the block`);
      else if (seen.has(o)) invalid(`ordinal ${o} is in unallocated more than once`);
      else if (slots[o] !== null && slots[o] !== undefined) invalid(`ordinal ${o} is allocated and in unallocated`);
      seen.add(o);
    }
    slots.forEach((a, o) => {
      if ((a === null || a === undefined) && !seen.has(o)) invalid(`ordinal ${o} is neither allocated nor in unallocated`);
    });
  }

  const nodeNames = new Set<string>();
  for (const n of input.nodes) {
    const name = n.metadata?.name ?? '';
    nodeNames.add(name);
    for (const key of NODE_TUNNEL_ANNOTATIONS) {
      const raw = n.metadata?.annotations?.[key];
      if (!raw) continue;
      const ip = normaliseIp(raw);
      if (ip) use(ip, `Node(${name})`);
      else unchecked.push(`Node ${name}: ${key} "${raw}" is not an IPv4 address`);
    }
  }
  for (const p of input.pods) {
    const id = `${p.metadata?.namespace ?? ''}/${p.metadata?.name ?? ''}`;
    for (const raw of podIps(p)) {
      const ip = normaliseIp(raw);
      if (ip) use(ip, `Pod(${id})`);
      else unchecked.push(`Pod ${id}: address "${raw}" is not IPv4`);
    }
  }

  const activePools: Array<{ base: number; size: number }> = [];
  for (const pool of input.pools) {
    if (pool.spec?.disabled) continue;
    const net = cidr4(pool.spec?.cidr ?? '');
    if (net) activePools.push(net);
    else unchecked.push(`IPPool ${pool.metadata?.name ?? '?'}: CIDR "${pool.spec?.cidr ?? ''}" is not IPv4`);
  }

  const leaked = allocations.filter((a) => !inUse.has(a.ip) && !a.coolingDown).sort(byIp);
  const inUseWithoutAllocation: InUseIp[] = [];
  const outsideActivePools: InUseIp[] = [];
  const sharedIps: InUseIp[] = [];
  for (const [ip, owners] of inUse) {
    if (owners.length > 1) sharedIps.push({ ip, owners });
    if (allocsByIp.has(ip)) continue;
    const v = ip4(ip) ?? -1;
    (activePools.some((n) => v >= n.base && v < n.base + n.size) ? inUseWithoutAllocation : outsideActivePools).push({ ip, owners });
  }
  [inUseWithoutAllocation, outsideActivePools, sharedIps].forEach((l) => l.sort(byIp));

  // Handles.
  const handleObjects = new Map(input.handles.map((h) => [h.spec?.handleID ?? '', h]));
  const named = new Map<string, IpamAllocation[]>();
  for (const a of allocations) if (a.handle !== null && a.kind !== 'windows-reserved') named.set(a.handle, [...(named.get(a.handle) ?? []), a]);
  const leakedHandles = input.handles.filter((h) => !named.has(h.spec?.handleID ?? '') && !namedUnchecked.has(h.spec?.handleID ?? '')).map((h) => ({ handle: h.spec?.handleID ?? '', name: h.metadata?.name ?? '' }));
  const missingHandles = [...named].filter(([h]) => !handleObjects.has(h)).map(([handle, as]) => ({ handle, ips: as.map((a) => a.ip) }));
  const handleCountMismatches: IpamCheckReport['handleCountMismatches'] = [];
  for (const [handle, as] of named) {
    if (!handleObjects.has(handle)) continue; // missing, reported above
    const recordedByBlock = handleObjects.get(handle)?.spec?.block;
    const actual = new Map<string, number>();
    for (const a of as) actual.set(a.block, (actual.get(a.block) ?? 0) + 1);
    for (const block of new Set([...Object.keys(recordedByBlock ?? {}), ...actual.keys()])) {
      const recorded = recordedByBlock?.[block] ?? 0;
      const n = actual.get(block) ?? 0;
      if (recorded !== n) handleCountMismatches.push({ handle, block, recorded, actual: n });
    }
  }

  // Affinities.
  const affinityProblems: IpamCheckReport['affinityProblems'] = [];
  if (input.affinities) {
    const live = input.affinities.filter((a) => String(a.spec?.deleted ?? 'false') !== 'true');
    const liveBlocks = input.blocks.filter((b) => !b.spec?.deleted);
    const hostOf = (b: IpamBlockLike) => (b.spec?.affinity?.startsWith('host:') ? b.spec.affinity.slice(5) : null);
    for (const b of liveBlocks) {
      const host = hostOf(b);
      const cidr = b.spec?.cidr ?? '';
      if (host === null) continue;
      if (!live.some((a) => a.spec?.node === host && a.spec?.cidr === cidr)) affinityProblems.push({ kind: 'block-without-affinity', node: host, block: cidr });
      if (!nodeNames.has(host)) affinityProblems.push({ kind: 'block-of-missing-node', node: host, block: cidr });
    }
    for (const a of live) {
      const node = a.spec?.node ?? '';
      const cidr = a.spec?.cidr ?? '';
      if (!nodeNames.has(node)) affinityProblems.push({ kind: 'affinity-of-missing-node', node, block: cidr });
      if (a.spec?.state !== 'confirmed') continue;
      const block = liveBlocks.find((b) => b.spec?.cidr === cidr);
      if (!block) affinityProblems.push({ kind: 'affinity-without-block', node, block: cidr });
      else if (hostOf(block) !== node) affinityProblems.push({ kind: 'affinity-host-mismatch', node, block: cidr });
    }
  }

  const who = (a: IpamAllocation) => [a.handle ? `handle ${a.handle}` : 'no handle', a.pod ? `pod ${a.namespace}/${a.pod}` : `${a.kind} address`, a.node ? `node ${a.node}` : null].filter(Boolean).join(', ');
  const affinityText: Record<AffinityProblemKind, string> = {
    'block-without-affinity': 'is affine to node %n, which has no BlockAffinity for it',
    'affinity-without-block': 'has a confirmed BlockAffinity for node %n but no IPAMBlock',
    'affinity-host-mismatch': 'has a confirmed BlockAffinity for node %n but the IPAMBlock is affine elsewhere',
    'block-of-missing-node': 'is affine to node %n, which does not exist',
    'affinity-of-missing-node': 'has a BlockAffinity for node %n, which does not exist',
  };
  const problems = [
    ...leaked.map((a) => `${a.ip} is allocated in block ${a.block} (${who(a)}) but not in use`),
    ...inUseWithoutAllocation.map((u) => `${u.ip} is in use by ${u.owners.join(', ')} and in an active IP pool but has no IPAM allocation`),
    ...outsideActivePools.map((u) => `${u.ip} is in use by ${u.owners.join(', ')} but is not in any active IP pool`),
    ...sharedIps.map((u) => `${u.ip} has more than one owner: ${u.owners.join(', ')}`),
    ...leakedHandles.map((h) => `handle ${h.handle || `(none, object ${h.name})`} has no allocated address`),
    ...missingHandles.map((h) => `handle ${h.handle} is named by ${h.ips.join(', ')} but has no IPAMHandle`),
    ...handleCountMismatches.map((m) => `handle ${m.handle} records ${m.recorded} address(es) in block ${m.block}, which holds ${m.actual} for it`),
    ...invalidBlocks.map((b) => `block ${b.block}: ${b.reason}`),
    ...affinityProblems.map((p) => `block ${p.block} ${affinityText[p.kind].replace('%n', p.node)}`),
  ];
  return {
    ok: problems.length === 0 && unchecked.length === 0,
    counts: { blocks: input.blocks.length, allocations: allocations.length, activePools: activePools.length, inUseIps: inUse.size, handles: input.handles.length },
    leaked,
    inUseWithoutAllocation,
    outsideActivePools,
    sharedIps,
    leakedHandles,
    missingHandles,
    handleCountMismatches,
    invalidBlocks,
    affinityProblems,
    unchecked,
    problems,
  };
}
