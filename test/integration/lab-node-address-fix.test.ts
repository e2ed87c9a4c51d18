/**
 * The node-address remediation (seed 001) on the lab: real Temporal, real sshd on each node, a
 * real kube-apiserver and controllers (the DaemonSet controller rolls calico-node out), the
 * lab's kubelet, which registers the address --node-ip names or else the one of the default
 * route's interface (enp0s3, 10.0.2.15 on every node, as VirtualBox NAT gives it), and the lab's
 * calico-node, which autodetects from the node's real interfaces and is Ready only when BIRD
 * could peer with every other node (a real ping from its address to theirs).
 * Scenario `nat-node-ip`: every node joined, every Node's InternalIP is 10.0.2.15, Calico's
 * first-found picks 10.0.2.15. The CLI is run as an SRE runs it; nodes are checked over ssh
 * and kubectl.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AuditRecord } from '../../lib/audit';
import type { DiagnoseReport } from '../../lib/diagnose';
import { TOOLS_BIN } from '../../worker/paths';
import type { NodeAddressResult } from '../../workflows/node-address';
import { controlPlaneInfo, type ControlPlaneInfo } from '../lab/control-plane';
import { failNextKubeletStart, kubeletLogPath } from '../lab/kubelet';
import { waitForCalicoNodes } from '../lab/calico-node';
import { down, type LabState, up } from '../lab/lab';
import { describeError, runThroughCrashes } from '../helpers/crash-run';
import { labSsh, labTestConfig } from '../helpers/lab';
import { loadTestConfig, recordHistory, runCli, runIdFrom, type RunningWorker, startWorker, tempDir, testClient } from '../helpers/harness';

const KUBECTL = join(TOOLS_BIN, 'kubectl');
const dir = join(tempDir('nodeaddr'), 'lab');
let state: LabState;
let cp: ControlPlaneInfo;
let worker: RunningWorker | undefined;
let config: string;
const names = ['node1', 'node2', 'node3'];
const OWN = { node1: '10.213.0.11', node2: '10.213.0.12', node3: '10.213.0.13' } as Record<string, string>;
/** A fixed run's audit trail: each step once, in order (workers first, the control plane last, then Calico). */
const FIXED_TRAIL = [
  ['plan', 'planned'],
  ['approval', 'approved'],
  ...['node2', 'node3', 'node1'].flatMap((n) => [
    [`${n}/kubelet-node-ip`, 'applied'],
    [`${n}/restart-kubelet`, 'applied'],
    [`${n}/fixed`, 'applied'],
  ]),
  ['calico-autodetection', 'applied'],
];

beforeAll(async () => {
  state = await up({ dir, nodes: 3, controlPlane: true, scenarios: ['nat-node-ip'], rebootDowntimeMs: 300 });
  cp = controlPlaneInfo(dir)!;
  config = labTestConfig(dir, 'nodeaddr');
  worker = await startWorker(loadTestConfig(config));
}, 300_000);

afterAll(async () => {
  await worker?.stop();
  await down(dir);
});

const port = (name: string) => state.nodes.find((n) => n.name === name)!.port;
const ssh = (name: string, cmd: string) => labSsh(dir, port(name), cmd);
function kubectl(args: string[]): string {
  const r = spawnSync(KUBECTL, ['--kubeconfig', cp.adminKubeconfig, ...args], { encoding: 'utf8', timeout: 60_000 });
  expect(r.stderr).toBe('');
  return r.stdout;
}
const internalIp = (n: string) => kubectl(['get', 'node', n, '-o', 'jsonpath={.status.addresses[?(@.type=="InternalIP")].address}']).trim();
const ready = (n: string) => kubectl(['get', 'node', n, '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']).trim();
const calicoTemplate = () => kubectl(['get', 'daemonset', '-n', 'kube-system', 'calico-node', '-o', 'jsonpath={.spec.template}']);
/** How many times the node's kubelet has started, from the lab kubelet's log. */
const kubeletStarts = (n: string) => (readFileSync(kubeletLogPath(dir, n), 'utf8').match(/"Started kubelet"/g) ?? []).length;
const calicoMethod = () => kubectl(['get', 'daemonset', '-n', 'kube-system', 'calico-node', '-o', 'jsonpath={.spec.template.spec.containers[0].env[?(@.name=="IP_AUTODETECTION_METHOD")].value}']).trim();

/** Everything a run could change, as an operator looks at it. */
function clusterState() {
  return {
    nodes: names.map((n) => ({ internalIp: internalIp(n), ready: ready(n), kubeletFile: ssh(n, 'cat /etc/default/kubelet'), kubeadmFlags: ssh(n, 'cat /var/lib/kubelet/kubeadm-flags.env') })),
    calicoTemplate: calicoTemplate(),
  };
}

