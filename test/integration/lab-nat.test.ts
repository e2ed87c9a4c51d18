/**
 * seed 001 on Vagrant in the lab (nat-node-ip): every node joined, every kubelet registered
 * the NAT address 10.0.2.15, and calico-node's first-found autodetection takes it too. What
 * the lab models, checked against the real API: the kubelet's --node-ip from its files on
 * `systemctl restart kubelet`, calico-node's IP autodetection methods over the nodes' real
 * links, its readiness from real pings between the detected addresses, and the real
 * DaemonSet controller rolling out a changed env. Then nat-advertise still comes up.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TOOLS_BIN } from '../../worker/paths';
import { CALICO_IPV4_ANNOTATION, calicoNodeLogPath, waitForCalicoNodes } from '../lab/calico-node';
import { controlPlaneInfo, type ControlPlaneInfo } from '../lab/control-plane';
import { failNextKubeletStart, kubeletLogPath } from '../lab/kubelet';
import { down, type LabState, up } from '../lab/lab';
import { labSshArgs } from '../helpers/lab';
import { tempDir } from '../helpers/harness';

const KUBECTL = join(TOOLS_BIN, 'kubectl');
const dir = join(tempDir('nat'), 'lab');
let state: LabState;
let cp: ControlPlaneInfo;
/** The node whose calico-node started first and kept 10.0.2.15 (node1 when the DaemonSet's pods were all bound before the lab's kubelet looked). */
let winner: string;

