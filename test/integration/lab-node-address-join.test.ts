/**
 * node-address (seed 001) on the lab's `nat-advertise` scenario: the control plane advertises
 * 10.0.2.15, the NAT address every node has, and the workers never joined. Real Temporal, real
 * sshd, a real kube-apiserver and controllers, the real kubeadm v1.34.4 on the nodes for
 * token and join (only `kubeadm init` is the lab's), which fails a join whose cluster-info names
 * an address the node cannot reach.
 *  - kubemend does not move the advertise address: the plan gives the procedure, and no join;
 *  - once the operator has moved it (done here by the lab's moveAdvertiseAddress, the
 *    procedure's effect by hand), an approved run joins both workers with --node-ip from the start,
 *    fixes the control plane's kubelet and Calico, and the join token appears nowhere: not in
 *    the run's workflow history, not in the audit trail.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import type { AuditRecord } from '../../lib/audit';
import type { DiagnoseReport } from '../../lib/diagnose';
import { TOOLS_BIN } from '../../worker/paths';
import type { NodeAddressResult } from '../../workflows/node-address';
import { waitForCalicoNodes } from '../lab/calico-node';
import { controlPlaneInfo, type ControlPlaneInfo } from '../lab/control-plane';
import { moveAdvertiseAddress } from '../lab/kubeadm-cluster';
import { down, type LabState, up } from '../lab/lab';
import { BOOTSTRAP_TOKEN, historyText, labSsh, labTestConfig } from '../helpers/lab';
import { loadTestConfig, recordHistory, runCli, runIdFrom, type RunningWorker, startWorker, tempDir } from '../helpers/harness';

const KUBECTL = join(TOOLS_BIN, 'kubectl');
const dir = join(tempDir('nodejoin'), 'lab');
let state: LabState;
let cp: ControlPlaneInfo;
let worker: RunningWorker | undefined;
let config: string;
const names = ['node1', 'node2', 'node3'];
const OWN: Record<string, string> = { node1: '10.213.0.11', node2: '10.213.0.12', node3: '10.213.0.13' };
const TOKEN = BOOTSTRAP_TOKEN;

beforeAll(async () => {
  state = await up({ dir, nodes: 3, controlPlane: true, scenarios: ['nat-advertise'], rebootDowntimeMs: 300 });
  cp = controlPlaneInfo(dir)!;
  config = labTestConfig(dir, 'nodejoin');
  worker = await startWorker(loadTestConfig(config));
}, 300_000);

afterAll(async () => {
  await worker?.stop();
  await down(dir);
});

const port = (name: string) => state.nodes.find((n) => n.name === name)!.port;
const labFile = (f: string) => join(dir, f);
const ssh = (name: string, cmd: string) => labSsh(dir, port(name), cmd);
function kubectl(args: string[]): string {
  const r = spawnSync(KUBECTL, ['--kubeconfig', cp.adminKubeconfig, ...args], { encoding: 'utf8', timeout: 60_000 });
  expect(r.stderr).toBe('');
  return r.stdout;
}
const nodeNames = () => kubectl(['get', 'nodes', '-o', 'jsonpath={.items[*].metadata.name}']).trim().split(/\s+/).filter(Boolean);

async function auditOf(runId: string): Promise<AuditRecord[]> {
  const r = await runCli(['--config', config, 'audit', 'show', runId, '--json']);
  expect(r.stderr).toBe('');
  return JSON.parse(r.stdout) as AuditRecord[];
}


test('bad flags: exit 2 naming what is wrong, and no run starts', async () => {
  for (const [args, message] of [
    [['--network', '10.213.0.1/24'], '--network: "10.213.0.1/24" is not an IPv4 network in CIDR form'],
    [['--network', '10.213.0.0/24', '--interface', 'enp0s8'], '--network and --interface: give one of them, not both'],
    [['--interface', 'enp0s8; reboot'], '--interface: "enp0s8; reboot" is not a Linux interface name'],
    [['--calico-method', 'reach=10.213.0.11'], '--calico-method: "reach=10.213.0.11" is not a Calico IP_AUTODETECTION_METHOD'],
    [['--kubelet-timeout', '2h'], '--kubelet-timeout: "2h" is not a duration from 1s to 0.5h'],
  ] as Array<[string[], string]>) {
    const r = await runCli(['--config', config, 'run', 'node-address', '--cluster', 'lab', '--dry-run', ...args]);
    expect([args, r.code, r.stderr]).toEqual([args, 2, expect.stringContaining(message)]);
    expect(r.stderr).not.toContain('started');
  }
  const other = await runCli(['--config', config, 'run', 'stale-cni', '--cluster', 'lab', '--dry-run', '--network', '10.213.0.0/24']);
  expect([other.code, other.stderr]).toEqual([2, expect.stringContaining('--network, --interface, --calico-method, --kubelet-timeout and --rollout-timeout apply to node-address only')]);
}, 120_000);

test('with the control plane advertising 10.0.2.15: the plan gives the procedure and joins nobody; a join by the right address fails as kubeadm does', async () => {
  expect(nodeNames()).toEqual(['node1']);
  const r = await runCli(['--config', config, 'run', 'node-address', '--cluster', 'lab', '--dry-run', '--json']);
  expect(r.code).toBe(0);
  const plan = (JSON.parse(r.stdout) as NodeAddressResult).plan!;
  expect(plan.nodes.map((n) => [n.name, n.kind])).toEqual([['node1', 'kubelet']]);
  expect(plan.manual[0]).toMatch(/^node1: kube-apiserver advertises 10\.0\.2\.15, an address other nodes hold too; kubemend does not move a control plane's advertise address/);
  expect(plan.manual.slice(1)).toEqual(['node2', 'node3'].map((n) => `never joined: ${n}. Once the control plane advertises an address it reaches, kubemend run node-address joins it (or by hand: kubeadm token create --print-join-command --ttl 15m on node1, and the command it prints on ${n})`));
  // Why: discovery works by the right address, then cluster-info sends the join to 10.0.2.15.
  // A real token (a made-up one would wait in discovery until its timeout): the join command node1 prints, sent to the address node2 reaches.
  const command = ssh('node1', 'kubeadm token create --print-join-command').trim().replace('10.0.2.15:6443', '10.213.0.11:6443');
  expect(command).toMatch(/^kubeadm join 10\.213\.0\.11:6443 --token /);
  const join = spawnSync('ssh', ['-i', labFile('id_ed25519'), '-o', `UserKnownHostsFile=${labFile('known_hosts')}`, '-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes', '-p', String(port('node2')), 'root@127.0.0.1', command], { encoding: 'utf8' });
  expect(join.status).toBe(1);
  expect(join.stderr).toContain('error execution phase preflight: unable to fetch the kubeadm-config ConfigMap: failed to get config map: Get "https://10.0.2.15:6443/api/v1/namespaces/kube-system/configmaps/kubeadm-config?timeout=10s": dial tcp 10.0.2.15:6443: connect: connection refused');
  expect(nodeNames()).toEqual(['node1']);
  ssh('node1', `kubeadm token delete ${/--token ([a-z0-9]{6})\./.exec(command)![1]}`);
}, 120_000);

test('after the operator moved the advertise address: an approved run joins node2 and node3 with their own InternalIP, fixes node1, Calico Ready everywhere; no token anywhere', async () => {
  // The procedure's effect, by hand (manifest, cluster-info, admin.conf), and node1's kubelet.conf.
  await moveAdvertiseAddress(dir, '10.213.0.11');
  ssh('node1', "sed -i 's#https://10.0.2.15:6443#https://10.213.0.11:6443#' /etc/kubernetes/kubelet.conf");
  const d = JSON.parse((await runCli(['--config', config, 'diagnose', '--cluster', 'lab', '--json'])).stdout) as DiagnoseReport;
  expect(d.findings.filter((f) => f.signature === 'never joined').map((f) => [f.node, f.fixable])).toEqual([['node2', true], ['node3', true]]);

  const t0 = Date.now();
  const r = await runCli(['--config', config, 'run', 'node-address', '--cluster', 'lab', '--auto-approve', '--json', '--reason', 'INC-001 workers never joined'], {}, 600_000);
  const wallMs = Date.now() - t0;
  if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr}`);
  process.stdout.write(`node-address with two joins on 3 nodes: ${(wallMs / 1000).toFixed(1)} s wall (CLI start to result)\n`);
  const result = JSON.parse(r.stdout) as NodeAddressResult;
  const runId = runIdFrom(r.stderr);
  expect(result.outcome).toBe('fixed');
  expect(result.nodes.map((n) => [n.name, n.joined, n.internalIps])).toEqual([
    ['node2', true, ['10.213.0.12']],
    ['node3', true, ['10.213.0.13']],
    ['node1', false, ['10.213.0.11']],
  ]);
  expect(nodeNames()).toEqual(names);
  for (const n of names) {
    expect(kubectl(['get', 'node', n, '-o', 'jsonpath={.status.addresses[?(@.type=="InternalIP")].address} {.status.conditions[?(@.type=="Ready")].status}']).trim()).toBe(`${OWN[n]} True`);
  }
  for (const n of ['node2', 'node3']) {
    expect(ssh(n, 'cat /var/lib/kubelet/kubeadm-flags.env')).toContain(`--node-ip=${OWN[n]}"`);
    expect(ssh(n, 'ls /run | grep -c kubemend-join || true').trim()).toBe('0');
  }
  const pods = await waitForCalicoNodes(dir, 'calico-node Ready on every node', (ps) => ps.length === 3 && ps.every((p) => p.ready && p.method === 'can-reach=10.213.0.11'), 60_000);
  expect(pods).toHaveLength(3);

  const trail = await auditOf(runId);
  expect(trail.map((x) => [x.node, x.step, x.outcome])).toEqual([
    ['', 'plan', 'planned'],
    ['', 'approval', 'approved'],
    ['node2', 'node2/join', 'applied'],
    ['node1', 'node2/join-token-delete', 'applied'],
    ['node2', 'node2/fixed', 'applied'],
    ['node3', 'node3/join', 'applied'],
    ['node1', 'node3/join-token-delete', 'applied'],
    ['node3', 'node3/fixed', 'applied'],
    ['node1', 'node1/kubelet-node-ip', 'applied'],
    ['node1', 'node1/restart-kubelet', 'applied'],
    ['node1', 'node1/fixed', 'applied'],
    ['', 'calico-autodetection', 'applied'],
  ]);
  expect(trail.find((x) => x.step === 'node2/join')!.action).toBe('kubeadm join 10.213.0.11:6443 --token <redacted> (a 15m0s token made on node1, deleted after) with node-ip 10.213.0.12');
  // The token: nowhere in the trail, nowhere in the run's history (every payload decoded).
  expect(JSON.stringify(trail)).not.toMatch(TOKEN);
  const history = historyText(runId);
  expect(history).toContain('kubeadm token create --ttl 15m0s'); // the plan, inside a payload: the scan reads them
  expect(history).not.toMatch(TOKEN);
  recordHistory(runId, 'remediate-node-address-joined.json');
}, 600_000);
