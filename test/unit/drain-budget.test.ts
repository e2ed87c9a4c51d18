import { type ClusterNode, clusterHealthy, mayDisrupt } from '../../lib/budget';
import { drainDecision, type PodLike } from '../../lib/drain';

const pod = (name: string, o: { owner?: string; mirror?: boolean; emptyDir?: boolean; phase?: string; ready?: boolean } = {}): PodLike => ({
  metadata: { name, namespace: 'ns', uid: `uid-${name}`, annotations: o.mirror ? { 'kubernetes.io/config.mirror': 'x' } : {}, ownerReferences: o.owner ? [{ kind: o.owner, controller: true }] : [] },
  spec: { volumes: o.emptyDir ? [{ name: 'cache', emptyDir: {} }] : [{ name: 'cfg' }] },
  status: { phase: o.phase ?? 'Running', conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }] },
});

describe('drainDecision', () => {
  const pods = [pod('ds', { owner: 'DaemonSet' }), pod('mirror', { mirror: true }), pod('web', { owner: 'ReplicaSet' }), pod('bare'), pod('cache', { owner: 'ReplicaSet', emptyDir: true }), pod('job-done', { phase: 'Succeeded' })];
  test('as kubectl drain without options: skip DaemonSet and mirror pods, refuse bare and emptyDir pods', () => {
    const d = drainDecision(pods, { deleteEmptyDirData: false, force: false });
    expect(d.evict.map((e) => e.name)).toEqual(['web', 'job-done']);
    expect(d.skip.map((s) => s.pod)).toEqual(['ns/ds', 'ns/mirror']);
    expect(d.refuse.map((r) => r.pod)).toEqual(['ns/bare', 'ns/cache']);
    expect(d.refuse[1].why).toMatch(/emptyDir data \(cache\)/);
  });
  test('a NotReady node: its pods that are not Ready are left (already out of service, no kubelet to evict them); Ready ones are drained as anywhere', () => {
    const onDead = [pod('web-1', { owner: 'ReplicaSet', ready: false }), pod('web-2', { owner: 'ReplicaSet' }), pod('ds', { owner: 'DaemonSet', ready: false }), pod('bare', { ready: false })];
    const d = drainDecision(onDead, { deleteEmptyDirData: false, force: false }, false);
    expect(d.evict.map((e) => e.name)).toEqual(['web-2']);
    expect(d.leave.map((l) => l.pod)).toEqual(['ns/web-1', 'ns/bare']);
    expect(d.leave[0].why).toMatch(/^not Ready on a NotReady node: already out of service/);
    expect(d.skip.map((s) => s.pod)).toEqual(['ns/ds']);
    // On a Ready node an unready pod is drained as kubectl drains it.
    expect(drainDecision(onDead, { deleteEmptyDirData: false, force: false }, true)).toMatchObject({ evict: [{ name: 'web-1' }, { name: 'web-2' }], refuse: [{ pod: 'ns/bare' }], leave: [] });
  });
  test('--force and --delete-emptydir-data allow them', () => {
    const d = drainDecision(pods, { deleteEmptyDirData: true, force: true });
    expect(d.evict.map((e) => e.name)).toEqual(['web', 'bare', 'cache', 'job-done']);
    expect(d.refuse).toEqual([]);
  });
});

const node = (name: string, o: Partial<ClusterNode> = {}): ClusterNode => ({
  name, ready: 'True', readyReason: null, unschedulable: false, internalIPs: [], podCIDRs: [], machineId: null, bootId: null, kubeletVersion: null, controlPlane: false, excluded: false, taints: [], cordonedBy: null, ...o,
});

describe('mayDisrupt', () => {
  const cluster = [node('cp', { controlPlane: true }), node('w1'), node('w2')];
  test('a healthy cluster, budget 1: a worker may go', () => {
    expect(mayDisrupt(cluster, 'w1', 1)).toEqual({ ok: true });
  });
  test('the target already cordoned by this run is not counted twice', () => {
    expect(mayDisrupt([cluster[0], node('w1', { unschedulable: true, cordonedBy: 'run-1' }), cluster[2]], 'w1', 1)).toEqual({ ok: true });
  });
  test('another node cordoned by kubemend or NotReady uses the budget', () => {
    expect(mayDisrupt([cluster[0], cluster[1], node('w2', { unschedulable: true, cordonedBy: 'run-9' })], 'w1', 1)).toEqual({ ok: false, reason: expect.stringContaining('w2: cordoned by run-9') });
    expect(mayDisrupt([cluster[0], cluster[1], node('w2', { ready: 'Unknown' })], 'w1', 1)).toEqual({ ok: false, reason: expect.stringContaining('w2: Ready=Unknown') });
    expect(mayDisrupt([cluster[0], cluster[1], node('w2', { ready: 'Unknown' })], 'w1', 2)).toEqual({ ok: true });
  });
  test('a node cordoned by someone else does not count against kubemend', () => {
    expect(mayDisrupt([cluster[0], cluster[1], node('w2', { unschedulable: true })], 'w1', 1)).toEqual({ ok: true });
  });
  test('never the last Ready control-plane node', () => {
    expect(mayDisrupt(cluster, 'cp', 1)).toEqual({ ok: false, reason: 'cp is the last Ready control-plane node' });
    expect(mayDisrupt([...cluster, node('cp2', { controlPlane: true })], 'cp', 1)).toEqual({ ok: true });
  });
  test('excluded or unknown nodes are blocked', () => {
    expect(mayDisrupt([node('w1', { excluded: true })], 'w1', 1)).toEqual({ ok: false, reason: 'w1 is labelled kubemend.io/exclude=true' });
    expect(mayDisrupt(cluster, 'nope', 1)).toEqual({ ok: false, reason: 'no Node object named nope' });
  });
});

test('clusterHealthy: NotReady nodes must leave room for one more', () => {
  expect(clusterHealthy([node('a'), node('b')], 1)).toEqual({ ok: true });
  expect(clusterHealthy([node('a'), node('b', { ready: 'False' })], 1)).toEqual({ ok: false, reason: expect.stringContaining('1 node(s) NotReady (b), budget 1') });
  expect(clusterHealthy([node('a'), node('b', { ready: 'False' })], 2)).toEqual({ ok: true });
  // A NotReady node the run fixes is already out: not counted; another NotReady node still is.
  expect(clusterHealthy([node('a'), node('b', { ready: 'False' })], 1, ['b'])).toEqual({ ok: true });
  expect(clusterHealthy([node('a', { ready: 'Unknown' }), node('b', { ready: 'False' })], 1, ['b'])).toEqual({ ok: false, reason: '1 node(s) NotReady (a), budget 1: refusing to start (not counted: b, which this run fixes)' });
  expect(clusterHealthy([node('a'), node('b', { ready: 'False' })], 1, ['a'])).toEqual({ ok: false, reason: expect.stringContaining('1 node(s) NotReady (b), budget 1') });
});
