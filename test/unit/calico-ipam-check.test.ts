import { checkCalicoIpam, type IpamCheckInput, type IpamCheckReport, podIps } from '../../lib/calico-ipam-check';

/**
 * A consistent cluster in the lab's KDD shapes (test/lab/manifests.ts): the default pool, one
 * /26 block per node with its confirmed BlockAffinity, n1 in IPIP mode (its tunnel address
 * ordinal 0, named by the Node's annotation), n2 in VXLAN mode, one pod address per node, each
 * allocation with its handle. Besides: a hostNetwork pod (the node's address, outside every
 * pool), an unscheduled pod, and a Succeeded pod whose address went back to the pool.
 */
interface Alloc { handle: string | null; pod?: string; node?: string; type?: string; releasedAt?: string }
function block(cidr: string, node: string | null, allocs: Record<number, Alloc>, size = 64) {
  const allocations: Array<number | null> = Array.from({ length: size }, () => null);
  const attributes: Array<{ handle_id: string | null; secondary: Record<string, string>; releasedAt?: string }> = [];
  for (const [ord, a] of Object.entries(allocs)) {
    allocations[Number(ord)] = attributes.length;
    const secondary: Record<string, string> = {};
    if (a.pod) Object.assign(secondary, { namespace: 'demo', pod: a.pod, timestamp: '2026-01-01 00:00:00 +0000 UTC' });
    if (a.node ?? node) secondary.node = (a.node ?? node) as string;
    if (a.type) secondary.type = a.type;
    attributes.push({ handle_id: a.handle, secondary, ...(a.releasedAt ? { releasedAt: a.releasedAt } : {}) });
  }
  const name = cidr.replace(/[./]/g, '-');
  return { metadata: { name }, spec: { cidr, affinity: node ? `host:${node}` : null, strictAffinity: false, allocations, unallocated: allocations.flatMap((a, i) => (a === null ? [i] : [])), attributes } };
}
const handle = (id: string, blocks: Record<string, number>) => ({ metadata: { name: id.toLowerCase() }, spec: { handleID: id, block: blocks } });
const affinity = (node: string, cidr: string, state = 'confirmed', deleted = 'false') => ({ metadata: { name: `${node}-${cidr.replace(/[./]/g, '-')}` }, spec: { node, cidr, state, deleted } });
const pod = (name: string, nodeName: string | undefined, ip?: string, extra: { hostNetwork?: boolean; phase?: string; annotations?: Record<string, string>; deletionTimestamp?: string } = {}) => ({
  metadata: { namespace: 'demo', name, ...(extra.annotations ? { annotations: extra.annotations } : {}), ...(extra.deletionTimestamp ? { deletionTimestamp: extra.deletionTimestamp } : {}) },
  spec: { ...(nodeName ? { nodeName } : {}), ...(extra.hostNetwork ? { hostNetwork: true } : {}) },
  status: { phase: extra.phase ?? 'Running', ...(ip ? { podIP: ip, podIPs: [{ ip }] } : {}) },
});
const node = (name: string, annotations: Record<string, string> = {}) => ({ metadata: { name, annotations } });

const B1 = '192.168.200.0/26';
const B2 = '192.168.201.0/26';
const WEB = 'k8s-pod-network.aaaa';
const DB = 'k8s-pod-network.bbbb';
const IPIP = 'projectcalico.org/IPv4IPIPTunnelAddr';
const VXLAN = 'projectcalico.org/IPv4VXLANTunnelAddr';

