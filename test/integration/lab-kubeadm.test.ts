/**
 * nat-advertise (seed 001) and the kubeadm stand-in on lab nodes: the control plane
 * advertises 10.0.2.15, the printed join command fails on a worker with kubeadm's own
 * error, joining by the control plane's real address fails too (cluster-info still names
 * 10.0.2.15) until the advertise address is moved, and reset + init with
 * --apiserver-advertise-address is the fix.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { down, type LabState, up } from '../lab/lab';
import { tempDir } from '../helpers/harness';
import { hostSnapshot } from '../helpers/host';
import { labSsh, labSshArgs } from '../helpers/lab';

const dir = join(tempDir('kubeadm'), 'lab');
let state: LabState;

let hostBefore: ReturnType<typeof hostSnapshot>;

beforeAll(async () => {
  hostBefore = hostSnapshot();
  state = await up({ dir, nodes: 2, scenarios: ['nat-advertise'] });
});
afterAll(async () => {
  await down(dir);
  expect(hostSnapshot()).toEqual(hostBefore); // the host after the scenario, its reboots, and down
});

const sshArgs = (port: number, cmd: string) => labSshArgs(dir, port, cmd);
const ssh = (port: number, cmd: string) => labSsh(dir, port, cmd);
const sshRun = (port: number, cmd: string) => spawnSync('ssh', sshArgs(port, cmd), { encoding: 'utf8' });
const cp = () => state.nodes[0].port;
const worker = () => state.nodes[1].port;
const JOIN = /^kubeadm join (\S+):6443 --token [0-9a-f]{6}\.[0-9a-f]{16} --discovery-token-ca-cert-hash sha256:[0-9a-f]{64} $/;

test('the control plane advertises the NAT address, and its join command says so', () => {
  expect(ssh(cp(), 'grep -- --advertise-address /etc/kubernetes/manifests/kube-apiserver.yaml').trim()).toBe('- --advertise-address=10.0.2.15');
  expect(ssh(cp(), 'grep server: /etc/kubernetes/admin.conf').trim()).toBe('server: https://10.0.2.15:6443');
  const join = ssh(cp(), 'kubeadm token create --print-join-command').trim().concat(' ');
  expect(join).toMatch(JOIN);
  expect(JOIN.exec(join)![1]).toBe('10.0.2.15');
});

test('on a worker the printed join fails exactly as in seed 001; nothing is written', () => {
  const join = ssh(cp(), 'kubeadm token create --print-join-command').trim();
  const r = sshRun(worker(), join);
  expect(r.status).toBe(1);
  expect(r.stdout).toBe('Joining cluster from host with IP=10.213.0.12\n[preflight] Running pre-flight checks\n');
  expect(r.stderr).toContain(
    'error execution phase preflight: couldn\'t validate the identity of the API Server: Get "https://10.0.2.15:6443/api/v1/namespaces/kube-public/configmaps/cluster-info?timeout=10s": dial tcp 10.0.2.15:6443: connect: connection refused\nTo see the stack trace of this error execute with --v=5 or higher',
  );
  expect(sshRun(worker(), 'test -e /etc/kubernetes/kubelet.conf').status).toBe(1);
});

test("joining by the control plane's host-only address: discovery passes, then cluster-info sends the join to 10.0.2.15 and it fails; once the advertise address is moved, it works, once", () => {
  const early = sshRun(worker(), 'kubeadm join 10.213.0.11:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:00');
  expect(early.status).toBe(1);
  expect(early.stderr).toContain('error execution phase preflight: unable to fetch the kubeadm-config ConfigMap: failed to get config map: Get "https://10.0.2.15:6443/api/v1/namespaces/kube-system/configmaps/kubeadm-config?timeout=10s": dial tcp 10.0.2.15:6443: connect: connection refused');
  expect(sshRun(worker(), 'test -e /etc/kubernetes/kubelet.conf').status).toBe(1);
  // The advertise address moved (the control plane's manifest, and cluster-info as the lab records it on each node).
  ssh(cp(), "sed -i 's/--advertise-address=10.0.2.15/--advertise-address=10.213.0.11/' /etc/kubernetes/manifests/kube-apiserver.yaml");
  for (const port of [cp(), worker()]) ssh(port, "sed -i 's/^ADVERTISED=.*/ADVERTISED=10.213.0.11/' /var/lib/kmlab/cluster");
  const r = sshRun(worker(), 'kubeadm join 10.213.0.11:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:00');
  expect(r.status).toBe(0);
  expect(r.stdout).toContain('This node has joined the cluster:');
  expect(ssh(worker(), 'grep server: /etc/kubernetes/kubelet.conf').trim()).toBe('server: https://10.213.0.11:6443');
  const again = sshRun(worker(), 'kubeadm join 10.213.0.11:6443');
  expect(again.status).toBe(1);
  expect(again.stderr).toContain('[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: /etc/kubernetes/kubelet.conf already exists');
});

test('reset deletes what seed 003 lists; init without the flag repeats the bug, with it fixes it', () => {
  const reset = ssh(cp(), 'kubeadm reset');
  expect(reset).toBe(
    [
      '[preflight] Running pre-flight checks',
      '[reset] Stopping the kubelet service',
      '[reset] Unmounting mounted directories in "/var/lib/kubelet"',
      '[reset] Removing kubernetes-managed containers',
      '[reset] Deleting contents of stateful directories: [/var/lib/kubelet /etc/cni/net.d /var/lib/etcd]',
      '[reset] Deleting contents of config directories: [/etc/kubernetes/manifests /etc/kubernetes/pki]',
      '[reset] Deleting files: [/etc/kubernetes/admin.conf /etc/kubernetes/kubelet.conf]',
      '',
    ].join('\n'),
  );
  expect(ssh(cp(), 'find /etc/kubernetes /var/lib/kubelet /etc/cni/net.d /var/lib/etcd -type f | wc -l').trim()).toBe('0');
  expect(ssh(cp(), 'kubeadm init --pod-network-cidr=10.244.0.0/16')).toContain('kubeadm join 10.0.2.15:6443');
  const refused = sshRun(cp(), 'kubeadm init');
  expect(refused.status).toBe(1);
  expect(refused.stderr).toContain('/etc/kubernetes/manifests is not empty');
  ssh(cp(), 'kubeadm reset');
  expect(ssh(cp(), 'kubeadm init --apiserver-advertise-address=10.213.0.11 --pod-network-cidr=10.244.0.0/16')).toContain('kubeadm join 10.213.0.11:6443');
  expect(JOIN.exec(`${ssh(cp(), 'kubeadm token create --print-join-command').trim()} `)![1]).toBe('10.213.0.11');
});
