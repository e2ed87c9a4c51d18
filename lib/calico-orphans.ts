/**
 * calico-orphans (seed 004), the pure part: Calico's IPAM records (KDD mode), a node's cali
 * veths and its runtime's sandboxes against the pods that exist; the plan; the release of a
 * handle from an IPAMBlock; the checks after the fix. No I/O and no clock: `now` is given.
 *
 * After a kubelet upgrade restarted every pod, the seed's cluster held 600 more Calico
 * endpoints than pods, cali veths Calico had no record of, and one Running pod without any
 * veth ("? (169.254.1.1) at <incomplete> on eth0"). The rules, made explicit:
 *
 * **An IPAM allocation is leaked** by the rules of Calico's own IPAM garbage collector
 * (kube-controllers' allocationIsValid):
 *  - an allocation without pod attributes (namespace, pod) is valid: nothing says whose it is;
 *  - a tunnel address (handle ipip-/vxlan-/wireguard-tunnel-addr-...) is valid while its node exists;
 *  - the node it names is no Node: leaked, at once (no grace: nothing can still be using it);
 *  - the pod it names does not exist, or runs on another node, or reports IPs that do not
 *    include the allocation's: leaked after the grace period (a pod being created or torn down
 *    right now is not touched); a pod that has reported no IP yet keeps it;
 *  - a handle is released all or none: only if every allocation of the handle is leaked.
 * Calico tracks "leaked since" in memory; kubemend has no memory between runs, so the grace
 * is counted from this run's detection: the release waits until detection + grace and checks
 * each allocation again against a fresh read of the pod and the Node right before it.
 *
 * **A cali veth is an orphan** when its name (Calico's: "cali" + 11 hex digits of
 * sha1("<namespace>.<pod>"), lib/calico.ts) matches no pod the API places on the node and no
 * sandbox the runtime still has, and its peer end is in no live sandbox's network namespace.
 * Where that cannot be told (the peer is in a named netns and some ready sandbox's netns is
 * unknown, or the peer end is in the node's own namespace), the veth is left alone and said so.
 *
 * **A pod without an endpoint:** Running on the node, not host-network, its address in a
 * Calico block, and no veth of its name on the node. It is restarted through the Eviction API
 * when a controller owns it (the controller recreates it with a real CNI ADD); a bare pod has
 * nobody to recreate it and is only reported.
 */
import { inCidr } from './detect/facts';
import type { Finding } from './findings';
import { isFixable } from './detect/fixable';
import { type PlannedNode, planId, type RunbookPlan } from './runbook';

// ---------------------------------------------------------------------------------------
// Facts

export interface CalicoPod {
  namespace: string;
  name: string;
  uid: string;
  /** spec.nodeName; '' when unscheduled. */
  node: string;
  phase: string | null;
  hostNetwork: boolean;
  deleting: boolean;
  /** status.podIPs (or podIP). */
  ips: string[];
  /** The controller that owns it (ownerReferences[controller=true]); null for a bare pod. */
  controller: { kind: string; name: string; uid: string } | null;
  /** Calico's host-side veth name for it (lib/calico.ts). */
  veth: string;
}

export interface CalicoAllocation {
  ordinal: number;
  ip: string;
  handle: string | null;
  namespace: string | null;
  pod: string | null;
  /** The node the attributes name, else the block's affinity host. */
  node: string | null;
  /** secondary.type, where Calico sets one (e.g. "ipipTunnelAddress"). */
  type: string | null;
}

export interface CalicoBlock {
  name: string;
  cidr: string;
  affinityHost: string | null;
  resourceVersion: string;
  allocations: CalicoAllocation[];
}

export interface CalicoHandle {
  name: string;
  handleID: string;
  resourceVersion: string;
  block: Record<string, number>;
}

export interface CalicoApiFacts {
  /** The Node objects' names. */
  nodes: string[];
  pods: CalicoPod[];
  /** IPPool CIDRs. */
  pools: string[];
  blocks: CalicoBlock[];
  handles: CalicoHandle[];
}

export interface NodeVeth {
  name: string;
  ifindex: number;
  /** The peer's netns id as the node's namespace knows it; null when the peer is in the node's own namespace. */
  peerNetnsId: number | null;
  operstate: string;
  /** The address of the /32 route Felix programs to it, if any. */
  routes: string[];
}

