/** The lab's CNI runtime, its pure parts: pod references, flannel's delegate config, subnets. */
import { flannelDelegate, maskCidr, netnsName, parsePodRef } from '../lab/cni';

const SUBNET_ENV = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';

test("flannel's delegate: bridge over host-local on FLANNEL_SUBNET, the conflist's delegate keys kept", () => {
  expect(flannelDelegate({ name: 'cbr0', cniVersion: '0.3.1' }, { type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true } }, SUBNET_ENV)).toEqual({
    name: 'cbr0',
    cniVersion: '0.3.1',
    type: 'bridge',
    hairpinMode: true,
    isDefaultGateway: true,
    isGateway: true,
    ipMasq: false,
    mtu: 1450,
    ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.1.0/24' }]], routes: [{ dst: '10.244.0.0/16' }] },
  });
});

test('flannel delegation: a subnet.env without a lease is refused; a flanneld that does not masquerade leaves it to bridge', () => {
  expect(() => flannelDelegate({ name: 'cbr0', cniVersion: '0.3.1' }, { type: 'flannel' }, 'FLANNEL_NETWORK=10.244.0.0/16\n')).toThrow('FLANNEL_SUBNET is missing');
  expect(flannelDelegate({ name: 'cbr0', cniVersion: '0.3.1' }, { type: 'flannel' }, SUBNET_ENV.replace('IPMASQ=true', 'IPMASQ=false'))).toMatchObject({ type: 'bridge', ipMasq: true });
  expect(flannelDelegate({ name: 'cbr0', cniVersion: '0.3.1' }, { type: 'flannel', delegate: { ipMasq: false } }, SUBNET_ENV.replace('IPMASQ=true', 'IPMASQ=false'))).toMatchObject({ ipMasq: false });
});

test('maskCidr clears host bits', () => {
  expect(maskCidr('10.244.1.1/24')).toBe('10.244.1.0/24');
  expect(maskCidr('10.244.130.77/17')).toBe('10.244.128.0/17');
  expect(maskCidr('192.168.1.1/32')).toBe('192.168.1.1/32');
  expect(() => maskCidr('fd00::1/64')).toThrow('not an IPv4 CIDR');
});

test('pod references: <namespace>/<name>, DNS-1123, anything else named as <pod>', () => {
  expect(parsePodRef('kube-system/coredns-7db6d8ff4d-x2x5n')).toEqual({ namespace: 'kube-system', name: 'coredns-7db6d8ff4d-x2x5n' });
  for (const bad of ['web', 'a/b/c', 'Default/web', 'default/x;rm -rf /', 'default/', '/web', 'default/web;K8S_POD_NAME=x']) expect(() => parsePodRef(bad)).toThrow(/^<pod>: /);
});

test("a sandbox's netns is cni-<uuid> from its id, as containerd names them", () => {
  expect(netnsName('805b0dbdcffc5836eafd76164a2b885b7a9e1d1c2a3b4c5d6e7f8091a2b3c4d5')).toBe('cni-805b0dbd-cffc-5836-eafd-76164a2b885b');
});
