/**
 * The stale-cni remediation (seed 003, light level) on the lab: real Temporal, real sshd on
 * each node, a real kube-apiserver and controllers, the real CNI plugins (bridge, host-local,
 * flannel) through crictl runp and the lab's pod ADD, and the real flanneld v0.28.10 as each
 * node's kube-flannel pod (realFlannel). All three nodes are `stale-cni`'s: cni0 carries the lease
 * from before `kubeadm reset` (10.244.10x.1/24), outside the node's podCIDR, and host-local's
 * cbr0 range is full of leaked files. flanneld v0.28 replaces a stale flannel.1 itself when it
 * starts, so on this lab only cni0 stays stale by itself; the approved run's node also gets
 * the old lease's address put back on flannel.1 by hand, so the run deletes both devices and
 * restarts flannel, as on a node whose flanneld has not restarted since the re-join.
 * The CLI is run as an SRE runs it; the nodes are looked at over ssh and kubectl.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { inCidr } from '../../lib/detect/facts';
import type { DiagnoseReport } from '../../lib/diagnose';
import type { StaleCniResult } from '../../workflows/stale-cni';
import { CniPluginError, podAdd, podDel } from '../lab/cni';
import { controlPlaneInfo, type ControlPlaneInfo } from '../lab/control-plane';
import { readSubnetEnv } from '../lab/flannel';
import { flannelPod, waitForFlannelPodReady } from '../lab/flannel-kubelet';
import { down, type LabState, LIVE_PODS_PER_NODE, podCidrPrefix, staleLeasePrefix, up } from '../lab/lab';
import { describeError, runThroughCrashes } from '../helpers/crash-run';
import { auditTrail, labKubectl, labSsh, labTestConfig, nodeIpv4 } from '../helpers/lab';
import { loadTestConfig, recordHistory, runCli, runIdFrom, type RunningWorker, startWorker, tempDir, testClient } from '../helpers/harness';

// Three nodes: node2's pods (the web Deployment, under a PodDisruptionBudget) need another worker to drain to.
const dir = join(tempDir('stalecnifix'), 'lab');
let state: LabState;
let cp: ControlPlaneInfo;
let worker: RunningWorker | undefined;
let config: string;
const names = ['node1', 'node2', 'node3'];
/** node2's podCIDR, and what it says cni0 and flannel.1 must carry. */
const N2_CIDR = `${podCidrPrefix(2)}.0/24`;
const N2_GW = `${podCidrPrefix(2)}.1/24`;
const N2_VTEP = `${podCidrPrefix(2)}.0/32`;
const N2_STALE_GW = `${staleLeasePrefix(2)}.1/24`;
const N2_STALE_VTEP = `${staleLeasePrefix(2)}.0/32`;
/** A fixed node2's audit trail: each step once, in order, with the outcome of the attempt that did it. */
const FIXED_TRAIL = [
  ['plan', 'planned'],
  ['approval', 'approved'],
  ['node2/cordon', 'applied'],
  ['node2/drain', 'applied'],
  ['node2/delete-cni0', 'applied'],
  ['node2/delete-flannel.1', 'applied'],
  ['node2/restart-pod', 'applied'],
  ['node2/uncordon', 'applied'],
  ['node2/fixed', 'applied'],
];
/** The bridge plugin's own words for seed 003's fault, as the seed quotes them. */
const BRIDGE_STALE = `failed to set bridge addr: "cni0" already has an IP address different from ${N2_GW}`;

beforeAll(async () => {
  state = await up({ dir, nodes: 3, controlPlane: true, scenarios: ['stale-cni'], realFlannel: true, rebootDowntimeMs: 300 });
  cp = controlPlaneInfo(dir)!;
  config = labTestConfig(dir, 'stalecni');
  worker = await startWorker(loadTestConfig(config));
  for (const n of names) await waitForFlannelPodReady(dir, n);
}, 300_000);

afterAll(async () => {
  await worker?.stop();
  await down(dir);
});

