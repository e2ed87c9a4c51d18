/**
 * The objects a lab's control plane starts with, derived from the lab's nodes and
 * scenarios (pure: unit-tested in test/unit/lab-manifests.test.ts):
 *  - setup: kubemend's ClusterRole from deploy/rbac.yaml as shipped, bound to the lab
 *    worker's user; Calico's CRDs; namespaces;
 *  - nodes: one Node per lab node, as the kubelet registers it (addresses, podCIDR,
 *    machine and boot ids, kubeadm's labels and taint);
 *  - workloads: the seeds' system DaemonSets and Deployments, an app Deployment with a
 *    PodDisruptionBudget, and Calico's IPAM objects in KDD mode.
 */
import { createHash } from 'node:crypto';
import type { KubernetesObject } from '@kubernetes/client-node';
import type { LabState } from './lab';
import { calicoPodIp, calicoPods, joinedAtUp, kubeletsOnNat, NAT_ADDRESS, podCidrPrefix } from './topology';

/** The lab worker's certificate user; deploy/rbac.yaml's ClusterRole is all it is granted. */
export const WORKER_USER = 'kubemend-worker';
/** kwok plays the kubelet of Nodes labelled running (see control-plane.ts). */
export const KUBELET_LABEL = 'lab.kubemend.io/kubelet';
/**
 * Pods whose kubelet is the lab's own, not kwok: kwok is told to disregard pods with this
 * label (control-plane.ts). orphan-calico's web and db pods carry it (pod-kubelet.ts), calico-node's
 * under seed 001 (calico-node.ts), and with --real-flannel kube-flannel's (flannel-kubelet.ts) and
 * the Deployments' (coredns, demo/web: pod-kubelet.ts, real sandboxes).
 */
export const LAB_KUBELET_POD_LABEL = { key: 'lab.kubemend.io/kubelet-pods', value: 'lab' };
export const KUBERNETES_VERSION = 'v1.34.4';
export const APP_NAMESPACE = 'demo';

export interface ClusterObjects {
  setup: KubernetesObject[];
  nodes: KubernetesObject[];
  workloads: KubernetesObject[];
}

type Obj = KubernetesObject & Record<string, unknown>;

/** Which CNI's DaemonSet and objects the lab's API shows (the nodes carry every CNI's artifacts). */
export function labCnis(scenarios: readonly string[]): Array<'flannel' | 'weave' | 'calico'> {
  const cnis: Array<'flannel' | 'weave' | 'calico'> = [];
  if (scenarios.includes('cloned-machine-id')) cnis.push('weave'); // seed 000 ran Weave Net
  if (scenarios.includes('orphan-calico') || kubeletsOnNat(scenarios)) cnis.push('calico'); // seeds 001 and 004 ran Calico
  if (cnis.length === 0 || scenarios.includes('stale-cni') || scenarios.includes('no-default-route')) cnis.unshift('flannel'); // seeds 002, 003
  return cnis;
}

export function labObjects(state: Pick<LabState, 'nodes' | 'scenarios' | 'realFlannel'>, rbac: KubernetesObject[], calicoCrds: KubernetesObject[]): ClusterObjects {
  const cnis = labCnis(state.scenarios);
  const ns = (name: string): Obj => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
  const setup: KubernetesObject[] = [
    ...rbac,
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: 'kubemend-lab-worker' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'kubemend' },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: WORKER_USER }],
    } as Obj,
    ...calicoCrds,
    ns(APP_NAMESPACE),
    ...(cnis.includes('flannel') ? [ns(FLANNEL_NAMESPACE)] : []),
  ];
  // A node that never joined (seed 001's workers) has no Node object until `kubeadm join` works.
  const joined = state.nodes.filter((n) => joinedAtUp(state.scenarios, n.role));
  return { setup, nodes: joined.map((n) => nodeObject(n, state.scenarios)), workloads: workloads(state, cnis) };
}

