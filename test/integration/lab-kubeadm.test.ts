/**
 * nat-advertise (seed 001) with the real kubeadm v1.34.4 on lab nodes, against the lab's
 * control plane: the control plane advertises 10.0.2.15, so the join command it prints fails
 * on a worker with kubeadm's own error; joining by the control plane's real address fails too
 * (cluster-info names 10.0.2.15) until the advertise address is moved; reset is kubeadm's own.
 * `kubeadm init` is still the lab's stand-in (the lab's control plane runs on the host).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { joinConfiguration, parseJoinCommand } from '../../lib/node-address-scripts';
import { moveAdvertiseAddress } from '../lab/kubeadm-cluster';
import { down, type LabState, up } from '../lab/lab';
import { tempDir } from '../helpers/harness';
import { hostSnapshot } from '../helpers/host';
import { labSsh, labSshArgs } from '../helpers/lab';

const dir = join(tempDir('kubeadm'), 'lab');
let state: LabState;

let hostBefore: ReturnType<typeof hostSnapshot>;
const hostHadEtcKubernetes = existsSync('/etc/kubernetes');

beforeAll(async () => {
  hostBefore = hostSnapshot();
  state = await up({ dir, nodes: 2, scenarios: ['nat-advertise'], controlPlane: true });
}, 180_000);
afterAll(async () => {
  await down(dir);
  expect(hostSnapshot()).toEqual(hostBefore); // the host after the scenario, its reboots, and down
});

const sshArgs = (port: number, cmd: string) => labSshArgs(dir, port, cmd);
const ssh = (port: number, cmd: string) => labSsh(dir, port, cmd);
const sshRun = (port: number, cmd: string) => spawnSync('ssh', sshArgs(port, cmd), { encoding: 'utf8' });
const cp = () => state.nodes[0].port;
const worker = () => state.nodes[1].port;
const JOIN = /^kubeadm join (\S+):6443 --token [a-z0-9]{6}\.[a-z0-9]{16} --discovery-token-ca-cert-hash sha256:[0-9a-f]{64} $/;
/** A JoinConfiguration with the printed command's endpoint, token and CA hash (discovery given 10 s: by default kubeadm retries an unreachable endpoint for 5 minutes). */
function joinConfig(printed: string, endpoint?: string): string {
  const j = parseJoinCommand(printed);
  if ('problem' in j) throw new Error(j.problem);
  return `${joinConfiguration({ ...j, endpoint: endpoint ?? j.endpoint }, null)}timeouts:\n  discovery: 10s\n`;
}
const joinWith = (config: string) => spawnSync('ssh', sshArgs(worker(), 'f=$(mktemp /run/join.XXXXXX) && cat > "$f" && kubeadm join --config "$f"; rc=$?; rm -f "$f"; exit $rc'), { encoding: 'utf8', input: config });

test('the control plane advertises the NAT address, and its join command says so', () => {
  expect(ssh(cp(), 'grep -- --advertise-address /etc/kubernetes/manifests/kube-apiserver.yaml').trim()).toBe('- --advertise-address=10.0.2.15');
  expect(ssh(cp(), 'grep server: /etc/kubernetes/admin.conf').trim()).toBe('server: https://10.0.2.15:6443');
  const join = ssh(cp(), 'kubeadm token create --print-join-command').replace(/\n$/, '');
  expect(join).toMatch(JOIN);
  expect(JOIN.exec(join)![1]).toBe('10.0.2.15');
});

test("on a worker the printed join fails exactly as in seed 001 (10.0.2.15 is the worker's own NAT address); nothing is written", () => {
  const r = joinWith(joinConfig(ssh(cp(), 'kubeadm token create --print-join-command')));
  expect(r.status).toBe(1);
  expect(r.stdout).toMatch(/^\[preflight\] Running pre-flight checks\n/);
  expect(r.stderr).toContain(
    'error: error execution phase preflight: couldn\'t validate the identity of the API Server: failed to request the cluster-info ConfigMap: Get "https://10.0.2.15:6443/api/v1/namespaces/kube-public/configmaps/cluster-info?timeout=10s": dial tcp 10.0.2.15:6443: connect: connection refused\nTo see the stack trace of this error execute with --v=5 or higher',
  );
  expect(sshRun(worker(), 'test -e /etc/kubernetes/kubelet.conf').status).toBe(1);
});

