/**
 * The stale-cni remediation's full level (seed 003: kubeadm reset and re-join) on the lab:
 * real Temporal, real sshd on each node, a real kube-apiserver and controllers, the real CNI
 * plugins and flanneld v0.28.10, and the lab's kubeadm (test/lab: what of it is the real
 * kubeadm v1.34.4 and what a stand-in, the lab's README section says). All three nodes are
 * `stale-cni`'s: cni0 carries the lease from before `kubeadm reset`, and host-local's cbr0
 * range is full of leaked files (ipam-gc frees a node's range first, as the light level's
 * refusal asks). node1 is the control plane: it makes the join tokens.
 *
 * The CLI is run as an SRE runs it; the nodes are looked at over ssh and kubectl.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { inCidr } from '../../lib/detect/facts';
import type { StaleCniResult } from '../../workflows/stale-cni';
import { randomBytes } from 'node:crypto';
import { podAdd, podDel } from '../lab/cni';
import { controlPlaneInfo, type ControlPlaneInfo } from '../lab/control-plane';
import { previousClusterCredentials } from '../lab/kubeadm-cluster';
import { describeError, runThroughCrashes } from '../helpers/crash-run';
import { readSubnetEnv } from '../lab/flannel';
import { flannelPod, waitForFlannelPodReady } from '../lab/flannel-kubelet';
import { down, type LabState, podCidrPrefix, staleLeasePrefix, up } from '../lab/lab';
import { auditTrail, BOOTSTRAP_TOKEN, historyText, labKubectl, labSsh, labSshArgs, labTestConfig, nodeIpv4 } from '../helpers/lab';
import { loadTestConfig, recordHistory, runCli, runIdFrom, type RunningWorker, startWorker, tempDir, testClient } from '../helpers/harness';

const dir = join(tempDir('stalecnifull'), 'lab');
let state: LabState;
let cp: ControlPlaneInfo;
let worker: RunningWorker | undefined;
let config: string;
const names = ['node1', 'node2', 'node3'];
const N3_CIDR = `${podCidrPrefix(3)}.0/24`;
const N3_GW = `${podCidrPrefix(3)}.1/24`;
const N3_VTEP = `${podCidrPrefix(3)}.0/32`;
const N3_STALE_GW = `${staleLeasePrefix(3)}.1/24`;
const N2_CIDR = `${podCidrPrefix(2)}.0/24`;
const N2_GW = `${podCidrPrefix(2)}.1/24`;
const N2_STALE_GW = `${staleLeasePrefix(2)}.1/24`;

beforeAll(async () => {
  state = await up({ dir, nodes: 3, controlPlane: true, scenarios: ['stale-cni'], realFlannel: true, rebootDowntimeMs: 300 });
  cp = controlPlaneInfo(dir)!;
  config = labTestConfig(dir, 'stalecnifull');
  worker = await startWorker(loadTestConfig(config));
  for (const n of names) await waitForFlannelPodReady(dir, n);
}, 300_000);

afterAll(async () => {
  await worker?.stop();
  await down(dir);
});

const port = (name: string) => state.nodes.find((n) => n.name === name)!.port;
const ssh = (name: string, cmd: string) => labSsh(dir, port(name), cmd);
const sshRun = (name: string, cmd: string) => spawnSync('ssh', labSshArgs(dir, port(name), cmd), { encoding: 'utf8' });
const kubectl = (args: string[]) => labKubectl(cp.adminKubeconfig, args);
const v4 = (name: string, dev: string) => nodeIpv4(dir, port(name), dev);
const unschedulable = (name: string) => kubectl(['get', 'node', name, '-o', 'jsonpath={.spec.unschedulable}']).stdout.trim() === 'true';
const fileSum = (name: string, path: string) => ssh(name, `sha256sum ${path} 2>/dev/null || echo missing`).trim();

/** What a run could change, as an operator would look at it. */
async function clusterState() {
  return Promise.all(
    names.map(async (n) => ({
      cni0: v4(n, 'cni0'),
      flannel1: v4(n, 'flannel.1'),
      subnet: readSubnetEnv(dir, n)?.FLANNEL_SUBNET ?? null,
      flannelPod: (await flannelPod(dir, n))?.uid ?? null,
      unschedulable: unschedulable(n),
      kubeletConf: fileSum(n, '/etc/kubernetes/kubelet.conf'),
      cniConfigs: ssh(n, 'ls /etc/cni/net.d').trim(),
      backups: ssh(n, 'ls /var/lib/kubemend/backup 2>/dev/null | wc -l').trim(),
    })),
  );
}