export interface NodeSandbox {
  id: string;
  namespace: string;
  name: string;
  state: string;
  /** Its network namespace path, from the runtime's sandbox info; null when the runtime does not say. */
  netns: string | null;
  /** Calico's veth name for its pod; null without pod metadata. */
  veth: string | null;
}

/** What one node's SSH read gives: its cali veths, its named netns with their ids, its sandboxes. */
export interface NodeCalicoFacts {
  node: string;
  veths: NodeVeth[];
  netns: Array<{ nsid: number; name: string }>;
  sandboxes: NodeSandbox[];
  /** False when the netns and the runtime were not read (every veth was a known pod's, or only links were asked for). */
  runtimeRead?: boolean;
}

export type NodeRead = NodeCalicoFacts | { node: string; error: string };

export interface CalicoOrphansFacts {
  /** When the facts were read (the workflow's clock): the grace counts from here. */
  detectedAtMs: number;
  graceMs: number;
  api: CalicoApiFacts;
  nodes: NodeRead[];
}

// ---------------------------------------------------------------------------------------
// Decisions

const TUNNEL_HANDLE = /^(ipip|vxlan|vxlan-v6|wireguard|wireguard-v6)-tunnel-addr-/;
export const isTunnelAddress = (a: Pick<CalicoAllocation, 'handle' | 'type'>) => TUNNEL_HANDLE.test(a.handle ?? '') || /TunnelAddress$/.test(a.type ?? '');

export type AllocationVerdict = { leaked: false; why: string } | { leaked: true; confirmed: boolean; why: string };

/** Calico's rules for one allocation, given the pod it names (undefined: no such pod) and whether its node exists. */
export function allocationVerdict(a: CalicoAllocation, pod: CalicoPod | undefined, nodeExists: boolean): AllocationVerdict {
  if (isTunnelAddress(a)) return nodeExists ? { leaked: false, why: 'tunnel address of an existing node' } : { leaked: true, confirmed: true, why: `tunnel address of node ${a.node}, which no longer exists` };
  if (!a.namespace || !a.pod) return { leaked: false, why: 'no pod attributes: nothing says whose it is' };
  const ref = `${a.namespace}/${a.pod}`;
  if (a.node && !nodeExists) return { leaked: true, confirmed: true, why: `its node ${a.node} no longer exists` };
  if (!pod) return { leaked: true, confirmed: false, why: `pod ${ref} does not exist` };
  if (pod.node && a.node && pod.node !== a.node) return { leaked: true, confirmed: false, why: `pod ${ref} runs on ${pod.node}, not ${a.node}` };
  if (pod.ips.length === 0) return { leaked: false, why: `pod ${ref} has reported no IP yet` };
  if (!pod.ips.includes(a.ip)) return { leaked: true, confirmed: false, why: `pod ${ref} has ${pod.ips.join(', ')}, not ${a.ip}` };
  return { leaked: false, why: `pod ${ref} has it` };
}

/** One allocation of a handle that the run releases. */
export interface AllocationRelease {
  block: string;
  cidr: string;
  ordinal: number;
  ip: string;
  pod: string;
  node: string;
  why: string;
}

/** A handle released all or none: every allocation it has, and whether the grace applies. */
export interface HandleRelease {
  handleID: string;
  allocations: AllocationRelease[];
  /** True when every allocation is a confirmed leak (its node is gone): no grace. */
  confirmed: boolean;
}

const podKey = (ns: string, name: string) => `${ns}/${name}`;

export interface IpamDecision {
  /** Per node (the allocation's node), the handles to release. */
  releases: Map<string, HandleRelease[]>;
  /** Handles with a leaked allocation kept because another allocation of the handle is valid. */
  partial: string[];
  /** Leaked allocations whose node is not one kubemend can act for (not in its config): reported. */
  unowned: string[];
}