/** The Node a lab node's kubelet registers. */
export function nodeObject(n: LabState['nodes'][number], scenarios: readonly string[]): Obj {
  const cidr = `${podCidrPrefix(n.index)}.0/24`;
  // seed 001: kubeadm and the kubelet took the NAT address, the same on every node.
  const internalIp = kubeletsOnNat(scenarios) ? NAT_ADDRESS.split('/')[0] : n.address;
  const resources = { cpu: '2', memory: '4Gi', pods: '110', 'ephemeral-storage': '20Gi' };
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: n.name,
      labels: {
        'kubernetes.io/hostname': n.name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        ...(n.role === 'control-plane' ? { 'node-role.kubernetes.io/control-plane': '', 'node.kubernetes.io/exclude-from-external-load-balancers': '' } : {}),
        [KUBELET_LABEL]: 'running',
      },
      annotations: { 'kubeadm.alpha.kubernetes.io/cri-socket': 'unix:///var/run/containerd/containerd.sock', 'node.alpha.kubernetes.io/ttl': '0' },
    },
    spec: { podCIDR: cidr, podCIDRs: [cidr], ...(n.role === 'control-plane' ? { taints: [{ key: 'node-role.kubernetes.io/control-plane', effect: 'NoSchedule' }] } : {}) },
    status: {
      addresses: [
        { type: 'InternalIP', address: internalIp },
        { type: 'Hostname', address: n.name },
      ],
      capacity: resources,
      allocatable: resources,
      nodeInfo: {
        machineID: n.bootMachineId,
        systemUUID: '',
        bootID: n.bootId,
        kernelVersion: '6.1.0-lab',
        osImage: 'Debian GNU/Linux 12 (bookworm)',
        containerRuntimeVersion: 'containerd://1.7.24',
        kubeletVersion: KUBERNETES_VERSION,
        kubeProxyVersion: '',
        operatingSystem: 'linux',
        architecture: 'amd64',
      },
    },
  };
}

const container = (name: string, image: string) => ({ name, image, resources: { requests: { cpu: '10m', memory: '16Mi' } } });

/** kube-flannel.yml's names: the DaemonSet kube-flannel-ds in kube-flannel, its container kube-flannel. */
export const FLANNEL_NAMESPACE = 'kube-flannel';
export const FLANNEL_DAEMONSET = 'kube-flannel-ds';
export const FLANNEL_CONTAINER = 'kube-flannel';
/** The label every lab DaemonSet's pods carry (k8s-app=<DaemonSet name>). */
export const FLANNEL_POD_LABEL = { key: 'k8s-app', value: FLANNEL_DAEMONSET };

function daemonSet(namespace: string, name: string, image: string, containerSpec: Record<string, unknown> = container(name, image)): Obj {
  const labels = { 'k8s-app': name };
  return {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: { namespace, name, labels },
    spec: {
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: { hostNetwork: true, priorityClassName: 'system-node-critical', tolerations: [{ operator: 'Exists' }], containers: [containerSpec] },
      },
    },
  };
}

/** calico.yaml's names: the DaemonSet calico-node in kube-system, its container calico-node. */
export const CALICO_NODE_DAEMONSET = 'calico-node';
export const CALICO_NODE_CONTAINER = 'calico-node';
export const CALICO_NODE_IMAGE = 'docker.io/calico/node:v3.29.3';

/**
 * Whether the lab's own kubelet runs calico-node's pods (calico-node.ts): under seed 001's
 * scenarios, where its IP autodetection is the point. With orphan-calico in the lab, kwok
 * keeps running them as seed 004's lab always has.
 */
export const labRunsCalicoNode = (scenarios: readonly string[]) => kubeletsOnNat(scenarios) && !scenarios.includes('orphan-calico');

/**
 * calico-node as Calico v3.29's calico.yaml has it, cut to what the lab reads: the env of its
 * IP autodetection (IP=autodetect, IP_AUTODETECTION_METHOD unset: first-found), its probes,
 * the rolling update one node at a time. Its pods carry LAB_KUBELET_POD_LABEL, so kwok leaves
 * them to the lab's kubelet. One addition: terminationMessagePolicy FallbackToLogsOnError, so a
 * crashed start's last log lines show in lastState.terminated.message.
 */