async function auditOf(runId: string): Promise<AuditRecord[]> {
  const r = await runCli(['--config', config, 'audit', 'show', runId, '--json']);
  expect(r.stderr).toBe('');
  return JSON.parse(r.stdout) as AuditRecord[];
}

test("as the seed: every Node on 10.0.2.15, the workers' calico-node crash-looping; diagnose names node-address on every node with its run command", async () => {
  for (const n of names) expect(internalIp(n)).toBe('10.0.2.15');
  expect(calicoMethod()).toBe('');
  // As in the seed: the workers' calico-node exits at startup (another node already has their
  // address) and crash-loops; the control plane's runs, Ready with no peer to wait for.
  const pods = await waitForCalicoNodes(dir, 'calico-node settled', (ps) => ps.length === 3 && ps.every((p) => (p.node === 'node1' ? p.ready : p.waiting?.reason === 'CrashLoopBackOff')), 120_000);
  for (const p of pods.filter((x) => x.node !== 'node1')) expect(`${p.lastTerminated?.message ?? ''} ${p.waiting?.message ?? ''}`).toContain('conflicting node detected: IPv4 address conflict');
  const r = await runCli(['--config', config, 'diagnose', '--cluster', 'lab', '--json']);
  expect(r.code).toBe(4);
  const report = JSON.parse(r.stdout) as DiagnoseReport;
  const found = report.findings.filter((f) => f.seed === '001');
  expect(found.map((f) => [f.node, f.signature, f.fixable])).toEqual(names.map((n) => [n, 'INTERNAL-IP 10.0.2.15 on 3 Nodes', true]));
  expect(found[0].evidence).toContain('kube-system/calico-node IP_AUTODETECTION_METHOD is not set (first-found), and 10.0.2.15 is on node1 on enp0s3, node2 on enp0s3, node3 on enp0s3');
  const text = await runCli(['--config', config, 'diagnose', '--cluster', 'lab']);
  expect(text.stdout).toContain('fix: kubemend run node-address --cluster lab');
}, 180_000);

test('--dry-run prints the plan (the host-only network found, --node-ip per node, workers first, can-reach the control plane) and changes nothing', async () => {
  const before = clusterState();
  const r = await runCli(['--config', config, 'run', 'node-address', '--cluster', 'lab', '--dry-run', '--json']);
  expect(r.code).toBe(0);
  const result = JSON.parse(r.stdout) as NodeAddressResult;
  expect(result.outcome).toBe('planned (dry run)');
  const plan = result.plan!;
  expect(plan.network).toEqual({ by: 'found 10.213.0.0/24', network: '10.213.0.0/24', addresses: OWN });
  expect(plan.nodes.map((n) => (n.kind === 'kubelet' ? [n.name, n.file, n.lineBefore, n.lineAfter] : [n.name, 'join']))).toEqual([
    ['node2', '/etc/default/kubelet', 'KUBELET_EXTRA_ARGS=', 'KUBELET_EXTRA_ARGS="--node-ip=10.213.0.12"'],
    ['node3', '/etc/default/kubelet', 'KUBELET_EXTRA_ARGS=', 'KUBELET_EXTRA_ARGS="--node-ip=10.213.0.13"'],
    ['node1', '/etc/default/kubelet', 'KUBELET_EXTRA_ARGS=', 'KUBELET_EXTRA_ARGS="--node-ip=10.213.0.11"'],
  ]);
  expect(plan.calico).toMatchObject({ daemonSet: 'kube-system/calico-node', from: null, to: 'can-reach=10.213.0.11', predicted: true });
  expect(plan.manual).toEqual([]);
  expect(clusterState()).toEqual(before);
  expect((await auditOf(runIdFrom(r.stderr))).map((x) => [x.step, x.outcome])).toEqual([['plan', 'dry-run']]);
  recordHistory(runIdFrom(r.stderr), 'remediate-node-address-dry-run.json');
}, 120_000);