/** Every allocation's verdict, grouped by handle (all or none), then by the node that acts on it. */
export function decideIpam(api: CalicoApiFacts, actingNodes: ReadonlySet<string>): IpamDecision {
  const pods = new Map(api.pods.map((p) => [podKey(p.namespace, p.name), p]));
  const nodes = new Set(api.nodes);
  const byHandle = new Map<string, Array<{ a: CalicoAllocation; b: CalicoBlock; v: AllocationVerdict }>>();
  for (const b of api.blocks) {
    for (const a of b.allocations) {
      const v = allocationVerdict(a, a.namespace && a.pod ? pods.get(podKey(a.namespace, a.pod)) : undefined, a.node ? nodes.has(a.node) : true);
      const key = a.handle ?? `(no handle) ${b.name}#${a.ordinal}`;
      byHandle.set(key, [...(byHandle.get(key) ?? []), { a, b, v }]);
    }
  }
  const releases = new Map<string, HandleRelease[]>();
  const partial: string[] = [];
  const unowned: string[] = [];
  for (const [handle, list] of [...byHandle.entries()].sort(([x], [y]) => x.localeCompare(y))) {
    const leaked = list.filter((x) => x.v.leaked);
    if (leaked.length === 0) continue;
    if (leaked.length < list.length) {
      partial.push(`${handle}: ${leaked.map((x) => x.a.ip).join(', ')} leaked but ${list.filter((x) => !x.v.leaked).map((x) => `${x.a.ip} (${x.v.why})`).join(', ')} valid: kept (a handle is released all or none)`);
      continue;
    }
    if (!list[0].a.handle) {
      unowned.push(`${list[0].a.ip} in ${list[0].b.name}: leaked (${list[0].v.why}) but has no handle to release it by`);
      continue;
    }
    const node = list[0].a.node ?? list[0].b.affinityHost ?? '';
    const release: HandleRelease = {
      handleID: handle,
      allocations: list.map(({ a, b, v }) => ({ block: b.name, cidr: b.cidr, ordinal: a.ordinal, ip: a.ip, pod: podKey(a.namespace ?? '', a.pod ?? ''), node: a.node ?? '', why: v.why })),
      confirmed: list.every((x) => x.v.leaked && x.v.confirmed),
    };
    // The node that acts is the allocation's own; a node kubemend cannot act for leaves it reported.
    if (!actingNodes.has(node)) {
      unowned.push(`${handle} (${release.allocations.map((x) => x.ip).join(', ')}): ${release.allocations[0].why}; its node ${node || '(none)'} is not one this run acts on`);
      continue;
    }
    releases.set(node, [...(releases.get(node) ?? []), release]);
  }
  return { releases, partial, unowned };
}

export type VethVerdict = { orphan: true; why: string } | { orphan: false; why: string; undecided?: boolean };

/** One veth against the pods on its node, the runtime's sandboxes and the netns their ends are in. */
export function vethVerdict(v: NodeVeth, node: NodeCalicoFacts, podsOnNode: readonly CalicoPod[]): VethVerdict {
  const pod = podsOnNode.find((p) => p.veth === v.name);
  if (pod) return { orphan: false, why: `pod ${podKey(pod.namespace, pod.name)}'s` };
  if (node.runtimeRead === false) return { orphan: false, undecided: true, why: 'the runtime was not read' };
  const sandbox = node.sandboxes.find((s) => s.veth === v.name);
  if (sandbox) return { orphan: false, why: `the runtime still has sandbox ${sandbox.id.slice(0, 13)} of ${podKey(sandbox.namespace, sandbox.name)}` };
  if (v.peerNetnsId === null) return { orphan: false, undecided: true, why: 'its peer is not in another network namespace: not a pod veth as Calico makes them' };
  const peerNs = node.netns.find((n) => n.nsid === v.peerNetnsId)?.name ?? null;
  const ready = node.sandboxes.filter((s) => s.state === 'SANDBOX_READY');
  const liveNs = new Set(ready.flatMap((s) => (s.netns ? [s.netns.split('/').pop()!] : [])));
  if (peerNs !== null && liveNs.has(peerNs)) return { orphan: false, why: `its peer is in ${peerNs}, a live sandbox's netns` };
  if (peerNs !== null && ready.some((s) => !s.netns)) return { orphan: false, undecided: true, why: `its peer is in netns ${peerNs} and the runtime did not say which netns some ready sandboxes have` };
  return { orphan: true, why: `no pod or sandbox on ${node.node} has this name and its peer is in ${peerNs === null ? 'an unnamed netns' : `netns ${peerNs}`}, no live sandbox's` };
}

/** Calico manages a pod's network when its address is in one of Calico's blocks or pools. */
export const calicoManaged = (p: CalicoPod, api: Pick<CalicoApiFacts, 'blocks' | 'pools'>) => p.ips.some((ip) => api.blocks.some((b) => inCidr(ip, b.cidr)) || api.pools.some((c) => inCidr(ip, c)));

