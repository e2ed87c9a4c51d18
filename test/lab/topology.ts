/**
 * Facts about the lab's topology that the nodes (lab.ts) and the control plane's objects
 * (manifests.ts) must agree on: addresses, pod CIDRs, the seeds' pods.
 */
export const HOSTONLY_PREFIX = '10.213.0';
export const NAT_ADDRESS = '10.0.2.15/24';
export const NAT_GATEWAY = '10.0.2.2';
export const MAX_NODES = 200;

/** Flannel's per-node lease, as in seed 003: the control plane has 10.244.0.0/24, the next node 10.244.1.0/24. */
export const podCidrPrefix = (index: number) => `10.244.${index - 1}`;
/** seed 003: the lease cni0 and flannel.1 kept from before `kubeadm reset`, outside the node's current pod CIDR. */
export const staleLeasePrefix = (index: number) => `10.244.${100 + index}`;
/** Pods whose sandboxes still exist on a stale-cni node: their IPAM files are live, the rest leaked. */
export const LIVE_PODS_PER_NODE = 3;

/** seed 004's pods on a node: some with their cali veth, some without, and veths whose pod is gone. */
export const calicoPods = (name: string) => ({
  withVeth: [`web-${name}-a`, `web-${name}-b`],
  withoutVeth: [`db-${name}-0`, `db-${name}-1`],
  vethOnly: [`gone-${name}-x`, `gone-${name}-y`, `gone-${name}-z`],
  namespace: 'default',
});
/** Calico's pod block for a node (192.168.0.0/16 is Calico's default pool, seed 004 used it). */
export const calicoPodIp = (index: number, k: number) => `192.168.${200 + index}.${10 + k}`;

/** seed 001: with the NAT address advertised, the workers' `kubeadm join` failed; only the control plane joined. */
export const joinedAtUp = (scenarios: readonly string[], role: 'control-plane' | 'worker') => !scenarios.includes('nat-advertise') || role === 'control-plane';

/**
 * seed 001: the kubelets have no --node-ip and the default route is on enp0s3, so every Node
 * registers InternalIP 10.0.2.15 (nat-advertise: the control plane also advertises it and the
 * workers never joined; nat-node-ip: the control plane advertises its host-only address and
 * every node joined).
 */
export const NAT_SCENARIOS = ['nat-advertise', 'nat-node-ip'] as const;
export const kubeletsOnNat = (scenarios: readonly string[]) => NAT_SCENARIOS.some((s) => scenarios.includes(s));

/** kubeadm-flags.env as kubeadm v1.34 writes it for containerd (no --node-ip unless nodeRegistration asks). */
export const KUBEADM_FLAGS_TEXT = 'KUBELET_KUBEADM_ARGS="--pod-infra-container-image=registry.k8s.io/pause:3.10.1"\n';
/** kubeadm v1.34 (NodeLocalCRISocket, beta and on) keeps the CRI endpoint here, not in kubeadm-flags.env. */
export const INSTANCE_CONFIG_TEXT = 'apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncontainerRuntimeEndpoint: unix:///var/run/containerd/containerd.sock\n';
/** /etc/default/kubelet: Debian's package ships it with KUBELET_EXTRA_ARGS= (empty), or a provisioner's --node-ip. */
export const defaultKubeletText = (nodeIp?: string) => `KUBELET_EXTRA_ARGS=${nodeIp ? `--node-ip=${nodeIp}` : ''}\n`;

/** The control-plane node (node1)'s address on the host-only network. */
export const CONTROL_PLANE_ADDRESS = `${HOSTONLY_PREFIX}.11`;
/** The address the control plane advertises (its API server's, in cluster-info and admin.conf): seed 001's nat-advertise took the NAT address. */
export const advertisedAddress = (scenarios: readonly string[]) => (scenarios.includes('nat-advertise') ? NAT_ADDRESS.split('/')[0] : CONTROL_PLANE_ADDRESS);
/** Where kubeadm's clusters serve the API on each control-plane node. */
export const API_SERVER_PORT = 6443;