interface Fixture {
  pools: IpamCheckInput['pools'];
  blocks: Array<ReturnType<typeof block>>;
  handles: Array<ReturnType<typeof handle>>;
  affinities: Array<ReturnType<typeof affinity>>;
  pods: Array<ReturnType<typeof pod>>;
  nodes: Array<ReturnType<typeof node>>;
}
function consistent(): Fixture {
  return {
    pools: [{ metadata: { name: 'default-ipv4-ippool' }, spec: { cidr: '192.168.0.0/16', blockSize: 26 } }],
    blocks: [
      block(B1, 'n1', { 0: { handle: 'ipip-tunnel-addr-n1', type: 'ipipTunnelAddress' }, 1: { handle: WEB, pod: 'web-0' } }),
      block(B2, 'n2', { 0: { handle: 'vxlan-tunnel-addr-n2', type: 'vxlanTunnelAddress' }, 5: { handle: DB, pod: 'db-0' } }),
    ],
    handles: [handle('ipip-tunnel-addr-n1', { [B1]: 1 }), handle(WEB, { [B1]: 1 }), handle('vxlan-tunnel-addr-n2', { [B2]: 1 }), handle(DB, { [B2]: 1 })],
    affinities: [affinity('n1', B1), affinity('n2', B2)],
    pods: [
      pod('web-0', 'n1', '192.168.200.1'),
      pod('db-0', 'n2', '192.168.201.5'),
      pod('calico-node-x', 'n1', '10.0.0.11', { hostNetwork: true }),
      pod('pending', undefined),
      pod('job-done', 'n2', '192.168.201.9', { phase: 'Succeeded' }),
    ],
    nodes: [node('n1', { [IPIP]: '192.168.200.0' }), node('n2', { [VXLAN]: '192.168.201.0' })],
  };
}

/** Each category in a short form, so a case names all it expects and everything else must be empty. */
function summary(r: IpamCheckReport) {
  const owned = (l: IpamCheckReport['sharedIps']) => l.map((u) => `${u.ip} <- ${u.owners.join(' ')}`);
  return {
    leaked: r.leaked.map((a) => `${a.ip} ${a.kind}`),
    inUseWithoutAllocation: owned(r.inUseWithoutAllocation),
    outsideActivePools: owned(r.outsideActivePools),
    sharedIps: owned(r.sharedIps),
    leakedHandles: r.leakedHandles.map((h) => h.handle || `(${h.name})`),
    missingHandles: r.missingHandles.map((h) => `${h.handle}: ${h.ips.join(' ')}`),
    handleCountMismatches: r.handleCountMismatches.map((m) => `${m.handle} ${m.block} ${m.recorded}/${m.actual}`),
    invalidBlocks: r.invalidBlocks.map((b) => `${b.block}: ${b.reason}`),
    affinityProblems: r.affinityProblems.map((p) => `${p.kind} ${p.node} ${p.block}`),
    unchecked: r.unchecked,
  };
}
type Summary = ReturnType<typeof summary>;
const EMPTY: Summary = { leaked: [], inUseWithoutAllocation: [], outsideActivePools: [], sharedIps: [], leakedHandles: [], missingHandles: [], handleCountMismatches: [], invalidBlocks: [], affinityProblems: [], unchecked: [] };
type State = Fixture;
const attrsOf = (s: State, i: number) => s.blocks[i].spec.attributes;
const slotsOf = (s: State, i: number) => s.blocks[i].spec;

