/**
 * ipam-gc's node scripts (lib/ipam-gc-scripts.ts) on a lab node, over kubemend's own SSH
 * layer and the node's real sshd, against the real host-local plugin (v1.10.0, through the
 * lab's CNI ADD and DEL, test/lab/cni.ts). The node is seed 003's (`stale-cni`): host-local's
 * cbr0 range full of files, three of them held by sandboxes the runtime still has.
 *
 * The race the issue names is a sandbox created between the listing and the release. The
 * test creates it there, with real CNI calls, between the two execs; and to show the release
 * holds host-local's own lock it stops the release at its pause point (two FIFOs: each side
 * waits for the other's action, no sleeps) while a real ADD waits for that lock.
 */
import { join } from 'node:path';
import { SshConnector } from '../../activities/ssh';
import { decideNode, type NodeIpamDecision, type ReleaseCandidate } from '../../lib/ipam-gc';
import { listingArgv, parseListing, parsePurge, parseRelease, parseRestore, PURGE_SCRIPT, purgeArgv, releaseArgv, restoreArgv, IpamScriptExit } from '../../lib/ipam-gc-scripts';
import type { NodeTarget } from '../../lib/config';
import { CNI_BIN, CniPluginError, podAdd, podForget } from '../lab/cni';
import { down, type LabState, LIVE_PODS_PER_NODE, Patience, up } from '../lab/lab';
import { tempDir } from '../helpers/harness';
import { hostSnapshot } from '../helpers/host';

const dir = join(tempDir('ipamgc'), 'lab');
const NET = '/var/lib/cni/networks/cbr0';
const RANGE_FULL = 'failed to allocate for range 0: no IP addresses available in range set: 10.244.0.1-10.244.0.254';
const ssh = new SshConnector({ connectTimeoutMs: 10_000, commandTimeoutMs: 120_000 });
let state: LabState;
let target: NodeTarget;
let hostBefore: ReturnType<typeof hostSnapshot>;

beforeAll(async () => {
  hostBefore = hostSnapshot();
  state = await up({ dir, nodes: 1, scenarios: ['stale-cni'], rebootDowntimeMs: 300 });
  target = { cluster: 'lab', name: 'node1', role: 'worker', host: '127.0.0.1', port: state.nodes[0].port, user: 'root', privateKeyPath: join(dir, 'id_ed25519'), knownHostsPath: join(dir, 'known_hosts') };
  // flanneld back with the node's lease and cni0 without its old one (seed 003's other fixes):
  // what stays in the way of a new pod is the full range.
  await sh('printf "FLANNEL_NETWORK=10.244.0.0/16\\nFLANNEL_SUBNET=10.244.0.1/24\\nFLANNEL_MTU=1450\\nFLANNEL_IPMASQ=true\\n" > /run/flannel/subnet.env && ip link del cni0');
  // Two files ipam-gc cannot read as reservations: an address-named one with no container id, and a stray note.
  await sh(`printf 'not a container id\\n' > ${NET}/10.244.0.255 && printf 'hello' > ${NET}/notes.txt && touch -d '1 hour ago' ${NET}/10.244.0.255 ${NET}/notes.txt`);
}, 180_000);

afterAll(async () => {
  ssh.close();
  await down(dir);
  expect(hostSnapshot()).toEqual(hostBefore);
});

async function run(argv: string[]) {
  return ssh.withSession(target, (s) => s.run(argv, { check: false }));
}

/** A fixed script on the node; any variable part goes as "$1"... */
async function sh(script: string, ...args: string[]): Promise<string> {
  const r = await run(['sh', '-c', script, 'test', ...args]);
  if (r.exitCode !== 0) throw new Error(`${script}: exit ${r.exitCode}: ${r.stderr}`);
  return r.stdout;
}

/** Every entry of a directory: name -> "mtime mode inode type base64(content)". */
async function snapshot(path: string): Promise<Map<string, string>> {
  const out = await sh('cd "$1" 2>/dev/null || exit 0; for f in * .[!.]*; do [ -e "$f" ] || continue; printf "%s\\t%s %s\\n" "$f" "$(stat -c "%Y %a %i %F" -- "$f")" "$(base64 -w0 -- "$f")"; done', path);
  return new Map(out.split('\n').filter(Boolean).map((l) => l.split('\t') as [string, string]));
}
/** The same without the inode: what a move to another directory and back keeps. */
const bytes = (entry: string | undefined) => entry?.split(' ').filter((_, k) => k !== 2).join(' ');