const port = (name: string) => state.nodes.find((n) => n.name === name)!.port;
const ssh = (name: string, cmd: string) => labSsh(dir, port(name), cmd);
const kubectl = (args: string[]) => labKubectl(cp.adminKubeconfig, args);
const v4 = (name: string, dev: string) => nodeIpv4(dir, port(name), dev);
const unschedulable = (name: string) => kubectl(['get', 'node', name, '-o', 'jsonpath={.spec.unschedulable}']).stdout.trim() === 'true';

/** What a run could change, as an operator would look at it: devices, subnet.env, flannel pods, cordons, host-local's files. */
async function clusterState() {
  return Promise.all(
    names.map(async (n) => ({
      cni0: v4(n, 'cni0'),
      flannel1: v4(n, 'flannel.1'),
      subnet: readSubnetEnv(dir, n)?.FLANNEL_SUBNET ?? null,
      flannelPod: (await flannelPod(dir, n))?.uid ?? null,
      unschedulable: unschedulable(n),
      hostLocal: ssh(n, 'ls /var/lib/cni/networks/cbr0 | wc -l').trim(),
    })),
  );
}

const auditOf = (runId: string) => auditTrail(config, runId);

async function diagnose(): Promise<DiagnoseReport> {
  const r = await runCli(['--config', config, 'diagnose', '--cluster', 'lab', '--json']);
  return JSON.parse(r.stdout) as DiagnoseReport;
}

async function addFails(name: string): Promise<CniPluginError> {
  const err = await podAdd(dir, 'node2', { namespace: 'default', name }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CniPluginError);
  return err as CniPluginError;
}

test('with the real flanneld running: subnet.env and flannel.1 follow the podCIDR, cni0 keeps the old lease; diagnose names the fix', async () => {
  expect(readSubnetEnv(dir, 'node2')?.FLANNEL_SUBNET).toBe(N2_GW);
  expect(v4('node2', 'flannel.1')).toEqual([N2_VTEP]);
  expect(v4('node2', 'cni0')).toEqual([N2_STALE_GW]);
  const report = await diagnose();
  const found = report.findings.filter((f) => f.remediation === 'stale-cni');
  expect(found.map((f) => f.node)).toEqual(['node1', 'node2', 'node3']);
  expect(found[1]).toMatchObject({ fixable: true, signature: `"cni0" already has an IP address different from ${N2_GW}` });
  expect(found[1].evidence).toEqual([`cni0 has ${N2_STALE_GW}, outside the Node's podCIDR ${N2_CIDR}`, `cni0 has ${N2_STALE_GW}; /run/flannel/subnet.env says FLANNEL_SUBNET=${N2_GW}`]);
  const text = await runCli(['--config', config, 'diagnose', '--cluster', 'lab']);
  expect(text.stdout).toContain('  fix: kubemend run stale-cni --cluster lab --node node2\n');
  // The seed's symptom, as its pods show it: the lab's kubelet runs each web pod in a real sandbox, and on
  // these nodes none can be made. host-local's own words, in the kubelet's event for the pod.
  const pods = JSON.parse(kubectl(['get', 'pods', '-n', 'demo', '-l', 'app=web', '-o', 'json']).stdout) as { items: Array<{ metadata: { name: string; uid: string }; spec: { nodeName: string }; status: { phase: string; containerStatuses?: Array<{ state: { waiting?: { reason: string } } }> } }> };
  expect(pods.items.length).toBeGreaterThan(0);
  for (const p of pods.items) {
    expect(p.status.phase).toBe('Pending');
    expect(p.status.containerStatuses?.[0].state.waiting?.reason).toBe('ContainerCreating');
    const events = JSON.parse(kubectl(['get', 'events', '-n', 'demo', '--field-selector', `involvedObject.uid=${p.metadata.uid},reason=FailedCreatePodSandBox`, '-o', 'json']).stdout) as { items: Array<{ message: string }> };
    const prefix = podCidrPrefix(Number(p.spec.nodeName.replace('node', '')));
    expect(events.items.map((e) => e.message)).toContainEqual(expect.stringMatching(new RegExp(`plugin type="flannel" failed \\(add\\): failed to allocate for range 0: no IP addresses available in range set: ${prefix.replace(/\./g, '\\.')}\\.1-${prefix.replace(/\./g, '\\.')}\\.254$`)));
  }
}, 120_000);