test("joining by the control plane's host-only address: discovery passes, then cluster-info sends the join to 10.0.2.15 and it fails; once the advertise address is moved, it works, once", async () => {
  const config = joinConfig(ssh(cp(), 'kubeadm token create --print-join-command'), '10.213.0.11:6443');
  const early = joinWith(config);
  expect(early.status).toBe(1);
  expect(early.stderr).toContain('error: error execution phase preflight: unable to fetch the kubeadm-config ConfigMap: failed to get config map: Get "https://10.0.2.15:6443/api/v1/namespaces/kube-system/configmaps/kubeadm-config?timeout=10s": dial tcp 10.0.2.15:6443: connect: connection refused');
  expect(sshRun(worker(), 'test -e /etc/kubernetes/kubelet.conf').status).toBe(1);
  // The advertise address moved by hand: the manifest, cluster-info (signed again by the bootstrapsigner) and admin.conf.
  await moveAdvertiseAddress(dir, '10.213.0.11');
  const r = joinWith(config);
  expect(r.status).toBe(0);
  expect(r.stdout).toContain('This node has joined the cluster:');
  expect(ssh(worker(), 'grep server: /etc/kubernetes/kubelet.conf').trim()).toBe('server: https://10.213.0.11:6443');
  const again = joinWith(config);
  expect(again.status).toBe(1);
  expect(again.stderr).toContain('[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: /etc/kubernetes/kubelet.conf already exists');
  expect(JOIN.exec(ssh(cp(), 'kubeadm token create --print-join-command').replace(/\n$/, ''))![1]).toBe('10.213.0.11');
}, 120_000);

test("reset is the real kubeadm v1.34.4's: it deletes kubeadm's files in the node only, leaves the CNI config, and warns where the lab has no CRI socket; init without the flag repeats the bug, with it fixes it", () => {
  expect(ssh(cp(), 'kubeadm version -o short').trim()).toBe('v1.34.4');
  const reset = sshRun(cp(), 'kubeadm reset -f');
  expect(reset.status).toBe(0);
  expect(reset.stdout).toBe(
    [
      '[reset] Reading configuration from the "kubeadm-config" ConfigMap in namespace "kube-system"...',
      "[reset] Use 'kubeadm init phase upload-config kubeadm --config your-config-file' to re-upload it.",
      '[preflight] Running pre-flight checks',
      '[reset] Deleted contents of the etcd data directory: /var/lib/etcd',
      '[reset] Stopping the kubelet service',
      '[reset] Unmounting mounted directories in "/var/lib/kubelet"',
      '[reset] Deleting contents of directories: [/etc/kubernetes/manifests /var/lib/kubelet /etc/kubernetes/pki]',
      '[reset] Deleting files: [/etc/kubernetes/admin.conf /etc/kubernetes/super-admin.conf /etc/kubernetes/kubelet.conf /etc/kubernetes/bootstrap-kubelet.conf /etc/kubernetes/controller-manager.conf /etc/kubernetes/scheduler.conf]',
      '',
      'The reset process does not perform cleanup of CNI plugin configuration,',
      'network filtering rules and kubeconfig files.',
      '',
      'For information on how to perform this cleanup manually, please see:',
      '    https://k8s.io/docs/reference/setup-tools/kubeadm/kubeadm-reset/',
      '',
      '',
    ].join('\n'),
  );
  // Warnings only. The lab's API server has no mirror Pods of the node's static pods, so kubeadm cannot read the
  // node's API endpoint from kube-apiserver's annotation (it waits a minute) and falls back to etcd's manifest;
  // no containerd listens in a lab node.
  expect(reset.stderr).toContain('[reset] Unable to fetch the kubeadm-config ConfigMap from cluster: failed to getAPIEndpoint: could not retrieve API endpoints for node "node1" using pod annotations: context deadline exceeded');
  expect(reset.stderr).toContain('[reset] No kubeadm config, using etcd pod spec to get data directory');
  expect(reset.stderr).toContain(
    '[reset] Failed to remove containers: failed to create new CRI runtime service: validate service connection: validate CRI v1 runtime API for endpoint "unix:///var/run/containerd/containerd.sock": rpc error: code = Unavailable desc = connection error: desc = "transport: Error while dialing: dial unix /var/run/containerd/containerd.sock: connect: no such file or directory"',
  );
  expect(ssh(cp(), 'find /etc/kubernetes /var/lib/kubelet /var/lib/etcd -type f | wc -l').trim()).toBe('0');
  expect(ssh(cp(), 'ls /etc/cni/net.d').trim()).toBe('10-flannel.conflist'); // kubeadm reset leaves the CNI config
  expect(ssh(cp(), 'systemctl is-active kubelet || true').trim()).toBe('inactive'); // stopped through systemctl
  // Only the node's overlays changed: the host has none of it.
  expect(existsSync('/etc/kubernetes')).toBe(hostHadEtcKubernetes);
  expect(ssh(cp(), 'kubeadm init --pod-network-cidr=10.244.0.0/16')).toContain('kubeadm join 10.0.2.15:6443');
  const refused = sshRun(cp(), 'kubeadm init');
  expect(refused.status).toBe(1);
  expect(refused.stderr).toContain('/etc/kubernetes/manifests is not empty');
  ssh(cp(), 'kubeadm reset -f');
  // The stand-in init writes placeholders: its admin.conf holds no credentials, so the real `kubeadm token` cannot be used after it.
  expect(ssh(cp(), 'kubeadm init --apiserver-advertise-address=10.213.0.11 --pod-network-cidr=10.244.0.0/16')).toContain('kubeadm join 10.213.0.11:6443');
}, 180_000);
