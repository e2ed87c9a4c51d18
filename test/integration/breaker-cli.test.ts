/**
 * `kubemend breaker status` and `kubemend breaker reset` through the real CLI process, on a
 * SQLite trail (and status on PostgreSQL): closed, open naming the failed runs, reset by whom
 * and why (recorded, chain intact), and bad input (exit 2, nothing written). Also the check
 * `kubemend run` makes before it starts a run (refuseIfBreakerOpen), exit 3 while open.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Client } from 'pg';
import { AuditStore } from '../../activities/audit-store';
import { refuseIfBreakerOpen } from '../../cli/breaker';
import { CliError } from '../../cli/errors';
import type { AuditInput } from '../../lib/audit';
import { BREAKER_STEP } from '../../lib/breaker';
import { loadConfigFile } from '../../worker/config-file';
import { runCli, tempDir, writeConfig } from '../helpers/harness';

const cluster = (name: string) => ({ name, ssh: { privateKeyPath: 'k', knownHostsPath: 'kh' }, nodes: [{ name: 'node1', role: 'worker', host: '127.0.0.1' }] });

/** A 'run/failed' record as recordRunFailure writes it. */
const failure = (workflowId: string, clusterName = 'lab'): AuditInput => ({
  idempotencyKey: `${workflowId}/r1/${BREAKER_STEP.failed}`,
  actor: 'sre',
  reason: 'INC-9',
  cluster: clusterName,
  node: '',
  remediation: 'machine-id',
  workflowId,
  runId: 'r1',
  step: BREAKER_STEP.failed,
  action: 'none: the run failed',
  before: null,
  after: null,
  outcome: 'failed',
  error: `NodeDidNotReturn: node1 did not come back (${workflowId})`,
});

let dir: string;
let configFile: string;
let store: AuditStore;

beforeAll(async () => {
  dir = tempDir('breaker-cli');
  configFile = writeConfig(dir, { audit: { store: 'sqlite', path: 'audit.db' }, clusters: [cluster('lab'), cluster('other')] });
  store = await AuditStore.open({ store: 'sqlite', path: join(dir, 'audit.db') });
});
afterAll(async () => {
  await store.close();
});

const cli = (...args: string[]) => runCli(['--config', configFile, ...args]);
const statusJson = async (name = 'lab') => {
  const r = await cli('breaker', 'status', '--cluster', name, '--json');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as Record<string, any>;
};

test('closed with no failures; two failures: still closed, both listed', async () => {
  expect(await statusJson()).toEqual({ cluster: 'lab', open: false, enabled: true, trippedAt: null, trippedBy: [], recentFailures: [], maxFailures: 3, failureWindowMs: 3_600_000, lastReset: null });
  await store.append(failure('run-1'));
  await store.append(failure('run-2'));
  const s = await statusJson();
  expect(s.open).toBe(false);
  expect(s.recentFailures.map((f: { runId: string }) => f.runId)).toEqual(['run-1', 'run-2']);
  const text = await cli('breaker', 'status', '--cluster', 'lab');
  expect(text.code).toBe(0);
  expect(text.stdout).toContain('cluster lab: breaker closed: runs may start');
  expect(text.stdout).toContain('2 in the last 1h');
  expect(text.stdout).toContain('last reset    never');
});

test('three failures: open, naming the runs and the reset command; other clusters closed', async () => {
  await store.append(failure('run-3'));
  const s = await statusJson();
  expect(s.open).toBe(true);
  expect(s.trippedBy.map((f: { runId: string }) => f.runId)).toEqual(['run-1', 'run-2', 'run-3']);
  expect(s.trippedAt).toBe(s.trippedBy[2].at);
  const text = await cli('breaker', 'status', '--cluster', 'lab');
  expect(text.code).toBe(0);
  expect(text.stdout).toMatch(/^cluster lab: breaker OPEN since \S+: new runs are refused$/m);
  for (const id of ['run-1', 'run-2', 'run-3']) expect(text.stdout).toContain(id);
  expect(text.stdout).toContain('kubemend breaker reset --cluster lab --reason TEXT');
  expect((await statusJson('other')).open).toBe(false);
});