async function listAndDecide(graceS = 0): Promise<NodeIpamDecision> {
  const marker = '5eed003a5eed003a5eed003a';
  const r = await run(listingArgv(marker));
  expect(r.exitCode).toBe(0);
  const listing = parseListing(r.stdout, marker);
  if ('error' in listing) throw new Error(listing.error);
  return decideNode(listing, { graceS });
}

async function release(runTag: string, candidates: ReleaseCandidate[], pauseDir?: string) {
  const r = await run(releaseArgv({ network: 'cbr0', runTag, candidates, pauseDir }));
  return { exitCode: r.exitCode, stderr: r.stderr, report: parseRelease(r.stdout, 'cbr0', candidates) };
}

const counts = (outcomes: Array<{ result: string; reason?: string }>) => outcomes.reduce<Record<string, number>>((acc, o) => ({ ...acc, [o.reason ? `${o.result} ${o.reason}` : o.result]: (acc[`${o.reason ? `${o.result} ${o.reason}` : o.result}`] ?? 0) + 1 }), {});

/** host-local's own DEL for a container, as a runtime's late teardown runs it. */
async function hostLocalDel(containerId: string): Promise<void> {
  const config = JSON.stringify({ cniVersion: '0.3.1', name: 'cbr0', ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.0.0/24' }]] } });
  await sh('printf %s "$1" | CNI_COMMAND=DEL CNI_CONTAINERID="$2" CNI_NETNS= CNI_IFNAME=eth0 CNI_PATH="$3" "$3/host-local"', config, containerId, CNI_BIN);
}

async function addFails(name: string): Promise<CniPluginError> {
  const err = await podAdd(dir, 'node1', { namespace: 'default', name }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CniPluginError);
  return err as CniPluginError;
}

let before: Map<string, string>;
let decision: NodeIpamDecision;
/** Files of the sandboxes the runtime has, and the address a newcomer got between listing and release. */
let liveFiles: string[];
let reused: string;
let gone: string;
/** The address the first pod after the release got. */
let afterIp: string;
let duringIp: string;

test("before: a real CNI ADD fails with host-local's own 'no IP addresses available in range set'", async () => {
  expect((await addFails('before')).msg).toBe(RANGE_FULL);
});

test('the listing: one exec; the range full, three files live, the rest candidates at grace 0; lock, last_reserved_ip and the unreadable files set aside', async () => {
  before = await snapshot(NET);
  decision = await listAndDecide(0);
  expect(decision.blocked).toBeNull();
  expect(decision.networks).toEqual([{ network: 'cbr0', capacity: 253, inUse: 254, live: LIVE_PODS_PER_NODE, leaked: 253 - LIVE_PODS_PER_NODE, candidates: 253 - LIVE_PODS_PER_NODE, tooYoung: 0, unparsable: 2, free: 0 }]);
  const verdict = (name: string) => decision.files.find((f) => f.name === name)?.verdict;
  expect(verdict('lock')).toEqual({ kind: 'never-touched' });
  expect(verdict('last_reserved_ip.0')).toEqual({ kind: 'never-touched' });
  expect(verdict('10.244.0.255')).toEqual({ kind: 'unparsable', problem: 'its first line is not a container id' });
  expect(verdict('"notes.txt"')).toEqual({ kind: 'unparsable', problem: 'its name is not an address' });
  liveFiles = decision.files.filter((f) => f.verdict.kind === 'live').map((f) => f.name);
  expect(liveFiles).toHaveLength(LIVE_PODS_PER_NODE);
}, 60_000);

test('between the listing and the release: an address the listing saw leaked is freed by a late DEL and given to a new sandbox; the release keeps it, and a sandbox the runtime lists by then is kept too', async () => {
  const cands = decision.candidates.cbr0;
  // A late DEL (the runtime tearing the old sandbox down after all) frees one leaked address...
  await hostLocalDel(cands[0].containerId);
  // ...and a new pod gets it: the only free address in the range.
  const newcomer = await podAdd(dir, 'node1', { namespace: 'default', name: 'newcomer' });
  reused = cands[0].ip;
  expect(newcomer.address).toBe(`${reused}/24`);
  // Another late DEL, with no pod after it: that file is simply gone.
  await hostLocalDel(cands[1].containerId);
  gone = cands[1].ip;
  // A worker whose listing predates a sandbox would hand its file over too: the release must ask the runtime again.
  const liveEntry = decision.files.find((f) => f.name === liveFiles[0])!;
  const stale: ReleaseCandidate = { ip: liveEntry.name, containerId: liveEntry.containerId!, mtime: liveEntry.mtime! };

  const beforeRelease = await snapshot(NET);
  const r = await release('ipam-gc-run-1', [...cands, stale]);
  expect(r.stderr).toBe('');
  expect(r.exitCode).toBe(0);
  expect(r.report.problems).toEqual([]);
  expect(r.report.complete).toBe(true);
  expect(counts(r.report.outcomes)).toEqual({ released: cands.length - 2, 'kept other-container': 1, gone: 1, 'kept live': 1 });
  expect(r.report.outcomes.find((o) => o.ip === reused)).toEqual({ ip: reused, containerId: cands[0].containerId, result: 'kept', reason: 'other-container' });
  expect(r.report.outcomes.find((o) => o.ip === gone)?.result).toBe('gone');

  const after = await snapshot(NET);
  // What the release must not touch is byte for byte as it was, inode and mtime too.
  for (const name of [...liveFiles, reused, 'lock', 'last_reserved_ip.0', '10.244.0.255', 'notes.txt']) expect([name, after.get(name)]).toEqual([name, beforeRelease.get(name)]);
  expect([...after.keys()].sort()).toEqual([...liveFiles, reused, '10.244.0.255', 'last_reserved_ip.0', 'lock', 'notes.txt'].sort());
  // Every released file is in the run's quarantine as it was.
  const quarantine = await snapshot('/var/lib/kubemend/ipam-quarantine/ipam-gc-run-1/cbr0');
  const released = r.report.outcomes.filter((o) => o.result === 'released').map((o) => o.ip);
  expect([...quarantine.keys()].sort()).toEqual([...released].sort());
  for (const ip of released) expect([ip, bytes(quarantine.get(ip))]).toEqual([ip, bytes(before.get(ip))]);
}, 120_000);

test('after: a real CNI ADD succeeds', async () => {
  const ok = await podAdd(dir, 'node1', { namespace: 'default', name: 'after' });
  expect(ok.address).toMatch(/^10\.244\.0\.\d+\/24$/);
  afterIp = ok.address.split('/')[0];
});

test('the same release again releases nothing new: what it moved is "already", an address a pod has now is kept', async () => {
  const cands = decision.candidates.cbr0;
  const beforeAgain = await snapshot(NET);
  const quarantine = await snapshot('/var/lib/kubemend/ipam-quarantine/ipam-gc-run-1/cbr0');
  const r = await release('ipam-gc-run-1', cands);
  expect(r.exitCode).toBe(0);
  expect(r.report.complete).toBe(true);
  // Whatever the node holds now decides each line: a file there (a pod's), else the quarantine, else nothing.
  const expected = (ip: string) => (beforeAgain.has(ip) ? 'kept other-container' : quarantine.has(ip) ? 'already' : 'gone');
  expect(r.report.outcomes.map((o) => `${o.ip} ${o.result}${'reason' in o ? ` ${o.reason}` : ''}`)).toEqual(cands.map((c) => `${c.ip} ${expected(c.ip)}`));
  expect(r.report.outcomes.find((o) => o.ip === afterIp)).toMatchObject({ result: 'kept', reason: 'other-container' });
  expect(r.report.outcomes.filter((o) => o.result === 'already')).toHaveLength(quarantine.size);
  expect(await snapshot(NET)).toEqual(beforeAgain);
  expect(await snapshot('/var/lib/kubemend/ipam-quarantine/ipam-gc-run-1/cbr0')).toEqual(quarantine);
});

test("the runtime cannot be asked (crictl not on the PATH): nothing is released, exit 5", async () => {
  const leak = await podAdd(dir, 'node1', { namespace: 'default', name: 'leak-1' });
  await podForget(dir, 'node1', { namespace: 'default', name: 'leak-1' });
  const c = (await listAndDecide(0)).candidates.cbr0;
  expect(c.map((x) => x.ip)).toEqual([leak.address.split('/')[0]]);
  const beforeRun = await snapshot(NET);
  const r = await run(['env', 'PATH=/usr/bin:/bin', ...releaseArgv({ network: 'cbr0', runTag: 'ipam-gc-run-2', candidates: c })]);
  expect(r.exitCode).toBe(IpamScriptExit.RuntimeUnavailable);
  expect(r.stderr).toMatch(/^the container runtime could not be asked, nothing released: /);
  expect(await snapshot(NET)).toEqual(beforeRun);
  expect((await snapshot('/var/lib/kubemend/ipam-quarantine/ipam-gc-run-2')).size).toBe(0);
});

test("the release holds host-local's own lock: a real ADD started while it is paused inside waits for it, and gets an address once it is done", async () => {
  const c = (await listAndDecide(0)).candidates.cbr0;
  expect(c).toHaveLength(1); // leak-1's
  const pause = '/run/kubemend-test-pause';
  await sh('rm -rf "$1" && mkdir -p "$1" && mkfifo "$1/reached" "$1/resume"', pause);
  const releasing = release('ipam-gc-run-3', c, pause);
  // Read what the script writes once it holds the lock; fail at once if it ended without getting there.
  await Promise.race([sh('cat "$1/reached"', pause), releasing.then((r) => Promise.reject(new Error(`the release ended before its pause point: ${JSON.stringify(r)}`)))]);
  // host-local's lock is held: flock(2) on the same file, as host-local does it, would wait.
  expect((await run(['flock', '-n', `${NET}/lock`, 'true'])).exitCode).toBe(1);

  const sizeBefore = (await snapshot(NET)).size;
  const adding = podAdd(dir, 'node1', { namespace: 'default', name: 'during' });
  adding.catch(() => undefined); // awaited below
  // The kernel's own word (wchan): host-local is asleep waiting for a file lock, the one the release holds.
  const patience = new Patience(60_000);
  const waiting = () => sh('for p in /proc/[0-9]*; do [ "$(cat "$p/comm" 2>/dev/null)" = host-local ] && cat "$p/wchan" && echo; done; true');
  let wchan = await patience.charge(waiting(), 5_000);
  while (!/lock.*wait/.test(wchan)) {
    if (patience.exhausted) throw new Error(`no host-local waits for a lock; wchan: ${JSON.stringify(wchan)}`);
    await patience.sleep(100);
    wchan = await patience.charge(waiting(), 5_000);
  }
  // And it has written nothing yet: while the release holds the lock the directory is the release's.
  expect((await snapshot(NET)).size).toBe(sizeBefore);
  await sh('echo go > "$1/resume"', pause);
  const r = await releasing;
  expect(r.exitCode).toBe(0);
  expect(r.report.outcomes).toEqual([{ ip: c[0].ip, containerId: c[0].containerId, result: 'released' }]);
  const during = await adding;
  expect(during.address).toMatch(/^10\.244\.0\.\d+\/24$/);
  duringIp = during.address.split('/')[0];
  await sh('rm -rf "$1"', pause);
}, 180_000);

test('restore puts the files back byte for byte, refusing the addresses in use again', async () => {
  const quarantined = await snapshot('/var/lib/kubemend/ipam-quarantine/ipam-gc-run-1/cbr0');
  const now = await snapshot(NET);
  const inUse = [...quarantined.keys()].filter((ip) => now.has(ip));
  // Pods given an address since (leak-1's went to run 3's quarantine): the restore must refuse theirs.
  expect(inUse.sort()).toEqual([afterIp, duringIp].filter((ip) => quarantined.has(ip)).sort());
  expect(inUse.length).toBeGreaterThan(0);
  const r = await run(restoreArgv({ network: 'cbr0', runTag: 'ipam-gc-run-1' }));
  expect(r.exitCode).toBe(0);
  const report = parseRestore(r.stdout, 'cbr0');
  expect(report.complete).toBe(true);
  expect(counts(report.outcomes)).toEqual({ restored: quarantined.size - inUse.length, refused: inUse.length });
  const after = await snapshot(NET);
  for (const o of report.outcomes) {
    if (o.result === 'restored') expect([o.ip, bytes(after.get(o.ip))]).toEqual([o.ip, bytes(before.get(o.ip))]);
    if (o.result === 'refused') {
      expect([o.ip, after.get(o.ip)]).toEqual([o.ip, now.get(o.ip)]); // the file of the pod that has the address now
      expect(o.holder).toMatch(/^[0-9a-f]{64}$/);
    }
  }
  // Restored, the range is full again, as it was: a real ADD fails the same way.
  expect((await addFails('restored')).msg).toBe(RANGE_FULL);
  // Again: what was restored is not in the quarantine any more; the refused ones are refused again.
  const again = parseRestore((await run(restoreArgv({ network: 'cbr0', runTag: 'ipam-gc-run-1' }))).stdout, 'cbr0');
  expect(counts(again.outcomes)).toEqual({ refused: inUse.length });
  expect(await snapshot(NET)).toEqual(after);
}, 120_000);

test('the files ipam-gc cannot read as reservations were left as they were', async () => {
  const now = await snapshot(NET);
  for (const name of ['10.244.0.255', 'notes.txt', 'lock']) expect([name, now.get(name)]).toEqual([name, before.get(name)]);
});

test('the retention purge: the listing sees each run\'s quarantine; only one old enough and unchanged since is deleted, never through a symlink', async () => {
  const Q = '/var/lib/kubemend/ipam-quarantine';
  // Four runs' quarantines: old, old but changed after the listing, young, and a symlink to a directory that must survive.
  await sh(
    `mkdir -p ${Q}/run-old/cbr0 ${Q}/run-changed/cbr0 ${Q}/run-young/cbr0 /tmp/keep-me && printf x > /tmp/keep-me/f && ` +
      `for r in old changed young; do printf "%s\\r\\neth0" ${'a'.repeat(64)} > ${Q}/run-$r/cbr0/10.244.9.1; printf y > ${Q}/run-$r/cbr0/10.244.9.2; done && ` +
      `ln -sfn /tmp/keep-me ${Q}/run-link && touch -d "10 days ago" ${Q}/run-old ${Q}/run-old/cbr0 ${Q}/run-changed ${Q}/run-changed/cbr0 && touch -d "1 hour ago" ${Q}/run-young ${Q}/run-young/cbr0`,
  );
  const marker = 'f00dfeedf00dfeedf00d';
  const listing = parseListing((await run(listingArgv(marker))).stdout, marker);
  if ('error' in listing) throw new Error(listing.error);
  const byTag = new Map((listing.quarantine ?? []).map((q) => [q.runTag, q]));
  expect(byTag.get('run-old')).toEqual({ runTag: 'run-old', mtime: expect.any(Number), files: 2 });
  expect(listing.now - byTag.get('run-old')!.mtime).toBeGreaterThanOrEqual(10 * 86_400);
  expect(byTag.has('run-link')).toBe(false);
  expect(listing.problems).toContain("1 entry in /var/lib/kubemend/ipam-quarantine that are not a run's directory: left alone");

  // After the listing, run-changed gets a file restored out of it (its network directory changes).
  await sh(`rm ${Q}/run-changed/cbr0/10.244.9.2`);
  const asked = ['run-old', 'run-changed', 'run-young'].map((t) => byTag.get(t)!);
  const r = await run(purgeArgv(7 * 86_400, [...asked, { runTag: 'run-link', mtime: 0 }, { runTag: 'run-never', mtime: 0 }]));
  expect(r.stderr).toBe('');
  expect(r.exitCode).toBe(0);
  const report = parsePurge(r.stdout, [...asked, { runTag: 'run-link' }, { runTag: 'run-never' }]);
  expect(report.complete).toBe(true);
  expect(report.outcomes).toEqual([
    { runTag: 'run-old', result: 'purged', files: 2 },
    { runTag: 'run-changed', result: 'kept', reason: 'changed' },
    { runTag: 'run-young', result: 'kept', reason: 'young' },
    { runTag: 'run-link', result: 'kept', reason: 'odd' },
    { runTag: 'run-never', result: 'gone' },
  ]);
  // (The earlier tests' runs, ipam-gc-run-*, are not this test's.)
  expect((await sh(`ls ${Q} | grep '^run-'; cat /tmp/keep-me/f`)).split('\n')).toEqual(['run-changed', 'run-link', 'run-young', 'x']);
  // Run again: what was purged is gone, nothing else changes.
  const again = parsePurge((await run(purgeArgv(7 * 86_400, [asked[0]]))).stdout, [asked[0]]);
  expect(again.outcomes).toEqual([{ runTag: 'run-old', result: 'gone' }]);
  // A tag the worker would refuse is refused by the script too, before anything.
  const bad = await run(['sh', '-c', PURGE_SCRIPT, 'kubemend-ipam-purge', '0', '../../tmp/keep-me', '0']);
  expect(bad.exitCode).toBe(IpamScriptExit.BadInput);
  await sh(`rm -rf ${Q}/run-changed ${Q}/run-young ${Q}/run-link /tmp/keep-me`);
});
