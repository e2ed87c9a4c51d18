/**
 * The audit store on both databases, one code path: the embedded SQLite file and this
 * machine's real PostgreSQL. Appends, idempotency, filters, the hash chain, and
 * `verify` against a record edited and one deleted by hand.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Client } from 'pg';
import { AuditStore } from '../../activities/audit-store';
import type { AuditInput } from '../../lib/audit';
import { runCli, tempDir, writeConfig } from '../helpers/harness';

const PG_ADMIN = 'postgres://postgres@127.0.0.1:5432/postgres';

interface Backend {
  name: string;
  config(): Promise<{ store: 'sqlite'; path: string } | { store: 'postgres'; url: string }>;
  /** Runs SQL on the store's database behind kubemend's back. */
  tamper(sql: string): Promise<void>;
  cleanup(): Promise<void>;
}

function sqliteBackend(): Backend {
  const path = join(tempDir('audit'), 'audit.db');
  return {
    name: 'sqlite',
    config: async () => ({ store: 'sqlite', path }),
    tamper: async (sql) => {
      const db = new Database(path);
      db.exec(sql);
      db.close();
    },
    cleanup: async () => undefined,
  };
}

function postgresBackend(): Backend {
  const db = `kubemend_audit_${randomBytes(4).toString('hex')}`;
  const url = `postgres://postgres@127.0.0.1:5432/${db}`;
  const admin = async (sql: string, target = PG_ADMIN) => {
    const c = new Client({ connectionString: target });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  let created = false;
  return {
    name: 'postgres',
    config: async () => {
      if (!created) await admin(`CREATE DATABASE ${db}`);
      created = true;
      return { store: 'postgres', url };
    },
    tamper: (sql) => admin(sql, url),
    cleanup: () => admin(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`),
  };
}

const rec = (i: number, over: Partial<AuditInput> = {}): AuditInput => ({
  idempotencyKey: `run-${Math.floor(i / 10)}/step-${i}`,
  actor: 'sre',
  reason: 'INC-42',
  cluster: 'lab',
  node: `node${(i % 3) + 1}`,
  remediation: 'machine-id',
  workflowId: `run-${Math.floor(i / 10)}`,
  runId: 'r',
  step: `step-${i}`,
  action: `systemctl reboot # ${i}`,
  before: { machineId: 'a'.repeat(32), n: i },
  after: { machineId: 'b'.repeat(32) },
  outcome: 'applied',
  error: '',
  ...over,
});

describe.each([
  ['sqlite', sqliteBackend],
  ['postgres', postgresBackend],
])('audit store on %s', (_name, make) => {
  const backend = make();
  let store: AuditStore;

  beforeAll(async () => {
    store = await AuditStore.open(await backend.config());
  });
  afterAll(async () => {
    await store?.close();
    await backend.cleanup();
  });

  test('appends in order; a repeated idempotency key writes nothing', async () => {
    for (let i = 0; i < 30; i++) expect(await store.append(rec(i))).toEqual({ seq: i + 1, duplicate: false });
    expect(await store.append(rec(7, { action: 'a retry with other words' }))).toEqual({ seq: 8, duplicate: true });
    const all = await store.list({ limit: 1000 });
    expect(all.map((r) => r.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(all[7].action).toBe('systemctl reboot # 7');
    expect(all[0].before).toEqual({ machineId: 'a'.repeat(32), n: 0 });
    expect(all[1].prevHash).toBe(all[0].hash);
  });

  test('filters: node, run, since; newest N oldest first', async () => {
    expect((await store.list({ node: 'node2' })).map((r) => r.seq)).toEqual([2, 5, 8, 11, 14, 17, 20, 23, 26, 29]);
    expect((await store.list({ workflowId: 'run-2' })).map((r) => r.step)).toEqual(Array.from({ length: 10 }, (_, i) => `step-${20 + i}`));
    expect((await store.list({ limit: 3 })).map((r) => r.seq)).toEqual([28, 29, 30]);
    expect(await store.list({ since: '2999-01-01T00:00:00.000Z' })).toEqual([]);
    expect(await store.list({ cluster: 'other' })).toEqual([]);
  });

  test('a second store on the same database continues the same chain', async () => {
    const other = await AuditStore.open(await backend.config());
    try {
      await Promise.all([store.append(rec(100)), other.append(rec(101)), store.append(rec(102)), other.append(rec(103))]);
    } finally {
      await other.close();
    }
    expect(await store.verify()).toEqual({ ok: true, records: 34, lastHash: expect.stringMatching(/^[0-9a-f]{64}$/) });
  });

  test('verify finds a record edited by hand', async () => {
    await backend.tamper("UPDATE audit_records SET action = 'echo nothing to see' WHERE seq = 12");
    expect(await store.verify()).toEqual({ ok: false, records: 11, firstBadSeq: 12, problem: expect.stringContaining('do not match its hash (edited?)') });
  });

  test('verify finds a record deleted by hand', async () => {
    await backend.tamper('DELETE FROM audit_records WHERE seq >= 12 AND seq <= 12'); // the edited one goes, leaving a gap
    expect(await store.verify()).toEqual({ ok: false, records: 11, firstBadSeq: 12, problem: 'record 12 missing: seq jumps from 11 to 13 (deleted?)' });
  });
});


describe('kubemend audit (CLI) on the embedded store', () => {
  const dir = tempDir('audit-cli');
  const config = writeConfig(dir, {
    clusters: [{ name: 'lab', ssh: { user: 'root', privateKeyPath: join(dir, 'key'), knownHostsPath: join(dir, 'known_hosts') }, nodes: [{ name: 'node1', role: 'control-plane', host: '127.0.0.1' }] }],
  });
  beforeAll(async () => {
    const store = await AuditStore.open({ store: 'sqlite', path: join(dir, '.kubemend', 'audit.db') });
    for (let i = 0; i < 12; i++) await store.append(rec(i, { action: i === 4 ? 'echo "quoted, with comma"' : `cmd ${i}` }));
    await store.close();
  });

  test('list: a table for people, JSON and CSV for export, filters', async () => {
    const table = await runCli(['--config', config, 'audit', 'list', '--node', 'node2']);
    expect(table.code).toBe(0);
    expect(table.stdout.split('\n')[0]).toMatch(/^SEQ +TIME \(UTC\) +NODE +STEP +OUTCOME +ACTION \/ ERROR$/);
    expect(table.stdout.trim().split('\n')).toHaveLength(1 + 4); // seq 2, 5, 8, 11
    const json = JSON.parse((await runCli(['--config', config, 'audit', 'list', '--json', '--limit', '3'])).stdout) as Array<{ seq: number }>;
    expect(json.map((r) => r.seq)).toEqual([10, 11, 12]);
    const csv = (await runCli(['--config', config, 'audit', 'list', '--csv', '--node', 'node2'])).stdout.trim().split('\n');
    expect(csv[0]).toBe('seq,recordedAt,actor,reason,cluster,node,remediation,workflowId,runId,step,action,before,after,outcome,error,prevHash,hash');
    expect(csv[2]).toContain(',"echo ""quoted, with comma""",');
    expect((await runCli(['--config', config, 'audit', 'list', '--since', '1h', '--json'])).stdout).toContain('"seq":12');
  });

  test('bad input: exit 2 with the reason, nothing read', async () => {
    const since = await runCli(['--config', config, 'audit', 'list', '--since', 'yesterday-ish']);
    expect([since.code, since.stderr]).toEqual([2, expect.stringContaining('--since: "yesterday-ish" is neither an ISO date/time nor a duration')]);
    const node = await runCli(['--config', config, 'audit', 'list', '--node', 'n1;rm -rf /']);
    expect(node.code).toBe(2);
    const both = await runCli(['--config', config, 'audit', 'list', '--json', '--csv']);
    expect([both.code, both.stderr]).toEqual([2, expect.stringContaining('choose one')]);
  });

  test('show and verify', async () => {
    const show = await runCli(['--config', config, 'audit', 'show', 'run-0']);
    expect(show.stdout).toMatch(/^run run-0: machine-id on lab, by sre \(INC-42\)/);
    expect(show.stdout).toContain('  before  {"machineId":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","n":4}');
    expect((await runCli(['--config', config, 'audit', 'verify'])).code).toBe(0);
    const db = new Database(join(dir, '.kubemend', 'audit.db'));
    db.exec("UPDATE audit_records SET actor = 'someone-else' WHERE seq = 7");
    db.close();
    const broken = await runCli(['--config', config, 'audit', 'verify']);
    expect([broken.code, broken.stdout]).toEqual([1, expect.stringMatching(/^audit chain BROKEN at record 7: its fields do not match its hash \(edited\?\) \(6 record\(s\) before it verified\)/)]);
  });
});