test('refuseIfBreakerOpen: exit 3 with the reason while open; the refusal can be recorded', async () => {
  const cfg = loadConfigFile(configFile);
  const recorded: string[] = [];
  let err: unknown;
  try {
    await refuseIfBreakerOpen(cfg, 'lab', { record: async (e) => void recorded.push(e) });
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(CliError);
  expect((err as CliError).exitCode).toBe(3);
  expect((err as CliError).message).toMatch(/^refused: circuit breaker open on cluster lab: 3 failed run\(s\) within 1h/);
  expect((err as CliError).message).toContain('kubemend breaker reset --cluster lab');
  expect(recorded).toHaveLength(1);
  await expect(refuseIfBreakerOpen(cfg, 'other')).resolves.toBeUndefined();
});

test('bad input: exit 2 naming the problem, nothing written', async () => {
  const before = (await store.list({ limit: 10_000 })).length;
  const cases: Array<[string[], RegExp]> = [
    [['breaker', 'status'], /required option '--cluster <name>'/],
    [['breaker', 'reset'], /required option '--cluster <name>'/],
    [['breaker', 'status', '--cluster', 'Lab;rm'], /--cluster: must be a lowercase DNS-1123 label/],
    [['breaker', 'reset', '--cluster', 'nope'], /--cluster: no cluster "nope" in the config \(it has: lab, other\)/],
    [['breaker', 'reset', '--cluster', 'lab', '--actor', '  '], /--actor: must not be blank/],
    [['breaker', 'reset', '--cluster', 'lab', '--reason', 'a\u0007b'], /--reason: must not contain control characters/],
    [['breaker', 'reset', '--cluster', 'lab', '--force'], /unknown option '--force'/],
    [['breaker', 'open', '--cluster', 'lab'], /unknown command 'open'/],
  ];
  for (const [args, message] of cases) {
    const r = await cli(...args);
    expect({ args, code: r.code }).toEqual({ args, code: 2 });
    expect(r.stderr).toMatch(message);
  }
  const badConfig = writeConfig(dir, { audit: { store: 'sqlite', path: 'audit.db' }, policy: { maxFailures: -1, failureWindow: 'soon' }, clusters: [cluster('lab')] }, 'bad.yaml');
  const r = await runCli(['--config', badConfig, 'breaker', 'reset', '--cluster', 'lab']);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain('policy.maxFailures: ');
  expect(r.stderr).toContain('policy.failureWindow: must be a duration');
  expect((await store.list({ limit: 10_000 })).length).toBe(before);
  expect((await statusJson()).open).toBe(true);
});

test('reset: closes it, recorded with actor and reason, chain intact; a new failure counts from there', async () => {
  const r = await cli('breaker', 'reset', '--cluster', 'lab', '--actor', 'alice', '--reason', 'INC-9: uplink fixed');
  expect(r.code).toBe(0);
  expect(r.stdout).toContain('breaker on cluster lab reset by alice: runs may start again');
  expect(r.stdout).toContain('tripped by run-1, run-2, run-3');
  const s = await statusJson();
  expect(s).toMatchObject({ open: false, trippedBy: [], recentFailures: [], lastReset: { actor: 'alice', reason: 'INC-9: uplink fixed' } });

  const audit = await cli('audit', 'list', '--cluster', 'lab', '--json');
  const records = JSON.parse(audit.stdout) as Array<Record<string, any>>;
  const reset = records.filter((x) => x.step === BREAKER_STEP.reset);
  expect(reset).toHaveLength(1);
  expect(reset[0]).toMatchObject({ actor: 'alice', reason: 'INC-9: uplink fixed', node: '', outcome: 'applied', action: 'kubemend breaker reset --cluster lab', before: { open: true, trippedBy: ['run-1', 'run-2', 'run-3'] }, after: { open: false } });
  expect((await cli('audit', 'verify')).code).toBe(0);

  await store.append(failure('run-4'));
  expect((await statusJson()).recentFailures.map((f: { runId: string }) => f.runId)).toEqual(['run-4']);
  const text = await cli('breaker', 'status', '--cluster', 'lab');
  expect(text.stdout).toContain('1 in the last 1h since the last reset');
  expect(text.stdout).toMatch(/last reset {4}\S+ by alice \(INC-9: uplink fixed\)/);
});

test('reset of a closed breaker is recorded as already-done and says what it cleared', async () => {
  const r = await cli('breaker', 'reset', '--cluster', 'lab');
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^breaker on cluster lab was closed; reset by \S+ anyway: the 1 failed run\(s\) before now no longer count$/m);
  const last = (await store.list({ cluster: 'lab', steps: [BREAKER_STEP.reset], limit: 1 }))[0];
  expect(last.outcome).toBe('already-done');
  expect((await statusJson()).recentFailures).toEqual([]);
});

test('maxFailures 0: the breaker is off', async () => {
  const off = writeConfig(dir, { audit: { store: 'sqlite', path: 'audit-off.db' }, policy: { maxFailures: 0 }, clusters: [cluster('lab')] }, 'off.yaml');
  const s = await AuditStore.open({ store: 'sqlite', path: join(dir, 'audit-off.db') });
  try {
    for (const id of ['a', 'b', 'c', 'd']) await s.append(failure(id));
  } finally {
    await s.close();
  }
  const r = await runCli(['--config', off, 'breaker', 'status', '--cluster', 'lab']);
  expect(r.code).toBe(0);
  expect(r.stdout).toContain('cluster lab: breaker off (policy.maxFailures is 0)');
  await expect(refuseIfBreakerOpen(loadConfigFile(off), 'lab')).resolves.toBeUndefined();
});

test('status on a PostgreSQL trail', async () => {
  const db = `kubemend_breaker_cli_${randomBytes(4).toString('hex')}`;
  const admin = async (sql: string) => {
    const c = new Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/postgres' });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  await admin(`CREATE DATABASE ${db}`);
  try {
    const url = `postgres://postgres@127.0.0.1:5432/${db}`;
    const pgConfig = writeConfig(dir, { audit: { store: 'postgres', url }, clusters: [cluster('lab')] }, 'pg.yaml');
    const s = await AuditStore.open({ store: 'postgres', url });
    try {
      for (const id of ['p1', 'p2', 'p3']) await s.append(failure(id));
    } finally {
      await s.close();
    }
    const open = await runCli(['--config', pgConfig, 'breaker', 'status', '--cluster', 'lab', '--json']);
    expect(JSON.parse(open.stdout)).toMatchObject({ open: true, trippedBy: [{ runId: 'p1' }, { runId: 'p2' }, { runId: 'p3' }] });
    expect((await runCli(['--config', pgConfig, 'breaker', 'reset', '--cluster', 'lab', '--reason', 'checked'])).code).toBe(0);
    expect(JSON.parse((await runCli(['--config', pgConfig, 'breaker', 'status', '--cluster', 'lab', '--json'])).stdout).open).toBe(false);
  } finally {
    await admin(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  }
});