export function calicoNodeDaemonSet(): Obj {
  const labels = { 'k8s-app': CALICO_NODE_DAEMONSET };
  const env = [
    { name: 'DATASTORE_TYPE', value: 'kubernetes' },
    { name: 'WAIT_FOR_DATASTORE', value: 'true' },
    { name: 'NODENAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
    { name: 'CALICO_NETWORKING_BACKEND', value: 'bird' },
    { name: 'CLUSTER_TYPE', value: 'k8s,bgp' },
    { name: 'IP', value: 'autodetect' },
    { name: 'CALICO_IPV4POOL_IPIP', value: 'Always' },
    { name: 'CALICO_IPV4POOL_CIDR', value: '192.168.0.0/16' },
    { name: 'FELIX_IPV6SUPPORT', value: 'false' },
    { name: 'FELIX_HEALTHENABLED', value: 'true' },
  ];
  const probe = (args: string[], extra: Record<string, number>) => ({ exec: { command: ['/bin/calico-node', ...args] }, periodSeconds: 10, timeoutSeconds: 10, ...extra });
  return {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: { namespace: 'kube-system', name: CALICO_NODE_DAEMONSET, labels },
    spec: {
      selector: { matchLabels: labels },
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } },
      template: {
        metadata: { labels: { ...labels, [LAB_KUBELET_POD_LABEL.key]: LAB_KUBELET_POD_LABEL.value } },
        spec: {
          hostNetwork: true,
          priorityClassName: 'system-node-critical',
          tolerations: [{ effect: 'NoSchedule', operator: 'Exists' }, { key: 'CriticalAddonsOnly', operator: 'Exists' }, { effect: 'NoExecute', operator: 'Exists' }],
          terminationGracePeriodSeconds: 0,
          containers: [
            {
              name: CALICO_NODE_CONTAINER,
              image: CALICO_NODE_IMAGE,
              env,
              securityContext: { privileged: true },
              resources: { requests: { cpu: '250m' } },
              livenessProbe: probe(['-felix-live', '-bird-live'], { initialDelaySeconds: 10, failureThreshold: 6 }),
              readinessProbe: probe(['-felix-ready', '-bird-ready'], {}),
              terminationMessagePolicy: 'FallbackToLogsOnError',
            },
          ],
        },
      },
    },
  };
}

function deployment(namespace: string, name: string, replicas: number, image: string, extra: Record<string, unknown> = {}): Obj {
  const labels = { app: name };
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { namespace, name, labels },
    spec: { replicas, selector: { matchLabels: labels }, template: { metadata: { labels }, spec: { containers: [container(name, image)], terminationGracePeriodSeconds: 5, ...extra } } },
  };
}

/** The pod template's labels gain LAB_KUBELET_POD_LABEL: the lab's kubelets run its pods, not kwok. */
function labKubeletRuns(o: Obj): Obj {
  const template = (o.spec as { template: { metadata: { labels: Record<string, string> } } }).template;
  template.metadata.labels = { ...template.metadata.labels, [LAB_KUBELET_POD_LABEL.key]: LAB_KUBELET_POD_LABEL.value };
  return o;
}

