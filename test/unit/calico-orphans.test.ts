/**
 * calico-orphans' decisions (lib/calico-orphans.ts) and parsers (lib/calico-orphans-read.ts):
 * Calico's rules for a leaked allocation, all or none per handle, the veth verdict, the pods
 * without a veth, the plan, and the release of a handle from a block.
 */
import {
  allocationVerdict,
  type CalicoAllocation,
  type CalicoApiFacts,
  type CalicoOrphansFacts,
  type CalicoPod,
  decideIpam,
  detectCalicoOrphans,
  type NodeCalicoFacts,
  planCalicoOrphans,
  problemsAfter,
  releaseFromBlock,
  vethVerdict,
} from '../../lib/calico-orphans';
import { calicoBlockOf, calicoPodOf, parseInspectp, parseNetnsIds, parseVeths } from '../../lib/calico-orphans-read';
import { calicoVethName } from '../../lib/calico';

const alloc = (over: Partial<CalicoAllocation> = {}): CalicoAllocation => ({ ordinal: 10, ip: '192.168.201.10', handle: 'k8s-pod-network.aaa', namespace: 'default', pod: 'web-0', node: 'node1', type: null, ...over });
const pod = (over: Partial<CalicoPod> = {}): CalicoPod => {
  const p = { namespace: 'default', name: 'web-0', uid: 'u-web-0', node: 'node1', phase: 'Running', hostNetwork: false, deleting: false, ips: ['192.168.201.10'], controller: { kind: 'ReplicaSet', name: 'web-5d9', uid: 'rs-1' }, veth: '', ...over };
  return { ...p, veth: over.veth ?? calicoVethName(p.namespace, p.name) };
};

describe('allocationVerdict: Calico kube-controllers rules', () => {
  test.each([
    ['the pod has the address', alloc(), pod(), true, false, undefined],
    ['no pod attributes', alloc({ namespace: null, pod: null }), undefined, true, false, undefined],
    ['tunnel address, node exists', alloc({ handle: 'ipip-tunnel-addr-node1', namespace: null, pod: null }), undefined, true, false, undefined],
    ['tunnel address, node gone', alloc({ handle: 'vxlan-tunnel-addr-node9', namespace: null, pod: null, node: 'node9' }), undefined, false, true, true],
    ['tunnel by type attribute, node gone', alloc({ handle: 'x', type: 'ipipTunnelAddress', namespace: null, pod: null }), undefined, false, true, true],
    ['node gone: confirmed at once', alloc(), undefined, false, true, true],
    ['pod does not exist', alloc(), undefined, true, true, false],
    ['pod runs on another node', alloc(), pod({ node: 'node2' }), true, true, false],
    ['pod reported no IP yet', alloc(), pod({ ips: [] }), true, false, undefined],
    ['pod recreated and still Pending, unscheduled', alloc(), pod({ node: '', phase: 'Pending', ips: [] }), true, false, undefined],
    ['pod has other IPs', alloc(), pod({ ips: ['192.168.201.11'] }), true, true, false],
  ] as const)('%s', (_what, a, p, nodeExists, leaked, confirmed) => {
    const v = allocationVerdict(a, p, nodeExists);
    expect(v.leaked).toBe(leaked);
    if (v.leaked) expect(v.confirmed).toBe(confirmed);
  });
});

const block = (name: string, cidr: string, host: string, allocations: CalicoAllocation[]) => ({ name, cidr, affinityHost: host, resourceVersion: '1', allocations });
const api = (over: Partial<CalicoApiFacts> = {}): CalicoApiFacts => ({ nodes: ['node1', 'node2'], pods: [], pools: ['192.168.0.0/16'], blocks: [], handles: [], ...over });

describe('decideIpam: all or none per handle, by the allocation node', () => {
  test('a handle with one valid allocation is kept whole', () => {
    const a1 = alloc({ ordinal: 10, ip: '192.168.201.10', handle: 'h1', pod: 'web-0' });
    const a2 = alloc({ ordinal: 11, ip: '192.168.201.11', handle: 'h1', pod: 'web-0' });
    const d = decideIpam(api({ blocks: [block('b1', '192.168.201.0/26', 'node1', [a1, a2])], pods: [pod({ ips: ['192.168.201.10'] })] }), new Set(['node1']));
    expect(d.releases.size).toBe(0);
    expect(d.partial).toHaveLength(1);
    expect(d.partial[0]).toContain('h1');
  });
  test('leaked handles go to their node; a node not acted on is reported', () => {
    const d = decideIpam(
      api({ blocks: [block('b1', '192.168.201.0/26', 'node1', [alloc({ handle: 'h1', pod: 'gone-1' }), alloc({ ordinal: 12, ip: '192.168.201.12', handle: 'h2', pod: 'gone-2', node: 'node2' }), alloc({ ordinal: 13, ip: '192.168.201.13', handle: 'h3', pod: 'web-0' })])], pods: [pod({ ips: ['192.168.201.13'] })] }),
      new Set(['node1']),
    );
    expect([...d.releases.keys()]).toEqual(['node1']);
    expect(d.releases.get('node1')!.map((r) => r.handleID)).toEqual(['h1']);
    expect(d.releases.get('node1')![0].confirmed).toBe(false);
    expect(d.unowned).toHaveLength(1);
    expect(d.unowned[0]).toContain('h2');
  });
});

