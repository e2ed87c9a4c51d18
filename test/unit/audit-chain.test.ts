import { type AuditRecord, canonicalJson, GENESIS_HASH, recordHash, verifyChain } from '../../lib/audit';

test('canonical JSON: key order does not matter, undefined fields drop out', () => {
  expect(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: null } })).toBe('{"a":{"c":null,"d":[1,{"y":2,"z":1}]},"b":1}');
  expect(canonicalJson({ a: undefined, b: 2 })).toBe('{"b":2}');
  expect(canonicalJson(undefined)).toBe('null');
});

function chain(n: number): AuditRecord[] {
  const out: AuditRecord[] = [];
  let prev = GENESIS_HASH;
  for (let i = 1; i <= n; i++) {
    const r = { seq: i, recordedAt: `2026-11-22T10:00:0${i}.000Z`, idempotencyKey: `run/${i}`, actor: 'sre', reason: '', cluster: 'c', node: 'n', remediation: 'machine-id', workflowId: 'run', runId: 'r', step: `s${i}`, action: 'a', before: { x: i }, after: null, outcome: 'applied' as const, error: '', prevHash: prev };
    const hash = recordHash(r);
    out.push({ ...r, hash });
    prev = hash;
  }
  return out;
}

test('an intact chain verifies', () => {
  expect(verifyChain(chain(5))).toMatchObject({ ok: true, records: 5 });
  expect(verifyChain([])).toMatchObject({ ok: true, records: 0, lastHash: GENESIS_HASH });
});

test.each([
  ['an edited field', (c: AuditRecord[]) => (c[2].action = 'b'), 3, /edited/],
  ['edited before-state', (c: AuditRecord[]) => (c[2].before = { x: 99 }), 3, /edited/],
  ['an edit with its hash recomputed', (c: AuditRecord[]) => ((c[2].error = 'x'), (c[2].hash = recordHash(c[2]))), 4, /prevHash is not the hash of record 3/],
  ['a deleted record', (c: AuditRecord[]) => c.splice(1, 1), 2, /record 2 missing: seq jumps from 1 to 3/],
  ['two deleted records', (c: AuditRecord[]) => c.splice(1, 2), 2, /record 2 to 3 missing/],
  ['the first record deleted', (c: AuditRecord[]) => c.shift(), 1, /record 1 missing/],
])('%s is found at the first broken record', (_what, tamper, seq, problem) => {
  const c = chain(5);
  tamper(c);
  const v = verifyChain(c);
  expect(v.ok).toBe(false);
  if (!v.ok) {
    expect(v.firstBadSeq).toBe(seq);
    expect(v.problem).toMatch(problem);
  }
});

test('verification continues across batches', () => {
  const c = chain(6);
  const first = verifyChain(c.slice(0, 3));
  expect(first.ok).toBe(true);
  expect(verifyChain(c.slice(3), first.cursor)).toMatchObject({ ok: true, records: 6 });
  c[4].node = 'other';
  expect(verifyChain(c.slice(3), first.cursor)).toMatchObject({ ok: false, firstBadSeq: 5 });
});
