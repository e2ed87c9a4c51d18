/**
 * ipam-gc's decisions (seed 003's leaked host-local addresses), pure: no I/O and no clock.
 * The node's own clock (`now`, read by the listing script before anything else) is passed
 * in, so every age is measured on one clock, the one that wrote the files' mtimes.
 *
 * host-local keeps one file per address under /var/lib/cni/networks/<network>/: named by
 * the address, holding "<container id>\r\n<ifname>" (older versions: the id alone), created
 * once with O_EXCL and never rewritten, so its mtime is the allocation time. Beside them:
 * `lock` (host-local flocks it around every ADD, DEL and GC) and `last_reserved_ip.<range>`.
 *
 * Per file, from one listing of the node (lib/ipam-gc-scripts.ts LISTING_SCRIPT):
 *  - `never-touched`: `lock` and `last_reserved_ip.*`, host-local's own bookkeeping;
 *  - `unparsable`: anything else that is not a regular file named by an address and holding
 *    a container id (and an ifname): reported, never touched;
 *  - `live`: its container id is a sandbox or container the runtime lists, in any state
 *    (`crictl pods -q`, `crictl ps -a -q`);
 *  - `candidate`: no live sandbox or container has its id, and it is at least the grace
 *    period old;
 *  - `too-young`: no live sandbox has its id yet, but it is younger than the grace period:
 *    its sandbox may be being created right now (the runtime records a sandbox only once its
 *    CNI ADD has returned).
 *
 * Candidate, then confirmed. A candidate is released only if it is still a candidate when
 * checked again: inside the same run, by the release script, under host-local's own lock,
 * against a sandbox listing taken after the lock (lib/ipam-gc-scripts.ts RELEASE_SCRIPT),
 * with the file still there, still naming the same container id, with the same mtime. Not
 * the next run, because:
 *  - A second sighting is how a GC without allocation times measures a grace period (it
 *    counts from the first time it saw the leak). Here the file carries its allocation time,
 *    so "older than the grace period and no live sandbox" already says the reservation has
 *    existed that long; a second run would only add a wait, not a fact.
 *  - The danger is the time between the listing and the release (the approval, other
 *    nodes, a slow network): a sandbox created meanwhile. Under the lock host-local can
 *    neither allocate nor release, so the file and the fresh listing cannot change between
 *    that check and the move: a sandbox created before the lock is in the fresh listing (or
 *    its file names another container, or has another mtime, and is kept); one created after
 *    it waits for the lock and is given an address that is free by then.
 *  - What the lock cannot see is a sandbox whose ADD has returned but which its runtime has
 *    not recorded yet (containerd records a sandbox after its network is set up). Its file
 *    is seconds old; the grace period (default 15 min, as Calico's leak grace period) keeps
 *    it from being a candidate at all. `--grace 0s` gives that protection up: it is for an
 *    operator who knows the node is not starting pods (a full range starts none).
 *  - If the runtime cannot be asked, nothing is released (fail closed), both at the listing
 *    (`blocked`) and inside the lock.
 */

/** Where host-local keeps its files (its default dataDir). */
export const CNI_NETWORKS_DIR = '/var/lib/cni/networks';
/** Where released files are moved: <dir>/<run tag>/<network>/<address>. */
export const QUARANTINE_DIR = '/var/lib/kubemend/ipam-quarantine';
/** Calico's leak grace period: a file younger than this may belong to a sandbox being created. */
export const DEFAULT_GRACE_S = 15 * 60;

/** CNI network names: alphanumeric first, then alphanumerics, '_', '.', '-' (the CNI spec's rule); one path component. */
export const NETWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$/;
/** A run's tag in node paths: derived from the run id, letters, digits and '-'. */
export const RUN_TAG = /^[A-Za-z0-9][A-Za-z0-9-]{0,200}$/;
/** Sandbox and container ids as runtimes write them (64 hex digits; at least 12 where truncated). */
export const CONTAINER_ID = /^[0-9a-f]{12,128}$/;
/** Interface names as the kernel takes them (host-local's second line). */
const IFNAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** An address as host-local names its file: dotted IPv4, or IPv6 in Go's canonical form (lowercase, '::'). */
export function isAddressName(name: string): boolean {
  if (IPV4.test(name)) return true;
  if (!/^[0-9a-f:]{2,39}$/.test(name) || (name.match(/::/g) ?? []).length > 1) return false;
  const groups = name.split('::').flatMap((h) => (h === '' ? [] : h.split(':')));
  if (!groups.every((g) => /^[0-9a-f]{1,4}$/.test(g))) return false;
  return name.includes('::') ? groups.length <= 7 : groups.length === 8;
}