test('the run on every node is refused before approval, changing nothing: node1 is the control plane (the manual procedure is given), node2\'s range is full (ipam-gc first)', async () => {
  const before = await clusterState();
  const r = await runCli(['--config', config, 'run', 'stale-cni', '--cluster', 'lab', '--auto-approve']);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(
    "node1 is a control-plane node: kubemend does not take one out of service for this fix (its static pods stay on the node, and with them the API every other node needs). By hand: (1) kubectl drain node1 --ignore-daemonsets (its static pods stay; plan for the API server's pod network being cut); (2) on node1: ip -4 addr show dev cni0 (expect 10.244.101.1/24), then ip link delete cni0; (3) wait until /run/flannel/subnet.env says FLANNEL_SUBNET=10.244.0.1/24; (4) start a pod pinned to node1 and check its address is in 10.244.0.0/24 and cni0 carries 10.244.0.1/24; (5) kubectl uncordon node1",
  );
  expect(r.stderr).toContain(`node2: host-local's range for cbr0 (${N2_CIDR}) is full (253 of 253 addresses reserved): a new pod gets no address whatever cni0 carries, so the fix could not be verified; release the leaked ones first: kubemend run ipam-gc --cluster lab --node node2`);
  expect(r.stderr).toContain('Nothing was changed');
  expect(await clusterState()).toEqual(before);
  const trail = await auditOf(runIdFrom(r.stderr));
  expect(trail.map((x) => [x.step, x.outcome])).toEqual([['refused', 'refused']]);
}, 120_000);

test("after ipam-gc frees node2's range, a real pod ADD fails as the seed says: the bridge plugin's own message", async () => {
  const gc = await runCli(['--config', config, 'run', 'ipam-gc', '--cluster', 'lab', '--node', 'node2', '--grace', '0s', '--auto-approve', '--json'], {}, 300_000);
  expect(gc.code).toBe(0);
  expect(ssh('node2', 'ls /var/lib/cni/networks/cbr0 | wc -l').trim()).toBe(String(2 + LIVE_PODS_PER_NODE)); // lock, last_reserved_ip.0 and the live sandboxes' files
  const err = await addFails('before-fix');
  expect(err.plugin).toBe('bridge');
  expect(err.msg).toBe(BRIDGE_STALE);
  // crictl runp, as the kubelet's runtime does it, fails with the same words in containerd's.
  const runp = spawnSync('ssh', ['-i', join(dir, 'id_ed25519'), '-o', `UserKnownHostsFile=${join(dir, 'known_hosts')}`, '-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes', '-p', String(port('node2')), 'root@127.0.0.1', 'printf \'{"metadata":{"name":"runp-before","namespace":"default","uid":"runp-before","attempt":0},"log_directory":"/tmp","linux":{}}\' | crictl runp /dev/stdin'], { encoding: 'utf8' });
  expect(runp.status).not.toBe(0);
  expect(runp.stderr).toMatch(/^E\d{4} .*"RunPodSandbox from runtime service failed" err=.*failed to setup network for sandbox .*plugin type=\\"flannel\\" failed \(add\): failed to set bridge addr: \\"cni0\\" already has an IP address different from 10\.244\.1\.1\/24/);
}, 300_000);