const readyOf = (name: string) => kubectl(['get', 'node', name, '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']).stdout;
/** How many kubelet client CSRs the cluster holds for the node: one per TLS bootstrap, so one per real `kubeadm join`. */
function csrsOf(name: string): number {
  const list = JSON.parse(kubectl(['get', 'csr', '-o', 'json']).stdout) as { items: Array<{ spec: { request: string; signerName: string } }> };
  return list.items.filter((c) => {
    if (c.spec.signerName !== 'kubernetes.io/kube-apiserver-client-kubelet') return false;
    const subject = spawnSync('openssl', ['req', '-noout', '-subject'], { input: Buffer.from(c.spec.request, 'base64'), encoding: 'utf8' }).stdout;
    return subject.includes(`CN = system:node:${name}`) || subject.includes(`CN=system:node:${name}`);
  }).length;
}

const auditOf = (runId: string) => auditTrail(config, runId);

test('bad flags: exit 2 with what is wrong, before anything runs', async () => {
  const before = await clusterState();
  const both = await runCli(['--config', config, 'run', 'stale-cni', '--cluster', 'lab', '--node', 'node3', '--full', '--escalate']);
  expect(both.code).toBe(2);
  expect(both.stderr).toContain('--full and --escalate: give one of them');
  const other = await runCli(['--config', config, 'run', 'default-route', '--cluster', 'lab', '--full']);
  expect(other.code).toBe(2);
  expect(other.stderr).toContain('--full, --escalate and --join-timeout apply to stale-cni only');
  const bad = await runCli(['--config', config, 'run', 'stale-cni', '--cluster', 'lab', '--full', '--join-timeout', 'soon']);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toContain('--join-timeout: "soon" is not a duration');
  expect(await clusterState()).toEqual(before);
}, 120_000);

test('--full --dry-run on node3 (after ipam-gc freed its range): the full plan, with the backup, the reset, the join from node1; nothing changes', async () => {
  const gc = await runCli(['--config', config, 'run', 'ipam-gc', '--cluster', 'lab', '--node', 'node3', '--grace', '0s', '--auto-approve', '--json'], {}, 300_000);
  expect(gc.code).toBe(0);
  const before = await clusterState();
  const r = await runCli(['--config', config, 'run', 'stale-cni', '--cluster', 'lab', '--node', 'node3', '--full', '--dry-run', '--json']);
  expect(r.code).toBe(0);
  const result = JSON.parse(r.stdout) as StaleCniResult;
  expect(result.outcome).toBe('planned (dry run)');
  const [n3] = result.plan!.nodes;
  expect(n3).toMatchObject({ name: 'node3', level: 'full', escalate: false, podCidr: N3_CIDR, full: { joinFrom: 'node1', moveConfigs: [], deadNetworks: [] } });
  expect(n3.steps[0]).toMatch(/^back up, once: \/etc\/kubernetes, .* into \/var\/lib\/kubemend\/backup\/<run>\/stale-cni\/ on node3$/);
  expect(n3.steps[1]).toMatch(/^kubeadm reset -f \(its output goes into the audit record\); from here there is no undo/);
  expect(n3.steps.some((s) => s.startsWith('kubeadm token create --ttl 15m0s --print-join-command on node1; kubeadm join --config as node3'))).toBe(true);
  expect(result.plan!.summary![0]).toMatch(/^Full level on every node/);
  expect(await clusterState()).toEqual(before);
  expect((await auditOf(runIdFrom(r.stderr))).map((x) => [x.step, x.outcome])).toEqual([['plan', 'dry-run']]);
}, 420_000);

