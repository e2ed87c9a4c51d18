import type { NodeIpamListing, QuarantineRun } from '../../lib/ipam-gc';
import { expiredQuarantines, type IpamGcFacts, planIpamGc, problemsAfterPurge } from '../../lib/ipam-gc-plan';
import { parseListing, parsePurge, PURGE_SCRIPT, purgeArgv } from '../../lib/ipam-gc-scripts';
import { commandLine } from '../../lib/shell';

const M = '0123456789abcdef0123';
const NOW = 1_800_000_000;
const DAY = 86_400;
const section = (name: string, text: string, rc = 0) => `${M} begin ${name}\n${text}\n${M} end ${rc}\n`;
const base = section('now', String(NOW)) + section('files', 'net\tcbr0\nlock\tcbr0') + section('sandboxes', '') + section('containers', '');

describe('the listing of the quarantine', () => {
  test('one entry per run: the newest mtime of its directory and its networks, its file count; oddities left alone and named', () => {
    const text = [
      'qodd',
      `qdir\tipam-gc-lab-a\t${NOW - 9 * DAY}`,
      `qdir\tipam-gc-lab-a/cbr0\t${NOW - 8 * DAY}`,
      `qdir\tipam-gc-lab-b\t${NOW - DAY}`,
      `qdir\tipam-gc-lab-b/cbr0\t${NOW - DAY}`,
      `qdir\tbad.name\t${NOW}`,
      `qfiles\tipam-gc-lab-a\t254`,
      `qfiles\tipam-gc-lab-b\t3`,
    ].join('\n');
    const l = parseListing(base + section('quarantine', text), M) as NodeIpamListing;
    expect(l.quarantine).toEqual([
      { runTag: 'ipam-gc-lab-a', mtime: NOW - 8 * DAY, files: 254 },
      { runTag: 'ipam-gc-lab-b', mtime: NOW - DAY, files: 3 },
    ]);
    expect(l.problems).toEqual(['2 entries in /var/lib/kubemend/ipam-quarantine that are not a run\'s directory: left alone']);
  });
  test('none there: an empty list; unreadable: null, with the problem', () => {
    expect((parseListing(base + section('quarantine', ''), M) as NodeIpamListing).quarantine).toEqual([]);
    const bad = parseListing(base + section('quarantine', '/var/lib/kubemend/ipam-quarantine is not a directory', 1), M) as NodeIpamListing;
    expect(bad.quarantine).toBeNull();
    expect(bad.problems).toEqual(['/var/lib/kubemend/ipam-quarantine: /var/lib/kubemend/ipam-quarantine is not a directory']);
  });
});

const q = (runTag: string, ageDays: number, files = 10): QuarantineRun => ({ runTag, mtime: NOW - ageDays * DAY, files });
function listing(quarantine: QuarantineRun[]): NodeIpamListing {
  return { now: NOW, networks: ['cbr0'], entries: [], sandboxes: [], containers: [], ranges: {}, problems: [], quarantine };
}
const opts = { graceS: 900, selected: ['node1', 'node2'], excluded: [] as string[], controlPlane: [] as string[], runTag: 'ipam-gc-lab-now', retentionS: 7 * DAY };

