/**
 * The default-route remediation (seed 002) on the lab: real Temporal, real sshd on each node,
 * a real kube-apiserver, and the real flanneld v0.28.10 as each node's kube-flannel pod
 * (realFlannel). node1, the control plane, boots with its uplink down: flanneld exits with its
 * own message and the pod crash-loops. The CLI is run as an SRE runs it.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { AuditRecord } from '../../lib/audit';
import { inCidr } from '../../lib/detect/facts';
import type { DiagnoseReport } from '../../lib/diagnose';
import { TOOLS_BIN } from '../../worker/paths';
import type { DefaultRouteResult } from '../../workflows/default-route';
import { podAdd, podDel } from '../lab/cni';
import { controlPlaneInfo, type ControlPlaneInfo } from '../lab/control-plane';
import { flanneldPid, readSubnetEnv } from '../lab/flannel';
import { flannelPod, inCrashLoop, waitForFlannelCrashLoop, waitForFlannelPod, waitForFlannelPodReady } from '../lab/flannel-kubelet';
import { down, type LabState, readState, requestReboot, up } from '../lab/lab';
import { describeError, runThroughCrashes } from '../helpers/crash-run';
import { labSsh, labTestConfig } from '../helpers/lab';
import { loadTestConfig, recordHistory, runCli, runIdFrom, type RunningWorker, startWorker, tempDir, testClient } from '../helpers/harness';

const KUBECTL = join(TOOLS_BIN, 'kubectl');
const dir = join(tempDir('droute'), 'lab');
/** flanneld v0.28.10's own words (the seed's older flanneld capitalised "Unable"). */
const FLANNELD_NO_ROUTE = 'Failed to find any valid interface to use: failed to get default interface: unable to find default route';
let state: LabState;
let cp: ControlPlaneInfo;
let worker: RunningWorker | undefined;
let config: string;
const names = ['node1', 'node2', 'node3'];
/** A fixed node1's audit trail: each step once, in order, with the outcome of the attempt that did it. */
const FIXED_TRAIL = [
  ['plan', 'planned'],
  ['approval', 'approved'],
  ['node1/network-config', 'applied'],
  ['node1/restart-pod', 'applied'],
  ['node1/fixed', 'applied'],
];

beforeAll(async () => {
  state = await up({ dir, nodes: 3, controlPlane: true, scenarios: ['no-default-route'], realFlannel: true, rebootDowntimeMs: 300 });
  cp = controlPlaneInfo(dir)!;
  config = labTestConfig(dir, 'droute');
  worker = await startWorker(loadTestConfig(config));
  await waitForFlannelCrashLoop(dir, 'node1');
  for (const n of ['node2', 'node3']) await waitForFlannelPodReady(dir, n);
}, 300_000);

afterAll(async () => {
  await worker?.stop();
  await down(dir);
});