test('--dry-run on node2 prints the plan (delete cni0 naming its stale address, no flannel restart while it runs as the podCIDR says) and changes nothing', async () => {
  const before = await clusterState();
  const r = await runCli(['--config', config, 'run', 'stale-cni', '--cluster', 'lab', '--node', 'node2', '--dry-run', '--json']);
  expect(r.code).toBe(0);
  const result = JSON.parse(r.stdout) as StaleCniResult;
  expect(result.outcome).toBe('planned (dry run)');
  expect(result.plan!.skipped).toEqual([]); // --node node2: the other nodes are not even read
  const [n2] = result.plan!.nodes;
  expect(n2).toMatchObject({ name: 'node2', role: 'worker', podCidr: N2_CIDR, deletes: [{ dev: 'cni0', stale: [N2_STALE_GW], expected: N2_GW }], flannelPods: [] });
  expect(n2.steps[0]).toBe(`ip link delete cni0: only if it still carries exactly ${N2_STALE_GW} (re-checked on the node in the same command; already gone counts as done); the bridge plugin makes it again at the next pod with ${N2_GW}`);
  expect(result.remaining).toEqual(expect.arrayContaining([expect.stringMatching(/^node2: cni0 has 10\.244\.102\.1\/24/)]));
  expect(await clusterState()).toEqual(before);
  expect((await auditOf(runIdFrom(r.stderr))).map((x) => [x.step, x.outcome])).toEqual([['plan', 'dry-run']]);
  recordHistory(runIdFrom(r.stderr), 'remediate-stale-cni-dry-run.json');
}, 120_000);

test('an approved run fixes node2: both stale devices deleted, flannel restarted, a new pod gets an address in the podCIDR, cni0 the gateway; the trail holds each step once, in order; node2 uncordoned, node1 untouched', async () => {
  // The old lease back on flannel.1 as well (flanneld, already running, does not look again).
  ssh('node2', `ip addr add ${N2_STALE_VTEP} dev flannel.1`);
  expect(v4('node2', 'flannel.1')).toEqual([N2_VTEP, N2_STALE_VTEP]);
  const before = await clusterState();
  const oldPod = (await flannelPod(dir, 'node2'))!;
  const t0 = Date.now();
  const r = await runCli(['--config', config, 'run', 'stale-cni', '--cluster', 'lab', '--node', 'node2', '--auto-approve', '--json', '--drain-timeout', '150s', '--pod-timeout', '150s', '--reason', 'INC-003 pods on node2 stuck in ContainerCreating'], {}, 600_000);
  const wallMs = Date.now() - t0;
  expect(r.stderr).not.toMatch(/run failed/);
  expect(r.code).toBe(0);
  process.stdout.write(`stale-cni approved run on node2: ${(wallMs / 1000).toFixed(1)} s wall (CLI start to result)\n`);
  const result = JSON.parse(r.stdout) as StaleCniResult;
  const runId = runIdFrom(r.stderr);
  expect(result.outcome).toBe('fixed');
  const [n2] = result.nodes;
  expect(n2).toMatchObject({ name: 'node2', podCidr: N2_CIDR, deleted: ['cni0', 'flannel.1'], alreadyGone: [], restartedPods: [`kube-flannel/${oldPod.name}`], flannelSubnet: N2_GW, cni0: [N2_GW], flannel1: [N2_VTEP], uncordoned: true, resumed: [] });
  expect(inCidr(n2.probeIp!, N2_CIDR)).toBe(true);

  // As an operator checks it: ssh and kubectl.
  expect(v4('node2', 'cni0')).toEqual([N2_GW]);
  expect(v4('node2', 'flannel.1')).toEqual([N2_VTEP]);
  expect(readSubnetEnv(dir, 'node2')?.FLANNEL_SUBNET).toBe(N2_GW);
  const pod = (await flannelPod(dir, 'node2'))!;
  expect(pod.uid).not.toBe(oldPod.uid);
  expect(pod.ready).toBe(true);
  const added = await podAdd(dir, 'node2', { namespace: 'default', name: 'after-stale-cni' });
  expect(inCidr(added.address, N2_CIDR)).toBe(true);
  expect(added.gateway).toBe(N2_GW.split('/')[0]);
  await podDel(dir, 'node2', { namespace: 'default', name: 'after-stale-cni' });
  expect(ssh('node2', 'crictl pods | grep -c kubemend-probe || true').trim()).toBe('0');
  expect(unschedulable('node2')).toBe(false);
  const after = await clusterState();
  expect([after[0], after[2]]).toEqual([before[0], before[2]]); // node1 and node3: nothing changed

  const trail = await auditOf(runId);
  expect(trail.map((x) => [x.step, x.outcome])).toEqual(FIXED_TRAIL);
  const del = trail.find((x) => x.step === 'node2/delete-cni0')!;
  expect(del.action).toBe(`ip link delete cni0 if it carries exactly ${N2_STALE_GW}`);
  expect(del.after).toEqual({ deleted: true, carried: [N2_STALE_GW] });
  expect(trail.find((x) => x.step === 'node2/delete-flannel.1')!.after).toEqual({ deleted: true, carried: [N2_VTEP, N2_STALE_VTEP].sort() });
  expect((await diagnose()).findings.filter((f) => f.remediation === 'stale-cni').map((f) => f.node)).toEqual(['node1', 'node3']);
  recordHistory(runId, 'remediate-stale-cni-fixed.json');
}, 660_000);