/** Running pods on the node whose veth is missing (the seed's pod that could reach nothing). */
export function podsWithoutVeth(node: NodeCalicoFacts, api: CalicoApiFacts): CalicoPod[] {
  const veths = new Set(node.veths.map((v) => v.name));
  return api.pods.filter((p) => p.node === node.node && p.phase === 'Running' && !p.hostNetwork && !p.deleting && calicoManaged(p, api) && !veths.has(p.veth));
}

// ---------------------------------------------------------------------------------------
// Findings and plan

export interface VethDelete {
  name: string;
  ifindex: number;
  peerNetnsId: number | null;
  why: string;
}

export interface PodRestart {
  namespace: string;
  name: string;
  uid: string;
  controller: { kind: string; name: string; uid: string };
  veth: string;
}

export interface CalicoOrphansNode extends PlannedNode {
  releases: HandleRelease[];
  /** Not before this (detection + grace) for a release that is not a confirmed leak. */
  releaseNotBeforeMs: number;
  veths: VethDelete[];
  restarts: PodRestart[];
  /** Pods without a veth that nobody would recreate (bare pods): reported only. */
  reported: string[];
  /** Veths left alone because it cannot be told whether they are orphans. */
  undecided: string[];
}

export interface CalicoOrphansPlan extends RunbookPlan {
  nodes: CalicoOrphansNode[];
  graceMs: number;
}

export interface PlanOptions {
  selected: readonly string[];
  excluded: readonly string[];
  controlPlane: readonly string[];
}

interface NodeOrphans {
  node: string;
  releases: HandleRelease[];
  veths: VethDelete[];
  undecided: string[];
  withoutVeth: CalicoPod[];
}

/** Every node's orphans of the three kinds (the nodes that could not be read give only their IPAM). */
export function orphansByNode(facts: CalicoOrphansFacts, actingNodes: ReadonlySet<string>): { nodes: NodeOrphans[]; partial: string[]; unowned: string[]; unread: string[] } {
  const ipam = decideIpam(facts.api, actingNodes);
  const out = new Map<string, NodeOrphans>();
  const get = (node: string) => out.get(node) ?? out.set(node, { node, releases: [], veths: [], undecided: [], withoutVeth: [] }).get(node)!;
  for (const [node, rs] of ipam.releases) get(node).releases.push(...rs);
  const unread: string[] = [];
  for (const n of facts.nodes) {
    if ('error' in n) {
      unread.push(`${n.node}: not read (${n.error}): its veths and pods were not looked at`);
      continue;
    }
    const mine = facts.api.pods.filter((p) => p.node === n.node);
    for (const v of n.veths) {
      const verdict = vethVerdict(v, n, mine);
      if (verdict.orphan) get(n.node).veths.push({ name: v.name, ifindex: v.ifindex, peerNetnsId: v.peerNetnsId, why: verdict.why });
      else if (verdict.undecided) get(n.node).undecided.push(`${v.name}: left alone, ${verdict.why}`);
    }
    const missing = podsWithoutVeth(n, facts.api);
    if (missing.length) get(n.node).withoutVeth.push(...missing);
  }
  const nodes = [...out.values()].filter((o) => o.releases.length || o.veths.length || o.undecided.length || o.withoutVeth.length).sort((a, b) => a.node.localeCompare(b.node));
  return { nodes, partial: ipam.partial, unowned: ipam.unowned, unread };
}

/** The evidence lines of a node's orphans (findings, remaining). */
function orphanLines(o: NodeOrphans): string[] {
  return [
    ...o.releases.flatMap((r) => r.allocations.map((a) => `IPAM ${a.ip} (block ${a.block}, handle ${r.handleID}): ${a.why}`)),
    ...o.veths.map((v) => `${v.name}: ${v.why}`),
    ...o.withoutVeth.map((p) => `${podKey(p.namespace, p.name)} is Running on ${o.node} with ${p.ips.join(', ')} but has no ${p.veth}`),
  ];
}

export function detectCalicoOrphans(facts: CalicoOrphansFacts, actingNodes: ReadonlySet<string>): Finding[] {
  return orphansByNode(facts, actingNodes).nodes.filter((o) => orphanLines(o).length).map((o) => ({
    seed: '004' as const,
    remediation: 'calico-orphans',
    node: o.node,
    signature: o.withoutVeth.length ? '? (169.254.1.1) at <incomplete> on eth0' : 'calico IPAM allocations and cali veths without a pod',
    evidence: orphanLines(o),
    fixable: isFixable('calico-orphans'),
  }));
}