test('a kubelet that does not come back after its restart: the undo puts the file back, restarts it, and node2 ends as it was', async () => {
  const before = clusterState();
  // Its next three starts fail (the first, then systemd's restarts 10 s apart): longer than the run waits.
  failNextKubeletStart(dir, 'node2', undefined, 3);
  const r = await runCli(['--config', config, 'run', 'node-address', '--cluster', 'lab', '--node', 'node2', '--auto-approve', '--json', '--kubelet-timeout', '25s'], {}, 300_000);
  expect({ code: r.code, stderr: r.stderr }).toMatchObject({ code: 1 });
  expect(r.stderr).toContain('node2: the kubelet did not come back Ready with InternalIP 10.213.0.12 within 25 s');
  expect(clusterState()).toEqual(before);
  const trail = await auditOf(runIdFrom(r.stderr));
  expect(trail.map((x) => [x.step, x.outcome])).toEqual([
    ['plan', 'planned'],
    ['approval', 'approved'],
    ['node2/kubelet-node-ip', 'applied'],
    ['node2/restart-kubelet', 'applied'],
    ['node2/undo-kubelet-node-ip', 'applied'],
    ['node2/failed', 'failed'],
    ['run/failed', 'failed'],
  ]);
  expect(trail.find((x) => x.step === 'node2/failed')!.after).toEqual({ undo: [expect.stringMatching(/^restore \/etc\/default\/kubelet on node2: \/etc\/default\/kubelet restored; kubelet restarted, Node Ready with InternalIP 10\.0\.2\.15$/)] });
}, 300_000);

