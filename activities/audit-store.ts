/**
 * The audit store: one schema and one code path above two SQL drivers, chosen by config.
 *  - sqlite (better-sqlite3, WAL): the embedded default. A file on the worker's machine that
 *    the worker writes and `kubemend audit` reads at the same time; SQLite's file locks make
 *    that safe across processes, which an in-process database such as PGlite cannot.
 *  - postgres (node-postgres): production, e.g. the PostgreSQL Temporal uses in compose.
 * Appends are serialised (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped
 * advisory lock), so the hash chain stays linear with several workers.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { Pool } from 'pg';
import { type AuditInput, type AuditRecord, canonicalJson, type ChainVerdict, GENESIS_HASH, recordHash, verifyChain } from '../lib/audit';
import type { Config } from '../lib/config';

/** The narrow port activities depend on. */
export interface AuditPort {
  append(input: AuditInput): Promise<{ seq: number; duplicate: boolean }>;
  /** Records matching the filter, oldest first (the newest `limit` of them). */
  list(filter: AuditFilter): Promise<AuditRecord[]>;
}

export interface AuditFilter {
  cluster?: string;
  node?: string;
  remediation?: string;
  workflowId?: string;
  /** Only records of these steps. */
  steps?: string[];
  /** ISO 8601; records at or after it. */
  since?: string;
  limit?: number;
}

interface Sql {
  readonly kind: 'sqlite' | 'postgres';
  /** Statements use $1, $2 ... placeholders. */
  query<T>(text: string, params?: unknown[]): Promise<T[]>;
  /** Runs fn with appends serialised across processes. */
  exclusive<T>(fn: (q: Sql) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/**
 * Appends within one process are queued per database file: better-sqlite3 is synchronous,
 * so a second connection waiting on SQLite's lock would block the event loop that the
 * first one needs to commit. Across processes, SQLite's own locks serialise.
 */
const fileQueues = new Map<string, Promise<unknown>>();

class SqliteSql implements Sql {
  readonly kind = 'sqlite' as const;
  private readonly db: Database.Database;
  constructor(private readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('busy_timeout = 10000');
    this.db.pragma('synchronous = FULL');
  }
  async query<T>(text: string, params: unknown[] = []): Promise<T[]> {
    // $n placeholders become positional ?s, in the order they appear.
    const order: number[] = [];
    const sql = text.replace(/\$(\d+)/g, (_, n: string) => {
      order.push(Number(n) - 1);
      return '?';
    });
    const stmt = this.db.prepare(sql);
    const args = order.map((i) => params[i]);
    return (stmt.reader ? stmt.all(...args) : (stmt.run(...args), [])) as T[];
  }
  async exclusive<T>(fn: (q: Sql) => Promise<T>): Promise<T> {
    const run = async () => {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        const r = await fn(this);
        this.db.exec('COMMIT');
        return r;
      } catch (err) {
        this.db.exec('ROLLBACK');
        throw err;
      }
    };
    const previous = fileQueues.get(this.path) ?? Promise.resolve();
    const mine = previous.then(run, run);
    fileQueues.set(this.path, mine.catch(() => undefined));
    return mine;
  }
  async close(): Promise<void> {
    await fileQueues.get(this.path);
    this.db.close();
  }
}

class PostgresSql implements Sql {
  readonly kind = 'postgres' as const;
  private readonly pool: Pool;
  constructor(url: string) {
    this.pool = new Pool({ connectionString: url, max: 4 });
  }
  async query<T>(text: string, params: unknown[] = []): Promise<T[]> {
    return (await this.pool.query(text, params)).rows as T[];
  }
  async exclusive<T>(fn: (q: Sql) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    const q: Sql = { kind: 'postgres', query: async <R>(t: string, p: unknown[] = []) => (await client.query(t, p)).rows as R[], exclusive: (f) => f(q), close: async () => undefined };
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock(7263530001)'); // kubemend's audit append lock
      const r = await fn(q);
      await client.query('COMMIT');
      return r;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }
  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** Schema versions, applied in order, once. The same DDL runs on both databases. */
const MIGRATIONS: Array<{ version: number; sql: string[] }> = [
  {
    version: 1,
    sql: [
      `CREATE TABLE audit_records (
        seq BIGINT PRIMARY KEY,
        recorded_at TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        cluster TEXT NOT NULL,
        node TEXT NOT NULL,
        remediation TEXT NOT NULL,
        workflow_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        step TEXT NOT NULL,
        action TEXT NOT NULL,
        before_state TEXT NOT NULL,
        after_state TEXT NOT NULL,
        outcome TEXT NOT NULL,
        error TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
      )`,
      'CREATE INDEX audit_records_node ON audit_records (cluster, node, seq)',
      'CREATE INDEX audit_records_workflow ON audit_records (workflow_id, seq)',
      'CREATE INDEX audit_records_time ON audit_records (recorded_at)',
    ],
  },
];

interface Row {
  seq: number | string;
  recorded_at: string;
  idempotency_key: string;
  actor: string;
  reason: string;
  cluster: string;
  node: string;
  remediation: string;
  workflow_id: string;
  run_id: string;
  step: string;
  action: string;
  before_state: string;
  after_state: string;
  outcome: string;
  error: string;
  prev_hash: string;
  hash: string;
}

const fromRow = (r: Row): AuditRecord => ({
  seq: Number(r.seq),
  recordedAt: r.recorded_at,
  idempotencyKey: r.idempotency_key,
  actor: r.actor,
  reason: r.reason,
  cluster: r.cluster,
  node: r.node,
  remediation: r.remediation,
  workflowId: r.workflow_id,
  runId: r.run_id,
  step: r.step,
  action: r.action,
  before: JSON.parse(r.before_state),
  after: JSON.parse(r.after_state),
  outcome: r.outcome as AuditRecord['outcome'],
  error: r.error,
  prevHash: r.prev_hash,
  hash: r.hash,
});

export class AuditStore implements AuditPort {
  private constructor(
    private readonly sql: Sql,
    readonly where: string,
  ) {}