/** The faults as lines (`<node>: ...`), for the result's `remaining`. */
export function calicoOrphanLines(facts: CalicoOrphansFacts, actingNodes: ReadonlySet<string>, only?: ReadonlySet<string>): string[] {
  const o = orphansByNode(facts, actingNodes);
  return [...o.nodes.filter((n) => !only || only.has(n.node)).flatMap((n) => orphanLines(n).map((l) => `${n.node}: ${l}`)), ...(only ? [] : o.unowned)];
}

const iso = (ms: number) => new Date(ms).toISOString();

export function planCalicoOrphans(facts: CalicoOrphansFacts, opts: PlanOptions): CalicoOrphansPlan {
  const selected = new Set(opts.selected);
  const excluded = new Set(opts.excluded);
  const found = orphansByNode(facts, selected);
  const nodes: CalicoOrphansNode[] = [];
  const skipped: CalicoOrphansPlan['skipped'] = [];
  const notBefore = facts.detectedAtMs + facts.graceMs;
  for (const o of found.nodes) {
    if (!selected.has(o.node)) {
      skipped.push({ name: o.node, reason: 'not selected (--node)' });
      continue;
    }
    if (excluded.has(o.node)) {
      skipped.push({ name: o.node, reason: 'labelled kubemend.io/exclude=true' });
      continue;
    }
    const restarts: PodRestart[] = [];
    const reported: string[] = [];
    for (const p of o.withoutVeth) {
      const veth = p.veth;
      if (p.controller) restarts.push({ namespace: p.namespace, name: p.name, uid: p.uid, controller: p.controller, veth });
      else reported.push(`${podKey(p.namespace, p.name)} has no ${veth} and no controller to recreate it: delete and recreate it yourself (kubemend does not delete bare pods)`);
    }
    const steps: string[] = [];
    for (const r of o.releases) {
      const when = r.confirmed ? 'now (its node is gone)' : `not before ${iso(notBefore)} (the grace after detection), each allocation checked again first`;
      steps.push(`release handle ${r.handleID} (${r.allocations.map((a) => `${a.ip} in ${a.block}`).join(', ')}) ${when}: the IPAMBlock written with its resourceVersion, then the IPAMHandle deleted with its resourceVersion`);
    }
    for (const v of o.veths) steps.push(`ip link delete ${v.name} (ifindex ${v.ifindex}), after checking again that it is still unmatched and its peer still in no live sandbox`);
    for (const p of restarts) steps.push(`POST /api/v1/namespaces/${p.namespace}/pods/${p.name}/eviction (uid ${p.uid}): its ${p.controller.kind} ${p.controller.name} recreates it with a CNI ADD; wait for the new pod Running with its veth`);
    if (steps.length === 0 && reported.length === 0 && o.undecided.length === 0) continue;
    if (steps.length === 0) {
      skipped.push({ name: o.node, reason: [...reported, ...o.undecided].join('; ') });
      continue;
    }
    nodes.push({ name: o.node, role: opts.controlPlane.includes(o.node) ? 'control-plane' : 'worker', steps, releases: o.releases, releaseNotBeforeMs: notBefore, veths: o.veths, restarts, reported, undecided: o.undecided });
  }
  const summary = [
    `grace ${Math.round(facts.graceMs / 1000)} s from detection at ${iso(facts.detectedAtMs)}: a leak whose node still exists is released at ${iso(notBefore)} at the earliest`,
    ...found.partial,
    ...found.unowned,
    ...found.unread,
    ...nodes.flatMap((n) => [...n.reported, ...n.undecided].map((l) => `${n.name}: ${l}`)),
    'undo: a released allocation cannot be given back safely once its address is re-used; each release records the IPAMBlock and IPAMHandle as they were. A deleted veth has no undo: its peer was in no live sandbox, it carried no traffic.',
  ];
  const content = { nodes: nodes.map((n) => ({ name: n.name, steps: n.steps })), skipped, graceMs: facts.graceMs };
  return { id: planId(content), nodes, skipped, summary, graceMs: facts.graceMs };
}

// ---------------------------------------------------------------------------------------
// The release of a handle from one IPAMBlock, as Calico's IPAM does it

