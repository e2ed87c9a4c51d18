/**
 * ipam-gc on a Temporal Schedule, against the real thing: the suite's Temporal server runs
 * the schedules, a real worker runs the runs, node1 is `stale-cni`'s (its cbr0 range full of
 * leaked host-local files, backdated an hour so the schedule's grace period lets them go).
 * Everything goes through the CLI as an SRE would type it.
 *
 * The runs are held open deterministically where a test needs one going: the test takes
 * host-local's own lock on node1 (as a `sleep` that holds the lock's descriptor), so the
 * run's release waits for it; killing that process lets the run finish.
 */
import { randomBytes } from 'node:crypto';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import type { AuditRecord } from '../../lib/audit';
import type { IpamGcResult } from '../../workflows/ipam-gc';
import { podAdd } from '../lab/cni';
import { down, type LabState, up } from '../lab/lab';
import { labSsh, labTestConfig } from '../helpers/lab';
import { loadTestConfig, runCli, type RunningWorker, startWorker, tempDir, testClient } from '../helpers/harness';

const dir = join(tempDir('schedule'), 'lab');
const NET = '/var/lib/cni/networks/cbr0';
const ID = 'kubemend-ipam-gc-lab';
let state: LabState;
let worker: RunningWorker | undefined;
let config: string;

beforeAll(async () => {
  state = await up({ dir, nodes: 2, controlPlane: true, scenarios: ['stale-cni'], rebootDowntimeMs: 300 });
  // As lab-ipam-gc: flanneld's lease back and no stale cni0, so what stops a new pod is the full range.
  ssh('printf "FLANNEL_NETWORK=10.244.0.0/16\\nFLANNEL_SUBNET=10.244.0.1/24\\nFLANNEL_MTU=1450\\nFLANNEL_IPMASQ=true\\n" > /run/flannel/subnet.env && ip link del cni0');
  // The leaks are an hour old: older than any grace period a schedule may have (at least 1 min).
  ssh(`touch -d "1 hour ago" ${NET}/10.244.*`);
  config = labTestConfig(dir, 'schedule');
  worker = await startWorker(loadTestConfig(config));
}, 300_000);

afterAll(async () => {
  await runCli(['--config', config, 'schedule', 'delete', ID]).catch(() => undefined);
  await runCli(['--config', config, 'schedule', 'delete', `${ID}-closed`]).catch(() => undefined);
  await worker?.stop();
  await down(dir);
});

function ssh(cmd: string): string {
  return labSsh(dir, state.nodes.find((n) => n.name === 'node1')!.port, cmd);
}

const cli = (...args: string[]) => runCli(['--config', config, ...args], {}, 120_000);

interface View {
  paused: boolean;
  note: string;
  runsStarted: number;
  skippedOverlap: number;
  running: string[];
  recentRuns: Array<{ runId: string }>;
  nextRuns: string[];
}
async function describeSchedule(id = ID): Promise<View> {
  const r = await cli('schedule', 'describe', id, '--json');
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as View;
}

