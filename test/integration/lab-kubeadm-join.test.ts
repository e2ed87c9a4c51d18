/**
 * The real kubeadm v1.34.4 against the lab's control plane, on a worker of a stale-cni lab
 * (seed 003), as kubemend's stale-cni --full does it: `kubeadm reset -f` on the worker, a
 * 15-minute token made on the control plane, `kubeadm join --config` (a v1beta4
 * JoinConfiguration as kubemend writes it) on the worker, the token deleted after. The lab
 * kubelet does the TLS bootstrap for real: a CSR approved and signed by the controller manager.
 * And the fault an escalation needs: a worker whose kubelet kept a previous cluster's
 * credentials goes NotReady, and reset plus a fresh join fixes it. Meanwhile that kubelet sees
 * no new pod: a kube-flannel pod made for the node stays Pending until the fresh join.
 */
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { JOIN_ARGV, joinConfiguration, parseJoinCommand } from '../../lib/node-address-scripts';
import { TOOLS_BIN } from '../../worker/paths';
import { controlPlaneInfo, NODE_MONITOR_GRACE_S } from '../lab/control-plane';
import { LAB_JOIN_IGNORED_PREFLIGHT, previousClusterCredentials } from '../lab/kubeadm-cluster';
import { flanneldPid } from '../lab/flannel';
import { flannelPods, waitForFlannelPod } from '../lab/flannel-kubelet';
import { kubeletLogPath } from '../lab/kubelet';
import { KUBELET_LABEL } from '../lab/manifests';
import { down, type LabState, up } from '../lab/lab';
import { tempDir } from '../helpers/harness';
import { hostSnapshot } from '../helpers/host';
import { labSshArgs } from '../helpers/lab';

const dir = join(tempDir('kubeadm-join'), 'lab');
let state: LabState;
let hostBefore: ReturnType<typeof hostSnapshot>;
const hostHad = { etcKubernetes: existsSync('/etc/kubernetes'), varLibKubelet: existsSync('/var/lib/kubelet') };

beforeAll(async () => {
  hostBefore = hostSnapshot();
  // realFlannel: the lab's kubelet runs kube-flannel's pods (flanneld for real), so what a kubelet without the API server does to them shows.
  state = await up({ dir, nodes: 3, scenarios: ['stale-cni'], controlPlane: true, realFlannel: true });
}, 240_000);
afterAll(async () => {
  await down(dir);
  expect(hostSnapshot()).toEqual(hostBefore);
  expect({ etcKubernetes: existsSync('/etc/kubernetes'), varLibKubelet: existsSync('/var/lib/kubelet') }).toEqual(hostHad);
});

const port = (node: string) => state.nodes.find((n) => n.name === node)!.port;
const sshRun = (node: string, cmd: string | string[], input?: string) =>
  spawnSync('ssh', labSshArgs(dir, port(node), Array.isArray(cmd) ? cmd.map((w) => `'${w.replace(/'/g, "'\\''")}'`).join(' ') : cmd), { encoding: 'utf8', input, timeout: 300_000 });
const ssh = (node: string, cmd: string) => {
  const r = sshRun(node, cmd);
  if (r.status !== 0) throw new Error(`${node}: ${cmd}: exit ${r.status}: ${r.stderr}`);
  return r.stdout;
};
const kubectl = (args: string[]) => spawnSync(join(TOOLS_BIN, 'kubectl'), ['--kubeconfig', controlPlaneInfo(dir)!.adminKubeconfig, ...args], { encoding: 'utf8' });
const ready = (node: string) => {
  const r = kubectl(['get', 'node', node, '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']);
  return r.status === 0 ? r.stdout.trim() : undefined;
};
async function eventually(what: string, ok: () => boolean, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > until) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(500);
  }
}
const labCa = () => new X509Certificate(readFileSync(join(dir, 'cp', 'pki', 'ca.crt')));

/** What kubemend's stale-cni --full does after its reset: token on the control plane, join --config on the node, token deleted. */
async function tokenJoinDelete(node: string, nodeIp: string): Promise<{ join: ReturnType<typeof sshRun>; deleted: string }> {
  const created = sshRun('node1', 'kubeadm token create --ttl 15m0s --print-join-command');
  expect(created.status).toBe(0);
  const j = parseJoinCommand(created.stdout);
  if ('problem' in j) throw new Error(j.problem);
  expect(j.endpoint).toBe('10.213.0.11:6443');
  const started = Date.now();
  const joined = sshRun(node, JOIN_ARGV, joinConfiguration(j, nodeIp));
  process.stdout.write(`kubeadm join on ${node}: ${((Date.now() - started) / 1000).toFixed(1)} s (exit ${joined.status})\n`);
  const deleted = ssh('node1', `kubeadm token delete ${j.tokenId}`);
  return { join: joined, deleted };
}