test('an approved run: every Node on its own address and Ready, calico-node can-reach the control plane and Ready everywhere; the trail holds each step once, in order', async () => {
  const t0 = Date.now();
  const r = await runCli(['--config', config, 'run', 'node-address', '--cluster', 'lab', '--auto-approve', '--json', '--reason', 'INC-001 calico-node not ready on the workers'], {}, 600_000);
  const wallMs = Date.now() - t0;
  if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr}`);
  process.stdout.write(`node-address approved run on 3 nodes: ${(wallMs / 1000).toFixed(1)} s wall (CLI start to result)\n`);
  const result = JSON.parse(r.stdout) as NodeAddressResult;
  const runId = runIdFrom(r.stderr);
  expect(result.outcome).toBe('fixed');
  expect(result.nodes.map((n) => [n.name, n.internalIpsBefore, n.internalIps])).toEqual([
    ['node2', ['10.0.2.15'], ['10.213.0.12']],
    ['node3', ['10.0.2.15'], ['10.213.0.13']],
    ['node1', ['10.0.2.15'], ['10.213.0.11']],
  ]);
  // As an operator checks it.
  for (const n of names) {
    expect([n, internalIp(n), ready(n)]).toEqual([n, OWN[n], 'True']);
    expect(ssh(n, 'cat /etc/default/kubelet')).toBe(`KUBELET_EXTRA_ARGS="--node-ip=${OWN[n]}"\n`);
    expect(ssh(n, `cat /var/lib/kubemend/backup/${runId.replace(/[^A-Za-z0-9-]/g, '-')}/_etc_default_kubelet`)).toBe('KUBELET_EXTRA_ARGS=\n');
    expect(kubectl(['get', 'node', n, '-o', 'jsonpath={.metadata.annotations.projectcalico\\.org/IPv4Address}']).trim()).toBe(`${OWN[n]}/24`);
  }
  expect(calicoMethod()).toBe('can-reach=10.213.0.11');
  const pods = await waitForCalicoNodes(dir, 'calico-node Ready', (ps) => ps.length === 3, 10_000);
  expect(pods.every((p) => p.ready)).toBe(true);
  expect(result.clusterChange).toMatchObject({ calico: { daemonSet: 'kube-system/calico-node', from: null, to: 'can-reach=10.213.0.11', outcome: 'applied', addresses: { node1: '10.213.0.11/24', node2: '10.213.0.12/24', node3: '10.213.0.13/24' } } });
  expect(result.remaining).toEqual([]);
  const trail = await auditOf(runId);
  expect(trail.map((x) => [x.step, x.outcome])).toEqual(FIXED_TRAIL);
  expect(trail.every((x) => x.reason === 'INC-001 calico-node not ready on the workers')).toBe(true);
  // diagnose: seed 001 is gone.
  const d = JSON.parse((await runCli(['--config', config, 'diagnose', '--cluster', 'lab', '--json'])).stdout) as DiagnoseReport;
  expect(d.findings.filter((f) => f.seed === '001')).toEqual([]);
  recordHistory(runId, 'remediate-node-address-fixed.json');
}, 600_000);

test('a Calico method that cannot work (interface=enp0s3, the NAT address every node has): the rollout never becomes Ready, the DaemonSet is rolled back to a byte-identical template, and the run fails with the reason', async () => {
  const before = clusterState();
  const r = await runCli(['--config', config, 'run', 'node-address', '--cluster', 'lab', '--calico-method', 'interface=enp0s3', '--rollout-timeout', '40s', '--auto-approve', '--json'], {}, 300_000);
  expect({ code: r.code, stderr: r.stderr }).toMatchObject({ code: 1 });
  expect(r.stderr).toContain('calico-node did not become Ready on every node with IP_AUTODETECTION_METHOD=interface=enp0s3 within 40 s');
  const runId = runIdFrom(r.stderr);
  expect(calicoTemplate()).toBe(before.calicoTemplate);
  expect(clusterState()).toEqual(before);
  const trail = await auditOf(runId);
  expect(trail.map((x) => [x.step, x.outcome])).toEqual([
    ['plan', 'planned'],
    ['approval', 'approved'],
    ['calico-autodetection', 'applied'],
    ['undo-calico-autodetection', 'applied'],
    ['cluster/failed', 'failed'],
    ['run/failed', 'failed'],
  ]);
  expect(trail.find((x) => x.step === 'undo-calico-autodetection')!.after).toMatchObject({ identical: true });
  // The controller rolls the old template back out: calico-node Ready everywhere again.
  const pods = await waitForCalicoNodes(dir, 'calico-node back to can-reach and Ready', (ps) => ps.length === 3 && ps.every((p) => p.ready && p.method === 'can-reach=10.213.0.11'), 180_000);
  expect(pods).toHaveLength(3);
}, 400_000);

test('the worker SIGKILLed after each kind of step: the run still fixes every node, each line written once, each kubelet restarted once, calico-node changed once', async () => {
  // The fault back: every kubelet without --node-ip (so on 10.0.2.15 again), calico-node on first-found.
  for (const n of names) ssh(n, "printf 'KUBELET_EXTRA_ARGS=\\n' > /etc/default/kubelet && systemctl restart kubelet");
  kubectl(['-n', 'kube-system', 'set', 'env', 'daemonset/calico-node', 'IP_AUTODETECTION_METHOD-']);
  for (let i = 0; i < 120 && !names.every((n) => internalIp(n) === '10.0.2.15' && ready(n) === 'True'); i++) await new Promise((res) => setTimeout(res, 500));
  expect(names.map((n) => [internalIp(n), ready(n)])).toEqual(names.map(() => ['10.0.2.15', 'True']));
  await waitForCalicoNodes(dir, 'calico-node back on first-found', (ps) => ps.length === 3 && ps.every((p) => p.method === ''), 180_000);
  const startsBefore = Object.fromEntries(names.map((n) => [n, kubeletStarts(n)]));
  await worker!.stop(); // only the crashing worker polls from here on
  worker = undefined;
  const cfg = loadTestConfig(config);
  const { client, close } = await testClient();
  try {
    const handle = await client.workflow.start('remediateNodeAddress', {
      workflowId: `node-address-lab-crash-${randomBytes(3).toString('hex')}`,
      taskQueue: cfg.temporal.taskQueue,
      args: [{ cluster: 'lab', requestedBy: 'crash test', autoApprove: true, heartbeatTimeoutMs: 3000, activityTimeoutMs: 60_000, retry: { initialIntervalMs: 500, maximumIntervalMs: 2000, maximumAttempts: 20 } }],
    });
    const { result, error, restarts, crashedAfter } = await runThroughCrashes<NodeAddressResult>(handle, config, join(dir, 'crash-node-address.log'));
    expect(describeError(error)).toBeUndefined();
    expect(result!.outcome).toBe('fixed');
    expect(crashedAfter).toEqual(expect.arrayContaining(['gatherNodeFacts', 'readClusterFacts', 'checkClusterHealth', 'writeKubeletNodeIp', 'restartKubelet', 'waitForNodeAddress', 'setCalicoAutodetection', 'waitForCalicoRollout', 'recordAudit']));
    expect(restarts).toBe(crashedAfter.length);
    // The first node's retries found their work done: the line written, the kubelet on its new address.
    expect(result!.nodes[0]).toMatchObject({ name: 'node2', written: 'already', internalIps: ['10.213.0.12'] });
    expect(result!.nodes[0].resumed).toEqual(['kubelet-node-ip', 'restart-kubelet']);
    expect(result!.clusterChange).toMatchObject({ calico: { to: 'can-reach=10.213.0.11', outcome: 'already' } });
    const trail = await auditOf(handle.workflowId);
    expect(trail.map((x) => [x.step, x.outcome])).toEqual(FIXED_TRAIL);
    for (const n of names) expect([n, internalIp(n), ready(n), ssh(n, 'cat /etc/default/kubelet')]).toEqual([n, OWN[n], 'True', `KUBELET_EXTRA_ARGS="--node-ip=${OWN[n]}"\n`]);
    // Each kubelet started once more: the run's one restart (the lab's kubelet log says "Started kubelet" at each start).
    expect(Object.fromEntries(names.map((n) => [n, kubeletStarts(n) - startsBefore[n]]))).toEqual(Object.fromEntries(names.map((n) => [n, 1])));
    expect(calicoMethod()).toBe('can-reach=10.213.0.11');
  } finally {
    await close();
  }
}, 600_000);