/** One directory entry of a network directory, as the listing script saw it. */
export interface HostLocalEntry {
  network: string;
  /** The file's name; a name the script would not print as is arrives as a JSON rendering of its bytes. */
  name: string;
  /**
   * 'reservation': a regular file named by address characters; 'lock', 'last-reserved':
   * host-local's bookkeeping; 'other': a symlink, a directory, or any other name.
   */
  kind: 'reservation' | 'lock' | 'last-reserved' | 'other';
  /** First line without its '\r'; null when the file had none or it held unexpected characters. */
  containerId: string | null;
  /** Second line; null when there is none or it held unexpected characters. */
  ifname: string | null;
  /** Lines in the file (host-local writes 1 or 2). */
  lines: number;
  /** Modification time, seconds since the epoch on the node's clock; null if unknown. */
  mtime: number | null;
  /** Why the script set it aside ('symlink', 'not a regular file', 'name', 'vanished'). */
  note?: string;
}

/** A host-local range as a CNI config gives it (`ranges: [[{subnet, rangeStart, rangeEnd, gateway}]]`). */
export interface IpRange {
  subnet: string;
  rangeStart?: string;
  rangeEnd?: string;
  gateway?: string;
}

/** One node's listing: everything the decision needs, read once. */
export interface NodeIpamListing {
  /** The node's clock when the listing began. */
  now: number;
  /** Network directories under /var/lib/cni/networks, also those with no files. */
  networks: string[];
  entries: HostLocalEntry[];
  /** Sandbox ids of every state (`crictl pods -q`); null if the runtime could not be asked. */
  sandboxes: string[] | null;
  /** Container ids of every state (`crictl ps -a -q`); null if the runtime could not be asked. */
  containers: string[] | null;
  /** host-local ranges per network, where the node's CNI config (or flannel's subnet.env) says. */
  ranges: Record<string, IpRange[]>;
  /** What could not be read, in words. */
  problems: string[];
  /**
   * The runs' quarantine directories on the node; null if they could not be read. Absent in
   * listings taken before quarantines were listed (read as none).
   */
  quarantine?: QuarantineRun[] | null;
}

/** One run's directory under QUARANTINE_DIR, as the listing saw it. */
export interface QuarantineRun {
  runTag: string;
  /** The newest mtime of the run's directory and its network directories: the last release or restore. */
  mtime: number;
  /** Files in it (released addresses not restored). */
  files: number;
}

/** How long a run's quarantine is kept after its last change, by default: a week. */
export const DEFAULT_RETENTION_S = 7 * 86_400;

export type FileVerdict =
  | { kind: 'live' }
  | { kind: 'candidate'; ageS: number }
  | { kind: 'too-young'; ageS: number }
  | { kind: 'never-touched' }
  | { kind: 'unparsable'; problem: string }
  /** The runtime could not be asked: nothing can be told live or leaked. */
  | { kind: 'unknown' };

export interface FileDecision {
  network: string;
  name: string;
  containerId: string | null;
  mtime: number | null;
  verdict: FileVerdict;
}

export interface NetworkSummary {
  network: string;
  /** Addresses host-local may give out, from the range; null when the range is not known. */
  capacity: number | null;
  /** Files that reserve an address (named by an address), whatever their verdict. */
  inUse: number;
  live: number;
  /** Reservations of no live sandbox: candidates and too-young ones. */
  leaked: number;
  candidates: number;
  tooYoung: number;
  unparsable: number;
  /** capacity - inUse, where the capacity is known. */
  free: number | null;
}

/** What the release script is given for one file: it moves the file only if it still matches. */
export interface ReleaseCandidate {
  ip: string;
  containerId: string;
  mtime: number;
}

export interface NodeIpamDecision {
  now: number;
  graceS: number;
  files: FileDecision[];
  networks: NetworkSummary[];
  /** Candidates per network, in address order: the release script's input. */
  candidates: Record<string, ReleaseCandidate[]>;
  /** Why nothing may be released on this node; null when candidates may go to the release. */
  blocked: string | null;
}

export interface DecideOptions {
  /** Seconds a file must have existed before it can be a candidate (0 allowed). */
  graceS: number;
  /** Capacities known from elsewhere (the Node's podCIDR), per network; they win over the listing's ranges. */
  capacity?: Record<string, number>;
}

function v4(a: string): number | null {
  if (!IPV4.test(a)) return null;
  return a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}

/**
 * Addresses host-local gives out from an IPv4 range: rangeStart (default: the network's
 * .1) to rangeEnd (default: the address before the broadcast), less the gateway (default
 * .1) when it lies inside. null for IPv6 or anything host-local would refuse.
 */
export function rangeCapacity(r: IpRange): number | null {
  const [net, lenText] = r.subnet.split('/');
  const base = v4(net);
  const bits = Number(lenText);
  if (base === null || !/^\d+$/.test(lenText ?? '') || bits < 1 || bits > 30) return null;
  const size = 2 ** (32 - bits);
  if (base % size !== 0) return null; // host bits set: host-local refuses the range
  const inside = (a: number) => a >= base && a < base + size;
  const start = r.rangeStart === undefined ? base + 1 : v4(r.rangeStart);
  const end = r.rangeEnd === undefined ? base + size - 2 : v4(r.rangeEnd);
  const gw = r.gateway === undefined ? base + 1 : v4(r.gateway);
  if (start === null || end === null || gw === null || !inside(start) || !inside(end) || !inside(gw) || start > end) return null;
  return end - start + 1 - (gw >= start && gw <= end ? 1 : 0);
}