test("the control plane is kubeadm-init'ed for the real kubeadm: cluster-info names the advertised address, no bootstrap token is left", () => {
  expect(ssh('node1', 'grep server: /etc/kubernetes/admin.conf').trim()).toBe('server: https://10.213.0.11:6443');
  expect(ssh('node1', 'kubeadm token list')).toBe('');
  const info = kubectl(['-n', 'kube-public', 'get', 'configmap', 'cluster-info', '-o', 'jsonpath={.data.kubeconfig}']);
  expect(info.stdout).toContain('server: https://10.213.0.11:6443');
  for (const cm of ['kubeadm-config', 'kubelet-config']) expect(kubectl(['-n', 'kube-system', 'get', 'configmap', cm]).status).toBe(0);
  // Every joined node's kubelet holds a client certificate the lab CA signed.
  for (const n of ['node1', 'node2', 'node3']) {
    const cert = new X509Certificate(ssh(n, 'cat /var/lib/kubelet/pki/kubelet-client-current.pem'));
    expect(cert.subject).toBe(`O=system:nodes\nCN=system:node:${n}`);
    expect(cert.verify(labCa().publicKey)).toBe(true);
  }
});

test('a worker: kubeadm reset -f, then a real token create, join --config and token delete; the Node comes back Ready with a kubelet certificate the lab CA signed', async () => {
  const reset = sshRun('node3', 'kubeadm reset -f');
  expect(reset.status).toBe(0);
  expect(reset.stdout).toContain('[reset] Deleting files: [/etc/kubernetes/admin.conf /etc/kubernetes/super-admin.conf /etc/kubernetes/kubelet.conf /etc/kubernetes/bootstrap-kubelet.conf /etc/kubernetes/controller-manager.conf /etc/kubernetes/scheduler.conf]');
  expect(sshRun('node3', 'test -e /etc/kubernetes/kubelet.conf').status).toBe(1);
  // kubeadm join refuses while a Node of that name is Ready: the kubelet stopped, so it goes NotReady.
  await eventually('node3 NotReady after the reset', () => ready('node3') !== 'True', (NODE_MONITOR_GRACE_S + 40) * 1000);

  const { join: joined, deleted } = await tokenJoinDelete('node3', '10.213.0.13');
  expect(joined.status).toBe(0);
  // The checks the lab cannot pass run and warn (the lab's kubeadm ignores them); nothing else is in the way.
  expect(joined.stderr).toContain('[WARNING SystemVerification]: failed to get cgroups v2 subsystems: open /sys/fs/cgroup/cgroup.controllers: no such file or directory');
  expect(joined.stderr).toContain('[WARNING FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward contents are not set to 1');
  expect(joined.stderr).not.toContain('[ERROR');
  // No containerd in a lab node: kubeadm says so and skips its runtime check. No kube-proxy in the lab: its config is not loaded.
  expect(joined.stderr).toContain("[preflight] WARNING: Couldn't create the interface used for talking to the container runtime");
  expect(joined.stderr).toContain('Warning: No kubeproxy.config.k8s.io/v1alpha1 config is loaded. Continuing without it');
  expect(joined.stdout).toContain('[kubelet-check] Waiting for a healthy kubelet at http://127.0.0.1:10248/healthz. This can take up to 4m0s\n[kubelet-check] The kubelet is healthy after ');
  expect(joined.stdout).toContain('[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap');
  expect(joined.stdout).toContain('This node has joined the cluster:\n* Certificate signing request was sent to apiserver and a response was received.\n* The Kubelet was informed of the new secure connection details.');
  expect(deleted).toMatch(/^bootstrap token "[a-z0-9]{6}" deleted\n$/);
  expect(ssh('node1', 'kubeadm token list')).toBe('');

  await eventually('node3 Ready after the join', () => ready('node3') === 'True', 60_000);
  const cert = new X509Certificate(ssh('node3', 'cat /var/lib/kubelet/pki/kubelet-client-current.pem'));
  expect(cert.subject).toBe('O=system:nodes\nCN=system:node:node3');
  expect(cert.verify(labCa().publicKey)).toBe(true);
  expect(ssh('node3', 'grep client-certificate: /etc/kubernetes/kubelet.conf').trim()).toBe('client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem');
  expect(ssh('node3', 'cat /var/lib/kubelet/kubeadm-flags.env')).toContain('--node-ip=10.213.0.13');
  expect(ssh('node3', 'test -e /etc/kubernetes/bootstrap-kubelet.conf || echo gone').trim()).toBe('gone');
  // The CSR the kubelet made with the token, approved by the controller manager.
  const csrs = kubectl(['get', 'csr', '-o', 'jsonpath={range .items[*]}{.spec.username} {.spec.signerName} {.status.conditions[0].type}{"\\n"}{end}']).stdout;
  expect(csrs).toMatch(/^system:bootstrap:[a-z0-9]{6} kubernetes\.io\/kube-apiserver-client-kubelet Approved$/m);
}, 300_000);

