import { crossCheck, type NodeLike, nodeObjectFacts } from '../../lib/node-object';

const node = (over: Partial<{ ready: string; ip: string; machineID: string; bootID: string; labels: Record<string, string>; unschedulable: boolean }> = {}): NodeLike => ({
  metadata: { name: 'n', labels: over.labels ?? {} },
  spec: { unschedulable: over.unschedulable, podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'], taints: [{ key: 'node.kubernetes.io/unschedulable', effect: 'NoSchedule' }] },
  status: {
    addresses: [{ type: 'InternalIP', address: over.ip ?? '10.213.0.12' }, { type: 'Hostname', address: 'n' }],
    conditions: over.ready === undefined ? [] : [{ type: 'MemoryPressure', status: 'False' }, { type: 'Ready', status: over.ready, reason: over.ready === 'True' ? 'KubeletReady' : 'NodeStatusUnknown' }],
    nodeInfo: { machineID: over.machineID ?? 'aa', bootID: over.bootID ?? 'b1', kubeletVersion: 'v1.34.4' },
  },
});

test('facts from a Node', () => {
  const f = nodeObjectFacts(node({ ready: 'True', labels: { 'node-role.kubernetes.io/control-plane': '', 'kubemend.io/exclude': 'true' }, unschedulable: true }));
  expect(f).toEqual({
    ready: 'True', readyReason: 'KubeletReady', unschedulable: true, internalIPs: ['10.213.0.12'], podCIDRs: ['10.244.1.0/24'],
    machineId: 'aa', bootId: 'b1', kubeletVersion: 'v1.34.4', controlPlane: true, excluded: true, taints: ['node.kubernetes.io/unschedulable:NoSchedule'],
  });
});

test('a Node the kubelet never reported on', () => {
  const f = nodeObjectFacts({ metadata: { name: 'x' } });
  expect(f.ready).toBeNull();
  expect(f.internalIPs).toEqual([]);
  expect(f.podCIDRs).toEqual([]);
  expect(f.excluded).toBe(false);
  expect(nodeObjectFacts({ metadata: { labels: { 'kubemend.io/exclude': 'yes' } } }).excluded).toBe(false); // only "true" excludes
});

describe('crossCheck', () => {
  const ok = nodeObjectFacts(node({ ready: 'True' }));
  test('agreeing views: no problems', () => {
    expect(crossCheck({ machineId: 'aa', bootId: 'b1' }, ok, [{ name: 'm', api: nodeObjectFacts(node({ ready: 'True', ip: '10.213.0.13' })) }])).toEqual([]);
  });
  test('no Node object', () => {
    expect(crossCheck({ machineId: 'aa', bootId: 'b1' }, null, [])).toEqual([expect.stringContaining('no Node object')]);
  });
  test('not Ready, stale ids, shared InternalIP', () => {
    const api = nodeObjectFacts(node({ ready: 'Unknown', ip: '10.0.2.15' }));
    const problems = crossCheck({ machineId: 'cc', bootId: 'b2' }, api, [{ name: 'm', api: nodeObjectFacts(node({ ip: '10.0.2.15' })) }, { name: 'gone', api: null }]);
    expect(problems).toEqual([
      expect.stringContaining('not Ready (Ready=Unknown, NodeStatusUnknown)'),
      expect.stringContaining('machine-id aa, the node has cc'),
      expect.stringContaining('boot id b1, the node has b2'),
      expect.stringContaining('InternalIP 10.0.2.15 is also the InternalIP of m'),
    ]);
  });
});
