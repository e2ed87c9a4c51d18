/**
 * kubemend breaker status | reset, and the check `kubemend run` makes before it starts a run.
 * The breaker's state is read from the audit trail (lib/breaker.ts decides); a reset is one
 * 'breaker/reset' record in that trail.
 */
import { randomBytes } from 'node:crypto';
import { userInfo } from 'node:os';
import { z } from 'zod';
import { AuditStore } from '../activities/audit-store';
import { breakerPolicy, readBreaker } from '../activities/breaker';
import { BREAKER_STEP, breakerMessage, type BreakerState } from '../lib/breaker';
import { type Config, findCluster, formatZodIssues } from '../lib/config';
import { formatDuration } from '../lib/duration';
import { ExitCode } from '../lib/failures';
import { clusterName, freeText } from '../lib/patterns';
import { CliError } from './errors';

const StatusArgs = z.object({ cluster: clusterName, json: z.boolean().default(false) });
const ResetArgs = z.object({
  cluster: clusterName,
  actor: freeText(200).refine((v) => v.trim().length > 0, 'must not be blank').optional(),
  reason: freeText(2000).optional(),
});

function parse<T extends z.ZodType>(schema: T, raw: unknown): z.output<T> {
  const r = schema.safeParse(raw);
  if (!r.success) throw new CliError(`bad arguments:\n${formatZodIssues(r.error).map((l) => `  - --${l}`).join('\n')}`);
  return r.data;
}

function knownCluster(cfg: Config, cluster: string): void {
  if (!findCluster(cfg, cluster)) throw new CliError(`--cluster: no cluster ${JSON.stringify(cluster)} in the config (it has: ${cfg.clusters.map((c) => c.name).join(', ')})`);
}

function osUser(): string {
  try {
    return userInfo().username;
  } catch {
    return `uid-${process.getuid?.() ?? 'unknown'}`;
  }
}

async function withStore<T>(cfg: Config, fn: (s: AuditStore) => Promise<T>): Promise<T> {
  let store: AuditStore;
  try {
    store = await AuditStore.open(cfg.audit);
  } catch (err) {
    throw new CliError(`cannot open the audit store (${cfg.audit.store}), where the breaker's state is kept: ${(err as Error).message}`, ExitCode.RemediationFailed);
  }
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** The stable JSON of `breaker status --json`: fields are only ever added. */
export function breakerJson(cluster: string, s: BreakerState) {
  return {
    cluster,
    open: s.open,
    enabled: s.maxFailures > 0,
    trippedAt: s.trippedAt,
    trippedBy: s.trippedBy,
    recentFailures: s.recentFailures,
    maxFailures: s.maxFailures,
    failureWindowMs: s.failureWindowMs,
    lastReset: s.lastReset,
  };
}

function statusText(cluster: string, s: BreakerState): string {
  const window = formatDuration(s.failureWindowMs);
  const lines: string[] = [];
  if (s.maxFailures === 0) lines.push(`cluster ${cluster}: breaker off (policy.maxFailures is 0)`);
  else if (s.open) lines.push(`cluster ${cluster}: breaker OPEN since ${s.trippedAt}: new runs are refused`);
  else lines.push(`cluster ${cluster}: breaker closed: runs may start`);
  lines.push(`  policy        ${s.maxFailures} failed run(s) within ${window} trip it; it stays open until a reset`);
  if (s.open) {
    lines.push('  tripped by');
    for (const f of s.trippedBy) lines.push(`    ${f.at}  ${f.runId}  ${f.remediation}${f.error ? `  ${f.error.replace(/\s+/g, ' ').slice(0, 160)}` : ''}`);
  }
  lines.push(`  failed runs   ${s.recentFailures.length} in the last ${window}${s.lastReset ? ' since the last reset' : ''}`);
  if (!s.open) for (const f of s.recentFailures) lines.push(`    ${f.at}  ${f.runId}  ${f.remediation}${f.error ? `  ${f.error.replace(/\s+/g, ' ').slice(0, 160)}` : ''}`);
  lines.push(`  last reset    ${s.lastReset ? `${s.lastReset.at} by ${s.lastReset.actor}${s.lastReset.reason ? ` (${s.lastReset.reason})` : ''}` : 'never'}`);
  if (s.open) lines.push(`  once the cause is understood: kubemend breaker reset --cluster ${cluster} --reason TEXT`);
  return `${lines.join('\n')}\n`;
}

/** `kubemend breaker status --cluster C [--json]`: exit 0 whether open or closed (the output says which). */
export async function breakerStatusCommand(cfg: Config, raw: Record<string, unknown>, out: NodeJS.WritableStream): Promise<number> {
  const a = parse(StatusArgs, raw);
  knownCluster(cfg, a.cluster);
  return withStore(cfg, async (store) => {
    const s = await readBreaker(store, a.cluster, breakerPolicy(cfg));
    out.write(a.json ? `${JSON.stringify(breakerJson(a.cluster, s))}\n` : statusText(a.cluster, s));
    return ExitCode.Ok;
  });
}

/**
 * `kubemend breaker reset --cluster C [--actor A] [--reason R]`: writes a 'breaker/reset'
 * record. Failed runs before it no longer count, whether the breaker was open or not.
 */
export async function breakerResetCommand(cfg: Config, raw: Record<string, unknown>, out: NodeJS.WritableStream): Promise<number> {
  const a = parse(ResetArgs, raw);
  knownCluster(cfg, a.cluster);
  const actor = a.actor ?? osUser();
  return withStore(cfg, async (store) => {
    const policy = breakerPolicy(cfg);
    const before = await readBreaker(store, a.cluster, policy);
    const now = new Date();
    const id = `breaker-reset-${a.cluster}-${now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${randomBytes(3).toString('hex')}`;
    await store.append({
      idempotencyKey: id,
      actor,
      reason: a.reason ?? '',
      cluster: a.cluster,
      node: '',
      remediation: '',
      workflowId: id,
      runId: '',
      step: BREAKER_STEP.reset,
      action: `kubemend breaker reset --cluster ${a.cluster}`,
      before: { open: before.open, trippedBy: before.trippedBy.map((f) => f.runId), recentFailures: before.recentFailures.map((f) => f.runId) },
      after: { open: false },
      outcome: before.open ? 'applied' : 'already-done',
      error: '',
    });
    out.write(
      before.open
        ? `breaker on cluster ${a.cluster} reset by ${actor}: runs may start again (it was open since ${before.trippedAt}, tripped by ${before.trippedBy.map((f) => f.runId).join(', ')})\n`
        : `breaker on cluster ${a.cluster} was closed; reset by ${actor} anyway: the ${before.recentFailures.length} failed run(s) before now no longer count\n`,
    );
    return ExitCode.Ok;
  });
}

/**
 * The CLI's check before it starts a run on `cluster`: exits 3 (refused) with the reason while
 * the cluster's breaker is open. `record` may write the refusal to the audit trail. The
 * workflow checks again (checkBreaker); this makes the refusal early and clear.
 */
export async function refuseIfBreakerOpen(cfg: Config, cluster: string, opts: { record?: (error: string) => Promise<void> } = {}): Promise<void> {
  const s = await withStore(cfg, (store) => readBreaker(store, cluster, breakerPolicy(cfg)));
  if (!s.open) return;
  const message = breakerMessage(cluster, s);
  await opts.record?.(message);
  throw new CliError(`refused: ${message}`, ExitCode.Refused);
}
