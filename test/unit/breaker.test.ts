/** The circuit breaker's decision over audit records, with an explicit `now` (pure, no I/O). */
import { BREAKER_STEP, type BreakerRecord, breakerMessage, breakerState, countsAsFailure, trippedBy } from '../../lib/breaker';

const H = 3_600_000;
const T0 = Date.parse('2026-11-25T10:00:00.000Z');
const at = (ms: number) => new Date(T0 + ms).toISOString();
const policy = { maxFailures: 3, failureWindowMs: H };

let seq = 0;
function failed(ms: number, run = `run-${seq + 1}`): BreakerRecord {
  return { seq: ++seq, recordedAt: at(ms), step: BREAKER_STEP.failed, workflowId: run, remediation: 'machine-id', actor: 'sre', reason: '', error: `NodeDidNotReturn: ${run}` };
}
function reset(ms: number): BreakerRecord {
  return { seq: ++seq, recordedAt: at(ms), step: BREAKER_STEP.reset, workflowId: `reset-${seq}`, remediation: '', actor: 'alice', reason: 'fixed the uplink', error: '' };
}
function other(ms: number, step: string): BreakerRecord {
  return { seq: ++seq, recordedAt: at(ms), step, workflowId: 'x', remediation: 'machine-id', actor: 'sre', reason: '', error: 'failed' };
}

beforeEach(() => (seq = 0));

describe('breakerState', () => {
  // [name, records (built lazily so seq follows the order written), now offset, open, recent failures]
  const cases: Array<[string, () => BreakerRecord[], number, boolean, number]> = [
    ['no records: closed', () => [], 0, false, 0],
    ['two failures: closed', () => [failed(0), failed(60_000)], 120_000, false, 2],
    ['three failures within the window: open', () => [failed(0), failed(60_000), failed(120_000)], 130_000, true, 3],
    ['three failures, checked long after: still open until a reset', () => [failed(0), failed(60_000), failed(120_000)], 10 * H, true, 0],
    ['three failures spanning exactly the window: closed', () => [failed(0), failed(H / 2), failed(H)], H + 1, false, 2],
    ['three failures spread over three hours: closed', () => [failed(0), failed(1.5 * H), failed(3 * H)], 3 * H, false, 1],
    ['failures that age out, then two more: closed', () => [failed(0), failed(60_000), failed(2 * H), failed(2 * H + 1)], 2 * H + 2, false, 2],
    ['an old pair and a new pair: the later three fall in one window: open', () => [failed(0), failed(2 * H), failed(2 * H + 1), failed(2 * H + 2)], 2 * H + 3, true, 3],
    ['three failures then a reset: closed', () => [failed(0), failed(1), failed(2), reset(10)], 20, false, 0],
    ['reset, then three failures: open', () => [reset(0), failed(10), failed(20), failed(30)], 40, true, 3],
    ['two before a reset and one after: closed', () => [failed(0), failed(1), reset(2), failed(3)], 4, false, 1],
    ['two resets: the latest counts', () => [reset(0), failed(1), failed(2), reset(3), failed(4)], 5, false, 1],
    ['other steps (refusals, node failures, trips) never count', () => [other(0, 'refused'), other(1, 'node2/failed'), other(2, BREAKER_STEP.tripped), failed(3), failed(4)], 5, false, 2],
  ];
  test.each(cases)('%s', (_name, build, nowOffset, open, recent) => {
    const s = breakerState(build(), policy, new Date(T0 + nowOffset));
    expect(s.open).toBe(open);
    expect(s.recentFailures).toHaveLength(recent);
    expect(s.trippedBy).toHaveLength(open ? 3 : 0);
    expect(s.trippedAt === null).toBe(!open);
  });

  test('names the failures that tripped it and when, oldest first', () => {
    const s = breakerState([failed(0, 'a'), failed(1000, 'b'), failed(2000, 'c'), failed(3000, 'd')], policy, new Date(T0 + 4000));
    expect(s.trippedBy.map((f) => f.runId)).toEqual(['a', 'b', 'c']);
    expect(s.trippedAt).toBe(at(2000));
    expect(s.recentFailures.map((f) => f.runId)).toEqual(['a', 'b', 'c', 'd']);
  });

  test('goes by the trail order (seq), whatever order the records come in', () => {
    const records = [failed(0), failed(1), reset(2), failed(3)];
    expect(breakerState([...records].reverse(), policy, new Date(T0 + 4)).open).toBe(false);
    expect(breakerState([...records].reverse(), policy, new Date(T0 + 4)).lastReset).toEqual({ at: at(2), actor: 'alice', reason: 'fixed the uplink' });
  });

  test('maxFailures 0 turns the breaker off; 1 trips on the first failure', () => {
    const records = [failed(0), failed(1), failed(2), failed(3)];
    expect(breakerState(records, { maxFailures: 0, failureWindowMs: H }, new Date(T0 + 5)).open).toBe(false);
    expect(breakerState([failed(10)], { maxFailures: 1, failureWindowMs: H }, new Date(T0 + 20)).open).toBe(true);
  });
});

describe('trippedBy', () => {
  test('exactly the failure that reaches maxFailures trips it', () => {
    const records = [failed(0), failed(1), failed(2), failed(3)];
    const now = new Date(T0 + 10);
    expect(records.map((r) => trippedBy(records, r.seq, policy, now))).toEqual([false, false, true, false]);
  });

  test('after a reset the next third failure trips it again', () => {
    const records = [failed(0), failed(1), failed(2), reset(3), failed(4), failed(5), failed(6)];
    const now = new Date(T0 + 10);
    expect(records.filter((r) => r.step === BREAKER_STEP.failed).map((r) => trippedBy(records, r.seq, policy, now))).toEqual([false, false, true, false, false, true]);
  });
});

describe('countsAsFailure', () => {
  test.each([
    [undefined, true],
    ['NodeDidNotReturn', true],
    ['VerificationFailed', true],
    ['DrainTimedOut', true],
    ['LockHeld', false],
    ['BudgetExhausted', false],
    ['NodeExcluded', false],
    ['DrainRefused', false],
    ['BreakerOpen', false],
    ['Cancelled', false],
  ])('%s -> %s', (type, counts) => expect(countsAsFailure(type)).toBe(counts));
});

test('the refusal message names the failed runs and the reset command', () => {
  const s = breakerState([failed(0, 'machine-id-lab-1'), failed(1, 'machine-id-lab-2'), failed(2, 'machine-id-lab-3')], policy, new Date(T0 + 3));
  const m = breakerMessage('lab', s);
  for (const id of ['machine-id-lab-1', 'machine-id-lab-2', 'machine-id-lab-3']) expect(m).toContain(id);
  expect(m).toContain('kubemend breaker reset --cluster lab');
  expect(m).toContain('within 1h');
});