  /** Opens the store the config names and brings its schema up to date. */
  static async open(cfg: Config['audit']): Promise<AuditStore> {
    const store = cfg.store === 'sqlite' ? new AuditStore(new SqliteSql(cfg.path), `sqlite ${cfg.path}`) : new AuditStore(new PostgresSql(cfg.url), 'postgres');
    try {
      await store.migrate();
    } catch (err) {
      await store.close();
      throw err;
    }
    return store;
  }

  private async migrate(): Promise<void> {
    await this.sql.exclusive(async (q) => {
      await q.query('CREATE TABLE IF NOT EXISTS kubemend_schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)');
      const done = new Set((await q.query<{ version: number }>('SELECT version FROM kubemend_schema_migrations')).map((r) => Number(r.version)));
      for (const m of MIGRATIONS) {
        if (done.has(m.version)) continue;
        for (const stmt of m.sql) await q.query(stmt);
        await q.query('INSERT INTO kubemend_schema_migrations (version, applied_at) VALUES ($1, $2)', [m.version, new Date().toISOString()]);
      }
    });
  }

  /** Appends a record unless its idempotency key is already there (then returns that one). */
  async append(input: AuditInput): Promise<{ seq: number; duplicate: boolean }> {
    return this.sql.exclusive(async (q) => {
      const existing = await q.query<{ seq: number | string }>('SELECT seq FROM audit_records WHERE idempotency_key = $1', [input.idempotencyKey]);
      if (existing.length) return { seq: Number(existing[0].seq), duplicate: true };
      const last = await q.query<{ seq: number | string; hash: string }>('SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1');
      const seq = last.length ? Number(last[0].seq) + 1 : 1;
      const record: Omit<AuditRecord, 'hash'> = { ...input, seq, recordedAt: new Date().toISOString(), prevHash: last.length ? last[0].hash : GENESIS_HASH };
      const hash = recordHash(record);
      await q.query(
        `INSERT INTO audit_records (seq, recorded_at, idempotency_key, actor, reason, cluster, node, remediation, workflow_id, run_id, step, action, before_state, after_state, outcome, error, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
        [seq, record.recordedAt, input.idempotencyKey, input.actor, input.reason, input.cluster, input.node, input.remediation, input.workflowId, input.runId, input.step, input.action, canonicalJson(input.before), canonicalJson(input.after), input.outcome, input.error, record.prevHash, hash],
      );
      return { seq, duplicate: false };
    });
  }

  /** Records matching the filter, oldest first (the newest `limit` of them). */
  async list(f: AuditFilter = {}): Promise<AuditRecord[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (clause: string, v: unknown) => {
      params.push(v);
      where.push(clause.replace('?', `$${params.length}`));
    };
    if (f.cluster) add('cluster = ?', f.cluster);
    if (f.node) add('node = ?', f.node);
    if (f.remediation) add('remediation = ?', f.remediation);
    if (f.workflowId) add('workflow_id = ?', f.workflowId);
    if (f.steps) {
      const marks = f.steps.map((st) => (params.push(st), `$${params.length}`));
      where.push(marks.length ? `step IN (${marks.join(', ')})` : '1 = 0');
    }
    if (f.since) add('recorded_at >= ?', f.since);
    params.push(f.limit ?? 1000);
    const rows = await this.sql.query<Row>(`SELECT * FROM audit_records${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY seq DESC LIMIT $${params.length}`, params);
    return rows.map(fromRow).reverse();
  }

  /** Walks the whole chain in seq order, in batches, and reports the first break. */
  async verify(batch = 5000): Promise<ChainVerdict> {
    let cursor = { seq: 0, hash: GENESIS_HASH, count: 0 };
    let after = -1;
    for (;;) {
      const rows = (await this.sql.query<Row>('SELECT * FROM audit_records WHERE seq > $1 ORDER BY seq LIMIT $2', [after, batch])).map(fromRow);
      if (rows.length === 0) return { ok: true, records: cursor.count, lastHash: cursor.hash };
      const v = verifyChain(rows, cursor);
      if (!v.ok) return { ok: false, records: v.records, firstBadSeq: v.firstBadSeq, problem: v.problem };
      cursor = v.cursor;
      after = rows[rows.length - 1].seq;
    }
  }

  async close(): Promise<void> {
    await this.sql.close();
  }
}
