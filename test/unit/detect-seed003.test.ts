import { detectStaleCni, LEAK_GRACE_S } from '../../lib/detect/seed003-stale-cni';
import { factsOf } from '../helpers/diagnose-fixtures';

test('seed 003, SSH facts only: cni0 outside the subnet host-local allocates from, subnet.env missing', () => {
  const found = detectStaleCni(factsOf('ssh-all-five')).filter((x) => x.remediation === 'stale-cni');
  expect(found.map((x) => x.node)).toEqual(['node1', 'node2', 'node3']);
  expect(found[1]).toEqual({
    seed: '003',
    remediation: 'stale-cni',
    node: 'node2',
    signature: '"cni0" already has an IP address different from the node\'s pod subnet',
    evidence: ['cni0 has 10.244.102.1/24, but every host-local reservation in /var/lib/cni/networks/cbr0 is outside 10.244.102.0/24 (e.g. 10.244.1.10)', '/run/flannel/subnet.env is missing'],
    fixable: true,
  });
});

test(`seed 003: host-local files younger than ${LEAK_GRACE_S} s are not called leaked (read right after the lab came up)`, () => {
  expect(detectStaleCni(factsOf('ssh-all-five')).filter((x) => x.remediation === 'ipam-gc')).toEqual([]);
});

test('seed 003: the same files read an hour later are leaked, except the three live sandboxes', () => {
  const f = factsOf('ssh-all-five');
  for (const n of f.nodes) n.now = n.now! + 3600;
  const gc = detectStaleCni(f).filter((x) => x.remediation === 'ipam-gc');
  expect(gc.map((x) => x.node)).toEqual(['node1', 'node2', 'node3']);
  expect(gc[1].evidence[0]).toBe('250 of 253 files in /var/lib/cni/networks/cbr0 name a container that no live sandbox has (crictl pods -q, crictl ps -a -q list 14)');
  expect(gc[1].fixable).toBe(true);
});

test('seed 003 on a healthy lab: nothing', () => {
  expect(detectStaleCni(factsOf('ssh-healthy'))).toEqual([]);
});

test("seed 003 leaves a missing subnet.env to seed 002 when the node has no default route (flanneld cannot start)", () => {
  const f = factsOf('ssh-no-default-route');
  expect(f.nodes[0].subnetEnv).toBeNull();
  expect(detectStaleCni(f)).toEqual([]);
});