/** Polls until `ok` holds; fails with the last value after `limitMs` (generous: correctness, not speed). */
async function until<T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, limitMs = 180_000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() - start > limitMs) throw new Error(`${what}: not within ${limitMs / 1000} s; last: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function resultOf(runId: string): Promise<IpamGcResult> {
  const { client, close } = await testClient();
  try {
    return (await client.workflow.getHandle(runId).result()) as IpamGcResult;
  } finally {
    await close();
  }
}

async function auditFor(workflowId: string): Promise<AuditRecord[]> {
  const r = await cli('audit', 'list', '--cluster', 'lab', '--remediation', 'ipam-gc', '--json', '--limit', '1000');
  expect(r.code).toBe(0);
  return (JSON.parse(r.stdout) as AuditRecord[]).filter((a) => a.workflowId === workflowId);
}

/** Leaked host-local files as host-local writes them, an hour old, of sandboxes no runtime has. */
function writeLeaks(addresses: string[]): void {
  const ids = addresses.map(() => randomBytes(32).toString('hex'));
  // noclobber: a file already there (a live sandbox's) is never overwritten.
  ssh(`set -C; ${addresses.map((a, k) => `printf "%s\\r\\neth0" ${ids[k]} > ${NET}/${a} && touch -d "1 hour ago" ${NET}/${a}`).join(' && ')}`);
}

const leakedCount = () => Number(ssh(`n=0; for f in ${NET}/10.244.*; do id=$(head -n1 "$f" | tr -d '\\r'); crictl pods -q | grep -q "^$id" || n=$((n+1)); done; echo $n`).trim());

test('bad input is refused with the flag named, exit 2, and no schedule is created', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['schedule', 'create', 'ipam-gc', '--cluster', 'lab', '--every', '10s'], /--every: "10s" is not a duration from 1m to 168h/],
    [['schedule', 'create', 'ipam-gc', '--cluster', 'lab', '--every', '1h', '--grace', '0s'], /--grace: "0s" is not a duration from 1m to 168h for a schedule/],
    [['schedule', 'create', 'machine-id', '--cluster', 'lab', '--every', '1h'], /"machine-id" cannot run on a schedule; schedulable: ipam-gc, calico-orphans/],
    [['schedule', 'create', 'calico-orphans', '--cluster', 'lab', '--every', '1h', '--retention', '24h'], /--retention applies to ipam-gc only/],
    [['schedule', 'create', 'ipam-gc', '--cluster', 'nope', '--every', '1h'], /--cluster: no cluster "nope"/],
    [['schedule', 'create', 'ipam-gc', '--cluster', 'lab', '--every', '1h', '--time-zone', 'Mars/Base'], /--time-zone: "Mars\/Base" must be an IANA time zone/],
    [['schedule', 'create', 'ipam-gc', '--cluster', 'lab', '--every', '1h', '--window-days', 'workdays'], /--window-days: "workdays" is not a day of the week/],
    [['schedule', 'pause', 'not-ours'], /must be a kubemend schedule ID/],
    [['schedule', 'trigger', 'kubemend-ipam-gc-nothere'], /no schedule "kubemend-ipam-gc-nothere"/],
  ];
  for (const [args, message] of cases) {
    const r = await cli(...args);
    expect({ args, code: r.code }).toEqual({ args, code: 2 });
    expect(r.stderr).toMatch(message);
  }
  const list = await cli('schedule', 'list', '--json');
  expect(list.code).toBe(0);
  expect(JSON.parse(list.stdout)).toEqual([]);
});

test('outside its maintenance window a triggered run records so and changes nothing', async () => {
  // A one-hour window starting two hours from now (UTC): closed now, whatever the hour.
  const h = (new Date().getUTCHours() + 2) % 24;
  const start = `${String(h).padStart(2, '0')}:00`;
  const end = `${String((h + 1) % 24).padStart(2, '0')}:00`;
  const before = ssh(`ls -l --time-style=+%s ${NET} | md5sum`);
  const c = await cli('schedule', 'create', 'ipam-gc', '--cluster', 'lab', '--node', 'node1', '--every', '24h', '--name', 'closed', '--window-start', start, '--window-end', end, '--paused', '--actor', 'window-tester');
  expect(c.stderr).toBe('');
  expect(c.code).toBe(0);
  expect(c.stdout).toContain(`created schedule ${ID}-closed: ipam-gc on lab every 24h inside every day ${start}-${end} UTC (paused)`);
  expect((await cli('schedule', 'trigger', `${ID}-closed`)).code).toBe(0);
  const d = await until('the triggered run', () => describeSchedule(`${ID}-closed`), (v) => v.recentRuns.length === 1);
  const result = await resultOf(d.recentRuns[0].runId);
  expect(result.outcome).toBe('outside maintenance window');
  const trail = await auditFor(d.recentRuns[0].runId);
  expect(trail.map((a) => [a.step, a.outcome])).toEqual([['window', 'skipped']]);
  expect(trail[0].action).toMatch(new RegExp(`^none: outside the maintenance window \\(every day ${start}-${end} UTC\\) at \\w{3} \\d\\d:\\d\\d UTC$`));
  expect(ssh(`ls -l --time-style=+%s ${NET} | md5sum`)).toBe(before);
  expect((await cli('schedule', 'delete', `${ID}-closed`)).code).toBe(0);
}, 300_000);

let firstRun: string;

test('it fires on its own: the run is approved by the creation, named with its creator, and frees the full range', async () => {
  const leaked = leakedCount();
  expect(leaked).toBeGreaterThan(200);
  const c = await cli('schedule', 'create', 'ipam-gc', '--cluster', 'lab', '--node', 'node1', '--every', '1m', '--grace', '5m', '--reason', 'CHG-42 nightly GC', '--actor', 'alice');
  expect(c.code).toBe(0);
  expect(c.stdout).toContain(`created schedule ${ID}: ipam-gc on lab every 1m; its runs are approved by this creation (alice)`);
  const again = await cli('schedule', 'create', 'ipam-gc', '--cluster', 'lab', '--every', '1h');
  expect(again.code).toBe(2);
  expect(again.stderr).toContain(`schedule ${ID} already exists`);

  const d = await until('the first scheduled run', () => describeSchedule(), (v) => v.recentRuns.length >= 1);
  firstRun = d.recentRuns[0].runId;
  expect(firstRun.startsWith(`${ID}-`)).toBe(true);
  const result = await resultOf(firstRun);
  expect(result.outcome).toBe('fixed');
  expect(result.approvedBy).toMatch(/^alice \(by creating schedule kubemend-ipam-gc-lab at \d{4}-\d\d-\d\dT[\d:.]+Z\)$/);
  expect(result.nodes.map((n) => [n.name, n.releasedCount])).toEqual([['node1', leaked]]);
  expect(leakedCount()).toBe(0);
  const ok = await podAdd(dir, 'node1', { namespace: 'default', name: 'after-schedule' });
  expect(ok.address).toMatch(/^10\.244\.0\.\d+\/24$/);

  const trail = await auditFor(firstRun);
  const approval = trail.find((a) => a.step === 'approval')!;
  expect(approval.outcome).toBe('approved');
  expect((approval.after as { approvedBy: string }).approvedBy).toBe(result.approvedBy);
  expect(trail.every((a) => a.actor === `alice (schedule ${ID})` && a.reason === 'CHG-42 nightly GC')).toBe(true);
  const created = (await auditFor(ID)).filter((a) => a.step === 'schedule-create');
  expect(created).toHaveLength(1);
  expect(created[0]).toMatchObject({ actor: 'alice', reason: 'CHG-42 nightly GC', outcome: 'approved' });
  expect(created[0].action).toBe(`create schedule ${ID}: ipam-gc every 1m, overlap SKIP`);
}, 400_000);

test('pause stops it: past the time it would have fired next, no run started', async () => {
  const p = await cli('schedule', 'pause', ID, '--note', 'investigating', '--actor', 'bob');
  expect(p.code).toBe(0);
  const d = await describeSchedule();
  expect(d.paused).toBe(true);
  expect(d.note).toBe('paused by bob: investigating');
  const started = d.runsStarted;
  // Wait out more than one interval (1 min) with the schedule paused.
  await new Promise((r) => setTimeout(r, 75_000));
  const later = await describeSchedule();
  expect(later.runsStarted).toBe(started);
  expect(later.running).toEqual([]);
  const list = await cli('schedule', 'list');
  expect(list.stdout).toMatch(new RegExp(`^${ID} +1m +paused `, 'm'));
}, 200_000);

test('a second trigger while a run is going is skipped (overlap SKIP, visible in Temporal); the run then finishes', async () => {
  writeLeaks(['10.244.0.250', '10.244.0.251', '10.244.0.252']);
  // Take host-local's lock on node1: a process whose descriptor holds it, until the test kills it.
  const holder = ssh(`nohup sh -c 'exec 9>${NET}/lock; flock 9; exec sleep 600' >/dev/null 2>&1 & echo $!`).trim();
  expect(holder).toMatch(/^\d+$/);
  try {
    const before = await describeSchedule();
    expect((await cli('schedule', 'trigger', ID)).code).toBe(0);
    const going = await until('the triggered run going', () => describeSchedule(), (v) => v.running.length === 1);
    const runId = going.running[0];
    const second = await cli('schedule', 'trigger', ID);
    expect(second.code).toBe(0);
    expect(second.stdout).toContain(`run ${runId} is still going: overlap policy SKIP skips it`);
    const skipped = await until('the skip counted', () => describeSchedule(), (v) => v.skippedOverlap > before.skippedOverlap);
    expect(skipped.runsStarted).toBe(before.runsStarted + 1);
    expect(skipped.running).toEqual([runId]);
    ssh(`kill ${holder}`);
    const result = await resultOf(runId);
    expect(result.outcome).toBe('fixed');
    expect(result.nodes[0].releasedCount).toBe(3);
    expect((await describeSchedule()).runsStarted).toBe(before.runsStarted + 1);
  } finally {
    ssh(`kill ${holder} 2>/dev/null || true`);
  }
}, 400_000);

test('delete removes it; every change is in the audit trail with who made it', async () => {
  const del = await cli('schedule', 'delete', ID, '--actor', 'carol', '--reason', 'replaced by a nightly one');
  expect(del.code).toBe(0);
  expect(JSON.parse((await cli('schedule', 'list', '--json')).stdout)).toEqual([]);
  const changes = (await auditFor(ID)).map((a) => [a.step, a.actor]);
  const me = userInfo().username;
  expect(changes).toEqual([
    ['schedule-create', 'alice'],
    ['schedule-pause', 'bob'],
    ['schedule-trigger', me],
    ['schedule-trigger', me],
    ['schedule-delete', 'carol'],
  ]);
});