function workloads(state: Pick<LabState, 'nodes' | 'scenarios' | 'realFlannel'>, cnis: Array<'flannel' | 'weave' | 'calico'>): KubernetesObject[] {
  const real = state.realFlannel ? labKubeletRuns : (o: Obj) => o;
  const out: Obj[] = [daemonSet('kube-system', 'kube-proxy', `registry.k8s.io/kube-proxy:${KUBERNETES_VERSION}`)];
  // With --real-flannel the lab's kubelet runs this container as the real flanneld (flannel-kubelet.ts):
  // the image is the release it runs, and a crash's termination message is the tail of its log
  // (FallbackToLogsOnError: flanneld writes no termination-log file), so the pod's status says why.
  if (cnis.includes('flannel')) {
    const image = 'ghcr.io/flannel-io/flannel:v0.28.10';
    out.push(real(daemonSet(FLANNEL_NAMESPACE, FLANNEL_DAEMONSET, image, { ...container(FLANNEL_CONTAINER, image), terminationMessagePolicy: 'FallbackToLogsOnError' })));
  }
  if (cnis.includes('weave')) out.push(daemonSet('kube-system', 'weave-net', 'weaveworks/weave-kube:2.8.1'));
  if (cnis.includes('calico')) out.push(labRunsCalicoNode(state.scenarios) ? calicoNodeDaemonSet() : daemonSet('kube-system', CALICO_NODE_DAEMONSET, CALICO_NODE_IMAGE));
  // kubeadm's CoreDNS: two replicas that may run on the control plane.
  const cpToleration = [{ key: 'node-role.kubernetes.io/control-plane', effect: 'NoSchedule' }, { key: 'CriticalAddonsOnly', operator: 'Exists' }];
  const coredns = deployment('kube-system', 'coredns', 2, 'registry.k8s.io/coredns/coredns:v1.12.1', { tolerations: cpToleration, priorityClassName: 'system-cluster-critical' });
  (coredns.metadata as { labels: Record<string, string> }).labels = { 'k8s-app': 'kube-dns' };
  out.push(real(coredns));
  // An application with a budget: drains must evict its pods one at a time.
  const workers = state.nodes.filter((n) => n.role === 'worker').length;
  out.push(real(deployment(APP_NAMESPACE, 'web', Math.max(2, workers), 'nginx:1.27')));
  out.push({ apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', metadata: { namespace: APP_NAMESPACE, name: 'web' }, spec: { maxUnavailable: 1, selector: { matchLabels: { app: 'web' } } } });
  if (cnis.includes('calico')) out.push(...calicoObjects(state));
  return out;
}

const podsOf = (state: Pick<LabState, 'nodes' | 'scenarios'>) => state.nodes.map((n) => ({ node: n, pods: calicoPods(n.name) }));

/**
 * Calico in KDD mode: the default pool, one affine /26 block per node, and an allocation
 * with its handle for every pod that has an address on the node (calicoSeedAddresses): the
 * pods with a veth, the pods that are gone but whose veth and address remain, and the pods
 * that run without their veth (seed 004). The lab's kubelet (pod-kubelet.ts) runs these
 * pods: web-<node>-a/b and db-<node>-1 are bare pods bound to their node, db-<node>-0 is the
 * one pod of the StatefulSet db-<node>, pinned to the node, so an eviction has it recreated there.
 */
function calicoObjects(state: Pick<LabState, 'nodes' | 'scenarios'>): Obj[] {
  const crd = (kind: string, name: string, spec: Record<string, unknown>): Obj => ({ apiVersion: 'crd.projectcalico.org/v1', kind, metadata: { name }, spec });
  const out: Obj[] = [
    crd('IPPool', 'default-ipv4-ippool', { cidr: '192.168.0.0/16', blockSize: 26, ipipMode: 'Always', vxlanMode: 'Never', natOutgoing: true, nodeSelector: 'all()' }),
    crd('IPAMConfig', 'default', { autoAllocateBlocks: true, strictAffinity: false }),
    crd('ClusterInformation', 'default', { clusterType: 'k8s,bgp,kubeadm,kdd', calicoVersion: 'v3.29.3', datastoreReady: true }),
  ];
  if (!state.scenarios.includes('orphan-calico')) return out;
  for (const { node, pods } of podsOf(state)) {
    const cidr = calicoBlockCidr(node.index);
    const blockName = calicoBlockName(node.index);
    const allocations: Array<number | null> = Array.from({ length: 64 }, () => null);
    const attributes: Array<{ handle_id: string; secondary: Record<string, string> }> = [];
    for (const { pod, ip } of calicoSeedAddresses(node)) {
      const handle = calicoHandleId(sandboxId(node.name, pod));
      allocations[Number(ip.split('.')[3])] = attributes.length;
      attributes.push({ handle_id: handle, secondary: { namespace: pods.namespace, node: node.name, pod, timestamp: '2026-01-01 00:00:00 +0000 UTC' } });
      out.push(crd('IPAMHandle', handle.toLowerCase(), { handleID: handle, block: { [cidr]: 1 } }));
    }
    out.push(crd('BlockAffinity', `${node.name}-${blockName}`, { cidr, node: node.name, state: 'confirmed', deleted: 'false' }));
    out.push(crd('IPAMBlock', blockName, { cidr, affinity: `host:${node.name}`, strictAffinity: false, allocations, unallocated: allocations.flatMap((a, i) => (a === null ? [i] : [])), attributes }));
    const labels = (pod: string) => ({ app: pod.replace(/-.*/, ''), [LAB_KUBELET_POD_LABEL.key]: LAB_KUBELET_POD_LABEL.value });
    const podSpec = { containers: [container('app', 'nginx:1.27')], terminationGracePeriodSeconds: 5 };
    const [owned, ...bare] = pods.withoutVeth;
    for (const pod of [...pods.withVeth, ...bare]) {
      out.push({ apiVersion: 'v1', kind: 'Pod', metadata: { namespace: pods.namespace, name: pod, labels: labels(pod) }, spec: { nodeName: node.name, ...podSpec } });
    }
    // db-<node>-0: a StatefulSet's pod (the set's name plus ordinal 0). Its selector names the set
    // alone, so it never adopts the bare db-<node>-1 (whose name has the set's name and ordinal 1).
    const set = owned.replace(/-0$/, '');
    const selector = { [CALICO_STATEFULSET_LABEL]: set };
    out.push({
      apiVersion: 'apps/v1',
      kind: 'StatefulSet',
      metadata: { namespace: pods.namespace, name: set, labels: { app: 'db' } },
      spec: {
        replicas: 1,
        serviceName: set,
        selector: { matchLabels: selector },
        template: {
          metadata: { labels: { ...labels(owned), ...selector } },
          spec: { ...podSpec, nodeSelector: { 'kubernetes.io/hostname': node.name }, tolerations: [{ key: 'node-role.kubernetes.io/control-plane', effect: 'NoSchedule' }] },
        },
      },
    });
  }
  return out;
}

/** The label that ties db-<node>-0 to its StatefulSet (and nothing else). */
export const CALICO_STATEFULSET_LABEL = 'lab.kubemend.io/statefulset';

/**
 * The seed's addresses on a node, in the order they were allocated: the pods with a veth,
 * the pods that are gone (their veth and allocation remain), the pods running without a veth.
 */
export function calicoSeedAddresses(node: { name: string; index: number }): Array<{ pod: string; ip: string; kind: 'withVeth' | 'vethOnly' | 'withoutVeth' }> {
  const pods = calicoPods(node.name);
  const all = [...pods.withVeth.map((pod) => ({ pod, kind: 'withVeth' as const })), ...pods.vethOnly.map((pod) => ({ pod, kind: 'vethOnly' as const })), ...pods.withoutVeth.map((pod) => ({ pod, kind: 'withoutVeth' as const }))];
  return all.map((x, k) => ({ ...x, ip: calicoPodIp(node.index, k) }));
}

/** The node's affine block (192.168.200+index.0/26) and its object name, as Calico names blocks. */
export const calicoBlockCidr = (index: number) => `192.168.${200 + index}.0/26`;
export const calicoBlockName = (index: number) => `192-168-${200 + index}-0-26`;
/** calico-ipam's handle for a sandbox: "<network name>.<container id>", the network k8s-pod-network. */
export const calicoHandleId = (sandbox: string) => `k8s-pod-network.${sandbox}`;

/** A stable stand-in for a pod's sandbox id (64 hex digits, as containerd's). */
export const sandboxId = (node: string, pod: string) => createHash('sha256').update(`${node}/${pod}`).digest('hex');