test('the lab lets join past exactly the preflight checks a lab node cannot pass; kubemend asks for none', () => {
  // SystemVerification: a lab node has no cgroup hierarchy of its own (its /sys is a fresh sysfs). ip_forward: lab nodes do not forward.
  expect(LAB_JOIN_IGNORED_PREFLIGHT).toEqual(['SystemVerification', 'FileContent--proc-sys-net-ipv4-ip_forward']);
  expect(readFileSync(join(dir, 'bin', 'kubeadm'), 'utf8')).toContain("join --ignore-preflight-errors='SystemVerification,FileContent--proc-sys-net-ipv4-ip_forward' \"$@\"");
  const j = { endpoint: '10.213.0.11:6443', token: 'abcdef.0123456789abcdef', tokenId: 'abcdef', caHash: `sha256:${'0'.repeat(64)}` };
  expect(joinConfiguration(j, '10.213.0.12')).not.toMatch(/ignorePreflightErrors/i);
});

test("a worker whose kubelet kept a previous cluster's credentials goes NotReady with the kubelet's own error; reset and a fresh join fix it", async () => {
  await previousClusterCredentials(dir, 'node2');
  expect(readFileSync(kubeletLogPath(dir, 'node2'), 'utf8')).toContain(
    '"Unable to register node with API server" err="Post \\"https://10.213.0.11:6443/api/v1/nodes\\": tls: failed to verify certificate: x509: certificate signed by unknown authority" node="node2"',
  );
  expect(ssh('node2', 'systemctl is-active kubelet').trim()).toBe('active');
  await eventually('node2 NotReady', () => ready('node2') !== 'True', (NODE_MONITOR_GRACE_S + 40) * 1000);
  expect(new X509Certificate(ssh('node2', 'cat /var/lib/kubelet/pki/kubelet-client-current.pem')).verify(labCa().publicKey)).toBe(false);

  expect(sshRun('node2', 'kubeadm reset -f').status).toBe(0);
  const { join: joined } = await tokenJoinDelete('node2', '10.213.0.12');
  expect(joined.status).toBe(0);
  await eventually('node2 Ready after the fresh join', () => ready('node2') === 'True', 60_000);
  expect(new X509Certificate(ssh('node2', 'cat /var/lib/kubelet/pki/kubelet-client-current.pem')).verify(labCa().publicKey)).toBe(true);
  expect(ssh('node1', 'kubeadm token list')).toBe('');
}, 300_000);

test("a kubelet that cannot reach the API server starts no new pod: node2's kube-flannel pod, deleted, is replaced by one that stays Pending (the old flanneld keeps running); after reset and a fresh join the new pod runs and is Ready", async () => {
  const label = () => kubectl(['get', 'node', 'node2', '-o', `jsonpath={.metadata.labels.${KUBELET_LABEL.replace(/\./g, '\\.')}}`]).stdout.trim();
  const before = await waitForFlannelPod(dir, 'node2', 'Ready before the fault', (p) => p.ready);
  await previousClusterCredentials(dir, 'node2');
  await eventually('node2 NotReady', () => ready('node2') !== 'True', (NODE_MONITOR_GRACE_S + 40) * 1000);
  const oldPid = flanneldPid(dir, 'node2');
  expect(oldPid).toBeDefined(); // containers keep running while the kubelet cannot reach the API server

  // The kubelet cannot finish a deletion: the pod is removed from the API as an operator does when a node is gone (--force).
  const del = kubectl(['-n', 'kube-flannel', 'delete', 'pod', before.name, '--grace-period=0', '--force']);
  expect(del.status).toBe(0);
  const fresh = await waitForFlannelPod(dir, 'node2', "the DaemonSet's new pod bound to node2", (p) => p.uid !== before.uid, 60_000);
  // For 30 s: nothing on node2 sees it. Pending, not Ready, no container; the old flanneld still runs; kwok's label still says stopped.
  for (let i = 0; i < 30; i++) {
    const now = (await flannelPods(dir)).find((p) => p.uid === fresh.uid);
    expect(now).toMatchObject({ node: 'node2', phase: 'Pending', ready: false, deleting: false, restartCount: 0 });
    expect(now!.running).toBeUndefined();
    expect(flanneldPid(dir, 'node2')).toBe(oldPid);
    expect(label()).toBe('stopped');
    await sleep(1000);
  }

  expect(sshRun('node2', 'kubeadm reset -f').status).toBe(0);
  const { join: joined } = await tokenJoinDelete('node2', '10.213.0.12');
  expect(joined.status).toBe(0);
  await eventually('node2 Ready after the fresh join', () => ready('node2') === 'True', 60_000);
  const p = await waitForFlannelPod(dir, 'node2', 'the new pod Ready after the join', (x) => x.uid === fresh.uid && x.ready);
  expect(p).toMatchObject({ phase: 'Running', restartCount: 0 });
  expect(flanneldPid(dir, 'node2')).toBeDefined();
  expect(flanneldPid(dir, 'node2')).not.toBe(oldPid);
  expect(label()).toBe('running');
}, 400_000);