const nodeFacts = (over: Partial<NodeCalicoFacts> = {}): NodeCalicoFacts => ({ node: 'node1', veths: [], netns: [{ nsid: 0, name: 'cni-live' }, { nsid: 1, name: 'cni-leaked' }], sandboxes: [{ id: 'a'.repeat(64), namespace: 'default', name: 'web-0', state: 'SANDBOX_READY', netns: '/var/run/netns/cni-live', veth: calicoVethName('default', 'web-0') }], ...over });
const veth = (name: string, peerNetnsId: number | null, ifindex = 7) => ({ name, ifindex, peerNetnsId, operstate: 'UP', routes: [] });

describe('vethVerdict', () => {
  const p = pod();
  test('the veth of a pod on the node is kept', () => expect(vethVerdict(veth(p.veth, 0), nodeFacts(), [p]).orphan).toBe(false));
  test('a veth named after a sandbox the runtime still has is kept (no API pod)', () => expect(vethVerdict(veth(p.veth, 1), nodeFacts(), []).orphan).toBe(false));
  test('unmatched, peer in a leaked netns: orphan', () => {
    const v = vethVerdict(veth(calicoVethName('default', 'gone-x'), 1), nodeFacts(), [p]);
    expect(v.orphan).toBe(true);
    expect(v.why).toContain('cni-leaked');
  });
  test('unmatched, peer in an unnamed netns: orphan', () => expect(vethVerdict(veth(calicoVethName('default', 'gone-x'), 5), nodeFacts(), [p]).orphan).toBe(true));
  test("unmatched, but its peer is in a live sandbox's netns: kept", () => expect(vethVerdict(veth(calicoVethName('default', 'gone-x'), 0), nodeFacts(), [p]).orphan).toBe(false));
  test('a node read without its runtime: an unmatched veth is undecided, never an orphan', () => {
    expect(vethVerdict(veth(calicoVethName('default', 'gone-x'), 1), nodeFacts({ sandboxes: [], netns: [], runtimeRead: false }), [p])).toMatchObject({ orphan: false, undecided: true });
  });
  test('peer in the node itself: undecided, kept', () => {
    const v = vethVerdict(veth(calicoVethName('default', 'gone-x'), null), nodeFacts(), [p]);
    expect(v).toMatchObject({ orphan: false, undecided: true });
  });
  test("a ready sandbox whose netns the runtime does not give: a peer in a named netns is undecided", () => {
    const n = nodeFacts({ sandboxes: [{ id: 'b'.repeat(64), namespace: 'default', name: 'other', state: 'SANDBOX_READY', netns: null, veth: calicoVethName('default', 'other') }] });
    expect(vethVerdict(veth(calicoVethName('default', 'gone-x'), 1), n, [])).toMatchObject({ orphan: false, undecided: true });
    expect(vethVerdict(veth(calicoVethName('default', 'gone-x'), 9), n, []).orphan).toBe(true); // unnamed: no runtime's
  });
});

function seedFacts(): CalicoOrphansFacts {
  const web = pod({ name: 'web-0', ips: ['192.168.201.10'] });
  const db = pod({ name: 'db-0', uid: 'u-db-0', ips: ['192.168.201.12'], controller: { kind: 'StatefulSet', name: 'db', uid: 'ss-1' } });
  const bare = pod({ name: 'db-1', uid: 'u-db-1', ips: ['192.168.201.13'], controller: null });
  const flannelPod = pod({ name: 'other', uid: 'u-o', ips: ['10.244.1.5'] }); // not Calico's network
  const allocations = [
    alloc({ ordinal: 10, ip: '192.168.201.10', handle: 'k8s-pod-network.web', pod: 'web-0' }),
    alloc({ ordinal: 11, ip: '192.168.201.11', handle: 'k8s-pod-network.gone', pod: 'gone-x' }),
    alloc({ ordinal: 12, ip: '192.168.201.12', handle: 'k8s-pod-network.db0', pod: 'db-0' }),
    alloc({ ordinal: 13, ip: '192.168.201.13', handle: 'k8s-pod-network.db1', pod: 'db-1' }),
  ];
  return {
    detectedAtMs: Date.parse('2026-11-26T06:00:00Z'),
    graceMs: 15 * 60_000,
    api: api({ pods: [web, db, bare, flannelPod], blocks: [block('192-168-201-0-26', '192.168.201.0/26', 'node1', allocations)] }),
    nodes: [nodeFacts({ veths: [veth(web.veth, 0, 5), veth(calicoVethName('default', 'gone-x'), 1, 6)] }), { node: 'node2', error: 'ssh: connection refused' }],
  };
}