/**
 * Whether an id is one the runtime lists. Runtimes list full ids; a list or a file holding
 * an id cut to 12 or more characters matches the full one it begins (crictl's short ids).
 */
export function liveIndex(ids: readonly string[]): (id: string) => boolean {
  const exact = new Set(ids);
  const byHead = new Map<string, string[]>();
  for (const l of ids) if (l.length >= 12) byHead.set(l.slice(0, 12), [...(byHead.get(l.slice(0, 12)) ?? []), l]);
  return (id) => exact.has(id) || (id.length >= 12 && (byHead.get(id.slice(0, 12)) ?? []).some((l) => l.startsWith(id) || id.startsWith(l)));
}

function verdictOf(e: HostLocalEntry, isLive: ((id: string) => boolean) | null, now: number, graceS: number): FileVerdict {
  if (e.kind === 'lock' || e.kind === 'last-reserved') return { kind: 'never-touched' };
  if (e.kind === 'other') return { kind: 'unparsable', problem: e.note ?? 'not a reservation' };
  if (!isAddressName(e.name)) return { kind: 'unparsable', problem: 'its name is not an address' };
  if (e.containerId === null || !CONTAINER_ID.test(e.containerId)) return { kind: 'unparsable', problem: 'its first line is not a container id' };
  if (e.lines > 2) return { kind: 'unparsable', problem: `it has ${e.lines} lines, host-local writes 2` };
  if (e.lines === 2 && (e.ifname === null || !IFNAME.test(e.ifname))) return { kind: 'unparsable', problem: 'its second line is not an interface name' };
  if (e.mtime === null) return { kind: 'unparsable', problem: 'its modification time could not be read' };
  if (isLive === null) return { kind: 'unknown' };
  if (isLive(e.containerId)) return { kind: 'live' };
  // A file from the node's future (its clock stepped back) is as young as can be.
  const ageS = now - e.mtime;
  return ageS >= graceS ? { kind: 'candidate', ageS } : { kind: 'too-young', ageS };
}

/** Sorts addresses numerically where they are IPv4, else by text. */
function byAddress(a: string, b: string): number {
  const x = v4(a);
  const y = v4(b);
  return x !== null && y !== null ? x - y : a.localeCompare(b);
}

/** Every file's verdict, each network's pool, and the candidates to hand to the release. */
export function decideNode(listing: NodeIpamListing, opts: DecideOptions): NodeIpamDecision {
  if (!Number.isInteger(opts.graceS) || opts.graceS < 0) throw new Error(`grace must be a whole number of seconds >= 0, got ${opts.graceS}`);
  const runtimeKnown = listing.sandboxes !== null && listing.containers !== null;
  const isLive = runtimeKnown ? liveIndex([...listing.sandboxes!, ...listing.containers!]) : null;
  // A file that vanished while it was listed was released by host-local meanwhile: not a file any more.
  const entries = listing.entries.filter((e) => e.note !== 'vanished');
  const files: FileDecision[] = entries.map((e) => ({ network: e.network, name: e.name, containerId: e.containerId, mtime: e.mtime, verdict: verdictOf(e, isLive, listing.now, opts.graceS) }));

  const names = [...new Set([...listing.networks, ...files.map((f) => f.network)])].sort();
  const networks: NetworkSummary[] = names.map((network) => {
    const mine = files.filter((f) => f.network === network);
    const count = (k: FileVerdict['kind']) => mine.filter((f) => f.verdict.kind === k).length;
    const inUse = entries.filter((e) => e.network === network && e.kind === 'reservation' && isAddressName(e.name)).length;
    const ranges = listing.ranges[network];
    const fromRanges = ranges?.length ? ranges.map(rangeCapacity) : [];
    const capacity = opts.capacity?.[network] ?? (fromRanges.length && fromRanges.every((c) => c !== null) ? fromRanges.reduce((a, c) => a! + c!, 0) : null);
    const candidates = count('candidate');
    const tooYoung = count('too-young');
    return { network, capacity, inUse, live: count('live'), leaked: candidates + tooYoung, candidates, tooYoung, unparsable: count('unparsable'), free: capacity === null ? null : Math.max(0, capacity - inUse) };
  });

  const candidates: Record<string, ReleaseCandidate[]> = {};
  for (const f of files) {
    if (f.verdict.kind !== 'candidate') continue;
    (candidates[f.network] ??= []).push({ ip: f.name, containerId: f.containerId!, mtime: f.mtime! });
  }
  for (const list of Object.values(candidates)) list.sort((a, b) => byAddress(a.ip, b.ip));

  const blocked = runtimeKnown ? null : `the container runtime could not be asked for its sandboxes${listing.problems.length ? ` (${listing.problems.join('; ')})` : ''}: nothing can be told leaked`;
  return { now: listing.now, graceS: opts.graceS, files, networks, candidates, blocked };
}
