/**
 * npm run bench:audit: writes 100,000 audit records (as 1,000 runs of 100 steps over 50
 * nodes) to each store, then times listing one node's history, one run, and a full chain
 * verify. Prints figures; asserts nothing. SQLite in a temp file; PostgreSQL in a fresh
 * database on 127.0.0.1:5432 (skipped with a note if it is not reachable).
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import { AuditStore } from '../activities/audit-store';
import type { AuditInput } from '../lib/audit';

const N = Number(process.env.KUBEMEND_BENCH_RECORDS ?? 100_000);

const rec = (i: number): AuditInput => ({
  idempotencyKey: `machine-id-lab-${Math.floor(i / 100)}/node${i % 50}/step-${i}`,
  actor: 'sre',
  reason: 'INC-1234 weave peer collision',
  cluster: 'prod',
  node: `node${i % 50}`,
  remediation: 'machine-id',
  workflowId: `machine-id-lab-${Math.floor(i / 100)}`,
  runId: '6f1c0d2e-0000-4000-8000-000000000000',
  step: `node${i % 50}/step-${i}`,
  action: 'sh -c <regenerate script> kubemend-machine-id <run> 3d1219c7c4c5404aaa1f6d2a48adfda4',
  before: { machineId: '3d1219c7c4c5404aaa1f6d2a48adfda4' },
  after: { machineId: randomBytes(16).toString('hex') },
  outcome: 'applied',
  error: '',
});

async function time<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = process.hrtime.bigint();
  const r = await fn();
  return [r, Number(process.hrtime.bigint() - t0) / 1e6];
}

async function bench(name: string, store: AuditStore, size?: () => string): Promise<void> {
  const [, writeMs] = await time(async () => {
    for (let i = 0; i < N; i++) await store.append(rec(i));
  });
  const lists: number[] = [];
  for (let k = 0; k < 20; k++) lists.push((await time(() => store.list({ cluster: 'prod', node: `node${k}`, limit: 10_000 })))[1]);
  lists.sort((a, b) => a - b);
  const [nodeRecords] = await time(() => store.list({ cluster: 'prod', node: 'node7', limit: 10_000 }));
  const [, runMs] = await time(() => store.list({ workflowId: 'machine-id-lab-500', limit: 1000 }));
  const [verdict, verifyMs] = await time(() => store.verify());
  console.log(
    `${name}: ${N} appends in ${(writeMs / 1000).toFixed(1)} s (${Math.round(N / (writeMs / 1000))}/s, each its own transaction with the chain lock)` +
      `\n  one node's history (${nodeRecords.length} records): p50 ${lists[10].toFixed(1)} ms, max ${lists[19].toFixed(1)} ms over 20 nodes` +
      `\n  one run (100 records): ${runMs.toFixed(1)} ms` +
      `\n  verify the whole chain: ${(verifyMs / 1000).toFixed(2)} s (${verdict.ok ? 'intact' : 'BROKEN'})${size ? `\n  size: ${size()}` : ''}`,
  );
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'kubemend-bench-audit-'));
  const path = join(dir, 'audit.db');
  const sqlite = await AuditStore.open({ store: 'sqlite', path });
  try {
    await bench('sqlite', sqlite, () => `${(statSync(path).size / 1048576).toFixed(1)} MiB`);
  } finally {
    await sqlite.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const db = `kubemend_bench_${randomBytes(4).toString('hex')}`;
  const admin = new Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/postgres' });
  try {
    await admin.connect();
  } catch (err) {
    console.log(`postgres: skipped, 127.0.0.1:5432 not reachable (${(err as Error).message})`);
    return;
  }
  await admin.query(`CREATE DATABASE ${db}`);
  const pg = await AuditStore.open({ store: 'postgres', url: `postgres://postgres@127.0.0.1:5432/${db}` });
  try {
    await bench('postgres', pg, undefined);
    const size = await admin.query(`SELECT pg_size_pretty(pg_database_size('${db}')) AS s`);
    console.log(`  size: ${size.rows[0].s}`);
  } finally {
    await pg.close();
    await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    await admin.end();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
