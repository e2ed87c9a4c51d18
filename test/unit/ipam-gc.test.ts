import { decideNode, DEFAULT_GRACE_S, type HostLocalEntry, isAddressName, liveIndex, type NodeIpamListing, rangeCapacity } from '../../lib/ipam-gc';

const NOW = 1_800_000_000;
const id = (c: string) => c.repeat(64);
const LIVE = id('a');
const GONE = id('b');
const OTHER = id('c');

function file(name: string, containerId: string | null, ageS: number, extra: Partial<HostLocalEntry> = {}): HostLocalEntry {
  return { network: 'cbr0', name, kind: 'reservation', containerId, ifname: 'eth0', lines: 2, mtime: NOW - ageS, ...extra };
}

function listing(entries: HostLocalEntry[], over: Partial<NodeIpamListing> = {}): NodeIpamListing {
  return {
    now: NOW,
    networks: ['cbr0'],
    entries: [{ network: 'cbr0', name: 'lock', kind: 'lock', containerId: null, ifname: null, lines: 0, mtime: null }, { network: 'cbr0', name: 'last_reserved_ip.0', kind: 'last-reserved', containerId: null, ifname: null, lines: 0, mtime: null }, ...entries],
    sandboxes: [LIVE],
    containers: [],
    ranges: { cbr0: [{ subnet: '10.244.0.0/24' }] },
    problems: [],
    ...over,
  };
}

const verdicts = (l: NodeIpamListing, graceS = DEFAULT_GRACE_S) => Object.fromEntries(decideNode(l, { graceS }).files.map((f) => [f.name, f.verdict]));

test.each([
  ['a live sandbox keeps its file, however old', file('10.244.0.2', LIVE, 86_400), { kind: 'live' }],
  ['no live sandbox and older than the grace period: a candidate', file('10.244.0.3', GONE, DEFAULT_GRACE_S), { kind: 'candidate', ageS: DEFAULT_GRACE_S }],
  ['no live sandbox but younger than the grace period: too young (its sandbox may be being created)', file('10.244.0.4', GONE, DEFAULT_GRACE_S - 1), { kind: 'too-young', ageS: DEFAULT_GRACE_S - 1 }],
  ["a file from the node's future (its clock stepped back) is too young", file('10.244.0.5', GONE, -30), { kind: 'too-young', ageS: -30 }],
  ['an old-format file (the id alone, one line) is read as host-local reads it', file('10.244.0.6', GONE, 3600, { ifname: null, lines: 1 }), { kind: 'candidate', ageS: 3600 }],
  ['an IPv6 reservation', file('fd00:10:244::7', GONE, 3600), { kind: 'candidate', ageS: 3600 }],
  ['a name that is no address', file('10.244.0.300', GONE, 3600), { kind: 'unparsable', problem: 'its name is not an address' }],
  ['a first line that is no container id', file('10.244.0.8', null, 3600), { kind: 'unparsable', problem: 'its first line is not a container id' }],
  ['a short id (not even crictl cuts ids below 12)', file('10.244.0.9', 'abc', 3600), { kind: 'unparsable', problem: 'its first line is not a container id' }],
  ['a third line', file('10.244.0.10', GONE, 3600, { lines: 3 }), { kind: 'unparsable', problem: 'it has 3 lines, host-local writes 2' }],
  ['a second line that is no interface name', file('10.244.0.11', GONE, 3600, { ifname: null }), { kind: 'unparsable', problem: 'its second line is not an interface name' }],
  ['no mtime', file('10.244.0.12', GONE, 3600, { mtime: null }), { kind: 'unparsable', problem: 'its modification time could not be read' }],
  ['a symlink', { network: 'cbr0', name: '10.244.0.13', kind: 'other', containerId: null, ifname: null, lines: 0, mtime: null, note: 'symlink' } as HostLocalEntry, { kind: 'unparsable', problem: 'symlink' }],
])('%s', (_what, entry, expected) => {
  expect(verdicts(listing([entry]))[entry.name]).toEqual(expected);
});

test('lock and last_reserved_ip.* are never touched, whatever else is true', () => {
  const v = verdicts(listing([]), 0);
  expect(v.lock).toEqual({ kind: 'never-touched' });
  expect(v['last_reserved_ip.0']).toEqual({ kind: 'never-touched' });
});

test('grace 0: every reservation of no live sandbox is a candidate, even one written this second', () => {
  expect(verdicts(listing([file('10.244.0.3', GONE, 0)]), 0)['10.244.0.3']).toEqual({ kind: 'candidate', ageS: 0 });
});

