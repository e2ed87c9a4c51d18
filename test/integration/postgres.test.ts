/**
 * kubemend's worker and CLI, as separate processes, against a Temporal server that
 * persists in PostgreSQL (production's shape). The worker registers kubemend's search
 * attributes itself, writes JSON logs, and stops cleanly on SIGTERM.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection } from '@temporalio/client';
import type { ProbeReport } from '../../lib/probe';
import { LocalSshd } from '../lab/sshd';
import { CLI, runCli, tempDir, writeConfig } from '../helpers/harness';
import { type PostgresTemporal, psql, startPostgresTemporal } from '../helpers/temporal-postgres';

let temporal: PostgresTemporal;
let sshd: LocalSshd;
let config: string;
let worker: ChildProcess;
let workerOut = '';

beforeAll(async () => {
  const dir = tempDir('pg');
  temporal = await startPostgresTemporal(dir);
  sshd = await LocalSshd.start();
  config = writeConfig(dir, {
    temporal: { address: temporal.address, namespace: 'default', taskQueue: 'kubemend-pg' },
    clusters: [
      {
        name: 'prod',
        ssh: { user: 'root', privateKeyPath: sshd.clientKeyPath, knownHostsPath: sshd.knownHostsPath },
        nodes: [{ name: 'cp1', role: 'control-plane', host: sshd.host, port: sshd.port }],
      },
    ],
  });
  worker = spawn(process.execPath, [CLI, '--config', config, 'worker'], { stdio: ['ignore', 'pipe', 'pipe'] });
  worker.stdout!.on('data', (d) => (workerOut += d));
  worker.stderr!.on('data', (d) => (workerOut += d));
  const until = Date.now() + 60_000;
  while (!workerOut.includes('kubemend worker started')) {
    if (worker.exitCode !== null || Date.now() > until) throw new Error(`worker did not start:\n${workerOut}\n${temporal.log()}`);
    await sleep(200);
  }
}, 240_000);

afterAll(async () => {
  if (worker && worker.exitCode === null) worker.kill('SIGKILL');
  await sshd?.stop();
  await temporal?.destroy();
}, 60_000);

test('the worker registered kubemend search attributes in the PostgreSQL-backed namespace', async () => {
  const c = await Connection.connect({ address: temporal.address });
  try {
    const sa = await c.operatorService.listSearchAttributes({ namespace: 'default' });
    expect(Object.keys(sa.customAttributes ?? {})).toEqual(expect.arrayContaining(['KubemendCluster', 'KubemendNode', 'KubemendRemediation']));
  } finally {
    await c.close();
  }
});

test('a probe run completes and its history and visibility rows are in PostgreSQL', async () => {
  const r = await runCli(['--config', config, 'run', 'probe', '--cluster', 'prod', '--json']);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  expect(r.code).toBe(0);
  const report = JSON.parse(r.stdout) as ProbeReport;
  expect(report.nodes).toEqual([expect.objectContaining({ name: 'cp1', error: null, machineId: readFileSync('/etc/machine-id', 'utf8').trim() })]);
  const runId = /started (\S+)/.exec(r.stderr)![1];

  expect(psql(temporal.db, `SELECT count(*) FROM current_executions WHERE workflow_id = '${runId}'`)).toBe('1');
  expect(psql(temporal.visibilityDb, `SELECT status FROM executions_visibility WHERE workflow_id = '${runId}'`)).toBe('2'); // COMPLETED
  // SQL visibility stores custom attributes under preallocated aliases (Keyword01, KeywordList03, ...).
  const attrs = Object.values(JSON.parse(psql(temporal.visibilityDb, `SELECT search_attributes FROM executions_visibility WHERE workflow_id = '${runId}'`)));
  expect(attrs).toEqual(expect.arrayContaining(['probe', 'prod', ['cp1']]));

  const listed = await runCli(['--config', config, 'list', '--node', 'cp1', '--json']);
  expect((JSON.parse(listed.stdout) as Array<{ runId: string }>).map((x) => x.runId)).toEqual([runId]);
});

test('SIGTERM stops the worker cleanly: exit 0, every log line is JSON', async () => {
  const exited = new Promise<number | null>((r) => worker.once('exit', (code) => r(code)));
  worker.kill('SIGTERM');
  const code = await Promise.race([exited, sleep(45_000, undefined, { ref: false }).then(() => 'timeout' as const)]);
  expect(code).toBe(0);
  const lines = workerOut.trim().split('\n');
  const parsed = lines.map((l) => {
    try {
      return JSON.parse(l) as { level: string; msg: string };
    } catch {
      return { level: 'NOT-JSON', msg: l };
    }
  });
  expect(parsed.filter((p) => p.level === 'NOT-JSON')).toEqual([]);
  expect(parsed.map((p) => p.msg)).toEqual(expect.arrayContaining(['kubemend worker started', 'kubemend worker stopped']));
});