describe('the retention in the plan', () => {
  test('quarantines at least the retention old are deleted; younger ones, and the run\'s own, are kept', () => {
    const l = listing([q('ipam-gc-lab-old', 8), q('ipam-gc-lab-edge', 7), q('ipam-gc-lab-young', 6), { runTag: 'ipam-gc-lab-now', mtime: 0, files: 1 }]);
    expect(expiredQuarantines(l, 7 * DAY, 'ipam-gc-lab-now').map((x) => x.runTag)).toEqual(['ipam-gc-lab-old', 'ipam-gc-lab-edge']);
  });
  test('a node with nothing leaked but an expired quarantine is planned for the purge alone, with the exact deletes; the plan id covers them', () => {
    const facts: IpamGcFacts = { nodes: [{ node: 'node1', listing: listing([q('ipam-gc-lab-old', 8, 254)]) }, { node: 'node2', listing: listing([q('ipam-gc-lab-young', 1)]) }] };
    const plan = planIpamGc(facts, opts);
    expect(plan.nodes.map((n) => n.name)).toEqual(['node1']);
    expect(plan.nodes[0].purge).toEqual([q('ipam-gc-lab-old', 8, 254)]);
    expect(plan.nodes[0].steps[0]).toBe("delete 1 earlier run(s)' quarantine kept past the retention (7 d; 254 file(s)), each only if unchanged since this listing: rm -r /var/lib/kubemend/ipam-quarantine/ipam-gc-lab-old (254 file(s), last changed 8 d ago)");
    expect(plan.summary).toEqual(expect.arrayContaining([expect.stringMatching(/within the retention \(7 d after the run's last change; then a later run deletes them, which has no undo\)/)]));
    const other = planIpamGc({ nodes: [{ node: 'node1', listing: listing([q('ipam-gc-lab-old', 9, 254)]) }] }, opts);
    expect(other.id).not.toBe(plan.id);
  });
  test('no retention given (a plan made before the purge existed): nothing is deleted', () => {
    const { retentionS: _, ...without } = opts;
    expect(planIpamGc({ nodes: [{ node: 'node1', listing: listing([q('ipam-gc-lab-old', 80)]) }] }, without).nodes).toEqual([]);
  });
  test('an excluded node keeps its quarantine, and is named as skipped', () => {
    const plan = planIpamGc({ nodes: [{ node: 'node1', listing: listing([q('ipam-gc-lab-old', 8)]) }] }, { ...opts, excluded: ['node1'] });
    expect(plan.nodes).toEqual([]);
    expect(plan.skipped).toEqual([{ name: 'node1', reason: 'labelled kubemend.io/exclude=true' }]);
  });
  test('after the purge: a purged quarantine still listed is a problem', () => {
    const p = { purged: [{ runTag: 'ipam-gc-lab-old', files: 3 }], gone: ['ipam-gc-lab-older'], kept: [] };
    expect(problemsAfterPurge(p, listing([q('ipam-gc-lab-young', 1)]))).toEqual([]);
    expect(problemsAfterPurge(p, listing([q('ipam-gc-lab-old', 8)]))).toEqual(['/var/lib/kubemend/ipam-quarantine/ipam-gc-lab-old: purged, but it is still there']);
  });
});

describe('the purge script', () => {
  test('argv: the retention and (tag, mtime) pairs, as positional arguments; anything else refused before it is run', () => {
    const argv = purgeArgv(7 * DAY, [q('ipam-gc-lab-a', 8)]);
    expect(argv).toEqual(['sh', '-c', PURGE_SCRIPT, 'kubemend-ipam-purge', String(7 * DAY), 'ipam-gc-lab-a', String(NOW - 8 * DAY)]);
    expect(commandLine(argv)).toMatch(new RegExp(` kubemend-ipam-purge ${7 * DAY} ipam-gc-lab-a ${NOW - 8 * DAY}$`));
    expect(() => purgeArgv(7 * DAY, [{ runTag: '../../etc', mtime: 1 }])).toThrow('not a quarantined run');
    expect(() => purgeArgv(7 * DAY, [{ runTag: 'a b', mtime: 1 }])).toThrow('not a quarantined run');
    expect(() => purgeArgv(7 * DAY, [{ runTag: '-rf', mtime: 1 }])).toThrow('not a quarantined run');
    expect(() => purgeArgv(-1, [])).toThrow('not a retention');
  });
  test('the script checks the tag again itself, and deletes only inside the quarantine', () => {
    expect(PURGE_SCRIPT).toContain('case "$tag" in ""|-*|*[!A-Za-z0-9-]*) bad "bad run tag"');
    expect(PURGE_SCRIPT).toContain('rm -rf --one-file-system -- "$d"');
  });
  test('its report: each run once, `done` last; anything else is incomplete', () => {
    const runs = [{ runTag: 'a1' }, { runTag: 'b2' }, { runTag: 'c3' }, { runTag: 'd4' }];
    const r = parsePurge('purged\ta1\t254\ngone\tb2\nkept\tc3\tchanged\nkept\td4\tyoung\ndone\n', runs);
    expect(r).toEqual({ complete: true, problems: [], outcomes: [{ runTag: 'a1', result: 'purged', files: 254 }, { runTag: 'b2', result: 'gone' }, { runTag: 'c3', result: 'kept', reason: 'changed' }, { runTag: 'd4', result: 'kept', reason: 'young' }] });
    expect(parsePurge('purged\ta1\t254\n', [{ runTag: 'a1' }]).complete).toBe(false);
    expect(parsePurge('purged\ta1\t254\ndone\n', [{ runTag: 'a1' }, { runTag: 'b2' }])).toMatchObject({ complete: false, problems: ['no answer for b2'] });
    expect(parsePurge('purged\tzz\t1\ndone\n', [{ runTag: 'a1' }]).problems[0]).toMatch(/^unexpected line/);
  });
});
