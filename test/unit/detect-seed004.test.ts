import { calicoVethName } from '../../lib/calico';
import { detectOrphanCalico } from '../../lib/detect/seed004-orphan-calico';
import { factsOf } from '../helpers/diagnose-fixtures';

test('seed 004 on the lab: IPAM and veths of the gone pods on every node; on the joined node, running pods without a veth', () => {
  const found = detectOrphanCalico(factsOf('cp-all-five'));
  expect(found.map((x) => [x.node, x.remediation, x.fixable])).toEqual([
    ['node1', 'calico-orphans', true],
    ['node2', 'calico-orphans', true],
    ['node3', 'calico-orphans', true],
  ]);
  for (const x of found) {
    const node = x.node;
    for (const gone of ['x', 'y', 'z']) {
      expect(x.evidence).toContainEqual(expect.stringMatching(new RegExp(`^IPAM 192\\.168\\.20\\d\\.1\\d \\(block 192\\.168\\.20\\d\\.0/26, handle k8s-pod-network\\.[0-9a-f]{64}\\) is allocated to default/gone-${node}-${gone}, which does not exist$`)));
      expect(x.evidence).toContain(`${calicoVethName('default', `gone-${node}-${gone}`)} matches no pod on ${node}`);
    }
    // The pods that have their veth are not named.
    expect(x.evidence.join('\n')).not.toContain(calicoVethName('default', `web-${node}-a`));
  }
  // Only node1 joined (seed 001), so only its pods run: the two without a veth are named.
  expect(found[0].signature).toBe('? (169.254.1.1) at <incomplete> on eth0');
  expect(found[0].evidence).toContain(`default/db-node1-0 is Running on node1 but has no ${calicoVethName('default', 'db-node1-0')}`);
  expect(found[1].signature).toBe('calico IPAM allocations and cali veths without a pod');
});

test('seed 004 without Calico (healthy lab: the CRDs exist, no calico-node, no blocks): nothing', () => {
  const f = factsOf('cp-healthy');
  expect(f.api?.calicoIpam?.blocks).toEqual([]);
  expect(detectOrphanCalico(f)).toEqual([]);
});

test('seed 004 needs the API: with SSH facts only it says nothing rather than guess', () => {
  expect(detectOrphanCalico(factsOf('ssh-all-five'))).toEqual([]);
});
