/**
 * Which remediations this build can run: the one table `fixable` comes from. When a fix
 * lands, flip its line; every finding naming it then prints its `kubemend run` command.
 */
export const REMEDIATION_FIXABLE = {
  'machine-id': true, // seed 000
  'node-address': true, // seed 001: kubelet --node-ip and Calico's autodetection (the control plane's advertise address and never-joined workers: the manual procedure)
  'default-route': true, // seed 002
  'stale-cni': true, // seed 003: stale cni0/flannel.1, missing subnet.env (light level; a wrong CNI config is refused with the manual step)
  'ipam-gc': true, // seed 003: host-local files of sandboxes that are gone
  'calico-orphans': true, // seed 004: IPAM allocations, cali veths and pods without a veth
} as const;
export type RemediationName = keyof typeof REMEDIATION_FIXABLE;

export const isFixable = (r: RemediationName): boolean => REMEDIATION_FIXABLE[r];