test('a second run finds nothing to do on node2', async () => {
  const r = await runCli(['--config', config, 'run', 'stale-cni', '--cluster', 'lab', '--node', 'node2', '--auto-approve', '--json']);
  expect(r.code).toBe(0);
  const result = JSON.parse(r.stdout) as StaleCniResult;
  expect(result.outcome).toBe('nothing to do');
  expect(result.plan!.nodes).toEqual([]);
}, 120_000);

test('the worker SIGKILLed after each kind of step: the run still fixes node2, and each device is deleted and the flannel pod evicted once', async () => {
  // The fault back: cni0 and flannel.1 with the old lease's addresses again, so a pod fails as before.
  ssh('node2', `ip addr flush dev cni0 && ip addr add ${N2_STALE_GW} dev cni0 && ip addr add ${N2_STALE_VTEP} dev flannel.1`);
  expect((await addFails('before-crash-run')).msg).toBe(BRIDGE_STALE);
  const oldPod = (await flannelPod(dir, 'node2'))!;
  await worker!.stop(); // only the crashing worker polls from here on
  worker = undefined;
  const cfg = loadTestConfig(config);
  const { client, close } = await testClient();
  try {
    const handle = await client.workflow.start('remediateStaleCni', {
      workflowId: `stale-cni-lab-crash-${randomBytes(3).toString('hex')}`,
      taskQueue: cfg.temporal.taskQueue,
      args: [{ cluster: 'lab', nodes: ['node2'], requestedBy: 'crash test', autoApprove: true, heartbeatTimeoutMs: 3000, activityTimeoutMs: 60_000, retry: { initialIntervalMs: 500, maximumIntervalMs: 2000, maximumAttempts: 20 } }],
    });
    const { result, error, restarts, crashedAfter } = await runThroughCrashes<StaleCniResult>(handle, config, join(dir, 'crash-stale-cni.log'));
    expect(describeError(error)).toBeUndefined();
    expect(result!.outcome).toBe('fixed');
    expect(crashedAfter).toEqual(expect.arrayContaining(['resolveRun', 'listClusterNodes', 'gatherNodeFacts', 'readClusterFacts', 'checkClusterHealth', 'takeOutOfService', 'drain', 'deleteStaleDevices', 'restartCniPods', 'waitForCniPods', 'probePodNetwork', 'uncordon', 'recordAudit']));
    expect(restarts).toBe(crashedAfter.length);
    // The retries found the work done: both devices gone (the delete's retry), the pod replaced (the eviction's uid precondition failed).
    expect(result!.nodes[0]).toMatchObject({ deleted: [], alreadyGone: ['cni0', 'flannel.1'], restartedPods: [`kube-flannel/${oldPod.name}`], cni0: [N2_GW], flannel1: [N2_VTEP], uncordoned: true });
    expect(result!.nodes[0].resumed).toEqual(['delete-cni0', 'delete-flannel.1', 'restart-pod']);
    const trail = await auditOf(handle.workflowId);
    expect(trail.map((x) => [x.step, x.outcome])).toEqual(FIXED_TRAIL);
    expect(v4('node2', 'cni0')).toEqual([N2_GW]);
    expect(v4('node2', 'flannel.1')).toEqual([N2_VTEP]);
    expect((await flannelPod(dir, 'node2'))?.ready).toBe(true);
    expect(unschedulable('node2')).toBe(false);
    expect(ssh('node2', 'crictl pods | grep -c kubemend-probe || true').trim()).toBe('0');
  } finally {
    await close();
  }
}, 600_000);