const cases: Array<[string, (s: State) => void, Partial<Summary>]> = [
  ['a consistent cluster: no problems', () => undefined, {}],

  // Leaked: allocated, used by nothing (calicoctl "allocated in IPAM but not actually in use").
  ['a pod gone, its allocation left: leaked (its handle still names it, so the handle is not)', (s) => void s.pods.splice(0, 1), { leaked: ['192.168.200.1 pod'] }],
  ['an allocation without pod attributes that nothing uses: leaked all the same', (s) => {
    s.blocks[0] = block(B1, 'n1', { 0: { handle: 'ipip-tunnel-addr-n1', type: 'ipipTunnelAddress' }, 1: { handle: WEB, pod: 'web-0' }, 7: { handle: 'manual' } });
    s.handles.push(handle('manual', { [B1]: 1 }));
  }, { leaked: ['192.168.200.7 other'] }],
  ['a tunnel address its Node does not name: leaked, as a tunnel address', (s) => void delete s.nodes[0].metadata.annotations[IPIP], { leaked: ['192.168.200.0 tunnel'] }],
  ['a tunnel address from before the type attribute: known by its handle, held while the Node names it', (s) => {
    delete attrsOf(s, 1)[0].secondary.type;
    s.nodes[1].metadata.annotations = {};
  }, { leaked: ['192.168.201.0 tunnel'] }],
  ['a tunnel address held by a Node that names it as a CIDR (a.b.c.d/32)', (s) => void (s.nodes[0].metadata.annotations[IPIP] = '192.168.200.0/32'), {}],
  ['a Windows-reserved address: in use without any owner or handle object', (s) => {
    s.blocks[1] = block(B2, 'n2', { 0: { handle: 'vxlan-tunnel-addr-n2', type: 'vxlanTunnelAddress' }, 3: { handle: 'windows-reserved-ipam-handle' }, 5: { handle: DB, pod: 'db-0' } });
  }, {}],
  ['a released address cooling down (releasedAt): not leaked', (s) => {
    s.pods.splice(1, 1);
    attrsOf(s, 1)[1].releasedAt = '2026-11-26T05:00:00Z';
  }, {}],
  ['a finished pod does not hold its address (phase Succeeded)', (s) => void (s.pods[0].status.phase = 'Succeeded'), { leaked: ['192.168.200.1 pod'] }],
  ['a pod being deleted whose podIP annotation Calico CNI emptied does not hold its address', (s) => {
    s.pods[0] = pod('web-0', 'n1', '192.168.200.1', { deletionTimestamp: '2026-11-26T05:00:00Z', annotations: { 'cni.projectcalico.org/podIP': '' } });
  }, { leaked: ['192.168.200.1 pod'] }],
  ['a pod being deleted still holds its address until Calico CNI empties the annotation', (s) => {
    s.pods[0] = pod('web-0', 'n1', '192.168.200.1', { deletionTimestamp: '2026-11-26T05:00:00Z', annotations: { 'cni.projectcalico.org/podIP': '192.168.200.1/32' } });
  }, {}],
  ['a pod whose status has no address yet holds it by the cni.projectcalico.org/podIPs annotation', (s) => {
    s.pods[0] = pod('web-0', 'n1', undefined, { annotations: { 'cni.projectcalico.org/podIPs': '192.168.200.1/32' } });
  }, {}],

  // In use without an allocation, split by the active pools.
  ['a pod address in the pool with no allocation', (s) => void s.pods.push(pod('web-1', 'n1', '192.168.200.9')), { inUseWithoutAllocation: ['192.168.200.9 <- Pod(demo/web-1)'] }],
  ['a tunnel address a Node names with no allocation', (s) => void (s.nodes[1].metadata.annotations[VXLAN] = '192.168.201.60'), {
    leaked: ['192.168.201.0 tunnel'],
    inUseWithoutAllocation: ['192.168.201.60 <- Node(n2)'],
  }],
  ['a pod address outside every pool: its own category, not a missing allocation', (s) => void s.pods.push(pod('other-cni', 'n2', '10.244.1.7')), { outsideActivePools: ['10.244.1.7 <- Pod(demo/other-cni)'] }],
  ['a pod address in a disabled pool only: outside every active pool', (s) => {
    s.pools.push({ metadata: { name: 'old' }, spec: { cidr: '10.244.0.0/16', blockSize: 26, disabled: true } });
    s.pods.push(pod('other-cni', 'n2', '10.244.1.7'));
  }, { outsideActivePools: ['10.244.1.7 <- Pod(demo/other-cni)'] }],
  ['hostNetwork pods are no workloads: their addresses are ignored, even inside the pool', (s) => void s.pods.push(pod('hostnet', 'n1', '192.168.200.30', { hostNetwork: true })), {}],
  ['an unscheduled pod is no workload, whatever its status says', (s) => void s.pods.push(pod('odd', undefined, '192.168.200.31')), {}],
  ['two pods with one address: shared', (s) => void s.pods.push(pod('web-0-twin', 'n2', '192.168.200.1')), { sharedIps: ['192.168.200.1 <- Pod(demo/web-0) Pod(demo/web-0-twin)'] }],
  ['a pod on n2 with an address borrowed from n1\'s block: fine', (s) => {
    s.blocks[0] = block(B1, 'n1', { 0: { handle: 'ipip-tunnel-addr-n1', type: 'ipipTunnelAddress' }, 1: { handle: WEB, pod: 'web-0' }, 2: { handle: 'k8s-pod-network.cccc', pod: 'api-0', node: 'n2' } });
    s.handles.push(handle('k8s-pod-network.cccc', { [B1]: 1 }));
    s.pods.push(pod('api-0', 'n2', '192.168.200.2'));
  }, {}],

  // Handles.
  ['a handle object no allocation names: leaked handle', (s) => void s.handles.push(handle('k8s-pod-network.dead', { [B1]: 1 })), { leakedHandles: ['k8s-pod-network.dead'] }],
  ['a handle object without spec.handleID: leaked handle, named by its object', (s) => void s.handles.push({ metadata: { name: 'k8s-pod-network.x' }, spec: {} } as never), { leakedHandles: ['(k8s-pod-network.x)'] }],
  ['an allocation whose handle object is missing', (s) => void s.handles.splice(1, 1), { missingHandles: [`${WEB}: 192.168.200.1`] }],
  ['a handle matches by spec.handleID, case and all, not by its lowercased object name', (s) => {
    s.handles[1] = handle('K8S-POD-NETWORK.AAAA', { [B1]: 1 });
  }, { leakedHandles: ['K8S-POD-NETWORK.AAAA'], missingHandles: [`${WEB}: 192.168.200.1`] }],
  ['a handle counting two addresses in a block that holds one for it', (s) => void (s.handles[1].spec.block[B1] = 2), { handleCountMismatches: [`${WEB} ${B1} 2/1`] }],
  ['a handle counting its address in the wrong block', (s) => void (s.handles[1].spec.block = { [B2]: 1 }), { handleCountMismatches: [`${WEB} ${B2} 1/0`, `${WEB} ${B1} 0/1`] }],

  // A block's own consistency.
  ['an ordinal both allocated and in unallocated', (s) => void slotsOf(s, 0).unallocated.unshift(1), { invalidBlocks: [`${B1}: ordinal 1 is allocated and in unallocated`] }],
  ['an ordinal neither allocated nor in unallocated', (s) => void (slotsOf(s, 0).unallocated = slotsOf(s, 0).unallocated.filter((o) => o !== 40)), { invalidBlocks: [`${B1}: ordinal 40 is neither allocated nor in unallocated`] }],
  ['an ordinal twice in unallocated, and one outside the block', (s) => void slotsOf(s, 0).unallocated.push(40, 64), { invalidBlocks: [`${B1}: ordinal 40 is in unallocated more than once`, `${B1}: ordinal 64 is in unallocated but outside the block`] }],
  ['an allocation pointing at a missing attribute: invalid, and with no handle it is also a leak', (s) => {
    slotsOf(s, 0).allocations[2] = 9;
    slotsOf(s, 0).unallocated = slotsOf(s, 0).unallocated.filter((o) => o !== 2);
  }, { invalidBlocks: [`${B1}: allocation 2 indexes a nonexistent attribute 9`], leaked: ['192.168.200.2 other'] }],
  ['an attribute no allocation points at', (s) => void attrsOf(s, 0).push({ handle_id: 'k8s-pod-network.zzzz', secondary: {} }), { invalidBlocks: [`${B1}: attribute 2 is not indexed by any allocation`] }],
  ['a /26 block with 32 allocation slots', (s) => {
    slotsOf(s, 1).allocations = slotsOf(s, 1).allocations.slice(0, 32);
    slotsOf(s, 1).unallocated = slotsOf(s, 1).unallocated.filter((o) => o < 32);
  }, { invalidBlocks: [`${B2}: has 32 allocation slots for 64 addresses`] }],

  // Blocks and affinities.
  ['a block affine to a node with no BlockAffinity for it', (s) => void s.affinities.splice(1, 1), { affinityProblems: [`block-without-affinity n2 ${B2}`] }],
  ['a deleted BlockAffinity does not count', (s) => void (s.affinities[1].spec.deleted = 'true'), { affinityProblems: [`block-without-affinity n2 ${B2}`] }],
  ['a confirmed BlockAffinity with no block', (s) => void s.affinities.push(affinity('n2', '192.168.202.0/26')), { affinityProblems: ['affinity-without-block n2 192.168.202.0/26'] }],
  ['a pending BlockAffinity with no block yet: a claim in flight, fine', (s) => void s.affinities.push(affinity('n2', '192.168.202.0/26', 'pending')), {}],
  ['a confirmed BlockAffinity whose block is affine to another node', (s) => void s.affinities.push(affinity('n1', B2)), { affinityProblems: [`affinity-host-mismatch n1 ${B2}`] }],
  ['a node gone: its block and affinity name it, its tunnel address is leaked', (s) => {
    s.nodes.splice(1, 1);
    s.pods.splice(1, 1);
  }, {
    leaked: ['192.168.201.0 tunnel', '192.168.201.5 pod'],
    affinityProblems: [`block-of-missing-node n2 ${B2}`, `affinity-of-missing-node n2 ${B2}`],
  }],

  // What it cannot check makes it not ok.
  ['an IPv6 block and pool: unchecked (and the block\'s handle not called leaked)', (s) => {
    s.blocks.push({ metadata: { name: 'fd00--122' }, spec: { cidr: 'fd00::/122', affinity: null, strictAffinity: false, allocations: [0], unallocated: [], attributes: [{ handle_id: 'k8s-pod-network.v6', secondary: {} }] } });
    s.handles.push(handle('k8s-pod-network.v6', { 'fd00::/122': 1 }));
    s.pools.push({ metadata: { name: 'v6' }, spec: { cidr: 'fd00::/48', blockSize: 122 } });
  }, { unchecked: ['IPAMBlock fd00--122: CIDR "fd00::/122" is not IPv4', 'IPPool v6: CIDR "fd00::/48" is not IPv4'] }],
];

