import { ipamGcRestoreText, ipamGcText } from '../../cli/render';
import type { HostLocalEntry, NodeIpamListing } from '../../lib/ipam-gc';
import { planIpamGc } from '../../lib/ipam-gc-plan';
import type { IpamGcResult } from '../../workflows/ipam-gc';

const NOW = 1_800_000_000;
const GONE = 'b'.repeat(64);
const entries: HostLocalEntry[] = [
  { network: 'cbr0', name: '10.244.0.2', kind: 'reservation', containerId: 'a'.repeat(64), ifname: 'eth0', lines: 2, mtime: NOW - 60 },
  { network: 'cbr0', name: '10.244.0.3', kind: 'reservation', containerId: GONE, ifname: 'eth0', lines: 2, mtime: NOW - 3600 },
];
const listing: NodeIpamListing = { now: NOW, networks: ['cbr0'], entries, sandboxes: ['a'.repeat(64)], containers: [], ranges: { cbr0: [{ subnet: '10.244.0.0/24' }] }, problems: [] };
const plan = planIpamGc({ nodes: [{ node: 'node1', listing }, { node: 'node2', error: 'SshTransient: cannot connect' }] }, { graceS: 0, selected: ['node1', 'node2'], excluded: [], controlPlane: [], runTag: 'ipam-gc-lab-1' });
const base: IpamGcResult = { cluster: 'lab', remediation: 'ipam-gc', outcome: 'planned (dry run)', planId: plan.id, plan, approvedBy: null, findings: [], nodes: [], remaining: [] };

test('the dry run: per network capacity, in use, leaked, candidates; every candidate with its container and age; the skipped node', () => {
  const text = ipamGcText(base, 'ipam-gc-lab-1');
  expect(text).toMatch(/^ipam-gc on cluster lab: planned \(dry run\)\n {2}NODE +NETWORK +CAPACITY +IN USE +LEAKED +CANDIDATES\n {2}node1 +cbr0 +253 +2 +1 +1\n/);
  expect(text).toContain(`  candidates on node1 cbr0 (1):\n    10.244.0.3       container ${GONE.slice(0, 12)}  age 3600 s\n`);
  expect(text).toContain('  skipped: node2 (unreachable: SshTransient: cannot connect)\n');
  expect(text).not.toContain('to put them back:');
});

test('the fixed run: released per network, and the restore command', () => {
  const fixed: IpamGcResult = {
    ...base,
    outcome: 'fixed',
    approvedBy: 'sre',
    nodes: [{ name: 'node1', releasedCount: 1, quarantine: '/var/lib/kubemend/ipam-quarantine/ipam-gc-lab-1', networks: [{ network: 'cbr0', releasedCount: 1, alreadyCount: 0, kept: [{ ip: '10.244.0.9', containerId: GONE, reason: 'live' }], keptCount: 1, goneCount: 0 }], uncordoned: false, resumed: [] }],
  };
  const text = ipamGcText(fixed, 'ipam-gc-lab-1');
  expect(text).toContain('  node1: released 1 address(es) into /var/lib/kubemend/ipam-quarantine/ipam-gc-lab-1\n    cbr0: released 1, kept 1 (live), gone meanwhile 0\n');
  expect(text).toContain('  to put them back: kubemend ipam-gc restore ipam-gc-lab-1\n');
  expect(text).not.toContain('candidates on');
});

test('the restore: per node and network, refused addresses with their holder', () => {
  const text = ipamGcRestoreText({
    cluster: 'lab',
    gcRunId: 'ipam-gc-lab-1',
    nodes: [
      { name: 'node1', networks: [{ network: 'cbr0', restored: [{ ip: '10.244.0.3', containerId: GONE }], refused: [{ ip: '10.244.0.4', containerId: GONE, holder: 'c'.repeat(64) }], missing: 0 }] },
      { name: 'node2', networks: [] },
      { name: 'node3', error: 'SshTransient: cannot connect' },
    ],
  });
  expect(text).toBe(
    'ipam-gc restore of ipam-gc-lab-1 on cluster lab\n  node1 cbr0: restored 1, refused 1 (in use again)\n    refused 10.244.0.4: held by container cccccccccccc\n  node2: nothing in the quarantine\n  node3: ERROR SshTransient: cannot connect\n',
  );
});
