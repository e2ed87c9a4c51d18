import { detectAll } from '../../lib/detect/index';
import { factsOf } from '../helpers/diagnose-fixtures';

test('a healthy lab with its control plane: no finding from any detector', () => {
  expect(detectAll(factsOf('cp-healthy'))).toEqual([]);
  expect(detectAll(factsOf('ssh-healthy'))).toEqual([]);
});

test('all five scenarios with the control plane: each seed on the nodes it was injected on, by seed then node', () => {
  const found = detectAll(factsOf('cp-all-five'));
  expect(found.map((f) => `${f.seed} ${f.remediation} ${f.node}`)).toEqual([
    '000 machine-id node1', '000 machine-id node2', '000 machine-id node3',
    '001 node-address node1', '001 node-address node2', '001 node-address node3',
    '002 default-route node1',
    '003 stale-cni node1', '003 ipam-gc node1', '003 stale-cni node2', '003 ipam-gc node2', '003 stale-cni node3', '003 ipam-gc node3',
    '004 calico-orphans node1', '004 calico-orphans node2', '004 calico-orphans node3',
  ]);
  const gc = found.find((f) => f.remediation === 'ipam-gc' && f.node === 'node1')!;
  expect(gc.signature).toBe('no IP addresses available in network: cbr0');
  expect(gc.evidence[1]).toBe('the range 10.244.0.0/24 has 253 addresses; 253 are reserved: none is free');
  const stale = found.find((f) => f.remediation === 'stale-cni' && f.node === 'node1')!;
  expect(stale.signature).toBe('"cni0" already has an IP address different from 10.244.0.1/24');
  const cp = found.find((f) => f.seed === '001' && f.node === 'node1')!;
  expect(cp.evidence).toContain('kube-system/calico-node IP_AUTODETECTION_METHOD is not set (first-found), and 10.0.2.15 is on node1 on enp0s3, node2 on enp0s3, node3 on enp0s3');
});