test.each(cases)('%s', (_name, change, want) => {
  const s = consistent();
  change(s);
  const report = checkCalicoIpam(s);
  expect(summary(report)).toEqual({ ...EMPTY, ...want });
  const problems = Object.entries(summary(report)).filter(([k]) => k !== 'unchecked').reduce((n, [, l]) => n + l.length, 0);
  expect(report.problems).toHaveLength(problems);
  expect(report.ok).toBe(problems === 0 && report.unchecked.length === 0);
});

test('the consistent cluster is read whole: counts, and each allocation as calicoctl reads it', () => {
  const r = checkCalicoIpam(consistent());
  expect(r.counts).toEqual({ blocks: 2, allocations: 4, activePools: 1, inUseIps: 4, handles: 4 });
  expect(r.ok).toBe(true);
  const s = consistent();
  s.pods.splice(0, 1);
  expect(checkCalicoIpam(s).leaked).toEqual([{ ip: '192.168.200.1', block: B1, ordinal: 1, handle: WEB, namespace: 'demo', pod: 'web-0', node: 'n1', kind: 'pod', borrowed: false, coolingDown: false }]);
});

test('problem lines say what, where and whose', () => {
  const s = consistent();
  s.pods.splice(0, 1);
  s.pods.push(pod('other-cni', 'n2', '10.244.1.7'));
  s.handles.push(handle('k8s-pod-network.dead', {}));
  s.affinities.splice(1, 1);
  expect(checkCalicoIpam(s).problems).toEqual([
    `192.168.200.1 is allocated in block ${B1} (handle ${WEB}, pod demo/web-0, node n1) but not in use`,
    '10.244.1.7 is in use by Pod(demo/other-cni) but is not in any active IP pool',
    'handle k8s-pod-network.dead has no allocated address',
    `block ${B2} is affine to node n2, which has no BlockAffinity for it`,
  ]);
});

