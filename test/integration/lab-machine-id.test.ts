/**
 * The machine-id remediation (seed 000) on the lab: real Temporal, real sshd on each node,
 * a real kube-apiserver with kwok kubelets, the CLI as an SRE runs it.
 */
import { spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Client as PgClient } from 'pg';
import { parse, stringify } from 'yaml';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { lockId } from '../../lib/lock-id';
import type { MachineIdResult } from '../../lib/remediation-input';
import type { AuditRecord } from '../../lib/audit';
import type { RunStatus } from '../../lib/run-status';
import { TOOLS_BIN } from '../../worker/paths';
import { controlPlaneInfo, type ControlPlaneInfo } from '../lab/control-plane';
import { down, type LabState, readState, requestReboot, up } from '../lab/lab';
import { describeError, runThroughCrashes } from '../helpers/crash-run';
import { labSsh, labTestConfig } from '../helpers/lab';
import { loadTestConfig, recordHistory, runCli, runIdFrom, type RunningWorker, startWorker, tempDir, testClient } from '../helpers/harness';

const KUBECTL = join(TOOLS_BIN, 'kubectl');
const dir = join(tempDir('mid'), 'lab');
let state: LabState;
let cp: ControlPlaneInfo;
let worker: RunningWorker | undefined;
let config: string;

/** A Slack-compatible webhook on loopback: what kubemend posted, and the status it answers with. */
const hook = { status: 200, posts: [] as Array<{ text: string }>, server: undefined as Server | undefined };

beforeAll(async () => {
  state = await up({ dir, nodes: 3, controlPlane: true, scenarios: ['cloned-machine-id'], rebootDowntimeMs: 300 });
  cp = controlPlaneInfo(dir)!;
  hook.server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      hook.posts.push(JSON.parse(body) as { text: string });
      res.writeHead(hook.status).end();
    });
  });
  await new Promise<void>((resolve) => hook.server!.listen(0, '127.0.0.1', resolve));
  const generated = labTestConfig(dir, 'mid');
  const url = `http://127.0.0.1:${(hook.server.address() as AddressInfo).port}/services/T000/B000/secret-token`;
  config = join(dir, 'kubemend-hook.yaml');
  writeFileSync(config, stringify({ ...(parse(readFileSync(generated, 'utf8')) as object), notifications: { webhook: { url, timeout: '2s', attempts: 2 } } }));
  worker = await startWorker(loadTestConfig(config));
}, 180_000);

afterAll(async () => {
  await worker?.stop();
  await down(dir);
  hook.server?.close();
});