export interface BlockSpec {
  cidr: string;
  allocations: Array<number | null>;
  unallocated: number[];
  attributes: Array<{ handle_id?: string; secondary?: Record<string, string> | null }>;
  [k: string]: unknown;
}

export type BlockRelease =
  | { spec: BlockSpec; released: number[]; gone: number[]; reused: Array<{ ordinal: number; handle: string | null }> }
  | { problem: string };

/**
 * The block with the handle's given ordinals free: allocations[o] = null, o back in
 * `unallocated`, attributes no allocation refers to any more dropped and the indexes
 * renumbered (as Calico's allocationBlock.release does). An ordinal already free is `gone`;
 * one now held under another handle is `reused` and kept.
 */
export function releaseFromBlock(spec: BlockSpec, handleID: string, ordinals: readonly number[]): BlockRelease {
  if (!Array.isArray(spec.allocations) || !Array.isArray(spec.attributes)) return { problem: 'the IPAMBlock has no allocations or attributes list' };
  const allocations = [...spec.allocations];
  const unallocated = [...(spec.unallocated ?? [])];
  const released: number[] = [];
  const gone: number[] = [];
  const reused: Array<{ ordinal: number; handle: string | null }> = [];
  for (const o of ordinals) {
    if (!Number.isInteger(o) || o < 0 || o >= allocations.length) return { problem: `ordinal ${o} is outside the block (${allocations.length} ordinals)` };
    const idx = allocations[o];
    if (idx === null || idx === undefined) {
      gone.push(o);
      continue;
    }
    const handle = spec.attributes[idx]?.handle_id ?? null;
    if (handle !== handleID) {
      reused.push({ ordinal: o, handle });
      continue;
    }
    allocations[o] = null;
    if (!unallocated.includes(o)) unallocated.push(o);
    released.push(o);
  }
  // Drop attributes nothing refers to any more, renumbering the references.
  const used = new Set(allocations.filter((a): a is number => a !== null && a !== undefined));
  const remap = new Map<number, number>();
  const attributes: BlockSpec['attributes'] = [];
  spec.attributes.forEach((at, i) => {
    if (!used.has(i)) return;
    remap.set(i, attributes.length);
    attributes.push(at);
  });
  const renumbered = allocations.map((a) => (a === null || a === undefined ? null : remap.get(a)!));
  return { spec: { ...spec, allocations: renumbered, unallocated, attributes }, released, gone, reused };
}

/** The ordinals of `cidr` a block's allocations give a handle (the check after a release). */
export function ordinalsOfHandle(spec: Pick<BlockSpec, 'allocations' | 'attributes'>, handleID: string): number[] {
  return (spec.allocations ?? []).flatMap((a, o) => (a !== null && a !== undefined && spec.attributes?.[a]?.handle_id === handleID ? [o] : []));
}

// ---------------------------------------------------------------------------------------
// After the fix

export interface CalicoOrphansFixed {
  name: string;
  released: string[];
  keptAtRelease: string[];
  vethsDeleted: string[];
  vethsKept: string[];
  restarted: string[];
  newPods: string[];
  reported: string[];
}

/** What must hold on the node after its steps, read afresh. */
export function problemsAfter(planned: Pick<CalicoOrphansNode, 'name' | 'releases' | 'veths'>, applied: { released: string[]; vethsDeleted: string[] }, after: CalicoOrphansFacts): string[] {
  const problems: string[] = [];
  const node = after.nodes.find((n) => n.node === planned.name);
  if (!node || 'error' in node) return [`${planned.name} could not be read after the fix${node && 'error' in node ? `: ${node.error}` : ''}`];
  const held = new Map<string, string | null>();
  for (const b of after.api.blocks) for (const a of b.allocations) held.set(a.ip, a.handle);
  for (const r of planned.releases) {
    if (!applied.released.includes(r.handleID)) continue;
    for (const a of r.allocations) if (held.get(a.ip) === r.handleID) problems.push(`${a.ip} is still allocated to ${r.handleID}`);
    if (after.api.handles.some((h) => h.handleID === r.handleID)) problems.push(`IPAMHandle ${r.handleID} still exists`);
  }
  for (const v of planned.veths) if (applied.vethsDeleted.includes(v.name) && node.veths.some((x) => x.name === v.name && x.ifindex === v.ifindex)) problems.push(`${v.name} (ifindex ${v.ifindex}) is still there`);
  return problems;
}