beforeAll(async () => {
  const t0 = Date.now();
  state = await up({ dir, nodes: 3, controlPlane: true, scenarios: ['nat-node-ip'] });
  console.log(`nat-node-ip lab, 3 nodes, up in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  cp = controlPlaneInfo(dir)!;
}, 300_000);

afterAll(async () => {
  await down(dir);
});

function kubectl(args: string[]) {
  const r = spawnSync(KUBECTL, ['--kubeconfig', cp.adminKubeconfig, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
type ApiNode = { metadata: { name: string; annotations?: Record<string, string> }; status: { addresses: Array<{ type: string; address: string }>; conditions: Array<{ type: string; status: string }> } };
const nodes = () => (JSON.parse(kubectl(['get', 'nodes', '-o', 'json']).stdout) as { items: ApiNode[] }).items;
const node = (name: string) => nodes().find((n) => n.metadata.name === name)!;
const internalIp = (n: ApiNode) => n.status.addresses.find((a) => a.type === 'InternalIP')?.address;
const ready = (n: ApiNode) => n.status.conditions?.find((c) => c.type === 'Ready')?.status;
const port = (name: string) => state.nodes.find((n) => n.name === name)!.port;
const ssh = (name: string, cmd: string) => spawnSync('ssh', labSshArgs(dir, port(name), cmd), { encoding: 'utf8', timeout: 180_000 });

async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 90_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(500);
  }
}

function setMethod(method: string): void {
  const patch = { spec: { template: { spec: { containers: [{ name: 'calico-node', env: [{ name: 'IP_AUTODETECTION_METHOD', value: method }] }] } } } };
  const r = kubectl(['-n', 'kube-system', 'patch', 'daemonset', 'calico-node', '--type=strategic', '-p', JSON.stringify(patch)]);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
}

test('the NAT link is enp0s3 with 10.0.2.15 and the default route; it has a higher index than enp0s8, so Calico (walking the list backwards) meets it first', () => {
  const r = ssh('node2', 'ip -o link show; ip -4 -o addr show; ip route show default');
  expect(r.status).toBe(0);
  const index = (dev: string) => Number(new RegExp(`^(\\d+): ${dev}[@:]`, 'm').exec(r.stdout)?.[1]);
  expect(index('enp0s3')).toBeGreaterThan(index('enp0s8'));
  expect(r.stdout).toMatch(/enp0s3\s+inet 10\.0\.2\.15\/24/);
  expect(r.stdout).toMatch(/^default via 10\.0\.2\.2 dev enp0s3/m);
});

test('every node joined and every kubelet registered InternalIP 10.0.2.15 (no --node-ip in either file)', () => {
  const all = nodes();
  expect(all.map((n) => n.metadata.name).sort()).toEqual(['node1', 'node2', 'node3']);
  for (const n of all) {
    expect(internalIp(n)).toBe('10.0.2.15');
    expect(ready(n)).toBe('True');
  }
  const files = ssh('node2', 'cat /var/lib/kubelet/kubeadm-flags.env /etc/default/kubelet');
  expect(files.stdout).toBe('KUBELET_KUBEADM_ARGS="--pod-infra-container-image=registry.k8s.io/pause:3.10.1"\nKUBELET_EXTRA_ARGS=\n');
});

const others = () => ['node1', 'node2', 'node3'].filter((n) => n !== winner);

test("first-found: the first calico-node to start holds 10.0.2.15; the others crash on Calico's address conflict; the DaemonSet is not ready", async () => {
  const pods = await waitForCalicoNodes(dir, 'one running, two in CrashLoopBackOff', (ps) => ps.length === 3 && ps.filter((p) => p.running).length === 1 && ps.filter((p) => p.waiting?.reason === 'CrashLoopBackOff').length === 2);
  winner = pods.find((p) => p.running)!.node;
  for (const n of others()) {
    const p = pods.find((x) => x.node === n)!;
    expect(p.ready).toBe(false);
    expect(p.lastTerminated?.exitCode).toBe(1);
    expect(p.lastTerminated?.message).toMatch(new RegExp(`Calico node '${winner}' is already using the IPv4 address 10\\.0\\.2\\.15\\.`));
    expect(p.lastTerminated?.message).toMatch(/Failed to configure IP addresses error=conflicting node detected: IPv4 address conflict/);
    expect(p.waiting?.message).toMatch(/^back-off \d+s restarting failed container=calico-node pod=calico-node-/);
    expect(node(n).metadata.annotations?.[CALICO_IPV4_ANNOTATION]).toBeUndefined();
  }
  expect(node(winner).metadata.annotations?.[CALICO_IPV4_ANNOTATION]).toBe('10.0.2.15/24');
  expect(readFileSync(calicoNodeLogPath(dir, winner), 'utf8')).toMatch(/Using autodetected IPv4 address on interface enp0s3: 10\.0\.2\.15\/24/);
  const ds = JSON.parse(kubectl(['-n', 'kube-system', 'get', 'daemonset', 'calico-node', '-o', 'json']).stdout) as { status: { desiredNumberScheduled: number; numberReady: number } };
  expect(ds.status.desiredNumberScheduled).toBe(3);
  expect(ds.status.numberReady).toBeLessThan(3);
});

test("interface=nope0: the new pods crash with Calico's own messages and the rollout never completes", async () => {
  setMethod('interface=nope0');
  const pods = await waitForCalicoNodes(dir, 'the new pods crash', (ps) =>
    others().every((n) => {
      const p = ps.find((x) => x.node === n);
      return p?.method === 'interface=nope0' && p.waiting?.reason === 'CrashLoopBackOff';
    }));
  for (const n of others()) {
    expect(pods.find((p) => p.node === n)?.lastTerminated?.message).toMatch(/Unable to auto-detect an IPv4 address using interface regexes \[nope0\]: no valid host interfaces found/);
    const log = readFileSync(calicoNodeLogPath(dir, n), 'utf8');
    expect(log).toMatch(/\[WARNING\]\[1\] startup\/startup.go: Couldn't autodetect an IPv4 address\. If auto-detecting, choose a different autodetection method\. Otherwise provide an explicit address\./);
    expect(log).toMatch(/Terminating/);
  }
  // maxUnavailable 1 and two new pods unavailable: the controller leaves the first node's available pod on the old template.
  await sleep(15_000);
  const later = await waitForCalicoNodes(dir, 'listed', () => true);
  expect(later.find((p) => p.node === winner)?.method).toBe('');
  expect(later.filter((p) => p.ready).length).toBeLessThan(3);
});

test("can-reach=10.213.0.11: the new pods take 10.213.0.x and cannot peer with the old pod on 10.0.2.15 (an Unhealthy event says so); that pod, unable to reach them either, goes unready and is replaced; then every calico-node is Ready", async () => {
  const t0 = Date.now();
  setMethod('can-reach=10.213.0.11');
  const [a] = others();
  // The kubelet reports a failed probe as it does: an Unhealthy event with calico-node's output.
  const eventsOf = (node: string) => {
    const r = kubectl(['-n', 'kube-system', 'get', 'events', '--field-selector', 'reason=Unhealthy', '-o', 'json']);
    const items = (JSON.parse(r.stdout) as { items: Array<{ message: string; source?: { host?: string } }> }).items;
    return items.filter((e) => e.source?.host === node).map((e) => e.message);
  };
  const msg = await until(`an Unhealthy event on ${a} naming 10.0.2.15`, () => eventsOf(a).find((m) => /BGP not established with [0-9.,]*10\.0\.2\.15/.test(m)));
  expect(msg).toMatch(/^Readiness probe failed: Number of node\(s\) with BGP peering established = \d\ncalico\/node is not ready: BIRD is not ready: BGP not established with /);
  const done = await waitForCalicoNodes(dir, 'every pod Ready on the new method', (ps, ds) => ds.observed === ds.generation && ds.updated === 3 && ds.ready === 3 && ps.length === 3 && ps.every((p) => p.ready && p.method === 'can-reach=10.213.0.11'), 180_000);
  console.log(`can-reach rollout: every calico-node Ready ${((Date.now() - t0) / 1000).toFixed(1)} s after the patch`);
  expect(done).toHaveLength(3);
  for (const [i, n] of ['node1', 'node2', 'node3'].entries()) expect(node(n).metadata.annotations?.[CALICO_IPV4_ANNOTATION]).toBe(`10.213.0.${11 + i}/24`);
  expect(readFileSync(calicoNodeLogPath(dir, 'node3'), 'utf8')).toMatch(/Using autodetected IPv4 address 10\.213\.0\.13\/24, detected by connecting to 10\.213\.0\.11/);
  expect(eventsOf(winner).some((m) => /BGP not established with 10\.213\.0\.1[123]/.test(m))).toBe(true);
}, 240_000);

test('interface=nope0 after that: Calico keeps the address each Node already has (its "keeping existing value" path), so the rollout is Ready on the old addresses', async () => {
  setMethod('interface=nope0');
  await waitForCalicoNodes(dir, 'every pod Ready on interface=nope0', (ps, ds) => ds.observed === ds.generation && ds.updated === 3 && ds.ready === 3 && ps.length === 3 && ps.every((p) => p.ready && p.method === 'interface=nope0'), 180_000);
  const log = readFileSync(calicoNodeLogPath(dir, 'node2'), 'utf8');
  expect(log).toMatch(/Unable to auto-detect an IPv4 address using interface regexes \[nope0\]: no valid host interfaces found/);
  expect(log).toMatch(/Autodetection of IPv4 address failed, keeping existing value: 10\.213\.0\.12\/24/);
  setMethod('can-reach=10.213.0.11');
  await waitForCalicoNodes(dir, 'back on can-reach, Ready', (ps, ds) => ds.updated === 3 && ds.ready === 3 && ps.length === 3 && ps.every((p) => p.ready && p.method === 'can-reach=10.213.0.11'), 180_000);
}, 400_000);

test("--node-ip=10.213.0.12 in /etc/default/kubelet and `systemctl restart kubelet`: Node node2's InternalIP is 10.213.0.12, and Ready", async () => {
  const r = ssh('node2', "sed -i 's/^KUBELET_EXTRA_ARGS=.*/KUBELET_EXTRA_ARGS=--node-ip=10.213.0.12/' /etc/default/kubelet && systemctl restart kubelet && systemctl is-active kubelet");
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  expect(r.stdout).toBe('active\n');
  await until('node2 InternalIP 10.213.0.12', () => (internalIp(node('node2')) === '10.213.0.12' ? true : undefined));
  expect(ready(node('node2'))).toBe('True');
  expect(node('node2').status.addresses).toEqual([{ type: 'InternalIP', address: '10.213.0.12' }, { type: 'Hostname', address: 'node2' }]);
  expect(internalIp(node('node3'))).toBe('10.0.2.15');
});

test("--node-ip of an address the node does not have: the kubelet runs, logs the kubelet's own error, and the Node keeps its address", async () => {
  const r = ssh('node3', "echo 'KUBELET_EXTRA_ARGS=\"--node-ip 10.213.0.99\"' > /etc/default/kubelet && systemctl restart kubelet; echo rc=$?; systemctl is-active kubelet; echo active=$?");
  expect(r.stdout).toBe('rc=0\nactive\nactive=0\n');
  expect(readFileSync(kubeletLogPath(dir, 'node3'), 'utf8')).toMatch(/kubelet_node_status.go\] "Failed to set some node status fields" err="failed to validate nodeIP: node IP: \\"10\.213\.0\.99\\" not found in the host's network interfaces" node="node3"/);
  expect(internalIp(node('node3'))).toBe('10.0.2.15');
  expect(ready(node('node3'))).toBe('True');
});

test('failNextKubeletStart: the kubelet exits (is-active: activating, exit 3), the Node goes NotReady, and systemd\'s restart brings it back once the fault is spent', async () => {
  failNextKubeletStart(dir, 'node3', undefined, 3); // three starts: the restart and systemd's next two, 10 s apart
  const r = ssh('node3', 'systemctl restart kubelet; echo rc=$?; systemctl is-active kubelet; echo active=$?');
  expect(r.stdout).toBe('rc=0\nactivating\nactive=3\n');
  expect(readFileSync(kubeletLogPath(dir, 'node3'), 'utf8')).toMatch(/run.go\] "command failed" err="failed to run Kubelet: validate service connection: validate CRI v1 runtime API for endpoint/);
  await until('node3 NotReady', () => (ready(node('node3')) !== 'True' ? true : undefined), 90_000);
  await until('node3 Ready again after systemd restarted the kubelet', () => (ready(node('node3')) === 'True' ? true : undefined), 90_000);
  expect(ssh('node3', 'systemctl is-active kubelet').stdout).toBe('active\n');
  const failures = readFileSync(kubeletLogPath(dir, 'node3'), 'utf8').match(/"command failed"/g)?.length;
  expect(failures).toBe(3);

  failNextKubeletStart(dir, 'node3', 'failed to run Kubelet: injected once');
  expect(ssh('node3', 'systemctl restart kubelet; systemctl is-active kubelet').stdout).toBe('activating\n');
  await until('active again', () => (ssh('node3', 'systemctl is-active kubelet').stdout === 'active\n' ? true : undefined), 60_000);
  const log = readFileSync(kubeletLogPath(dir, 'node3'), 'utf8');
  expect(log.match(/"command failed"/g)?.length).toBe(4);
  expect(log).toMatch(/err="failed to run Kubelet: injected once"/);
}, 240_000);

test("systemctl: other verbs and units keep the refusal; kubelet's status, is-enabled and daemon-reload answer as kubeadm reads them", () => {
  const r = ssh('node2', 'systemctl restart containerd; echo rc=$?; systemctl status containerd; echo rc=$?; systemctl is-enabled containerd; echo rc=$?');
  expect(r.stdout).toBe('rc=1\nrc=1\nrc=1\n');
  expect(r.stderr).toMatch(/System has not been booted with systemd/);
  const k = ssh('node2', 'systemctl status kubelet; echo rc=$?; systemctl is-enabled kubelet; systemctl daemon-reload; echo rc=$?');
  expect(k.stdout).toContain('Loaded: loaded (/lib/systemd/system/kubelet.service; enabled; preset: enabled)\n     Active: active (running)\nrc=0\nenabled\nrc=0\n');
});

describe('nat-advertise', () => {
  const adir = join(tempDir('nat-adv'), 'lab');
  afterAll(async () => {
    await down(adir);
  });

  test('still comes up: the workers unjoined, calico-node on the control plane alone, Ready with the NAT address (it has no peers)', async () => {
    await down(dir); // one lab at a time on this machine
    await up({ dir: adir, nodes: 2, controlPlane: true, scenarios: ['nat-advertise'] });
    const info = controlPlaneInfo(adir)!;
    const get = (args: string[]) => spawnSync(KUBECTL, ['--kubeconfig', info.adminKubeconfig, ...args], { encoding: 'utf8' });
    const ns = JSON.parse(get(['get', 'nodes', '-o', 'json']).stdout) as { items: ApiNode[] };
    expect(ns.items.map((n) => n.metadata.name)).toEqual(['node1']);
    expect(ns.items[0].metadata.annotations?.[CALICO_IPV4_ANNOTATION]).toBe('10.0.2.15/24');
    const pods = await waitForCalicoNodes(adir, 'Ready on node1', (ps) => ps.length === 1 && ps[0].ready);
    expect(pods.map((p) => p.node)).toEqual(['node1']);
  }, 300_000);
});