const port = (name: string) => state.nodes.find((n) => n.name === name)!.port;
const ssh = (name: string, cmd: string) => labSsh(dir, port(name), cmd);
function kubectl(args: string[], input?: string) {
  const r = spawnSync(KUBECTL, ['--kubeconfig', cp.adminKubeconfig, ...args], { encoding: 'utf8', input, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const json = <T>(args: string[]) => JSON.parse(kubectl([...args, '-o', 'json']).stdout) as T;
const names = ['node1', 'node2', 'node3'];

/** Everything a run could change, as an operator would look at it. */
function nodeState() {
  return {
    ids: names.map((n) => ssh(n, 'cat /etc/machine-id /var/lib/dbus/machine-id; cat /proc/sys/kernel/random/boot_id; cat /sys/class/net/weave/address; ls /var/lib/kubemend 2>&1 | head -1')),
    nodes: json<{ items: Array<{ metadata: { name: string; annotations: Record<string, string> }; spec: { unschedulable?: boolean } }> }>(['get', 'nodes']).items.map((n) => [n.metadata.name, n.spec.unschedulable ?? false, n.metadata.annotations['kubemend.io/cordoned-by'] ?? null]),
    pods: json<{ items: Array<{ metadata: { name: string }; spec: { nodeName: string } }> }>(['get', 'pods', '-A']).items.map((p) => `${p.metadata.name}@${p.spec.nodeName}`).sort(),
  };
}

const regenerations = (name: string) => Number(ssh(name, 'cat /var/lib/kubemend/machine-id/regenerated.log 2>/dev/null | wc -l').trim());

async function auditOf(runId: string, cfgPath = config): Promise<AuditRecord[]> {
  const r = await runCli(['--config', cfgPath, 'audit', 'show', runId, '--json']);
  expect(r.stderr).toBe('');
  return JSON.parse(r.stdout) as AuditRecord[];
}

async function statusOf(runId: string): Promise<RunStatus | null> {
  const r = await runCli(['--config', config, 'status', runId, '--json']);
  return (JSON.parse(r.stdout) as { progress: RunStatus | null }).progress;
}

test('--dry-run prints the plan and changes nothing on any node or in the API', async () => {
  const before = nodeState();
  const r = await runCli(['--config', config, 'run', 'machine-id', '--cluster', 'lab', '--dry-run', '--json']);
  expect(r.code).toBe(0);
  const result = JSON.parse(r.stdout) as MachineIdResult;
  expect(result.outcome).toBe('planned (dry run)');
  expect(result.plan?.keepers).toEqual(['node1']); // the control-plane node is kept
  expect(result.plan?.nodes.map((n) => n.name)).toEqual(['node2', 'node3']);
  expect(result.plan?.groups[0].shared).toEqual(expect.arrayContaining([expect.stringMatching(/^machine-id [0-9a-f]{32}$/), expect.stringMatching(/^weave MAC /)]));
  expect(nodeState()).toEqual(before);
  const records = await auditOf(runIdFrom(r.stderr));
  expect(records.map((x) => [x.step, x.outcome])).toEqual([['plan', 'dry-run']]);
  expect(records[0].action).toBe('plan only (--dry-run): nothing is changed');
  recordHistory(runIdFrom(r.stderr), 'remediate-machine-id-dry-run.json');
});

test('a second run on a node another run holds is refused with exit 3, naming the holder; a stale approval is refused', async () => {
  const first = await runCli(['--config', config, 'run', 'machine-id', '--cluster', 'lab', '--detach']);
  expect(first.code).toBe(0);
  const holder = first.stdout.trim();
  // Wait until it holds its locks and shows its plan.
  let st: RunStatus | null = null;
  for (let i = 0; i < 100 && st?.phase !== 'AwaitingApproval'; i++) {
    await sleep(200);
    st = await statusOf(holder);
  }
  expect(st?.phase).toBe('AwaitingApproval');
  const second = await runCli(['--config', config, 'run', 'machine-id', '--cluster', 'lab', '--node', 'node2', '--auto-approve']);
  expect(second.code).toBe(3);
  expect(second.stderr).toContain(`node node2 is being remediated by run ${holder}`);
  // The refusal is in the audit trail, although no run was started.
  const refused = await auditOf(/refused \(run (\S+) not started\)/.exec(second.stderr)?.[1] ?? 'missing');
  expect(refused.map((x) => [x.node, x.step, x.outcome, x.error])).toEqual([['node2', 'refused', 'refused', `node node2 is being remediated by run ${holder}`]]);

  const stale = await runCli(['--config', config, 'approve', holder, '--plan', '0123456789abcdef']);
  expect(stale.code).toBe(3);
  expect(stale.stderr).toMatch(/stale approval: it names plan 0123456789abcdef, the run's plan is [0-9a-f]{16}/);
  const text = await runCli(['--config', config, 'status', holder]);
  expect(text.stdout).toMatch(/phase +AwaitingApproval/);
  expect(text.stdout).toMatch(/plan [0-9a-f]{16}\n/);

  const cancel = await runCli(['--config', config, 'cancel', holder]);
  expect(cancel.code).toBe(0);
  // The locks go with the run: a new run may take the node.
  for (let i = 0; i < 50; i++) {
    const d = await runCli(['--config', config, 'status', holder, '--json']);
    if ((JSON.parse(d.stdout) as { status: string }).status !== 'RUNNING') break;
    await sleep(200);
  }
  const dry = await runCli(['--config', config, 'run', 'machine-id', '--cluster', 'lab', '--dry-run', '--json']);
  expect(dry.code).toBe(0);
});

test('3 cloned nodes: after an approved run every machine-id and weave MAC is unique, nodes schedulable, pods rescheduled', async () => {
  const started = await runCli(['--config', config, 'run', 'machine-id', '--cluster', 'lab', '--detach', '--reason', 'INC-000 weave peer collision']);
  const runId = started.stdout.trim();
  let st: RunStatus | null = null;
  for (let i = 0; i < 100 && st?.phase !== 'AwaitingApproval'; i++) {
    await sleep(200);
    st = await statusOf(runId);
  }
  const approve = await runCli(['--config', config, 'approve', runId, '--actor', 'sre-on-call']);
  expect(approve.stderr).toBe('');
  expect(approve.stdout).toBe(`approved ${runId} (plan ${st!.plan!.id})\n`);

  const statusJson = async () => JSON.parse((await runCli(['--config', config, 'status', runId, '--json'])).stdout) as { status: string; result: MachineIdResult | null; failure: string | null };
  let view = await statusJson();
  for (let i = 0; i < 600 && view.status === 'RUNNING'; i++) {
    await sleep(200);
    view = await statusJson();
  }
  expect([view.status, view.failure]).toEqual(['COMPLETED', null]);
  const result = view.result!;
  expect(result.outcome).toBe('fixed');
  expect(result.approvedBy).toBe('sre-on-call');
  expect(result.nodes.map((n) => n.name)).toEqual(['node2', 'node3']);
  expect(result.remaining).toEqual([]);

  // As an operator checks it: unique ids in both files, unique weave MACs, no collisions.
  const ids = names.map((n) => ssh(n, 'cat /etc/machine-id').trim());
  expect(new Set(ids).size).toBe(3);
  for (const n of names) expect(ssh(n, 'cat /var/lib/dbus/machine-id').trim()).toBe(ids[names.indexOf(n)]);
  const macs = names.map((n) => ssh(n, 'cat /sys/class/net/weave/address').trim());
  expect(new Set(macs).size).toBe(3);
  for (const n of names) expect(ssh(n, 'weave status connections')).not.toMatch(/collision/);
  expect(result.nodes.map((n) => n.newMachineId)).toEqual([ids[1], ids[2]]);
  // Each was regenerated exactly once; the keeper never.
  expect(names.map(regenerations)).toEqual([0, 1, 1]);
  // The kubelets report the new ids; every node schedulable again, kubemend's mark gone.
  const nodes = json<{ items: Array<{ metadata: { name: string; annotations: Record<string, string> }; spec: { unschedulable?: boolean }; status: { nodeInfo: { machineID: string } } }> }>(['get', 'nodes']).items;
  expect(nodes.map((n) => [n.metadata.name, n.status.nodeInfo.machineID, n.spec.unschedulable ?? false, n.metadata.annotations['kubemend.io/cordoned-by'] ?? null])).toEqual(names.map((n, i) => [n, ids[i], false, null]));
  // The app's pods were evicted and are available again.
  const web = json<{ spec: { replicas: number }; status: { availableReplicas?: number } }>(['get', 'deployment', '-n', 'demo', 'web']);
  expect(web.status.availableReplicas).toBe(web.spec.replicas);
  // Rebooted: new boot ids as the lab recorded them.
  const lab = readState(dir)!;
  for (const n of result.nodes) expect(lab.nodes.find((x) => x.name === n.name)!.bootId).toBe(n.bootIdAfter);
  // The audit trail: every step once, in order, with before and after, and the story on the Nodes.
  const records = await auditOf(runId);
  const perNode = (n: string) => [`${n}/cordon`, `${n}/drain`, `${n}/machine-id`, `${n}/reboot`, `${n}/uncordon`, `${n}/fixed`];
  expect(records.map((x) => x.step)).toEqual(['plan', 'approval', ...perNode('node2'), ...perNode('node3')]);
  expect(records.every((x) => x.workflowId === runId && x.reason === 'INC-000 weave peer collision' && x.cluster === 'lab' && x.remediation === 'machine-id')).toBe(true);
  expect(records.find((x) => x.step === 'approval')?.after).toEqual({ approvedBy: 'sre-on-call', comment: '' });
  const regen = records.find((x) => x.step === 'node2/machine-id')!;
  expect([regen.before, regen.after, regen.outcome]).toEqual([expect.objectContaining({ machineId: result.nodes[0].oldMachineId }), { machineId: ids[1] }, 'applied']);
  expect(regen.action).toMatch(/^sh -c .*systemd-machine-id-setup/s);
  const described = kubectl(['describe', 'node', 'node2']).stdout;
  for (const reason of ['NodeCordoned', 'NodeDrained', 'MachineIdRegenerated', 'NodeRebooted', 'NodeUncordoned']) expect(described).toMatch(new RegExp(`Normal\\s+${reason}\\s+.*kubemend`));
  expect(json<{ metadata: { annotations: Record<string, string> } }>(['get', 'node', 'node2']).metadata.annotations['kubemend.io/last-remediation']).toMatch(new RegExp(`^machine-id ${runId} applied `));
  const verify = await runCli(['--config', config, 'audit', 'verify']);
  expect([verify.code, verify.stdout]).toEqual([0, expect.stringMatching(/^audit chain intact: \d+ record\(s\) in sqlite /)]);
  // The webhook heard the run wait for approval (with the command to approve it) and end fixed.
  const mine = hook.posts.filter((p) => p.text.includes(runId));
  expect(mine.map((p) => p.text)).toEqual([expect.stringContaining(`kubemend approve ${runId} --plan ${st!.plan!.id}`), expect.stringMatching(/fixed node2, node3/)]);
  recordHistory(runId, 'remediate-machine-id-fixed.json');
  recordHistory(lockId('lab', 'node2'), 'node-lock.json'); // the lock child, terminated when its run closed
});

/** Makes node3 a clone of node2 again (both files) and reboots it, so weave sees the collision. */
async function recloneNode3(): Promise<string> {
  const id = ssh('node2', 'cat /etc/machine-id').trim();
  ssh('node3', `printf '%s\\n' ${id} > /etc/machine-id && cp /etc/machine-id /var/lib/dbus/machine-id`);
  await requestReboot(dir, 'node3');
  return id;
}

test('a PodDisruptionBudget that blocks the drain: the drain times out, the node is uncordoned, nothing else touched', async () => {
  const cloned = await recloneNode3();
  const manifest = [
    'apiVersion: apps/v1', 'kind: Deployment', 'metadata: {name: ledger, namespace: demo}',
    'spec: {replicas: 1, selector: {matchLabels: {app: ledger}}, template: {metadata: {labels: {app: ledger}}, spec: {nodeSelector: {kubernetes.io/hostname: node3}, containers: [{name: ledger, image: "postgres:17"}]}}}',
    '---',
    'apiVersion: policy/v1', 'kind: PodDisruptionBudget', 'metadata: {name: ledger, namespace: demo}',
    'spec: {minAvailable: 1, selector: {matchLabels: {app: ledger}}}', '',
  ].join('\n');
  expect(kubectl(['apply', '-f', '-'], manifest).code).toBe(0);
  for (let i = 0; i < 100; i++) {
    const pdb = json<{ status?: { currentHealthy?: number } }>(['get', 'pdb', '-n', 'demo', 'ledger']);
    if (pdb.status?.currentHealthy === 1) break;
    await sleep(200);
  }
  const bootBefore = ssh('node3', 'cat /proc/sys/kernel/random/boot_id').trim();
  try {
    const r = await runCli(['--config', config, 'run', 'machine-id', '--cluster', 'lab', '--auto-approve', '--drain-timeout', '8s'], {}, 120_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/DrainTimedOut: drain of node3 did not finish within 8 s: demo\/ledger-[a-z0-9-]+: Cannot evict pod as it would violate the pod's disruption budget/);
    const runId = runIdFrom(r.stderr);
    const st = await statusOf(runId);
    expect(st?.nodes.node3.phase).toBe('Failed');
    expect(st?.compensations).toEqual(['uncordon node3: uncordoned']);
    const trail = await auditOf(runId);
    expect(trail.map((x) => [x.step, x.outcome])).toEqual([['plan', 'planned'], ['approval', 'approved'], ['node3/cordon', 'applied'], ['node3/undo-uncordon', 'applied'], ['node3/failed', 'failed'], ['run/failed', 'failed']]);
    expect(trail[4].error).toMatch(/^DrainTimedOut: /);
    // Nothing else was touched: same id, same boot, schedulable, the pod still there.
    expect(ssh('node3', 'cat /etc/machine-id').trim()).toBe(cloned);
    expect(ssh('node3', 'cat /proc/sys/kernel/random/boot_id').trim()).toBe(bootBefore);
    expect(regenerations('node3')).toBe(1);
    expect(json<{ spec: { unschedulable?: boolean } }>(['get', 'node', 'node3']).spec.unschedulable).toBeUndefined();
    expect(json<{ items: Array<{ spec: { nodeName: string }; status: { phase: string } }> }>(['get', 'pods', '-n', 'demo', '-l', 'app=ledger']).items.map((p) => [p.spec.nodeName, p.status.phase])).toEqual([['node3', 'Running']]);
  } finally {
    kubectl(['delete', 'pdb', '-n', 'demo', 'ledger']);
    kubectl(['delete', 'deployment', '-n', 'demo', 'ledger']);
  }
});

test('a node that never comes back from its reboot: the run fails within its timeout, the node stays cordoned, the reason is recorded', async () => {
  const stayDown = join(dir, 'nodes', 'node3', 'control', 'stay-down');
  writeFileSync(stayDown, '');
  try {
    const t0 = Date.now();
    const r = await runCli(['--config', config, 'run', 'machine-id', '--cluster', 'lab', '--auto-approve', '--reboot-timeout', '10s'], {}, 120_000);
    const took = Date.now() - t0;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/NodeDidNotReturn: node3 did not come back within 10 s after its reboot/);
    expect(took).toBeLessThan(90_000);
    const st = await statusOf(runIdFrom(r.stderr));
    expect(st?.compensations).toEqual([expect.stringMatching(/^uncordon node3: left cordoned: /)]);
    const node = json<{ spec: { unschedulable?: boolean }; metadata: { annotations: Record<string, string> } }>(['get', 'node', 'node3']);
    expect(node.spec.unschedulable).toBe(true);
    expect(node.metadata.annotations['kubemend.io/cordoned-by']).toBe(runIdFrom(r.stderr));
  } finally {
    rmSync(stayDown, { force: true });
    await requestReboot(dir, 'node3', 60_000).catch(() => undefined);
    kubectl(['uncordon', 'node3']);
  }
});

test('the worker is SIGKILLed right after each kind of step has done its work, and restarted: the run completes, each node regenerated and rebooted exactly once', async () => {
  // node2 and node3 become clones of node1 again; node1 (control plane) is the keeper.
  const id = ssh('node1', 'cat /etc/machine-id').trim();
  for (const n of ['node2', 'node3']) {
    ssh(n, `printf '%s\\n' ${id} > /etc/machine-id && cp /etc/machine-id /var/lib/dbus/machine-id`);
    await requestReboot(dir, n);
  }
  const regenBefore = names.map(regenerations);
  const bootsBefore = readState(dir)!.nodes.map((n) => n.boots);

  await worker!.stop(); // only the crashing worker polls from here on
  worker = undefined;
  // This run's audit trail goes to this machine's PostgreSQL, in a database of its own.
  const db = `kubemend_audit_crash_${randomBytes(4).toString('hex')}`;
  const admin = new PgClient({ connectionString: 'postgres://postgres@127.0.0.1:5432/postgres' });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${db}`);
  const pgConfig = join(dir, 'kubemend-pg.yaml');
  writeFileSync(pgConfig, stringify({ ...(parse(readFileSync(config, 'utf8')) as object), audit: { store: 'postgres', url: `postgres://postgres@127.0.0.1:5432/${db}` } }));
  const cfg = loadTestConfig(pgConfig);
  const { client, close } = await testClient();
  const crashLog = join(dir, 'crash.log');
  hook.status = 500; // a failing webhook: the run must not notice
  try {
    const handle = await client.workflow.start('remediateMachineId', {
      workflowId: `machine-id-lab-crash-${randomBytes(3).toString('hex')}`,
      taskQueue: cfg.temporal.taskQueue,
      args: [{ cluster: 'lab', requestedBy: 'crash test', autoApprove: true, heartbeatTimeoutMs: 3000, activityTimeoutMs: 60_000, drainTimeoutMs: 60_000, rebootTimeoutMs: 60_000, retry: { initialIntervalMs: 500, maximumIntervalMs: 2000, maximumAttempts: 20 } }],
    });
    const { result, error, restarts, crashedAfter } = await runThroughCrashes<MachineIdResult>(handle, pgConfig, crashLog);
    expect(describeError(error)).toBeUndefined();
    expect(result!.outcome).toBe('fixed');
    expect(result!.nodes.map((n) => n.name)).toEqual(['node2', 'node3']);
    // Crashed once after every kind of step, and each time a new worker carried on.
    expect(crashedAfter).toEqual(expect.arrayContaining(['resolveRun', 'checkBreaker', 'listClusterNodes', 'readIdentities', 'checkClusterHealth', 'takeOutOfService', 'drain', 'readBootId', 'regenerateMachineId', 'reboot', 'waitForReturn', 'uncordon', 'recordAudit']));
    expect(restarts).toBe(crashedAfter.length);
    // Exactly once each, although the step's completion was lost every first time.
    expect(names.map(regenerations)).toEqual([regenBefore[0], regenBefore[1] + 1, regenBefore[2] + 1]);
    expect(readState(dir)!.nodes.map((n) => n.boots)).toEqual([bootsBefore[0], bootsBefore[1] + 1, bootsBefore[2] + 1]);
    const node2 = result!.nodes[0];
    expect(node2.resumed).toEqual(['machine-id', 'reboot']); // found done on retry, not done twice
    const ids = names.map((n) => ssh(n, 'cat /etc/machine-id').trim());
    expect(new Set(ids).size).toBe(3);
    const nodes = json<{ items: Array<{ spec: { unschedulable?: boolean } }> }>(['get', 'nodes']).items;
    expect(nodes.map((n) => n.spec.unschedulable ?? false)).toEqual([false, false, false]);
    // The trail on PostgreSQL: every step exactly once, in order, although many of them
    // were retried after their first worker died; the chain verifies.
    const trail = await auditOf(handle.workflowId, pgConfig);
    const perNode = (n: string) => [`${n}/cordon`, `${n}/drain`, `${n}/machine-id`, `${n}/reboot`, `${n}/uncordon`, `${n}/fixed`];
    expect(trail.map((x) => x.step)).toEqual(['plan', 'approval', ...perNode('node2'), ...perNode('node3')]);
    // Written by the attempt that did the work; the retry found it done and its record was a duplicate.
    expect(trail.find((x) => x.step === 'node2/machine-id')?.outcome).toBe('applied');
    const verify = await runCli(['--config', pgConfig, 'audit', 'verify', '--json']);
    expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true, records: trail.length, store: 'postgres' });
    // The webhook answered 500 to every post of the run's end; the run completed all the same.
    expect(hook.posts.filter((p) => p.text.includes(handle.workflowId)).map((p) => /event: (\S+)/.exec(p.text)?.[1])).toEqual(expect.arrayContaining(['fixed']));
  } finally {
    hook.status = 200;
    await close();
    await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    await admin.end();
  }
}, 600_000);

test('two runs on different nodes at once, budget 1: never both nodes out; what is refused is exit 3 and left schedulable', async () => {
  const id = ssh('node1', 'cat /etc/machine-id').trim();
  for (const n of ['node2', 'node3']) {
    ssh(n, `printf '%s\\n' ${id} > /etc/machine-id && cp /etc/machine-id /var/lib/dbus/machine-id`);
    await requestReboot(dir, n);
  }
  worker ??= await startWorker(loadTestConfig(config)); // the crash test stopped the suite's worker
  const regenBefore = names.map(regenerations);
  // Watch the Nodes while both runs go: how many are cordoned by kubemend at once.
  let most = 0;
  let watching = true;
  const watch = (async () => {
    while (watching) {
      const items = json<{ items: Array<{ metadata: { annotations: Record<string, string> } }> }>(['get', 'nodes']).items;
      most = Math.max(most, items.filter((n) => n.metadata.annotations['kubemend.io/cordoned-by']).length);
      await sleep(100);
    }
  })();
  let a, b;
  try {
    [a, b] = await Promise.all(['node2', 'node3'].map((n) => runCli(['--config', config, 'run', 'machine-id', '--cluster', 'lab', '--node', n, '--auto-approve'], {}, 100_000)));
  } finally {
    watching = false;
    await watch;
  }
  const codes = [a.code, b.code].sort();
  expect([[0, 3], [3, 3]]).toContainEqual(codes);
  // A refused run was stopped by the other run's cordon, and says so: it names the other node.
  const runs = [{ r: a, node: 'node2', other: 'node3' }, { r: b, node: 'node3', other: 'node2' }];
  for (const { r, other } of runs.filter((x) => x.r.code === 3)) expect(r.stderr).toMatch(new RegExp(`kubemend: refused: the disruption budget allows 1 node\\(s\\) out of service and 1 already are \\(${other}: cordoned by machine-id-lab-`));
  // At most one node fixed, and then only that one regenerated.
  const fixed = [a, b].filter((x) => x.code === 0).length;
  expect(names.map(regenerations).reduce((x, y) => x + y, 0) - regenBefore.reduce((x, y) => x + y, 0)).toBe(fixed);
  // Both runs may have cordoned at the same moment. Then each one's second check sees the
  // other's cordon, unless the other has already undone it: so both are refused, or one is
  // refused and then the other passes alone (its refusal above names the winner's node). Never
  // did both get past the second check: that would be two fixed nodes, which `codes` excludes.
  expect(most).toBeLessThanOrEqual(2);
  const nodes = json<{ items: Array<{ spec: { unschedulable?: boolean } }> }>(['get', 'nodes']).items;
  expect(nodes.map((n) => n.spec.unschedulable ?? false)).toEqual([false, false, false]);
}, 180_000);