describe('plan', () => {
  test('the three kinds of orphan, with the grace, a bare pod reported, an unread node named', () => {
    const f = seedFacts();
    const plan = planCalicoOrphans(f, { selected: ['node1', 'node2'], excluded: [], controlPlane: [] });
    expect(plan.nodes.map((n) => n.name)).toEqual(['node1']);
    const n = plan.nodes[0];
    expect(n.releases.map((r) => r.handleID)).toEqual(['k8s-pod-network.gone']);
    expect(n.releaseNotBeforeMs).toBe(f.detectedAtMs + f.graceMs);
    expect(n.veths.map((v) => v.name)).toEqual([calicoVethName('default', 'gone-x')]);
    expect(n.restarts.map((p) => p.name)).toEqual(['db-0']);
    expect(n.reported.join()).toContain('default/db-1');
    expect(n.steps.join('\n')).toContain('2026-11-26T06:15:00.000Z');
    expect(plan.summary!.join('\n')).toContain('node2: not read');
    expect(plan.summary!.join('\n')).toContain('undo');
    // The same facts give the same plan id; another grace gives another.
    expect(planCalicoOrphans(seedFacts(), { selected: ['node1', 'node2'], excluded: [], controlPlane: [] }).id).toBe(plan.id);
    expect(planCalicoOrphans({ ...seedFacts(), graceMs: 0 }, { selected: ['node1', 'node2'], excluded: [], controlPlane: [] }).id).not.toBe(plan.id);
  });
  test('an excluded node is skipped, an unselected node acts on nothing', () => {
    expect(planCalicoOrphans(seedFacts(), { selected: ['node1'], excluded: ['node1'], controlPlane: [] })).toMatchObject({ nodes: [], skipped: [{ name: 'node1' }] });
    const p = planCalicoOrphans(seedFacts(), { selected: ['node2'], excluded: [], controlPlane: [] });
    expect(p.nodes).toEqual([]);
    expect(p.skipped).toEqual([{ name: 'node1', reason: 'not selected (--node)' }]);
    expect(p.summary!.join('\n')).toContain('k8s-pod-network.gone');
  });
  test('detect names all three kinds on the node', () => {
    const [f] = detectCalicoOrphans(seedFacts(), new Set(['node1']));
    expect(f).toMatchObject({ seed: '004', remediation: 'calico-orphans', node: 'node1', signature: '? (169.254.1.1) at <incomplete> on eth0' });
    expect(f.evidence.some((l) => l.startsWith('IPAM 192.168.201.11'))).toBe(true);
    expect(f.evidence.some((l) => l.startsWith(calicoVethName('default', 'gone-x')))).toBe(true);
    expect(f.evidence.filter((l) => l.includes('is Running on node1')).length).toBe(2);
  });
});

describe('releaseFromBlock', () => {
  const spec = () => ({
    cidr: '192.168.201.0/26',
    affinity: 'host:node1',
    allocations: [null, 0, 1, 2, null] as Array<number | null>,
    unallocated: [0, 4],
    attributes: [{ handle_id: 'h-a' }, { handle_id: 'h-gone' }, { handle_id: 'h-b' }],
  });
  test('frees the ordinals, drops the attribute and renumbers', () => {
    const r = releaseFromBlock(spec(), 'h-gone', [2]);
    if ('problem' in r) throw new Error(r.problem);
    expect(r.released).toEqual([2]);
    expect(r.spec.allocations).toEqual([null, 0, null, 1, null]);
    expect(r.spec.attributes).toEqual([{ handle_id: 'h-a' }, { handle_id: 'h-b' }]);
    expect(r.spec.unallocated).toEqual([0, 4, 2]);
    expect(r.spec.affinity).toBe('host:node1');
  });
  test('an ordinal now under another handle is kept; one already free is gone', () => {
    const r = releaseFromBlock(spec(), 'h-gone', [1, 4]);
    if ('problem' in r) throw new Error(r.problem);
    expect(r.released).toEqual([]);
    expect(r.reused).toEqual([{ ordinal: 1, handle: 'h-a' }]);
    expect(r.gone).toEqual([4]);
    expect(r.spec.allocations).toEqual(spec().allocations);
  });
  test('an ordinal outside the block is a problem', () => expect(releaseFromBlock(spec(), 'h-gone', [64])).toHaveProperty('problem'));
});