test('a container id (crictl ps -a -q) counts as live too, and so does an id cut to 12 or more characters either way', () => {
  const l = listing([file('10.244.0.2', OTHER, 3600), file('10.244.0.3', GONE, 3600), file('10.244.0.4', GONE.slice(0, 12), 3600)], { sandboxes: [GONE.slice(0, 13)], containers: [OTHER] });
  const v = verdicts(l);
  expect(v['10.244.0.2']).toEqual({ kind: 'live' });
  expect(v['10.244.0.3']).toEqual({ kind: 'live' });
  expect(v['10.244.0.4']).toEqual({ kind: 'live' });
  expect(liveIndex([GONE])(GONE.slice(0, 11))).toBe(false); // too short to say
  expect(liveIndex([GONE.slice(0, 11)])(GONE)).toBe(false);
});

test('the runtime could not be asked: nothing is a candidate and the node is blocked (fail closed)', () => {
  const d = decideNode(listing([file('10.244.0.3', GONE, 3600)], { sandboxes: null, problems: ['crictl pods -q: connection refused'] }), { graceS: 0 });
  expect(d.files.find((f) => f.name === '10.244.0.3')!.verdict).toEqual({ kind: 'unknown' });
  expect(d.candidates).toEqual({});
  expect(d.blocked).toBe('the container runtime could not be asked for its sandboxes (crictl pods -q: connection refused): nothing can be told leaked');
});

test("per network: capacity from the range, addresses in use, live, leaked; candidates in address order for the release", () => {
  const entries = [file('10.244.0.10', GONE, 3600), file('10.244.0.2', LIVE, 3600), file('10.244.0.9', GONE, 3600), file('10.244.0.4', GONE, 10), file('10.244.0.300', GONE, 3600), { ...file('10.244.1.5', GONE, 3600), network: 'other' }];
  const d = decideNode(listing(entries, { networks: ['cbr0', 'other', 'empty'] }), { graceS: 60 });
  expect(d.networks).toEqual([
    { network: 'cbr0', capacity: 253, inUse: 4, live: 1, leaked: 3, candidates: 2, tooYoung: 1, unparsable: 1, free: 249 },
    { network: 'empty', capacity: null, inUse: 0, live: 0, leaked: 0, candidates: 0, tooYoung: 0, unparsable: 0, free: null },
    { network: 'other', capacity: null, inUse: 1, live: 0, leaked: 1, candidates: 1, tooYoung: 0, unparsable: 0, free: null },
  ]);
  expect(d.candidates.cbr0).toEqual([
    { ip: '10.244.0.9', containerId: GONE, mtime: NOW - 3600 },
    { ip: '10.244.0.10', containerId: GONE, mtime: NOW - 3600 },
  ]);
  expect(d.blocked).toBeNull();
  // A capacity passed in (the Node's podCIDR) wins over the listing's ranges.
  expect(decideNode(listing(entries), { graceS: 60, capacity: { cbr0: 100, other: 13 } }).networks.map((n) => n.capacity)).toEqual([100, 13]);
});

test('a file that vanished while it was listed (host-local released it) is no file', () => {
  const d = decideNode(listing([file('10.244.0.3', null, 0, { mtime: null, lines: 0, note: 'vanished' })]), { graceS: 0 });
  expect(d.files.map((f) => f.name)).toEqual(['lock', 'last_reserved_ip.0']);
  expect(d.networks[0].inUse).toBe(0);
});

test('a grace period that is no whole number of seconds is refused', () => {
  for (const graceS of [-1, 1.5, Number.NaN]) expect(() => decideNode(listing([]), { graceS })).toThrow('grace must be');
});

test.each([
  [{ subnet: '10.244.0.0/24' }, 253],
  [{ subnet: '10.244.0.0/16' }, 65533],
  [{ subnet: '10.244.0.0/30' }, 1],
  [{ subnet: '10.244.0.0/24', rangeStart: '10.244.0.100', rangeEnd: '10.244.0.199' }, 100],
  [{ subnet: '10.244.0.0/24', rangeStart: '10.244.0.1', rangeEnd: '10.244.0.10' }, 9], // the gateway .1 inside
  [{ subnet: '10.244.0.0/24', gateway: '10.244.0.254' }, 253],
  [{ subnet: '10.244.0.0/24', rangeStart: '10.244.0.20', rangeEnd: '10.244.0.10' }, null],
  [{ subnet: '10.244.0.1/24' }, null], // host bits set: host-local refuses it
  [{ subnet: '10.244.0.0/24', rangeEnd: '10.244.1.10' }, null],
  [{ subnet: 'fd00::/64' }, null],
  [{ subnet: '10.244.0.0/31' }, null],
])('rangeCapacity(%j) = %p', (range, expected) => {
  expect(rangeCapacity(range)).toBe(expected);
});

test.each([
  ['10.244.0.2', true],
  ['fd00:10:244::7', true],
  ['::1', true],
  ['fe80:0:0:0:0:0:0:1', true],
  ['10.244.0.256', false],
  ['010.244.0.2', false],
  ['FD00::1', false], // Go writes lowercase
  ['fd00::1::2', false],
  ['lock', false],
  ['', false],
  ['1.2.3.4/24', false],
])('isAddressName(%p) = %p', (name, expected) => {
  expect(isAddressName(name)).toBe(expected);
});
