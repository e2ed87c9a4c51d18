/** kubemend audit list | show | verify: the trail of applied fixes, read straight from the store. */
import { z } from 'zod';
import { AuditStore } from '../activities/audit-store';
import type { AuditRecord } from '../lib/audit';
import type { Config } from '../lib/config';
import { ExitCode } from '../lib/failures';
import { clusterName, nodeName } from '../lib/patterns';
import { CliError } from './errors';
import { parseDuration } from '../lib/duration';

const Filter = z.object({
  cluster: clusterName.optional(),
  node: nodeName.optional(),
  remediation: z.string().regex(/^[a-z][a-z0-9-]{0,62}$/, 'must be a remediation name such as machine-id').optional(),
  since: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(1_000_000).default(200),
  json: z.boolean().default(false),
  csv: z.boolean().default(false),
});

/** --since: an ISO time (2026-11-01, 2026-11-01T10:00:00Z) or a duration back from now (24h, 7d). */
export function parseSince(v: string, now = new Date()): string {
  const days = /^(\d+)d$/.exec(v);
  const ms = days ? Number(days[1]) * 86_400_000 : parseDuration(v);
  if (ms !== undefined) return new Date(now.getTime() - ms).toISOString();
  if (/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$/.test(v) && !Number.isNaN(Date.parse(v))) return new Date(v).toISOString();
  throw new CliError(`--since: ${JSON.stringify(v)} is neither an ISO date/time nor a duration such as 24h or 7d`);
}

async function withStore<T>(cfg: Config, fn: (s: AuditStore) => Promise<T>): Promise<T> {
  let store: AuditStore;
  try {
    store = await AuditStore.open(cfg.audit);
  } catch (err) {
    throw new CliError(`cannot open the audit store (${cfg.audit.store}): ${(err as Error).message}`, ExitCode.RemediationFailed);
  }
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

const COLUMNS: Array<keyof AuditRecord> = ['seq', 'recordedAt', 'actor', 'reason', 'cluster', 'node', 'remediation', 'workflowId', 'runId', 'step', 'action', 'before', 'after', 'outcome', 'error', 'prevHash', 'hash'];

function csvCell(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v ?? null);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function table(records: AuditRecord[], width: number): string {
  if (records.length === 0) return 'no audit records\n';
  const lines = [`${'SEQ'.padEnd(6)} ${'TIME (UTC)'.padEnd(19)} ${'NODE'.padEnd(10)} ${'STEP'.padEnd(20)} ${'OUTCOME'.padEnd(12)} ACTION / ERROR`];
  for (const r of records) {
    const what = (r.error ? `${r.action} | ${r.error}` : r.action).replace(/\s*\n\s*/g, '; ');
    lines.push(`${String(r.seq).padEnd(6)} ${r.recordedAt.slice(0, 19).replace('T', ' ')} ${(r.node || '-').padEnd(10)} ${r.step.padEnd(20)} ${r.outcome.padEnd(12)} ${what}`.slice(0, Math.max(width, 80) - 1));
  }
  return `${lines.join('\n')}\n`;
}

function output(records: AuditRecord[], o: { json: boolean; csv: boolean }, out: NodeJS.WritableStream): void {
  if (o.json) out.write(`${JSON.stringify(records)}\n`);
  else if (o.csv) out.write(`${COLUMNS.join(',')}\n${records.map((r) => COLUMNS.map((c) => csvCell(r[c])).join(',')).join('\n')}${records.length ? '\n' : ''}`);
  else out.write(table(records, (out as NodeJS.WriteStream).columns ?? 160));
}

export async function auditListCommand(cfg: Config, raw: Record<string, unknown>, out: NodeJS.WritableStream): Promise<number> {
  const r = Filter.safeParse(raw);
  if (!r.success) throw new CliError(`bad arguments: ${r.error.issues.map((i) => `--${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const f = r.data;
  if (f.json && f.csv) throw new CliError('--json and --csv: choose one');
  const since = f.since ? parseSince(f.since) : undefined;
  return withStore(cfg, async (s) => {
    output(await s.list({ cluster: f.cluster, node: f.node, remediation: f.remediation, since, limit: f.limit }), f, out);
    return ExitCode.Ok;
  });
}

export async function auditShowCommand(cfg: Config, runId: string, raw: { json?: boolean; csv?: boolean }, out: NodeJS.WritableStream): Promise<number> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$/.test(runId)) throw new CliError(`run: ${JSON.stringify(runId)} is not a kubemend run ID`);
  return withStore(cfg, async (s) => {
    const records = await s.list({ workflowId: runId, limit: 100_000 });
    if (records.length === 0) throw new CliError(`no audit records for run ${runId}`, ExitCode.RemediationFailed);
    if (!raw.json && !raw.csv) {
      const first = records[0];
      out.write(`run ${runId}: ${first.remediation} on ${first.cluster}, by ${first.actor}${first.reason ? ` (${first.reason})` : ''}\n`);
      for (const r of records) {
        out.write(`\n#${r.seq} ${r.recordedAt} ${r.node || '(cluster)'} ${r.step}: ${r.outcome}\n  action  ${r.action}\n`);
        if (r.before !== null) out.write(`  before  ${JSON.stringify(r.before)}\n`);
        if (r.after !== null) out.write(`  after   ${JSON.stringify(r.after)}\n`);
        if (r.error) out.write(`  error   ${r.error}\n`);
      }
      return ExitCode.Ok;
    }
    output(records, { json: !!raw.json, csv: !!raw.csv }, out);
    return ExitCode.Ok;
  });
}

/** Exit 0 if the chain is whole, 1 naming the first record where it breaks. */
export async function auditVerifyCommand(cfg: Config, raw: { json?: boolean }, out: NodeJS.WritableStream): Promise<number> {
  return withStore(cfg, async (s) => {
    const t0 = Date.now();
    const v = await s.verify();
    if (raw.json) out.write(`${JSON.stringify({ ...v, store: s.where, ms: Date.now() - t0 })}\n`);
    else if (v.ok) out.write(`audit chain intact: ${v.records} record(s) in ${s.where}, head ${v.lastHash.slice(0, 16)}\n`);
    else out.write(`audit chain BROKEN at record ${v.firstBadSeq}: ${v.problem} (${v.records} record(s) before it verified) in ${s.where}\n`);
    return v.ok ? ExitCode.Ok : ExitCode.RemediationFailed;
  });
}