describe('problemsAfter', () => {
  test('a released handle still allocated, a deleted veth still there', () => {
    const f = seedFacts();
    const planned = planCalicoOrphans(f, { selected: ['node1'], excluded: [], controlPlane: [] }).nodes[0];
    const problems = problemsAfter(planned, { released: ['k8s-pod-network.gone'], vethsDeleted: [planned.veths[0].name] }, f);
    expect(problems).toEqual([`192.168.201.11 is still allocated to k8s-pod-network.gone`, `${planned.veths[0].name} (ifindex 6) is still there`]);
    const clean = { ...f, api: { ...f.api, blocks: [{ ...f.api.blocks[0], allocations: f.api.blocks[0].allocations.filter((a) => a.ordinal !== 11) }] }, nodes: [{ ...(f.nodes[0] as NodeCalicoFacts), veths: [] }] };
    expect(problemsAfter(planned, { released: ['k8s-pod-network.gone'], vethsDeleted: [planned.veths[0].name] }, clean)).toEqual([]);
  });
});

describe('parsers', () => {
  test('ip -j -d link, ip -j route, ip -j netns list-id', () => {
    const links = JSON.stringify([{ ifindex: 5, ifname: 'cali0123456789a', link_netnsid: 1, operstate: 'UP' }, { ifindex: 6, ifname: 'veth1', link_netnsid: 0 }, { ifindex: 7, ifname: 'calib', operstate: 'DOWN' }]);
    const routes = JSON.stringify([{ dst: '192.168.201.10', dev: 'cali0123456789a' }, { dst: 'default', dev: 'eth0' }]);
    expect(parseVeths(links, routes)).toEqual([
      { name: 'cali0123456789a', ifindex: 5, peerNetnsId: 1, operstate: 'UP', routes: ['192.168.201.10'] },
      { name: 'calib', ifindex: 7, peerNetnsId: null, operstate: 'DOWN', routes: [] },
    ]);
    expect(parseNetnsIds('[{"nsid":0,"name":"cni-1"},{"nsid":1}]')).toEqual([{ nsid: 0, name: 'cni-1' }]);
    expect(() => parseVeths('not json', '[]')).toThrow();
  });
  test('crictl inspectp -o json: the netns from containerd runtimeSpec', () => {
    const s = parseInspectp(JSON.stringify({ status: { id: 'abc', state: 'SANDBOX_READY', metadata: { name: 'web-0', namespace: 'default' } }, info: { runtimeSpec: { linux: { namespaces: [{ type: 'pid' }, { type: 'network', path: '/var/run/netns/cni-1' }] } } } }));
    expect(s).toEqual({ id: 'abc', namespace: 'default', name: 'web-0', state: 'SANDBOX_READY', netns: '/var/run/netns/cni-1', veth: calicoVethName('default', 'web-0') });
    expect(parseInspectp('{"status":{"id":"x","state":"SANDBOX_NOTREADY"}}')).toMatchObject({ netns: null, veth: null });
  });
  test('a pod and a block as the API lists them', () => {
    const p = calicoPodOf({ metadata: { name: 'db-0', namespace: 'default', uid: 'u1', ownerReferences: [{ kind: 'StatefulSet', name: 'db', uid: 's1', controller: true }] }, spec: { nodeName: 'node1' }, status: { phase: 'Running', podIP: '192.168.201.12' } });
    expect(p).toMatchObject({ controller: { kind: 'StatefulSet', name: 'db', uid: 's1' }, ips: ['192.168.201.12'], deleting: false, veth: calicoVethName('default', 'db-0') });
    const b = calicoBlockOf({ metadata: { name: 'b', resourceVersion: '42' }, spec: { cidr: '192.168.201.0/26', affinity: 'host:node1', allocations: [null, 0], attributes: [{ handle_id: 'h', secondary: { namespace: 'default', pod: 'db-0', node: 'node1' } }] } });
    expect(b).toEqual({ name: 'b', cidr: '192.168.201.0/26', affinityHost: 'node1', resourceVersion: '42', allocations: [{ ordinal: 1, ip: '192.168.201.1', handle: 'h', namespace: 'default', pod: 'db-0', node: 'node1', type: null }] });
  });
});
