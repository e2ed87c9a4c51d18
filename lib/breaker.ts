/**
 * The circuit breaker of one cluster, decided from its audit trail (pure; `now` explicit).
 *
 * The trail is the one source of truth: each failed run writes a 'run/failed' record, and
 * `kubemend breaker reset` writes a 'breaker/reset' record. The breaker trips when
 * `maxFailures` failed runs fall within one `failureWindow` after the latest reset, and then
 * stays open until the next reset: a cluster where remediations keep failing needs a person
 * to look before kubemend touches it again, not an hour's pause. Failures spread wider than
 * the window never trip it. `maxFailures: 0` turns the breaker off.
 */
import { formatDuration } from './duration';
import { REFUSAL_FAILURES } from './failures';

export const BREAKER_STEP = { failed: 'run/failed', tripped: 'breaker/tripped', reset: 'breaker/reset' } as const;

/** The fields of an audit record the decision reads. */
export interface BreakerRecord {
  seq: number;
  /** ISO 8601. */
  recordedAt: string;
  step: string;
  workflowId: string;
  remediation: string;
  actor: string;
  reason: string;
  error: string;
}

export interface BreakerPolicy {
  maxFailures: number;
  failureWindowMs: number;
}

export interface BreakerFailure {
  runId: string;
  remediation: string;
  at: string;
  error: string;
}

export interface BreakerState {
  open: boolean;
  /** When the failure that tripped it was recorded (null while closed). */
  trippedAt: string | null;
  /** The failed runs that tripped it, oldest first (empty while closed). */
  trippedBy: BreakerFailure[];
  /** Failed runs since the latest reset that fall within the window ending at `now`. */
  recentFailures: BreakerFailure[];
  lastReset: { at: string; actor: string; reason: string } | null;
  maxFailures: number;
  failureWindowMs: number;
}

const failureOf = (r: BreakerRecord): BreakerFailure => ({ runId: r.workflowId, remediation: r.remediation, at: r.recordedAt, error: r.error });

/**
 * The breaker's state over a cluster's records (any order; other steps are ignored). Order
 * is the trail's (seq); times come from the records, so a reset counts from where it is in
 * the chain even if a clock was off.
 */
export function breakerState(records: readonly BreakerRecord[], policy: BreakerPolicy, now: Date): BreakerState {
  const sorted = [...records].sort((a, b) => a.seq - b.seq);
  let resetSeq = -Infinity;
  let lastReset: BreakerState['lastReset'] = null;
  for (const r of sorted) {
    if (r.step === BREAKER_STEP.reset) {
      resetSeq = r.seq;
      lastReset = { at: r.recordedAt, actor: r.actor, reason: r.reason };
    }
  }
  const failures = sorted.filter((r) => r.step === BREAKER_STEP.failed && r.seq > resetSeq);
  const since = now.getTime() - policy.failureWindowMs;
  const recentFailures = failures.filter((r) => Date.parse(r.recordedAt) > since).map(failureOf);
  const base = { recentFailures, lastReset, maxFailures: policy.maxFailures, failureWindowMs: policy.failureWindowMs };
  const n = policy.maxFailures;
  if (n > 0) {
    for (let i = 0; i + n - 1 < failures.length; i++) {
      const first = failures[i];
      const last = failures[i + n - 1];
      if (Date.parse(last.recordedAt) - Date.parse(first.recordedAt) < policy.failureWindowMs) {
        return { ...base, open: true, trippedAt: last.recordedAt, trippedBy: failures.slice(i, i + n).map(failureOf) };
      }
    }
  }
  return { ...base, open: false, trippedAt: null, trippedBy: [] };
}

/**
 * Whether the failure at `seq` is the one that tripped the breaker: open with the records up
 * to it, closed with those before it. Exactly one failure trips it, however many workers
 * record failures at once, and a retried activity reaches the same answer.
 */
export function trippedBy(records: readonly BreakerRecord[], seq: number, policy: BreakerPolicy, now: Date): boolean {
  const upTo = records.filter((r) => r.seq <= seq);
  const before = records.filter((r) => r.seq < seq);
  return breakerState(upTo, policy, now).open && !breakerState(before, policy, now).open;
}

/** Failed runs count; runs a safety rule refused, or that were cancelled, do not. */
export function countsAsFailure(failureType: string | undefined): boolean {
  if (!failureType) return true;
  return !REFUSAL_FAILURES.includes(failureType) && failureType !== 'Cancelled';
}

/** Why new runs are refused: the failed runs, and how to reopen. */
export function breakerMessage(cluster: string, s: BreakerState): string {
  const runs = s.trippedBy.map((f) => `${f.runId} (${f.remediation}, ${f.at}${f.error ? `: ${oneLine(f.error, 120)}` : ''})`).join('; ');
  return (
    `circuit breaker open on cluster ${cluster}: ${s.trippedBy.length} failed run(s) within ${formatDuration(s.failureWindowMs)} (policy.maxFailures ${s.maxFailures}): ${runs}. ` +
    `New runs on ${cluster} are refused until someone has looked and runs \`kubemend breaker reset --cluster ${cluster}\``
  );
}

function oneLine(s: string, max: number): string {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
}