test.each([
  ['status.podIPs first', pod('a', 'n1', '192.168.200.1', { annotations: { 'cni.projectcalico.org/podIP': '192.168.200.2/32' } }), ['192.168.200.1']],
  ['the podIPs annotation, then podIP', pod('a', 'n1', undefined, { annotations: { 'cni.projectcalico.org/podIPs': '192.168.200.3/32,fd00::3/128', 'cni.projectcalico.org/podIP': '192.168.200.2/32' } }), ['192.168.200.3/32', 'fd00::3/128']],
  ['the podIP annotation alone', pod('a', 'n1', undefined, { annotations: { 'cni.projectcalico.org/podIP': '192.168.200.2/32' } }), ['192.168.200.2/32']],
  ['hostNetwork', pod('a', 'n1', '10.0.0.11', { hostNetwork: true }), []],
  ['not scheduled', pod('a', undefined, '192.168.200.1'), []],
  ['Failed', pod('a', 'n1', '192.168.200.1', { phase: 'Failed' }), []],
  ['deleting, annotation emptied', pod('a', 'n1', '192.168.200.1', { deletionTimestamp: '2026-11-26T05:00:00Z', annotations: { 'cni.projectcalico.org/podIP': '' } }), []],
] as const)('a pod\'s workload addresses: %s', (_n, p, want) => {
  expect(podIps(p)).toEqual(want);
});
