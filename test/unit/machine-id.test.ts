import { type NodeIdentity, planMachineIdFix, remainingCollisions, sharedIdentityGroups } from '../../lib/machine-id';

const n = (name: string, machineId: string | null, weaveMac: string | null = null, role: 'control-plane' | 'worker' = 'worker', dbus = machineId): NodeIdentity => ({ name, role, machineId, dbusMachineId: dbus, weaveMac });
const all = { includeKeeper: false, selected: ['cp', 'a', 'b', 'c', 'd'], excluded: [] as string[] };

describe('sharedIdentityGroups', () => {
  test('nothing shared: no groups', () => {
    expect(sharedIdentityGroups([n('a', 'x1', '02:00:00:00:00:01'), n('b', 'x2', '02:00:00:00:00:02')])).toEqual([]);
  });
  test('seed 000: three clones share both files and the weave MAC', () => {
    const g = sharedIdentityGroups([n('c', 'same', '76:2f:d2:46:f8:94'), n('a', 'same', '76:2F:D2:46:F8:94'), n('b', 'same', '76:2f:d2:46:f8:94')]);
    expect(g).toEqual([{ nodes: ['a', 'b', 'c'], shared: ['machine-id same', 'weave MAC 76:2f:d2:46:f8:94'] }]);
  });
  test('transitive: a~b by machine-id, b~c by dbus id, d apart', () => {
    const g = sharedIdentityGroups([n('a', 'm1'), n('b', 'm1', null, 'worker', 'm9'), n('c', 'm3', null, 'worker', 'm9'), n('d', 'm4')]);
    expect(g.map((x) => x.nodes)).toEqual([['a', 'b', 'c']]);
  });
  test('two separate groups, order-independent', () => {
    const nodes = [n('d', 'y'), n('a', 'x'), n('c', 'y'), n('b', 'x')];
    expect(sharedIdentityGroups(nodes)).toEqual(sharedIdentityGroups([...nodes].reverse()));
    expect(sharedIdentityGroups(nodes).map((g) => g.nodes)).toEqual([['a', 'b'], ['c', 'd']]);
  });
  test('a missing id is not an identity', () => {
    expect(sharedIdentityGroups([n('a', null), n('b', null)])).toEqual([]);
  });
});

describe('planMachineIdFix', () => {
  const clones = [n('b', 's', 'm'), n('cp', 's', 'm', 'control-plane'), n('a', 's', 'm')];
  test('keeps the control-plane node, fixes the workers by name', () => {
    const p = planMachineIdFix(clones, all);
    expect(p.keepers).toEqual(['cp']);
    expect(p.nodes.map((x) => x.name)).toEqual(['a', 'b']);
    expect(p.nodes[0].steps).toContain('systemd-machine-id-setup');
    expect(p.id).toMatch(/^[0-9a-f]{16}$/);
  });
  test('--include-keeper: all of them, workers first', () => {
    expect(planMachineIdFix(clones, { ...all, includeKeeper: true }).nodes.map((x) => x.name)).toEqual(['a', 'b', 'cp']);
  });
  test('without a control-plane member, the first by name is kept', () => {
    expect(planMachineIdFix([n('c', 's'), n('b', 's'), n('d', 's')], all).keepers).toEqual(['b']);
  });
  test('excluded and unselected nodes are skipped with a reason', () => {
    const p = planMachineIdFix(clones, { includeKeeper: false, selected: ['b'], excluded: ['a'] });
    expect(p.nodes.map((x) => x.name)).toEqual(['b']);
    expect(p.skipped).toEqual([{ name: 'a', reason: 'labelled kubemend.io/exclude=true' }]);
    expect(planMachineIdFix(clones, { includeKeeper: false, selected: ['cp'], excluded: [] }).skipped.map((s) => s.name)).toEqual(['a', 'b']);
  });
  test('nothing shared: an empty plan', () => {
    expect(planMachineIdFix([n('a', '1'), n('b', '2')], all)).toMatchObject({ groups: [], nodes: [], keepers: [] });
  });
  test('the plan id changes with the cluster state, not with input order', () => {
    const p1 = planMachineIdFix(clones, all);
    expect(planMachineIdFix([...clones].reverse(), all).id).toBe(p1.id);
    expect(planMachineIdFix([n('b', 's'), n('cp', 's', null, 'control-plane'), n('a', 'other')], all).id).not.toBe(p1.id);
  });
});

test('remainingCollisions names who still shares what', () => {
  expect(remainingCollisions([n('a', '1', 'm1'), n('b', '2', 'm2')])).toEqual([]);
  expect(remainingCollisions([n('a', '1', 'm1'), n('b', '2', 'm1')])).toEqual(['a, b share weave MAC m1']);
});
