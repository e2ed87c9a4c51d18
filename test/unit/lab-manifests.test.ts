import { join } from 'node:path';
import type { KubernetesObject } from '@kubernetes/client-node';
import { readManifest } from '../lab/control-plane';
import { KUBELET_LABEL, LAB_KUBELET_POD_LABEL, labCnis, labObjects, sandboxId, WORKER_USER } from '../lab/manifests';
import type { LabNode } from '../lab/lab';
import { REPO_ROOT } from '../../worker/paths';

const rbac = readManifest(join(REPO_ROOT, 'deploy', 'rbac.yaml'));
const crds = readManifest(join(REPO_ROOT, 'test', 'lab', 'manifests', 'calico-crds.yaml'));
const labNode = (index: number): LabNode => ({
  name: `node${index}`, index, role: index === 1 ? 'control-plane' : 'worker', address: `10.213.0.${10 + index}`, port: 2200 + index,
  machineId: `m${index}`, bootMachineId: `m${index}`, bootId: `b${index}`, weaveMac: '02:00:00:00:00:00', boots: 1,
});
const nodes = [1, 2, 3].map(labNode);
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;
const find = (objs: KubernetesObject[], kind: string, name: string): Any => objs.find((o) => o.kind === kind && o.metadata?.name === name);

test('Nodes: kubeadm roles, podCIDR from the flannel lease, the lab address as InternalIP, kubelet running', () => {
  const { nodes: objs } = labObjects({ nodes, scenarios: [] }, rbac, crds);
  expect(objs.map((o) => o.metadata?.name)).toEqual(['node1', 'node2', 'node3']);
  const cp = find(objs, 'Node', 'node1');
  expect(cp.metadata.labels).toMatchObject({ 'node-role.kubernetes.io/control-plane': '', [KUBELET_LABEL]: 'running' });
  expect(cp.spec.taints).toEqual([{ key: 'node-role.kubernetes.io/control-plane', effect: 'NoSchedule' }]);
  const w = find(objs, 'Node', 'node2');
  expect(w.spec).toEqual({ podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'] });
  expect(w.status.addresses).toContainEqual({ type: 'InternalIP', address: '10.213.0.12' });
  expect(w.status.nodeInfo).toMatchObject({ machineID: 'm2', bootID: 'b2' });
});

test('nat-advertise (seed 001): only the control plane joined, and it advertises 10.0.2.15', () => {
  const { nodes: objs } = labObjects({ nodes, scenarios: ['nat-advertise'] }, rbac, crds);
  expect(objs.map((o) => o.metadata?.name)).toEqual(['node1']);
  expect((objs[0] as Any).status.addresses).toContainEqual({ type: 'InternalIP', address: '10.0.2.15' });
});

test('cloned-machine-id: the kubelets report the same machine-id', () => {
  const cloned = nodes.map((n) => ({ ...n, bootMachineId: 'same' }));
  const { nodes: objs } = labObjects({ nodes: cloned, scenarios: ['cloned-machine-id'] }, rbac, crds);
  expect(new Set(objs.map((o) => (o as Any).status.nodeInfo.machineID))).toEqual(new Set(['same']));
});

test.each([
  [[], ['flannel']],
  [['cloned-machine-id'], ['weave']],
  [['orphan-calico'], ['calico']],
  [['stale-cni', 'cloned-machine-id'], ['flannel', 'weave']],
])('CNIs for %j: %j', (scenarios, cnis) => {
  expect(labCnis(scenarios)).toEqual(cnis);
});

test('system workloads and an app with a budget', () => {
  const { workloads, setup } = labObjects({ nodes, scenarios: ['cloned-machine-id'] }, rbac, crds);
  for (const ds of ['kube-proxy', 'weave-net']) expect(find(workloads, 'DaemonSet', ds)?.metadata?.namespace).toBe('kube-system');
  expect(find(workloads, 'DaemonSet', 'kube-flannel-ds')).toBeUndefined();
  expect(find(workloads, 'Deployment', 'coredns')?.spec.replicas).toBe(2);
  expect(find(workloads, 'PodDisruptionBudget', 'web')?.spec).toEqual({ maxUnavailable: 1, selector: { matchLabels: { app: 'web' } } });
  const binding = find(setup, 'ClusterRoleBinding', 'kubemend-lab-worker');
  expect(binding.roleRef.name).toBe('kubemend');
  expect(binding.subjects).toEqual([{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: WORKER_USER }]);
  expect(find(setup, 'ClusterRole', 'kubemend')).toBeDefined();
  expect(setup.filter((o) => o.kind === 'CustomResourceDefinition').map((o) => o.metadata?.name)).toEqual(expect.arrayContaining(['ipamblocks.crd.projectcalico.org', 'ipamhandles.crd.projectcalico.org', 'blockaffinities.crd.projectcalico.org', 'ippools.crd.projectcalico.org']));
});

test("--real-flannel: the lab's kubelets run kube-flannel's pods and the Deployments' pods (the label kwok disregards); without it kwok runs them all", () => {
  const labelsOf = (o: Any) => o.spec.template.metadata.labels as Record<string, string>;
  const real = labObjects({ nodes, scenarios: [], realFlannel: true }, rbac, crds).workloads;
  for (const [kind, name] of [['DaemonSet', 'kube-flannel-ds'], ['Deployment', 'coredns'], ['Deployment', 'web']]) {
    const o = find(real, kind, name);
    expect(labelsOf(o)[LAB_KUBELET_POD_LABEL.key]).toBe(LAB_KUBELET_POD_LABEL.value);
    // The selector stays the workload's own: the label is the template's alone.
    expect(o.spec.selector.matchLabels[LAB_KUBELET_POD_LABEL.key]).toBeUndefined();
  }
  expect(labelsOf(find(real, 'DaemonSet', 'kube-proxy'))[LAB_KUBELET_POD_LABEL.key]).toBeUndefined();
  const kwok = labObjects({ nodes, scenarios: [] }, rbac, crds).workloads;
  for (const [kind, name] of [['DaemonSet', 'kube-flannel-ds'], ['Deployment', 'coredns'], ['Deployment', 'web']]) expect(labelsOf(find(kwok, kind, name))[LAB_KUBELET_POD_LABEL.key]).toBeUndefined();
});

test('orphan-calico (seed 004): one block per node, an allocation per address a pod has or had, the pods the lab kubelet runs', () => {
  const { workloads } = labObjects({ nodes, scenarios: ['orphan-calico'] }, rbac, crds);
  const block = find(workloads, 'IPAMBlock', '192-168-202-0-26');
  expect(block.spec.affinity).toBe('host:node2');
  expect(block.spec.allocations).toHaveLength(64);
  const used = block.spec.allocations.flatMap((a: number | null, i: number) => (a === null ? [] : [i]));
  expect(used).toEqual([10, 11, 12, 13, 14, 15, 16]); // 2 pods with a veth, 3 veths whose pod is gone, 2 pods without a veth
  expect(block.spec.unallocated).toHaveLength(64 - 7);
  expect(block.spec.attributes.map((a: { secondary: { pod: string } }) => a.secondary.pod)).toEqual(['web-node2-a', 'web-node2-b', 'gone-node2-x', 'gone-node2-y', 'gone-node2-z', 'db-node2-0', 'db-node2-1']);
  for (const a of block.spec.attributes) {
    expect(a.handle_id).toBe(`k8s-pod-network.${sandboxId('node2', a.secondary.pod)}`);
    expect(find(workloads, 'IPAMHandle', a.handle_id.toLowerCase())?.spec).toEqual({ handleID: a.handle_id, block: { '192.168.202.0/26': 1 } });
  }
  const pods = workloads.filter((o) => o.kind === 'Pod' && (o as Any).spec.nodeName === 'node2');
  expect(pods.map((o) => o.metadata?.name)).toEqual(['web-node2-a', 'web-node2-b', 'db-node2-1']);
  for (const p of pods) expect(p.metadata?.labels).toMatchObject({ [LAB_KUBELET_POD_LABEL.key]: LAB_KUBELET_POD_LABEL.value });
  // db-node2-0 is the pod of a StatefulSet pinned to node2, whose selector matches its own pod only (not the bare db-node2-1).
  const set = find(workloads, 'StatefulSet', 'db-node2');
  expect(set.metadata.namespace).toBe('default');
  expect(set.spec.replicas).toBe(1);
  expect(set.spec.template.spec.nodeSelector).toEqual({ 'kubernetes.io/hostname': 'node2' });
  expect(set.spec.template.spec.tolerations).toContainEqual({ key: 'node-role.kubernetes.io/control-plane', effect: 'NoSchedule' });
  expect(set.spec.template.metadata.labels).toMatchObject({ app: 'db', [LAB_KUBELET_POD_LABEL.key]: LAB_KUBELET_POD_LABEL.value, ...set.spec.selector.matchLabels });
  const bare = find(workloads, 'Pod', 'db-node2-1');
  expect(Object.entries(set.spec.selector.matchLabels).every(([k, v]) => bare.metadata.labels[k] === v)).toBe(false);
});
