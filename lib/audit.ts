/**
 * The audit trail's record and its hash chain (pure). Each record carries the hash of the
 * one before it; the hash covers every stored field in a canonical form, so editing a
 * field, deleting a record or inserting one breaks the chain at that point. Two changes it
 * cannot show without the head hash kept elsewhere: records cut off the end, and a chain
 * rewritten from some record on with every later hash recomputed.
 * Written by activities only (never by workflow code): this module uses node:crypto.
 */
import { createHash } from 'node:crypto';

export { AuditReason } from './audit-reasons';

export type Outcome = 'planned' | 'approved' | 'applied' | 'already-done' | 'failed' | 'dry-run' | 'refused' | 'skipped';

/** What an activity records; the store adds seq, time, chain and the key's dedup. */
export interface AuditInput {
  /** Unique per run and step: a retried activity writes no second record. */
  idempotencyKey: string;
  actor: string;
  reason: string;
  cluster: string;
  node: string;
  remediation: string;
  workflowId: string;
  runId: string;
  step: string;
  /** The exact command or API call, as run (no secrets: commands and calls carry none). */
  action: string;
  before: unknown;
  after: unknown;
  outcome: Outcome;
  error: string;
}

export interface AuditRecord extends AuditInput {
  seq: number;
  /** ISO 8601, UTC, milliseconds. */
  recordedAt: string;
  prevHash: string;
  hash: string;
}

export const GENESIS_HASH = '0'.repeat(64);

/** JSON with object keys sorted at every level: the same value always gives the same text. */
export function canonicalJson(v: unknown): string {
  if (v === undefined) return 'null';
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  return `{${Object.keys(v as object)
    .sort()
    .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
    .map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`)
    .join(',')}}`;
}

/** The hash of a record: sha256 over its fields and the previous hash, canonically encoded. */
export function recordHash(r: Omit<AuditRecord, 'hash'>): string {
  const fields = [r.seq, r.recordedAt, r.idempotencyKey, r.actor, r.reason, r.cluster, r.node, r.remediation, r.workflowId, r.runId, r.step, r.action, canonicalJson(r.before), canonicalJson(r.after), r.outcome, r.error, r.prevHash];
  return createHash('sha256').update(JSON.stringify(fields)).digest('hex');
}

export type ChainVerdict = { ok: true; records: number; lastHash: string } | { ok: false; records: number; firstBadSeq: number; problem: string };

/**
 * Walks records in seq order and reports the first place the chain breaks: a gap in seq (a
 * deleted record), a prevHash that is not the previous record's hash, or a hash that does
 * not match the record's fields (an edited record). `from` continues a walk in batches.
 */
export function verifyChain(records: Iterable<AuditRecord>, from: { seq: number; hash: string; count: number } = { seq: 0, hash: GENESIS_HASH, count: 0 }): ChainVerdict & { cursor: { seq: number; hash: string; count: number } } {
  let { seq, hash, count } = from;
  for (const r of records) {
    const bad = (problem: string) => ({ ok: false as const, records: count, firstBadSeq: r.seq, problem, cursor: { seq, hash, count } });
    if (r.seq !== seq + 1) return { ...bad(`record ${seq + 1}${r.seq > seq + 2 ? ` to ${r.seq - 1}` : ''} missing: seq jumps from ${seq} to ${r.seq} (deleted?)`), firstBadSeq: seq + 1 };
    if (r.prevHash !== hash) return bad(`its prevHash is not the hash of record ${seq} (inserted or reordered?)`);
    const expected = recordHash(r);
    if (expected !== r.hash) return bad('its fields do not match its hash (edited?)');
    seq = r.seq;
    hash = r.hash;
    count++;
  }
  return { ok: true, records: count, lastHash: hash, cursor: { seq, hash, count } };
}
