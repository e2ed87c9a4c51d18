import { decideNode } from '../../lib/ipam-gc';
import { hostLocalRanges, LISTING_SCRIPT, listingArgv, parseListing, parseRelease, parseRestore, RELEASE_BATCH, RELEASE_SCRIPT, releaseArgv, RESTORE_SCRIPT, restoreArgv } from '../../lib/ipam-gc-scripts';
import { commandLine } from '../../lib/shell';

const M = '0123456789abcdef0123';
const A = 'a'.repeat(64);
const B = 'b'.repeat(64);
const C = 'c'.repeat(64);
const section = (name: string, text: string, rc = 0) => `${M} begin ${name}\n${text}\n${M} end ${rc}\n`;
const FLANNEL_CONFLIST = JSON.stringify({ name: 'cbr0', cniVersion: '0.3.1', plugins: [{ type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true } }, { type: 'portmap', capabilities: { portMappings: true } }] });

/** What the listing script printed on a node with host-local's files, bookkeeping and oddities (tab-separated). */
const LISTED = [
  section('now', '1800000000'),
  section(
    'files',
    [
      'net\tcbr0',
      'other\tcbr0\t31302e3234342e302e37\tsymlink',
      'other\tcbr0\t31302e3234342e302e38\tnot a regular file',
      'last\tcbr0\tlast_reserved_ip.0',
      'lock\tcbr0',
      'other\tcbr0\t6e6f7465732e747874\tname',
      'other\tcbr0\t77650a697264\tname',
      'stat\t1799990000\t/var/lib/cni/networks/cbr0/10.244.0.2',
      'stat\t1799990000\t/var/lib/cni/networks/cbr0/10.244.0.3',
      'stat\t1799999990\t/var/lib/cni/networks/cbr0/10.244.0.4',
      'stat\t1799990000\t/var/lib/cni/networks/cbr0/10.244.0.5',
      'stat\t1799990000\t/var/lib/cni/networks/cbr0/10.244.0.6',
      `content\t/var/lib/cni/networks/cbr0/10.244.0.2\t${A}\teth0\t2`,
      `content\t/var/lib/cni/networks/cbr0/10.244.0.3\t${B}\teth0\t2`,
      `content\t/var/lib/cni/networks/cbr0/10.244.0.4\t${C}\teth0\t2`,
      'content\t/var/lib/cni/networks/cbr0/10.244.0.5\t!\t\t1',
      // 10.244.0.6 is empty: awk prints nothing for it. 10.244.0.9 went between the directory read and stat.
      `content\t/var/lib/cni/networks/cbr0/10.244.0.9\t${C}\teth0\t2`,
      'oddnet\t2e2e2f78',
      'net\tempty',
    ].join('\n'),
  ),
  section('sandboxes', A),
  section('containers', ''),
  section('cniConf', `${M} file /etc/cni/net.d/10-flannel.conflist\n${FLANNEL_CONFLIST}\n`),
  section('subnetEnv', 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true'),
  section('quarantine', ''),
].join('');

test('the listing: every entry once, oddities named, the runtime lists, and the range from flannel (subnet.env)', () => {
  const l = parseListing(LISTED, M);
  if ('error' in l) throw new Error(l.error);
  expect(l.now).toBe(1_800_000_000);
  expect(l.networks).toEqual(['cbr0', 'empty']);
  expect(l.sandboxes).toEqual([A]);
  expect(l.containers).toEqual([]);
  expect(l.ranges).toEqual({ cbr0: [{ subnet: '10.244.0.0/24' }] });
  expect(l.problems).toEqual(['/var/lib/cni/networks/"../x" is not a network directory host-local would make: not read']);
  const byName = Object.fromEntries(l.entries.map((e) => [e.name, e]));
  expect(byName['10.244.0.3']).toEqual({ network: 'cbr0', name: '10.244.0.3', kind: 'reservation', containerId: B, ifname: 'eth0', lines: 2, mtime: 1_799_990_000 });
  expect(byName['10.244.0.5']).toMatchObject({ containerId: null, lines: 1 });
  expect(byName['10.244.0.6']).toMatchObject({ containerId: null, lines: 0, mtime: 1_799_990_000 });
  expect(byName['10.244.0.9']).toMatchObject({ mtime: null }); // content without stat: it went meanwhile, or stat failed
  expect(byName['"we\\nird"']).toMatchObject({ kind: 'other', note: 'its name is not an address' });
  expect(byName['"10.244.0.7"']).toMatchObject({ kind: 'other', note: 'symlink' });

  const d = decideNode(l, { graceS: 900 });
  expect(Object.fromEntries(d.files.map((f) => [f.name, f.verdict.kind]))).toEqual({
    '"10.244.0.7"': 'unparsable',
    '"10.244.0.8"': 'unparsable',
    'last_reserved_ip.0': 'never-touched',
    lock: 'never-touched',
    '"notes.txt"': 'unparsable',
    '"we\\nird"': 'unparsable',
    '10.244.0.2': 'live',
    '10.244.0.3': 'candidate',
    '10.244.0.4': 'too-young',
    '10.244.0.5': 'unparsable',
    '10.244.0.6': 'unparsable',
    '10.244.0.9': 'unparsable',
  });
  expect(d.networks[0]).toEqual({ network: 'cbr0', capacity: 253, inUse: 6, live: 1, leaked: 2, candidates: 1, tooYoung: 1, unparsable: 7, free: 247 });
  expect(d.candidates).toEqual({ cbr0: [{ ip: '10.244.0.3', containerId: B, mtime: 1_799_990_000 }] });
});

test('a file that is in neither stat nor awk output any more is "vanished", and not counted', () => {
  const l = parseListing(LISTED.replace('net\tempty', 'stat\tx\t/var/lib/cni/networks/cbr0/10.244.0.11'), M);
  if ('error' in l) throw new Error(l.error);
  expect(l.entries.find((e) => e.name === '10.244.0.11')).toMatchObject({ note: 'vanished' });
});

test("crictl failing, or printing something that is no id, leaves the runtime's lists unknown: the decision is blocked", () => {
  for (const bad of [section('sandboxes', 'connect: connection refused', 1), section('sandboxes', `${A}\nWARN[0000] runtime connect using default endpoints`)]) {
    const l = parseListing(LISTED.replace(section('sandboxes', A), bad), M);
    if ('error' in l) throw new Error(l.error);
    expect(l.sandboxes).toBeNull();
    expect(decideNode(l, { graceS: 0 }).blocked).toMatch(/^the container runtime could not be asked/);
  }
});

test('a listing without a clock or with its file listing cut short is an error, not an empty node', () => {
  expect(parseListing('', M)).toEqual({ error: expect.stringMatching(/^no clock reading/) });
  expect(parseListing(section('now', '1800000000'), M)).toEqual({ error: 'the listing of /var/lib/cni/networks was cut short' });
  expect(parseListing(section('now', '1800000000') + section('files', 'stat: boom', 1), M)).toEqual({ error: 'listing /var/lib/cni/networks failed: stat: boom' });
});

test("an unexpected line or a path outside the networks' directory in the listing is a problem, never an entry", () => {
  const l = parseListing(LISTED.replace('lock\tcbr0', 'lock\tcbr0\nstat\t1\t/etc/passwd\nhello'), M);
  if ('error' in l) throw new Error(l.error);
  expect(l.problems).toEqual(expect.arrayContaining(['unexpected line in the listing: "stat\\t1\\t/etc/passwd"', 'unexpected line in the listing: "hello"']));
  expect(l.entries.some((e) => e.name.includes('passwd'))).toBe(false);
});

test("host-local ranges from CNI configs: ranges, the older subnet form, flannel's delegate, and a dataDir elsewhere", () => {
  const conf = (name: string, doc: unknown) => ({ file: `/etc/cni/net.d/${name}`, text: JSON.stringify(doc) });
  const r = hostLocalRanges(
    [
      conf('10-a.conflist', { name: 'a', plugins: [{ type: 'bridge', ipam: { type: 'host-local', ranges: [[{ subnet: '10.1.0.0/24', rangeStart: '10.1.0.10' }], [{ subnet: 'fd00::/64' }]] } }] }),
      conf('20-b.conf', { name: 'b', type: 'bridge', ipam: { type: 'host-local', subnet: '10.2.0.0/16' } }),
      conf('30-c.conflist', { name: 'c', plugins: [{ type: 'flannel', delegate: { ipam: { type: 'host-local', ranges: [[{ subnet: '10.3.0.0/24' }]] } } }] }),
      conf('40-d.conf', { name: 'd', type: 'bridge', ipam: { type: 'host-local', subnet: '10.4.0.0/24', dataDir: '/run/ipam' } }),
      conf('50-e.conf', { name: 'e', type: 'calico', ipam: { type: 'calico-ipam' } }),
      conf('60-bad.conf', { name: '../etc', type: 'bridge', ipam: { type: 'host-local', subnet: '10.6.0.0/24' } }),
      { file: '/etc/cni/net.d/70-not-json.conf', text: '{' },
      conf('80-flannel.conflist', JSON.parse(FLANNEL_CONFLIST)),
    ],
    'FLANNEL_SUBNET=10.244.3.1/24\n',
  );
  expect(r.ranges).toEqual({
    a: [{ subnet: '10.1.0.0/24', rangeStart: '10.1.0.10' }, { subnet: 'fd00::/64' }],
    b: [{ subnet: '10.2.0.0/16' }],
    c: [{ subnet: '10.3.0.0/24' }],
    cbr0: [{ subnet: '10.244.3.0/24' }],
  });
  expect(r.elsewhere).toEqual(["/etc/cni/net.d/40-d.conf: host-local keeps d's files in /run/ipam, not collected"]);
});

describe('the scripts are constants; every variable part is an argument', () => {
  test('listing: the marker only', () => {
    const argv = listingArgv(M);
    expect(argv).toEqual(['sh', '-c', LISTING_SCRIPT, 'kubemend-ipam-list', M]);
    expect(() => listingArgv('$(reboot)')).toThrow('marker');
  });

  const cand = { ip: '10.244.0.3', containerId: B, mtime: 1_799_990_000 };
  test('release: network, run tag, pause or "-", then address, id, mtime per candidate', () => {
    expect(releaseArgv({ network: 'cbr0', runTag: 'ipam-gc-1', candidates: [cand] })).toEqual(['sh', '-c', RELEASE_SCRIPT, 'kubemend-ipam-release', 'cbr0', 'ipam-gc-1', '-', '10.244.0.3', B, '1799990000']);
    expect(releaseArgv({ network: 'cbr0', runTag: 'r', candidates: [], pauseDir: '/run/kmtest/pause-1' })[6]).toBe('/run/kmtest/pause-1');
    expect(restoreArgv({ network: 'cbr0', runTag: 'ipam-gc-1', ips: ['10.244.0.3'] })).toEqual(['sh', '-c', RESTORE_SCRIPT, 'kubemend-ipam-restore', 'cbr0', 'ipam-gc-1', '10.244.0.3']);
    // Quoted by lib/shell as one word each: the script never sees an unvalidated string.
    expect(commandLine(releaseArgv({ network: 'cbr0', runTag: 'r', candidates: [cand] })).endsWith(` kubemend-ipam-release cbr0 r - 10.244.0.3 ${B} 1799990000`)).toBe(true);
  });

  test.each([
    ['a network name with a slash', { network: 'cbr0/../../etc' }, 'not a CNI network name'],
    ['a network name of dots', { network: '..' }, 'not a CNI network name'],
    ['an empty network name', { network: '' }, 'not a CNI network name'],
    ['a network name with a newline', { network: 'cbr0\nrm' }, 'not a CNI network name'],
    ['a run tag with a slash', { runTag: 'a/b' }, 'not a run tag'],
    ['a run tag with $()', { runTag: '$(reboot)' }, 'not a run tag'],
    ['an address with a command', { candidates: [{ ...cand, ip: '10.0.0.1;reboot' }] }, 'not an address'],
    ['an address with a path', { candidates: [{ ...cand, ip: '../lock' }] }, 'not an address'],
    ['lock as an address', { candidates: [{ ...cand, ip: 'lock' }] }, 'not an address'],
    ['last_reserved_ip.0 as an address', { candidates: [{ ...cand, ip: 'last_reserved_ip.0' }] }, 'not an address'],
    ['an id with a space', { candidates: [{ ...cand, containerId: `${B} x` }] }, 'not a container id'],
    ['an empty id', { candidates: [{ ...cand, containerId: '' }] }, 'not a container id'],
    ['a fractional mtime', { candidates: [{ ...cand, mtime: 1.5 }] }, 'not an mtime'],
    ['a negative mtime', { candidates: [{ ...cand, mtime: -1 }] }, 'not an mtime'],
    ['one address twice', { candidates: [cand, cand] }, 'is a candidate twice'],
    ['a relative pause directory', { pauseDir: 'tmp/p' }, 'not a pause directory'],
    ['a pause directory going up', { pauseDir: '/run/../etc' }, 'not a pause directory'],
    ['a pause directory with a space', { pauseDir: '/run/a b' }, 'not a pause directory'],
  ])('release refuses %s', (_what, over, message) => {
    expect(() => releaseArgv({ network: 'cbr0', runTag: 'r', candidates: [cand], ...over })).toThrow(message);
  });

  test('release and restore take at most RELEASE_BATCH per exec', () => {
    const many = Array.from({ length: RELEASE_BATCH + 1 }, (_, k) => ({ ...cand, ip: `10.244.${k >> 8}.${k & 255}` }));
    expect(() => releaseArgv({ network: 'cbr0', runTag: 'r', candidates: many })).toThrow(`at most ${RELEASE_BATCH}`);
    expect(() => restoreArgv({ network: 'cbr0', runTag: 'r', ips: many.map((c) => c.ip) })).toThrow(`at most ${RELEASE_BATCH}`);
  });

  test.each([
    [{ network: 'cbr0/..' }, 'not a CNI network name'],
    [{ runTag: '-rf' }, 'not a run tag'],
    [{ ips: ['10.244.0.3', '*'] }, 'not an address'],
  ])('restore refuses %j', (over, message) => {
    expect(() => restoreArgv({ network: 'cbr0', runTag: 'r', ...over })).toThrow(message);
  });
});

describe('the release report', () => {
  const cands = [
    { ip: '10.244.0.3', containerId: B, mtime: 1 },
    { ip: '10.244.0.4', containerId: C, mtime: 1 },
    { ip: '10.244.0.5', containerId: B, mtime: 1 },
    { ip: '10.244.0.6', containerId: C, mtime: 1 },
    { ip: '10.244.0.7', containerId: C, mtime: 1 },
  ];
  const out = ['locked cbr0', `released 10.244.0.3 ${B}`, `kept 10.244.0.4 ${C} live`, `already 10.244.0.5 ${B}`, `gone 10.244.0.6 ${C}`, `kept 10.244.0.7 ${C} other-container`, 'done', ''].join('\n');

  test('one outcome per candidate, complete once the script said done', () => {
    const r = parseRelease(out, 'cbr0', cands);
    expect(r.problems).toEqual([]);
    expect(r.complete).toBe(true);
    expect(r.outcomes).toEqual([
      { ip: '10.244.0.3', containerId: B, result: 'released' },
      { ip: '10.244.0.4', containerId: C, result: 'kept', reason: 'live' },
      { ip: '10.244.0.5', containerId: B, result: 'already' },
      { ip: '10.244.0.6', containerId: C, result: 'gone' },
      { ip: '10.244.0.7', containerId: C, result: 'kept', reason: 'other-container' },
    ]);
  });

  test('cut short, a candidate unanswered, an answer for what it was not given, or a line it does not know: not complete', () => {
    expect(parseRelease(out.replace('done\n', ''), 'cbr0', cands).complete).toBe(false);
    const unanswered = parseRelease(out.replace(`gone 10.244.0.6 ${C}\n`, ''), 'cbr0', cands);
    expect(unanswered.problems).toEqual(['no answer for 1 candidate(s), e.g. 10.244.0.6']);
    const stranger = parseRelease(out.replace(`released 10.244.0.3 ${B}`, `released 10.244.0.3 ${C}`), 'cbr0', cands);
    expect(stranger.problems).toEqual([`the release answered for 10.244.0.3 ${C}, which it was not given`]);
    const odd = parseRelease(out.replace('kept 10.244.0.4', 'deleted 10.244.0.4').replace('other-container', 'whim'), 'cbr0', cands);
    expect(odd.problems).toEqual([`unexpected line from the release: "deleted 10.244.0.4 ${C} live"`, `unexpected line from the release: "kept 10.244.0.7 ${C} whim"`, 'no answer for 2 candidate(s), e.g. 10.244.0.4']);
    expect(odd.complete).toBe(false);
    expect(parseRelease('done\n', 'cbr0', []).problems).toEqual(["the release never said it held cbr0's lock"]);
  });
});

test('the restore report', () => {
  const r = parseRestore(['locked cbr0', `restored 10.244.0.3 ${B}`, `refused 10.244.0.4 ${C} ${A}`, `refused 10.244.0.8 ${C} ?`, 'missing 10.244.0.5', 'done'].join('\n'), 'cbr0', ['10.244.0.3', '10.244.0.4', '10.244.0.5', '10.244.0.8']);
  expect(r.complete).toBe(true);
  expect(r.outcomes).toEqual([
    { ip: '10.244.0.3', result: 'restored', containerId: B },
    { ip: '10.244.0.4', result: 'refused', containerId: C, holder: A },
    { ip: '10.244.0.8', result: 'refused', containerId: C, holder: '?' },
    { ip: '10.244.0.5', result: 'missing' },
  ]);
  const cut = parseRestore(`locked cbr0\nrestored 10.244.0.3 ${B}\n`, 'cbr0', ['10.244.0.3', '10.244.0.4']);
  expect(cut.complete).toBe(false);
  expect(cut.problems).toEqual(['no answer for 1 address(es), e.g. 10.244.0.4']);
  expect(parseRestore('locked cbr0\nrestored ../x y\ndone\n', 'cbr0').problems).toEqual(['unexpected line from the restore: "restored ../x y"']);
});
