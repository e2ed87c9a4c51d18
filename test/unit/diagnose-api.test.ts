import { apiFacts, cniOf, nthAddress } from '../../lib/diagnose-api';
import { calicoVethName } from '../../lib/calico';

test('CNI DaemonSets and pods by the names their manifests use', () => {
  expect(['kube-flannel-ds', 'kube-flannel-ds-x7k2p', 'flannel', 'calico-node', 'calico-node-5rhk6', 'weave-net', 'weave-net-3wk9h', 'calico-kube-controllers-5f6cfd688c-fcfnj', 'kube-proxy-8qkvn'].map(cniOf)).toEqual(['flannel', 'flannel', 'flannel', 'calico', 'calico', 'weave', 'weave', null, null]);
});

test('an IPAM block allocation ordinal is an address in the block', () => {
  expect(nthAddress('192.168.201.0/26', 10)).toBe('192.168.201.10');
  expect(nthAddress('10.0.255.192/26', 63)).toBe('10.0.255.255');
  expect(nthAddress('nope', 1)).toBeNull();
});

test("seed 001's calico-node (describe pod): its autodetection and its waiting state become facts; Calico pods get their veth names", () => {
  const f = apiFacts({
    nodes: [],
    daemonSets: [{ metadata: { namespace: 'kube-system', name: 'calico-node' }, spec: { template: { spec: { containers: [{ name: 'calico-node', env: [{ name: 'IP', value: 'autodetect' }, { name: 'IP_AUTODETECTION_METHOD', value: 'can-reach=192.178.33.110' }] }] } } } }],
    pods: [
      { metadata: { namespace: 'kube-system', name: 'calico-node-5rhk6' }, spec: { nodeName: 'worker1', hostNetwork: true }, status: { phase: 'Running', containerStatuses: [{ ready: false, restartCount: 7, state: { waiting: { reason: 'CrashLoopBackOff', message: 'back-off 5m0s restarting failed container' } } }] } },
      { metadata: { namespace: 'default', name: 'web-0' }, spec: { nodeName: 'worker1' }, status: { phase: 'Running', podIP: '192.168.1.5' } },
    ],
    ipamBlocks: null,
    ipamHandles: null,
    blockAffinities: null,
  });
  expect(f.calicoAutodetection).toEqual({ daemonSet: 'kube-system/calico-node', method: 'can-reach=192.178.33.110' });
  expect(f.cniPods).toEqual([{ cni: 'calico', namespace: 'kube-system', name: 'calico-node-5rhk6', node: 'worker1', phase: 'Running', ready: false, restarts: 7, waitingReason: 'CrashLoopBackOff', message: 'back-off 5m0s restarting failed container', lastLog: null }]);
  expect(f.pods).toEqual([{ namespace: 'default', name: 'web-0', node: 'worker1', phase: 'Running', hostNetwork: false, podIP: '192.168.1.5', calicoVeth: calicoVethName('default', 'web-0') }]);
  expect(f.calicoIpam).toBeNull(); // CRDs not installed
});