test('an approved --full run on node3: backed up, reset (kubeadm\'s output in the audit), cni0 deleted, re-joined with a fresh token that appears nowhere, Ready, flannel restarted, a new pod in the podCIDR; node1 and node2 untouched', async () => {
  const before = await clusterState();
  const oldPod = (await flannelPod(dir, 'node3'))!;
  const t0 = Date.now();
  const r = await runCli(['--config', config, 'run', 'stale-cni', '--cluster', 'lab', '--node', 'node3', '--full', '--auto-approve', '--json', '--drain-timeout', '150s', '--pod-timeout', '150s', '--join-timeout', '240s', '--reason', 'INC-003 node3 reset by hand twice already'], {}, 900_000);
  const wallMs = Date.now() - t0;
  expect(r.stderr).not.toMatch(/run failed/);
  expect(r.code).toBe(0);
  process.stdout.write(`stale-cni --full on node3: ${(wallMs / 1000).toFixed(1)} s wall (CLI start to result)\n`);
  const result = JSON.parse(r.stdout) as StaleCniResult;
  const runId = runIdFrom(r.stderr);
  expect(result.outcome).toBe('fixed');
  const [n3] = result.nodes;
  expect(n3).toMatchObject({ name: 'node3', level: 'full', escalatedBecause: null, reset: 'reset', joined: 'joined', moved: [], deleted: ['cni0'], podCidr: N3_CIDR, flannelSubnet: N3_GW, cni0: [N3_GW], flannel1: [N3_VTEP], uncordoned: true, resumed: [] });
  expect(n3.restartedPods).toHaveLength(1);
  expect(inCidr(n3.probeIp!, N3_CIDR)).toBe(true);

  // As an operator checks it.
  expect(v4('node3', 'cni0')).toEqual([N3_GW]);
  expect(readSubnetEnv(dir, 'node3')?.FLANNEL_SUBNET).toBe(N3_GW);
  expect(sshRun('node3', 'test -s /etc/kubernetes/kubelet.conf').status).toBe(0);
  const backup = ssh('node3', `ls /var/lib/kubemend/backup/${runId.replace(/[^A-Za-z0-9-]/g, '-')}/stale-cni`).trim().split('\n');
  expect(backup).toEqual(expect.arrayContaining(['addresses', 'complete', 'etc-kubernetes', 'reset.done', 'reset.out', 'routes', 'var-lib-kubelet']));
  // What kubeadm reset deletes of the kubelet's: its flags, its config and, since kubeadm v1.34, its instance config (the CRI endpoint).
  const kubelet = ssh('node3', `ls /var/lib/kubemend/backup/${runId.replace(/[^A-Za-z0-9-]/g, '-')}/stale-cni/var-lib-kubelet`).trim().split('\n');
  expect(kubelet).toEqual(expect.arrayContaining(['config.yaml', 'instance-config.yaml', 'kubeadm-flags.env']));
  expect(kubectl(['get', 'node', 'node3', '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']).stdout).toBe('True');
  const pod = (await flannelPod(dir, 'node3'))!;
  expect(pod.uid).not.toBe(oldPod.uid);
  expect(pod.ready).toBe(true);
  const added = await podAdd(dir, 'node3', { namespace: 'default', name: 'after-full' });
  expect(inCidr(added.address, N3_CIDR)).toBe(true);
  await podDel(dir, 'node3', { namespace: 'default', name: 'after-full' });
  expect(unschedulable('node3')).toBe(false);
  const after = await clusterState();
  expect([after[0], after[1]]).toEqual([before[0], before[1]]); // node1 (which made the token) and node2: nothing changed
  expect(ssh('node1', 'kubeadm token list 2>&1').trim()).not.toMatch(BOOTSTRAP_TOKEN); // the token is gone

  const trail = await auditOf(runId);
  expect(trail.map((x) => [x.node, x.step, x.outcome])).toEqual([
    ['', 'plan', 'planned'],
    ['', 'approval', 'approved'],
    ['node3', 'node3/cordon', 'applied'],
    ['node3', 'node3/drain', 'applied'],
    ['node3', 'node3/backup', 'applied'],
    ['node3', 'node3/kubeadm-reset', 'applied'],
    ['node3', 'node3/delete-cni0', 'applied'],
    ['node3', 'node3/join', 'applied'],
    ['node1', 'node3/join-token-delete', 'applied'],
    ['node3', 'node3/restart-pod', 'applied'],
    ['node3', 'node3/uncordon', 'applied'],
    ['node3', 'node3/fixed', 'applied'],
  ]);
  const reset = trail.find((x) => x.step === 'node3/kubeadm-reset')!;
  expect(reset.action).toBe('kubeadm reset -f');
  expect((reset.after as { output: string[] }).output.some((l) => l.startsWith('[reset] '))).toBe(true);
  expect(trail.find((x) => x.step === 'node3/delete-cni0')!.after).toEqual({ deleted: true, carried: [N3_STALE_GW] });
  expect(trail.find((x) => x.step === 'node3/join')!.action).toMatch(/^kubeadm join <the control plane's endpoint> --token <redacted> \(a 15m0s token made on node1, deleted after\)/);
  // The token: nowhere in the trail, nowhere in the run's history (every payload decoded).
  expect(JSON.stringify(trail)).not.toMatch(BOOTSTRAP_TOKEN);
  const history = historyText(runId);
  expect(history).toContain('kubeadm token create --ttl 15m0s'); // the plan, inside a payload: the scan reads them
  expect(history).not.toMatch(BOOTSTRAP_TOKEN);
  recordHistory(runId, 'remediate-stale-cni-full.json');
}, 960_000);

test("node2's kubelet holds a previous cluster's credentials (NotReady): without --escalate the light level fails and nothing is reset; with it the run goes on to the full level as the plan said, and node2 ends joined, Ready and fixed", async () => {
  const gc = await runCli(['--config', config, 'run', 'ipam-gc', '--cluster', 'lab', '--node', 'node2', '--grace', '0s', '--auto-approve', '--json'], {}, 300_000);
  expect(gc.code).toBe(0);
  await previousClusterCredentials(dir, 'node2');
  for (let i = 0; i < 120 && readyOf('node2') === 'True'; i++) await new Promise((r) => setTimeout(r, 1000));
  expect(readyOf('node2')).not.toBe('True');
  const csrsBefore = csrsOf('node2');
  // Without --escalate the plan does not allow the full level: the light level fails its verification, nothing is reset, node2 stays cordoned.
  const lightOnly = await runCli(['--config', config, 'run', 'stale-cni', '--cluster', 'lab', '--node', 'node2', '--auto-approve', '--json', '--drain-timeout', '150s', '--pod-timeout', '40s'], {}, 600_000);
  expect(lightOnly.code).toBe(1);
  expect(lightOnly.stderr).toMatch(/run failed: VerificationFailed: /);
  const lightTrail = (await auditOf(runIdFrom(lightOnly.stderr))).map((x) => x.step);
  expect(lightTrail).toContain('node2/delete-cni0');
  expect(lightTrail.filter((x) => /backup|kubeadm-reset|join/.test(x))).toEqual([]);
  expect(csrsOf('node2')).toBe(csrsBefore);
  expect(unschedulable('node2')).toBe(true);
  expect(kubectl(['uncordon', 'node2']).code).toBe(0); // as an SRE would before running again
  // The light run deleted cni0: the stale bridge back, as the scenario made it, so the next run has seed 003's finding to plan for.
  ssh('node2', `ip link show cni0 >/dev/null 2>&1 || ip link add cni0 type bridge; ip addr flush dev cni0 && ip addr add ${N2_STALE_GW} dev cni0 && ip link set cni0 up`);
  const r = await runCli(['--config', config, 'run', 'stale-cni', '--cluster', 'lab', '--node', 'node2', '--escalate', '--auto-approve', '--json', '--drain-timeout', '150s', '--pod-timeout', '40s', '--join-timeout', '240s'], {}, 900_000);
  expect(r.stderr).not.toMatch(/run failed/);
  expect(r.code).toBe(0);
  const result = JSON.parse(r.stdout) as StaleCniResult;
  const runId = runIdFrom(r.stderr);
  expect(result.plan!.nodes[0]).toMatchObject({ name: 'node2', level: 'light', escalate: true });
  const [n2] = result.nodes;
  expect(n2).toMatchObject({ name: 'node2', level: 'full', reset: 'reset', joined: 'joined', podCidr: N2_CIDR, cni0: [N2_GW], flannelSubnet: N2_GW, uncordoned: true });
  expect(n2.escalatedBecause).toMatch(/^the light (level failed|fix did not verify): /);
  expect(readyOf('node2')).toBe('True');
  expect(csrsOf('node2')).toBe(csrsBefore + 1);
  const added = await podAdd(dir, 'node2', { namespace: 'default', name: 'after-escalation' });
  expect(inCidr(added.address, N2_CIDR)).toBe(true);
  await podDel(dir, 'node2', { namespace: 'default', name: 'after-escalation' });
  const steps = (await auditOf(runId)).map((x) => x.step);
  expect(steps.indexOf('node2/backup')).toBeGreaterThan(0);
  expect(steps.slice(steps.indexOf('node2/backup'))).toEqual(['node2/backup', 'node2/kubeadm-reset', 'node2/join', 'node2/join-token-delete', 'node2/restart-pod', 'node2/uncordon', 'node2/fixed']);
  expect(historyText(runId)).not.toMatch(BOOTSTRAP_TOKEN);
}, 960_000);

test('the worker SIGKILLed after each kind of step of a --full run on node3 (its stale cni0 put back): fixed, kubeadm reset applied once, one join (one CSR), the trail in order', async () => {
  ssh('node3', `ip addr flush dev cni0 && ip addr add ${N3_STALE_GW} dev cni0`);
  const csrsBefore = csrsOf('node3');
  await worker!.stop(); // only the crashing worker polls from here on
  worker = undefined;
  const cfg = loadTestConfig(config);
  const { client, close } = await testClient();
  try {
    const handle = await client.workflow.start('remediateStaleCni', {
      workflowId: `stale-cni-full-crash-${randomBytes(3).toString('hex')}`,
      taskQueue: cfg.temporal.taskQueue,
      args: [{ cluster: 'lab', nodes: ['node3'], requestedBy: 'crash test', autoApprove: true, full: true, joinTimeoutMs: 240_000, podTimeoutMs: 150_000, heartbeatTimeoutMs: 3000, activityTimeoutMs: 60_000, retry: { initialIntervalMs: 500, maximumIntervalMs: 2000, maximumAttempts: 20 } }],
    });
    const { result, error, restarts, crashedAfter } = await runThroughCrashes<StaleCniResult>(handle, config, join(dir, 'crash-stale-cni-full.log'));
    expect(describeError(error)).toBeUndefined();
    expect(result!.outcome).toBe('fixed');
    expect(crashedAfter).toEqual(expect.arrayContaining(['takeOutOfService', 'drain', 'backupBeforeReset', 'kubeadmReset', 'deleteStaleDevices', 'waitForNodeNotReady', 'joinNode', 'waitForRejoinedNode', 'readClusterFacts', 'restartCniPods', 'waitForCniPods', 'probePodNetwork', 'uncordon']));
    expect(restarts).toBe(crashedAfter.length);
    expect(result!.nodes[0]).toMatchObject({ level: 'full', reset: 'already', joined: 'already', alreadyGone: ['cni0'], cni0: [N3_GW], uncordoned: true });
    expect(result!.nodes[0].resumed).toEqual(expect.arrayContaining(['kubeadm-reset', 'join']));
    expect(csrsOf('node3')).toBe(csrsBefore + 1); // one TLS bootstrap: one real join
    const trail = await auditOf(handle.workflowId);
    const applied = (step: string) => trail.filter((x) => x.step === step && x.outcome === 'applied').length;
    expect([applied('node3/backup'), applied('node3/kubeadm-reset'), applied('node3/delete-cni0'), applied('node3/join')]).toEqual([1, 1, 1, 1]);
    expect(readyOf('node3')).toBe('True');
    expect(v4('node3', 'cni0')).toEqual([N3_GW]);
    expect(unschedulable('node3')).toBe(false);
  } finally {
    await close();
  }
}, 1_200_000);