const port = (name: string) => state.nodes.find((n) => n.name === name)!.port;
const ssh = (name: string, cmd: string) => labSsh(dir, port(name), cmd);
function kubectl(args: string[]) {
  const r = spawnSync(KUBECTL, ['--kubeconfig', cp.adminKubeconfig, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const podCidr = (name: string) => kubectl(['get', 'node', name, '-o', 'jsonpath={.spec.podCIDR}']).stdout.trim();
const routes = (name: string) => JSON.parse(ssh(name, 'ip -j route')) as Array<{ dst: string; gateway?: string; dev?: string }>;
const defaultRoute = (name: string) => routes(name).find((r) => r.dst === 'default') ?? null;
const hostLinks = (name: string) => (JSON.parse(ssh(name, 'ip -j link')) as Array<{ ifname: string; flags: string[] }>).filter((l) => /^enp/.test(l.ifname)).map((l) => [l.ifname, l.flags.includes('UP')]);

/** What a run could change on the nodes and in the API, as an operator would look at it. */
async function clusterState() {
  const pods = await Promise.all(names.map(async (n) => (await flannelPod(dir, n))?.uid ?? null));
  return { routes: names.map(routes), links: names.map(hostLinks), flannelPods: pods, netplan: names.map((n) => ssh(n, 'cat /etc/netplan/50-cloud-init.yaml')) };
}

async function auditOf(runId: string, cfgPath = config): Promise<AuditRecord[]> {
  const r = await runCli(['--config', cfgPath, 'audit', 'show', runId, '--json']);
  expect(r.stderr).toBe('');
  return JSON.parse(r.stdout) as AuditRecord[];
}

async function diagnose(): Promise<DiagnoseReport> {
  const r = await runCli(['--config', config, 'diagnose', '--cluster', 'lab', '--json']);
  return JSON.parse(r.stdout) as DiagnoseReport;
}

/**
 * Waits until node1's kube-flannel pod has just gone back into CrashLoopBackOff after a
 * restart later than the one it shows now, so the back-off (10 s and doubling) lies ahead of
 * whatever reads it next: between back-offs the pod is Running for the second flanneld takes
 * to fail.
 */
async function freshCrashLoop(): Promise<void> {
  const before = (await flannelPod(dir, 'node1'))?.restartCount ?? 0;
  await waitForFlannelPod(dir, 'node1', `in CrashLoopBackOff after restart ${before + 1}`, (p) => inCrashLoop(p) && p.restartCount > before, 180_000);
}

test("diagnose names seed 002 on node1 with the real flanneld's message from its crash-looping pod, and the fix", async () => {
  await freshCrashLoop();
  const report = await diagnose();
  const found = report.findings.filter((f) => f.seed === '002');
  expect(found.map((f) => f.node)).toEqual(['node1']);
  expect(found[0].fixable).toBe(true);
  expect(found[0].evidence).toEqual(
    expect.arrayContaining([
      'ip route show default: no default route',
      '/etc/netplan/50-cloud-init.yaml gives enp0s3 the default route; enp0s3 is DOWN',
      expect.stringMatching(/^kube-flannel\/kube-flannel-ds-\w+: CrashLoopBackOff, [1-9]\d* restarts: back-off \d+\w* restarting failed container=kube-flannel/),
      expect.stringMatching(new RegExp(`^kube-flannel/kube-flannel-ds-\\w+ last log line: E\\d{4} [\\d:.]+ +\\d+ main\\.go:\\d+\\] ${FLANNELD_NO_ROUTE}$`)),
    ]),
  );
  const text = await runCli(['--config', config, 'diagnose', '--cluster', 'lab']);
  expect(text.code).toBe(4);
  expect(text.stdout).toContain('kubemend run default-route --cluster lab --node node1');
}, 240_000);

test('a node whose configuration gives no interface the default route: the run fails with a clear reason and changes nothing', async () => {
  const original = ssh('node1', 'cat /etc/netplan/50-cloud-init.yaml');
  ssh('node1', "sed -i 's/dhcp4: true/dhcp4: false/' /etc/netplan/50-cloud-init.yaml");
  try {
    const before = await clusterState();
    const r = await runCli(['--config', config, 'run', 'default-route', '--cluster', 'lab', '--auto-approve']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('node1: no default route, and no network configuration on the node gives one (read: /etc/netplan/50-cloud-init.yaml); kubemend never invents a gateway: fix the node\'s configuration by hand. Nothing was changed');
    expect(await clusterState()).toEqual(before);
    const trail = await auditOf(runIdFrom(r.stderr));
    expect(trail.map((x) => [x.step, x.outcome])).toEqual([['refused', 'refused']]);
    expect(trail[0].error).toContain('NodeStateUnexpected: node1: no default route, and no network configuration on the node gives one');
  } finally {
    ssh('node1', `echo ${Buffer.from(original).toString('base64')} | base64 -d > /etc/netplan/50-cloud-init.yaml`);
  }
  expect(ssh('node1', 'cat /etc/netplan/50-cloud-init.yaml')).toBe(original);
});

test('--dry-run prints the plan (netplan apply, the pod to restart, why it will recur) and changes nothing', async () => {
  const before = await clusterState();
  const r = await runCli(['--config', config, 'run', 'default-route', '--cluster', 'lab', '--dry-run', '--json']);
  expect(r.code).toBe(0);
  const result = JSON.parse(r.stdout) as DefaultRouteResult;
  expect(result.outcome).toBe('planned (dry run)');
  const [n1] = result.plan!.nodes;
  expect(result.plan!.nodes.map((n) => [n.name, n.role, n.manager, n.commands])).toEqual([['node1', 'control-plane', 'netplan', [['netplan', 'apply']]]]);
  expect(n1.cniPods.map((p) => `${p.namespace}/${p.name}`)).toEqual([`kube-flannel/${(await flannelPod(dir, 'node1'))!.name}`]);
  expect(n1.podCidr).toBe(podCidr('node1'));
  expect(result.plan!.summary).toEqual(expect.arrayContaining([expect.stringMatching(/^No drain/), expect.stringMatching(/^node1 will break again: \/etc\/netplan\/50-cloud-init.yaml brings enp0s3 up at boot, yet after boot/)]));
  expect(result.remaining).toEqual([expect.stringMatching(/^node1: ip route show default: no default route/)]);
  expect(await clusterState()).toEqual(before);
  expect((await auditOf(runIdFrom(r.stderr))).map((x) => [x.step, x.outcome])).toEqual([['plan', 'dry-run']]);
  recordHistory(runIdFrom(r.stderr), 'remediate-default-route-dry-run.json');
});

test("an approved run fixes node1: default route, flanneld running, subnet.env in the podCIDR, a new pod gets an address, the pod Ready; nobody else's routes change", async () => {
  const before = await clusterState();
  const oldPod = (await flannelPod(dir, 'node1'))!;
  const r = await runCli(['--config', config, 'run', 'default-route', '--cluster', 'lab', '--node', 'node1', '--auto-approve', '--json', '--reason', 'INC-002 flannel crash loop on the control plane'], {}, 400_000);
  expect(r.stderr).not.toMatch(/run failed/);
  expect(r.code).toBe(0);
  const result = JSON.parse(r.stdout) as DefaultRouteResult;
  const runId = runIdFrom(r.stderr);
  expect(result.outcome).toBe('fixed');
  const [n1] = result.nodes;
  expect(n1).toMatchObject({ name: 'node1', manager: 'netplan', command: 'netplan apply', interfaces: ['enp0s3'], defaultRoute: { dev: 'enp0s3', gateway: '10.0.2.2' }, restartedPods: [`kube-flannel/${oldPod.name}`] });
  expect(n1.gatewayPingMs).toBeGreaterThan(0);
  expect(inCidr(n1.probeIp!, podCidr('node1'))).toBe(true);
  expect(n1.willRecur).toEqual([expect.stringContaining('the next reboot will probably do the same')]);

  // As an operator checks it: ssh and kubectl.
  expect(defaultRoute('node1')).toMatchObject({ gateway: '10.0.2.2', dev: 'enp0s3' });
  expect(flanneldPid(dir, 'node1')).toBeDefined();
  const env = readSubnetEnv(dir, 'node1')!;
  expect(inCidr(env.FLANNEL_SUBNET, podCidr('node1'))).toBe(true);
  const pod = (await flannelPod(dir, 'node1'))!;
  expect(pod.uid).not.toBe(oldPod.uid);
  expect(pod.ready).toBe(true);
  const added = await podAdd(dir, 'node1', { namespace: 'default', name: 'after-default-route' });
  expect(inCidr(added.address, podCidr('node1'))).toBe(true);
  await podDel(dir, 'node1', { namespace: 'default', name: 'after-default-route' });
  // The probe sandbox is gone, and nobody else's routes or links changed.
  expect(ssh('node1', 'crictl pods | grep -c kubemend-probe || true').trim()).toBe('0');
  const after = await clusterState();
  // The other nodes' flanneld learned node1's lease and routes its subnet over flannel.1 (the
  // overlay works again); kubemend changed nothing else on them.
  const toNode1 = (r: { dst: string; dev?: string }) => r.dev === 'flannel.1' && r.dst === env.FLANNEL_SUBNET.replace(/\.1\//, '.0/');
  for (const i of [1, 2]) {
    expect(after.routes[i].filter(toNode1)).toHaveLength(1);
    expect(after.routes[i].filter((r) => !toNode1(r))).toEqual(before.routes[i]);
  }
  expect(after.links.slice(1)).toEqual(before.links.slice(1));
  expect(after.netplan).toEqual(before.netplan);

  const trail = await auditOf(runId);
  expect(trail.map((x) => [x.step, x.outcome])).toEqual(FIXED_TRAIL);
  const applied = trail[2];
  expect(applied.action).toBe('netplan apply');
  expect(applied.before).toMatchObject({ defaultRoute: null, links: expect.arrayContaining([{ ifname: 'enp0s3', operstate: 'DOWN', up: false }]) });
  expect(applied.after).toMatchObject({ defaultRoute: { dev: 'enp0s3', gateway: '10.0.2.2' } });
  expect((await diagnose()).findings.filter((f) => f.seed === '002')).toEqual([]);
  recordHistory(runId, 'remediate-default-route-fixed.json');
}, 420_000);

test('after a reboot of node1 the failure comes back, as the result said it would', async () => {
  await requestReboot(dir, 'node1');
  await waitForFlannelCrashLoop(dir, 'node1');
  expect(defaultRoute('node1')).toBeNull();
  const found = (await diagnose()).findings.filter((f) => f.seed === '002');
  expect(found.map((f) => f.node)).toEqual(['node1']);
}, 240_000);

test('the worker SIGKILLed after each kind of step: the run still fixes node1, and netplan apply and the pod delete each happen once', async () => {
  await waitForFlannelCrashLoop(dir, 'node1');
  const bootsBefore = readState(dir)!.nodes.map((n) => n.boots);
  await worker!.stop(); // only the crashing worker polls from here on
  worker = undefined;
  const cfg = loadTestConfig(config);
  const { client, close } = await testClient();
  const crashLog = join(dir, 'crash-default-route.log');
  try {
    const handle = await client.workflow.start('remediateDefaultRoute', {
      workflowId: `default-route-lab-crash-${randomBytes(3).toString('hex')}`,
      taskQueue: cfg.temporal.taskQueue,
      args: [{ cluster: 'lab', nodes: ['node1'], requestedBy: 'crash test', autoApprove: true, heartbeatTimeoutMs: 3000, activityTimeoutMs: 60_000, retry: { initialIntervalMs: 500, maximumIntervalMs: 2000, maximumAttempts: 20 } }],
    });
    const { result, error, restarts, crashedAfter } = await runThroughCrashes<DefaultRouteResult>(handle, config, crashLog);
    expect(describeError(error)).toBeUndefined();
    expect(result!.outcome).toBe('fixed');
    expect(crashedAfter).toEqual(expect.arrayContaining(['resolveRun', 'checkBreaker', 'listClusterNodes', 'gatherNodeFacts', 'readClusterFacts', 'checkExcluded', 'applyNetworkConfig', 'waitForDefaultRoute', 'restartCniPods', 'waitForCniPods', 'probePodNetwork', 'recordAudit']));
    expect(restarts).toBe(crashedAfter.length);
    // The retries found the work done: netplan apply once (its retry saw the route), the pod deleted once (the retry's uid precondition failed).
    expect(result!.nodes[0].resumed).toEqual(['network-config', 'restart-pod']);
    const trail = await auditOf(handle.workflowId);
    expect(trail.map((x) => [x.step, x.outcome])).toEqual(FIXED_TRAIL);
    expect(defaultRoute('node1')).toMatchObject({ dev: 'enp0s3' });
    expect((await flannelPod(dir, 'node1'))?.ready).toBe(true);
    expect(readState(dir)!.nodes.map((n) => n.boots)).toEqual(bootsBefore); // nothing rebooted
    expect(ssh('node1', 'crictl pods | grep -c kubemend-probe || true').trim()).toBe('0');
  } finally {
    await close();
  }
}, 600_000);
