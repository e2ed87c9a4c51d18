import { detectSharedIdentity, type NodeIdentity, planMachineIdFix, planMachineIdRunbook } from '../../lib/machine-id';
import { fixCommand } from '../../lib/findings';
import { isRefusal, planId } from '../../lib/runbook';

const n = (name: string, machineId: string | null, weaveMac: string | null = null, role: 'control-plane' | 'worker' = 'worker'): NodeIdentity => ({ name, role, machineId, dbusMachineId: machineId, weaveMac });
const opts = { includeKeeper: false, selected: ['cp', 'a', 'b'], excluded: [] as string[] };

describe('isRefusal: a safety rule saying no is not a failed fix', () => {
  test.each([
    ['LockHeld: node a is being remediated by another run', true],
    ['BudgetExhausted: the disruption budget allows 1', true],
    ['NodeExcluded: a is labelled kubemend.io/exclude=true', true],
    ['DrainRefused: drain of a refused: demo/x has no controller', true],
    ['BreakerOpen: 3 failed runs on lab within 1h', true],
    ['DrainTimedOut: drain of a did not finish within 8 s', false],
    ['NodeDidNotReturn: a did not come back', false],
    ['VerificationFailed: a after its fix: machine-id shared with b', false],
    ['cancelled', false],
    ['LockHeld without a colon', false],
  ])('%s -> %s', (reason, refused) => expect(isRefusal(reason)).toBe(refused));
});

describe('planId', () => {
  test('same content, same id; any change, another id', () => {
    expect(planId({ a: 1, n: ['x'] })).toBe(planId({ a: 1, n: ['x'] }));
    expect(planId({ a: 1, n: ['x'] })).not.toBe(planId({ a: 1, n: ['y'] }));
    expect(planId({})).toMatch(/^[0-9a-f]{16}$/);
  });
});

describe('planMachineIdRunbook', () => {
  test('without unreadable ids it is planMachineIdFix exactly (same id: an approval of either names the same plan)', () => {
    const nodes = [n('cp', 's', 'm', 'control-plane'), n('a', 's', 'm'), n('b', 's', 'm')];
    expect(planMachineIdRunbook(nodes, opts)).toEqual(planMachineIdFix(nodes, opts));
  });
  test('a node that shares only its weave MAC and has no readable machine-id is skipped with the reason, and the plan id changes', () => {
    const nodes = [n('cp', 'x1', 'm', 'control-plane'), n('a', null, 'm'), n('b', 'x2', 'm')];
    const base = planMachineIdFix(nodes, opts);
    const plan = planMachineIdRunbook(nodes, opts);
    expect(base.nodes.map((x) => x.name)).toEqual(['a', 'b']);
    expect(plan.nodes.map((x) => x.name)).toEqual(['b']);
    expect(plan.skipped).toEqual([{ name: 'a', reason: expect.stringMatching(/^no readable \/etc\/machine-id/) }]);
    expect(plan.id).not.toBe(base.id);
    expect(plan.keepers).toEqual(['cp']);
  });
});

describe('detectSharedIdentity (seed 000)', () => {
  test('healthy: no findings', () => {
    expect(detectSharedIdentity([n('a', 'x1', '02:00:00:00:00:01'), n('b', 'x2', '02:00:00:00:00:02')])).toEqual([]);
  });
  test('clones: one finding per member, in the words weave prints, with the evidence and the fix', () => {
    const f = detectSharedIdentity([{ ...n('cp', 's'.repeat(32), '76:2f:d2:46:f8:94', 'control-plane'), collisions: 2 }, n('w1', 's'.repeat(32), '76:2f:d2:46:f8:94'), n('w2', 'o'.repeat(32), '02:00:00:00:00:09')]);
    expect(f.map((x) => [x.seed, x.node, x.remediation, x.signature, x.fixable])).toEqual([
      ['000', 'cp', 'machine-id', 'local and remote peer names collision', true],
      ['000', 'w1', 'machine-id', 'local and remote peer names collision', true],
    ]);
    expect(f[0].evidence).toEqual([`shares machine-id ${'s'.repeat(32)} and weave MAC 76:2f:d2:46:f8:94 with w1`, `/etc/machine-id ${'s'.repeat(32)}`, 'weave MAC 76:2f:d2:46:f8:94', 'weave status connections: 2 connection(s) refused for a peer names collision']);
    expect(fixCommand(f[1], 'lab')).toBe('kubemend run machine-id --cluster lab --node w1');
    expect(fixCommand({ ...f[1], fixable: false }, 'lab')).toBe('no automatic fix yet (kubemend run machine-id is not built)');
  });
});
