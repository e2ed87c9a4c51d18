import { detectNatAdvertise, sharedHostAddresses } from '../../lib/detect/seed001-nat-advertise';
import { factsOf } from '../helpers/diagnose-fixtures';

test('seed 001, SSH facts only: the control plane advertises the NAT address every node has; the workers never joined', () => {
  const f = factsOf('ssh-all-five');
  expect([...sharedHostAddresses(f)]).toEqual([['10.0.2.15', ['node1/enp0s3', 'node2/enp0s3', 'node3/enp0s3']]]);
  const found = detectNatAdvertise(f);
  expect(found.map((x) => [x.node, x.signature])).toEqual([
    ['node1', 'dial tcp 10.0.2.15:6443: connect: connection refused'],
    ['node2', 'dial tcp 10.0.2.15:6443: connect: connection refused'],
    ['node3', 'dial tcp 10.0.2.15:6443: connect: connection refused'],
  ]);
  expect(found[0].evidence).toEqual([
    'kube-apiserver --advertise-address=10.0.2.15 (/etc/kubernetes/manifests/kube-apiserver.yaml)',
    '10.0.2.15 is on node1 on enp0s3, node2 on enp0s3, node3 on enp0s3',
    'node2 never joined (no Node object, no /etc/kubernetes/kubelet.conf)',
    'node3 never joined (no Node object, no /etc/kubernetes/kubelet.conf)',
  ]);
  expect(found[1].evidence).toEqual(['never joined: not known to the API, no /etc/kubernetes/kubelet.conf', 'the control plane node1 advertises 10.0.2.15, which this node has too']);
  expect(found.every((x) => x.remediation === 'node-address' && x.fixable)).toBe(true);
});

test('seed 001 on a healthy lab: every node has 10.0.2.15 (VirtualBox NAT), but nothing advertises it: nothing', () => {
  const f = factsOf('ssh-healthy');
  expect(sharedHostAddresses(f).has('10.0.2.15')).toBe(true);
  expect(detectNatAdvertise(f)).toEqual([]);
});

test('seed 001 after node2 joined by the right address: its kubelet took the NAT address too, so two Nodes share an InternalIP', () => {
  const found = detectNatAdvertise(factsOf('cp-nat-advertise-node2-joined'));
  expect(found.map((x) => [x.node, x.signature])).toEqual([
    ['node1', 'dial tcp 10.0.2.15:6443: connect: connection refused'],
    ['node2', 'INTERNAL-IP 10.0.2.15 on 2 Nodes'],
    ['node3', 'dial tcp 10.0.2.15:6443: connect: connection refused'],
  ]);
  expect(found[0].evidence).toContain('node3 never joined (no Node object, no /etc/kubernetes/kubelet.conf)');
  expect(found[0].evidence).toContain('Node node1 has InternalIP 10.0.2.15, as node2');
  expect(found[1].evidence).toEqual(['Node node2 has InternalIP 10.0.2.15, as node1']);
});

test('seed 001 on a healthy lab with its control plane (InternalIPs on the host-only network): nothing', () => {
  expect(detectNatAdvertise(factsOf('cp-healthy'))).toEqual([]);
});
