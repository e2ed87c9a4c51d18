/**
 * ipam-gc's node scripts (seed 003) and their parsers. Each script is a constant; its only
 * inputs are positional arguments, validated here, quoted by lib/shell.ts, and checked
 * again by the script before it acts.
 *
 *  - LISTING_SCRIPT, read-only, one SSH exec per node: the node's clock, then every network
 *    directory's entries once (one `stat` and one `awk` for all files), then the runtime's
 *    sandboxes and containers once, then the CNI configs and flannel's subnet.env for the
 *    ranges. O(files + sandboxes). Files are read before sandboxes: a sandbox whose file the
 *    listing saw had its ADD done before, so the runtime lists it unless it is still
 *    recording it (see lib/ipam-gc.ts on the grace period).
 *  - RELEASE_SCRIPT, one network: takes host-local's own lock (flock on the network
 *    directory's `lock`, as host-local's ADD, DEL and GC do), lists the runtime's sandboxes
 *    and containers again, and moves a candidate's file into the run's quarantine only if it
 *    is still a regular file, with the same mtime, naming the same container id, which is
 *    still no live sandbox or container. If the runtime cannot be asked it releases nothing.
 *    Run twice with the same arguments it releases nothing new and says `already` for what
 *    the first run moved.
 *  - RESTORE_SCRIPT, one network: under the same lock, moves quarantined files back (a move
 *    within one filesystem: bytes, mode and mtime as they were), refusing any address that
 *    has a file again (re-used since the release).
 */
import { dumpedFiles } from './diagnose-script';
import { CNI_NETWORKS_DIR, CONTAINER_ID, type HostLocalEntry, type IpRange, isAddressName, NETWORK_NAME, type NodeIpamListing, QUARANTINE_DIR, type QuarantineRun, type ReleaseCandidate, RUN_TAG } from './ipam-gc';
import { parseSections, sectionScriptArgv } from './probe-script';

/** Exit statuses of RELEASE_SCRIPT and RESTORE_SCRIPT besides 0 (done) and 1 (a command failed). */
export const IpamScriptExit = {
  /** An argument the script refuses (the worker validates first: this is the second check). */
  BadInput: 2,
  /** The network directory or its `lock` is missing or not host-local's: nothing done. */
  NotHostLocal: 3,
  /** host-local's lock was not taken within LOCK_WAIT_S: nothing done; a retry may take it. */
  LockBusy: 4,
  /** crictl failed or did not answer within RUNTIME_WAIT_S: nothing released (fail closed). */
  RuntimeUnavailable: 5,
} as const;

/** host-local holds its lock for one allocation; a lock held this long is someone stuck. */
export const LOCK_WAIT_S = 60;
/** How long crictl may take inside the lock (pods cannot get addresses meanwhile). */
export const RUNTIME_WAIT_S = 60;
/** Candidates per release exec, so the command line stays far below ARG_MAX and sshd's packet size. */
export const RELEASE_BATCH = 512;

// ---------------------------------------------------------------------------------------
// The listing

export const IPAM_LIST_SECTIONS = {
  now: 'date +%s',
  files: `${CNI_NETWORKS_DIR}/*/*`,
  sandboxes: 'crictl pods -q',
  containers: 'crictl ps -a -q',
  cniConf: '/etc/cni/net.d/*',
  subnetEnv: '/run/flannel/subnet.env',
  quarantine: `${QUARANTINE_DIR}/*`,
} as const;

/**
 * Per network directory a `net <name>` line, then per entry one tab-separated line:
 *   lock <net> | last <net> <name> | other <net> <hex of name> <why>
 *   stat <mtime> <path>          (one `stat` for every address-named regular file)
 *   content <path> <line 1> <line 2> <lines>   (one `awk`; a line with unexpected characters is "!")
 * A directory whose name is no CNI network name is `oddnet <hex of name>`. Names are only
 * printed as they are when made of address characters; anything else goes as hex.
 */
const FILES_FN = [
  'hex() { printf %s "$1" | od -An -tx1 | tr -d " \\n"; }',
  'files() {',
  '  set --',
  `  for d in ${CNI_NETWORKS_DIR}/* ${CNI_NETWORKS_DIR}/.[!.]* ${CNI_NETWORKS_DIR}/..?*; do`,
  '    [ -e "$d" ] || [ -L "$d" ] || continue',
  '    n=${d##*/}',
  '    case "$n" in [A-Za-z0-9]*) ;; *) printf "oddnet\\t%s\\n" "$(hex "$n")"; continue ;; esac',
  '    case "$n" in *[!A-Za-z0-9_.-]*) printf "oddnet\\t%s\\n" "$(hex "$n")"; continue ;; esac',
  '    if [ -L "$d" ] || [ ! -d "$d" ]; then printf "oddnet\\t%s\\n" "$(hex "$n")"; continue; fi',
  '    printf "net\\t%s\\n" "$n"',
  '    for f in "$d"/* "$d"/.[!.]* "$d"/..?*; do',
  '      [ -e "$f" ] || [ -L "$f" ] || continue',
  '      b=${f##*/}',
  '      if [ -L "$f" ]; then printf "other\\t%s\\t%s\\tsymlink\\n" "$n" "$(hex "$b")"; continue; fi',
  '      if [ ! -f "$f" ]; then printf "other\\t%s\\t%s\\tnot a regular file\\n" "$n" "$(hex "$b")"; continue; fi',
  '      case "$b" in',
  '        lock) printf "lock\\t%s\\n" "$n" ;;',
  '        last_reserved_ip.*) case "${b#last_reserved_ip.}" in ""|*[!0-9]*) printf "other\\t%s\\t%s\\tname\\n" "$n" "$(hex "$b")" ;; *) printf "last\\t%s\\t%s\\n" "$n" "$b" ;; esac ;;',
  '        *[!0-9a-fA-F.:]*) printf "other\\t%s\\t%s\\tname\\n" "$n" "$(hex "$b")" ;;',
  '        *) set -- "$@" "$f" ;;',
  '      esac',
  '    done',
  '  done',
  '  [ $# -gt 0 ] || return 0',
  // A file host-local releases meanwhile is missing from one or both: the parser says "vanished".
  // Through xargs: a big range's paths may not fit one command line (printf is a builtin: no limit).
  '  printf "%s\\0" "$@" | xargs -0 -r stat --printf "stat\\t%Y\\t%n\\n" -- 2>/dev/null',
  "  printf '%s\\0' \"$@\" | LC_ALL=C xargs -0 -r awk 'function s(x) { sub(/\\r$/, \"\", x); return (length(x) > 256 || x ~ /[^A-Za-z0-9_.:-]/) ? \"!\" : x }",
  '    function out() { if (p != "") printf "content\\t%s\\t%s\\t%s\\t%d\\n", p, s(a), s(b), nl; p = "" }',
  '    FNR == 1 { out(); p = FILENAME; a = $0; b = ""; nl = 1; next }',
  '    FNR == 2 { b = $0 }',
  "    { nl = FNR } END { out() }' 2>/dev/null",
  '  return 0',
  '}',
].join('\n');

/**
 * The runs' quarantine directories, with two `find`s whatever their number: per directory
 * (a run's and its networks') `qdir <path> <mtime>`, per run `qfiles <tag> <count>`, and
 * `qodd` for an entry that is no directory (a symlink, a file): left alone.
 */
const QUARANTINE_FN = [
  'quarantine() {',
  `  q=${QUARANTINE_DIR}`,
  '  [ -e "$q" ] || [ -L "$q" ] || return 0',
  '  if [ -L "$q" ] || [ ! -d "$q" ]; then echo "$q is not a directory" >&2; return 1; fi',
  '  find "$q" -mindepth 1 -maxdepth 1 ! -type d -printf "qodd\\n"',
  '  find "$q" -mindepth 1 -maxdepth 2 -type d -printf "qdir\\t%P\\t%Ts\\n"',
  `  find "$q" -mindepth 3 -maxdepth 3 -type f -printf "%P\\n" | awk -F/ '{ c[$1]++ } END { for (k in c) printf "qfiles\\t%s\\t%d\\n", k, c[k] }'`,
  '}',
].join('\n');

const SECRET_LINES = 'password|psk|secret|private|token';

export const LISTING_SCRIPT = [
  'm=$1',
  'section() { printf "%s begin %s\\n" "$m" "$1"; shift; "$@" 2>&1; rc=$?; printf "\\n%s end %d\\n" "$m" "$rc"; }',
  `dump() { for f in "$@"; do [ -f "$f" ] || continue; printf "%s file %s\\n" "$m" "$f"; grep -v -i -E '${SECRET_LINES}' -- "$f"; printf "\\n"; done; return 0; }`,
  FILES_FN,
  // The clock first: a file written after it is younger than its age says, never older.
  'section now date +%s',
  'section files files',
  // crictl's stdout only, unless it fails: its warnings (no crictl.yaml) go to stderr and are no ids.
  'runtime() { { e=$("$@" 2>&1 >&4 4>&-); rc=$?; } 4>&1; [ $rc -eq 0 ] || printf "%s\\n" "$e"; return $rc; }',
  'section sandboxes runtime crictl pods -q',
  'section containers runtime crictl ps -a -q',
  'section cniConf dump /etc/cni/net.d/*',
  'section subnetEnv cat -- /run/flannel/subnet.env',
  QUARANTINE_FN,
  'section quarantine quarantine',
].join('\n');

export function listingArgv(marker: string): string[] {
  return sectionScriptArgv(LISTING_SCRIPT, 'kubemend-ipam-list', marker);
}

function unhex(hex: string): string {
  if (!/^([0-9a-f]{2})*$/.test(hex)) return JSON.stringify(hex);
  const bytes = hex.match(/../g)?.map((h) => parseInt(h, 16)) ?? [];
  return JSON.stringify(String.fromCharCode(...bytes));
}

const ID_LINE = /^[0-9a-f]{12,128}$/;

function json(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

type Conf = Record<string, unknown>;
const isObj = (v: unknown): v is Conf => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown) => (typeof v === 'string' ? v : undefined);

/** host-local's ranges in one ipam block: `ranges` (sets of ranges) or the older single `subnet`. */
function ipamRanges(ipam: Conf): IpRange[] {
  const one = (r: unknown): IpRange | null => (isObj(r) && typeof r.subnet === 'string' ? { subnet: r.subnet, rangeStart: str(r.rangeStart), rangeEnd: str(r.rangeEnd), gateway: str(r.gateway) } : null);
  if (Array.isArray(ipam.ranges)) return ipam.ranges.flatMap((set) => (Array.isArray(set) ? set.map(one).filter((r): r is IpRange => r !== null) : []));
  const single = one(ipam);
  return single ? [single] : [];
}

/** 10.244.0.1/24 -> 10.244.0.0/24 (flannel's FLANNEL_SUBNET is the gateway's address). */
function maskedV4(cidr: string): string | null {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(cidr.trim());
  if (!m || Number(m[5]) > 32) return null;
  const bits = Number(m[5]);
  const n = ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
  const masked = bits === 0 ? 0 : (n & (~0 << (32 - bits))) >>> 0;
  return `${masked >>> 24}.${(masked >>> 16) & 255}.${(masked >>> 8) & 255}.${masked & 255}/${bits}`;
}

/**
 * host-local ranges per network from the node's CNI configs: a plugin (or flannel's
 * delegate) whose ipam is host-local. flannel's own entry builds its host-local range from
 * subnet.env's FLANNEL_SUBNET, so that is its range. A host-local with its own dataDir keeps
 * its files elsewhere: named in `elsewhere`, not collected.
 */
export function hostLocalRanges(configs: Array<{ file: string; text: string }>, subnetEnv: string | null): { ranges: Record<string, IpRange[]>; elsewhere: string[] } {
  const ranges: Record<string, IpRange[]> = {};
  const elsewhere: string[] = [];
  const env = Object.fromEntries((subnetEnv ?? '').split('\n').map((l) => /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(l.trim())).filter((m): m is RegExpExecArray => !!m).map((m) => [m[1], m[2]]));
  for (const c of configs) {
    const doc = json(c.text);
    if (!isObj(doc) || typeof doc.name !== 'string' || !NETWORK_NAME.test(doc.name)) continue;
    const name = doc.name;
    const plugins = Array.isArray(doc.plugins) ? doc.plugins.filter(isObj) : [doc];
    for (const p of plugins) {
      const ipam = isObj(p.ipam) ? p.ipam : p.type === 'flannel' && isObj(p.delegate) && isObj(p.delegate.ipam) ? p.delegate.ipam : undefined;
      if (ipam && ipam.type === 'host-local') {
        if (typeof ipam.dataDir === 'string' && ipam.dataDir.replace(/\/+$/, '') !== CNI_NETWORKS_DIR) elsewhere.push(`${c.file}: host-local keeps ${name}'s files in ${ipam.dataDir}, not collected`);
        else (ranges[name] ??= []).push(...ipamRanges(ipam));
      } else if (!ipam && p.type === 'flannel' && env.FLANNEL_SUBNET) {
        const subnet = maskedV4(env.FLANNEL_SUBNET);
        if (subnet) (ranges[name] ??= []).push({ subnet });
      }
    }
  }
  return { ranges, elsewhere };
}

/** Turns the listing script's output into the decision's input; anything odd is a problem, not an exception. */
export function parseListing(stdout: string, marker: string): NodeIpamListing | { error: string } {
  const sections = parseSections(stdout, marker, IPAM_LIST_SECTIONS);
  const problems: string[] = [];
  const nowSec = sections.now;
  if (!nowSec || nowSec.exitCode !== 0 || !/^\d+$/.test(nowSec.text.trim())) return { error: `no clock reading in the node's answer (got ${JSON.stringify(stdout.slice(0, 80))}); did the script run?` };
  const filesSec = sections.files;
  if (!filesSec) return { error: 'the listing of /var/lib/cni/networks was cut short' };
  if (filesSec.exitCode !== 0) return { error: `listing /var/lib/cni/networks failed: ${filesSec.text.trim().slice(0, 200)}` };

  const networks: string[] = [];
  const entries: HostLocalEntry[] = [];
  const byPath = new Map<string, HostLocalEntry>();
  const PATH = /^\/var\/lib\/cni\/networks\/([A-Za-z0-9][A-Za-z0-9_.-]*)\/([0-9a-fA-F.:]+)$/;
  const field = (v: string | undefined) => (v === undefined || v === '' || v === '!' ? null : v);
  for (const line of filesSec.text.split('\n')) {
    if (line === '') continue;
    const f = line.split('\t');
    const net = f[1] ?? '';
    switch (f[0]) {
      case 'net':
        if (NETWORK_NAME.test(net)) networks.push(net);
        continue;
      case 'oddnet':
        problems.push(`${CNI_NETWORKS_DIR}/${unhex(net)} is not a network directory host-local would make: not read`);
        continue;
      case 'lock':
        entries.push({ network: net, name: 'lock', kind: 'lock', containerId: null, ifname: null, lines: 0, mtime: null });
        continue;
      case 'last':
        entries.push({ network: net, name: f[2], kind: 'last-reserved', containerId: null, ifname: null, lines: 0, mtime: null });
        continue;
      case 'other':
        entries.push({ network: net, name: unhex(f[2] ?? ''), kind: 'other', containerId: null, ifname: null, lines: 0, mtime: null, note: f[3] === 'name' ? 'its name is not an address' : (f[3] ?? 'unknown') });
        continue;
      case 'stat':
      case 'content': {
        const path = f[0] === 'stat' ? f[2] : f[1];
        const m = PATH.exec(path ?? '');
        if (!m) {
          problems.push(`unexpected line in the listing: ${JSON.stringify(line.slice(0, 120))}`);
          continue;
        }
        let e = byPath.get(path);
        if (!e) {
          e = { network: m[1], name: m[2], kind: 'reservation', containerId: null, ifname: null, lines: 0, mtime: null };
          byPath.set(path, e);
          entries.push(e);
        }
        if (f[0] === 'stat') e.mtime = /^\d+$/.test(f[1]) ? Number(f[1]) : null;
        else {
          e.containerId = field(f[2]);
          e.ifname = field(f[3]);
          e.lines = /^\d+$/.test(f[4] ?? '') ? Number(f[4]) : 0;
        }
        continue;
      }
      default:
        problems.push(`unexpected line in the listing: ${JSON.stringify(line.slice(0, 120))}`);
    }
  }
  // stat saw nothing: the file went between the directory read and stat (host-local's DEL).
  for (const e of byPath.values()) if (e.mtime === null && e.lines === 0) e.note = 'vanished';

  const ids = (key: 'sandboxes' | 'containers'): string[] | null => {
    const s = sections[key];
    if (!s || s.exitCode !== 0) {
      problems.push(`${IPAM_LIST_SECTIONS[key]}: ${s ? s.text.trim().slice(0, 200) || `exit ${s.exitCode}` : 'no output (the script was cut short)'}`);
      return null;
    }
    const lines = s.text.split('\n').map((l) => l.trim()).filter(Boolean);
    const odd = lines.filter((l) => !ID_LINE.test(l));
    // An answer that is not a list of ids is no answer: nothing could be told live from it.
    if (odd.length) {
      problems.push(`${IPAM_LIST_SECTIONS[key]} printed ${JSON.stringify(odd[0].slice(0, 80))}, not an id`);
      return null;
    }
    return lines;
  };
  const sandboxes = ids('sandboxes');
  const containers = ids('containers');

  const conf = sections.cniConf?.exitCode === 0 ? dumpedFiles(sections.cniConf.text, marker) : [];
  const env = sections.subnetEnv?.exitCode === 0 ? sections.subnetEnv.text : null;
  const { ranges, elsewhere } = hostLocalRanges(conf, env);
  problems.push(...elsewhere);
  const quarantine = parseQuarantineRuns(sections.quarantine, problems);
  return { now: Number(nowSec.text.trim()), networks, entries, sandboxes, containers, ranges, problems, quarantine };
}

/** The listing's quarantine section: one entry per run directory whose name is a run tag. */
function parseQuarantineRuns(sec: { exitCode: number; text: string } | undefined, problems: string[]): QuarantineRun[] | null {
  if (!sec || sec.exitCode !== 0) {
    problems.push(`${QUARANTINE_DIR}: ${sec ? sec.text.trim().slice(0, 200) || `exit ${sec.exitCode}` : 'not listed (the script was cut short)'}`);
    return null;
  }
  const runs = new Map<string, QuarantineRun>();
  let odd = 0;
  for (const line of sec.text.split('\n')) {
    if (line === '') continue;
    const f = line.split('\t');
    if (f[0] === 'qodd' && f.length === 1) odd++;
    else if (f[0] === 'qdir' && f.length === 3 && /^\d+$/.test(f[2])) {
      const [tag, net, extra] = f[1].split('/');
      if (!RUN_TAG.test(tag) || extra !== undefined || (net !== undefined && !NETWORK_NAME.test(net))) odd += net === undefined ? 1 : 0;
      else {
        const r = runs.get(tag) ?? { runTag: tag, mtime: 0, files: 0 };
        r.mtime = Math.max(r.mtime, Number(f[2]));
        runs.set(tag, r);
      }
    } else if (f[0] === 'qfiles' && f.length === 3 && /^\d+$/.test(f[2])) {
      const r = runs.get(f[1]);
      if (r) r.files = Number(f[2]);
    } else problems.push(`unexpected line in the quarantine listing: ${JSON.stringify(line.slice(0, 120))}`);
  }
  if (odd) problems.push(`${odd} entr${odd === 1 ? 'y' : 'ies'} in ${QUARANTINE_DIR} that are not a run's directory: left alone`);
  return [...runs.values()].sort((a, b) => a.runTag.localeCompare(b.runTag));
}

// ---------------------------------------------------------------------------------------
// The release

/**
 * $1 network, $2 run tag, $3 pause directory or "-", then (address, container id, mtime)
 * per candidate. Prints `locked <net>` once the lock is held, one line per candidate, and
 * `done` last:
 *   released <ip> <id>        moved into the quarantine now
 *   already <ip> <id>         moved by an earlier run with this tag (it is in the quarantine)
 *   gone <ip> <id>            no such file any more, not in the quarantine (host-local's DEL)
 *   kept <ip> <id> <reason>   live | other-container | changed | not-a-regular-file | quarantine-occupied
 *   failed <ip> <id>          the move did not happen (stderr says why)
 *
 * The pause directory is for tests of the race: with one, the script writes a line into
 * <dir>/reached (a FIFO: the write waits for the test to read) once it holds the lock, and
 * reads <dir>/resume (a FIFO: the read waits for the test to write) before it lists the
 * sandboxes again. No sleeps: each side waits for the other's action.
 */
export const RELEASE_SCRIPT = [
  'set -u',
  'umask 077',
  'net=$1; run=$2; pause=$3; shift 3',
  'bad() { echo "ipam-gc release: $1" >&2; exit 2; }',
  'case "$net" in [A-Za-z0-9]*) ;; *) bad "bad network name" ;; esac',
  'case "$net" in *[!A-Za-z0-9_.-]*) bad "bad network name" ;; esac',
  'case "$run" in [A-Za-z0-9]*) ;; *) bad "bad run tag" ;; esac',
  'case "$run" in *[!A-Za-z0-9-]*) bad "bad run tag" ;; esac',
  'if [ "$pause" != - ]; then',
  '  case "$pause" in /*) ;; *) bad "the pause directory must be absolute" ;; esac',
  '  case "$pause" in *[!A-Za-z0-9_./-]*|*..*) bad "bad pause directory" ;; esac',
  '  [ -p "$pause/reached" ] && [ -p "$pause/resume" ] || bad "the pause directory needs the FIFOs reached and resume"',
  'fi',
  '[ $(($# % 3)) -eq 0 ] || bad "candidates come as address, container id, mtime"',
  `d=${CNI_NETWORKS_DIR}/$net`,
  `q=${QUARANTINE_DIR}/$run/$net`,
  'if [ -L "$d" ] || [ ! -d "$d" ]; then echo "$d is not a directory" >&2; exit 3; fi',
  'if [ -L "$d/lock" ] || [ ! -f "$d/lock" ]; then echo "$d/lock is missing: not a directory host-local made" >&2; exit 3; fi',
  't=$(mktemp -d /tmp/kubemend-ipam-gc.XXXXXX) || exit 1',
  "trap 'rm -rf \"$t\"' EXIT",
  ': > "$t/candidates"',
  'paths=',
  'while [ $# -gt 0 ]; do',
  '  case "$1" in ""|*[!0-9a-fA-F.:]*) bad "bad address" ;; esac',
  '  case "$2" in ""|*[!0-9a-f]*) bad "bad container id" ;; esac',
  '  case "$3" in ""|*[!0-9]*) bad "bad mtime" ;; esac',
  '  printf "%s %s %s\\n" "$1" "$2" "$3" >> "$t/candidates"',
  '  paths="$paths $d/$1 $q/$1"',
  '  shift 3',
  'done',
  // host-local's lock: the same file, the same flock(2). Held until the script exits.
  'exec 9< "$d/lock" || exit 3',
  `flock -w ${LOCK_WAIT_S} 9 || { echo "$d/lock: not taken within ${LOCK_WAIT_S} s" >&2; exit 4; }`,
  'printf "locked %s\\n" "$net"',
  'if [ "$pause" != - ]; then printf "locked\\n" > "$pause/reached"; read -r _ < "$pause/resume"; fi',
  // The sandboxes again, inside the lock. fd 9 is not passed on: a stuck crictl must not hold the lock.
  `if ! timeout ${RUNTIME_WAIT_S} crictl pods -q > "$t/live" 2> "$t/err" 9<&- || ! timeout ${RUNTIME_WAIT_S} crictl ps -a -q >> "$t/live" 2>> "$t/err" 9<&-; then`,
  '  echo "the container runtime could not be asked, nothing released: $(head -c 300 "$t/err")" >&2; exit 5',
  'fi',
  'set -f',
  'stat --printf "%Y\\t%F\\t%n\\n" -- $paths > "$t/stat" 2>/dev/null',
  'set +f',
  // Every candidate decided in one pass: ids the runtime lists (full, or 12+ characters either way), then stat's answers.
  `LC_ALL=C awk -v d="$d" -v q="$q" '
function first(path,   line, r) { r = (getline line < path); close(path); if (r <= 0) return ""; sub(/\\r$/, "", line); return line }
function live(id,   k, n, i, l) {
  if (id in exact) return 1
  k = substr(id, 1, 12); n = split(head[k], l, " ")
  for (i = 1; i <= n; i++) if (index(l[i], id) == 1 || index(id, l[i]) == 1) return 1
  return 0
}
FILENAME == ARGV[1] { if ($1 != "") { exact[$1] = 1; if (length($1) >= 12) head[substr($1, 1, 12)] = head[substr($1, 1, 12)] " " $1 }; next }
FILENAME == ARGV[2] { split($0, f, "\\t"); mt[f[3]] = f[1]; ty[f[3]] = f[2]; next }
{
  ip = $1; id = $2; p = d "/" ip; qp = q "/" ip
  if (!(p in ty)) { print ((qp in ty) && first(qp) == id ? "already" : "gone"), ip, id; next }
  if (ty[p] != "regular file") { print "kept", ip, id, "not-a-regular-file"; next }
  if (first(p) != id) { print "kept", ip, id, "other-container"; next }
  if (mt[p] != $3) { print "kept", ip, id, "changed"; next }
  if (live(id)) { print "kept", ip, id, "live"; next }
  if (qp in ty) { print "kept", ip, id, "quarantine-occupied"; next }
  print "release", ip, id
}' "$t/live" "$t/stat" "$t/candidates" > "$t/decided" || { echo "deciding failed" >&2; exit 1; }`,
  'set --',
  'while read -r v ip id why; do [ "$v" = release ] && set -- "$@" "$d/$ip"; done < "$t/decided"',
  'if [ $# -gt 0 ]; then mkdir -p -- "$q" && mv -- "$@" "$q/"; fi',
  'while read -r v ip id why; do',
  '  if [ "$v" = release ]; then',
  '    if [ -e "$q/$ip" ] && [ ! -e "$d/$ip" ]; then v=released; else v=failed; fi',
  '  fi',
  '  printf "%s %s %s%s\\n" "$v" "$ip" "$id" "${why:+ $why}"',
  'done < "$t/decided"',
  'printf "done\\n"',
].join('\n');

export interface ReleaseInput {
  network: string;
  runTag: string;
  candidates: ReleaseCandidate[];
  /** Tests only: a directory holding the FIFOs `reached` and `resume` (see RELEASE_SCRIPT). */
  pauseDir?: string;
}

const PAUSE_DIR = /^\/[A-Za-z0-9_./-]{1,200}$/;

function checkNetworkAndTag(network: string, runTag: string): void {
  if (!NETWORK_NAME.test(network)) throw new Error(`not a CNI network name: ${JSON.stringify(network)}`);
  if (!RUN_TAG.test(runTag)) throw new Error(`not a run tag: ${JSON.stringify(runTag)}`);
}

function checkAddress(ip: string): void {
  if (!isAddressName(ip)) throw new Error(`not an address as host-local names its files: ${JSON.stringify(ip)}`);
}

export function releaseArgv(input: ReleaseInput): string[] {
  checkNetworkAndTag(input.network, input.runTag);
  if (input.pauseDir !== undefined && (!PAUSE_DIR.test(input.pauseDir) || input.pauseDir.includes('..'))) throw new Error(`not a pause directory: ${JSON.stringify(input.pauseDir)}`);
  if (input.candidates.length > RELEASE_BATCH) throw new Error(`${input.candidates.length} candidates in one release; at most ${RELEASE_BATCH} per exec`);
  const seen = new Set<string>();
  const args: string[] = [];
  for (const c of input.candidates) {
    checkAddress(c.ip);
    if (seen.has(c.ip)) throw new Error(`${c.ip} is a candidate twice`);
    seen.add(c.ip);
    if (!CONTAINER_ID.test(c.containerId)) throw new Error(`not a container id: ${JSON.stringify(c.containerId)}`);
    if (!Number.isSafeInteger(c.mtime) || c.mtime < 0) throw new Error(`not an mtime: ${JSON.stringify(c.mtime)}`);
    args.push(c.ip, c.containerId, String(c.mtime));
  }
  return ['sh', '-c', RELEASE_SCRIPT, 'kubemend-ipam-release', input.network, input.runTag, input.pauseDir ?? '-', ...args];
}

export const KEPT_REASONS = ['live', 'other-container', 'changed', 'not-a-regular-file', 'quarantine-occupied'] as const;
export type KeptReason = (typeof KEPT_REASONS)[number];

export type ReleaseOutcome =
  | { ip: string; containerId: string; result: 'released' | 'already' | 'gone' | 'failed' }
  | { ip: string; containerId: string; result: 'kept'; reason: KeptReason };

export interface ReleaseReport {
  network: string;
  outcomes: ReleaseOutcome[];
  /** The script printed `done`: every candidate has its line. */
  complete: boolean;
  problems: string[];
}

/**
 * The release script's lines. With the candidates it was given, a candidate without a line,
 * or a line for an address it was not given, is a problem and the report is not complete.
 */
export function parseRelease(stdout: string, network: string, candidates?: readonly ReleaseCandidate[]): ReleaseReport {
  const outcomes: ReleaseOutcome[] = [];
  const problems: string[] = [];
  let done = false;
  let locked = false;
  for (const line of stdout.split('\n')) {
    if (line === '') continue;
    if (line === `locked ${network}`) {
      locked = true;
      continue;
    }
    if (line === 'done') {
      done = true;
      continue;
    }
    const f = line.split(' ');
    const [result, ip, containerId, reason] = f;
    const wellFormed = isAddressName(ip ?? '') && CONTAINER_ID.test(containerId ?? '');
    if (wellFormed && f.length === 3 && (result === 'released' || result === 'already' || result === 'gone' || result === 'failed')) outcomes.push({ ip, containerId, result });
    else if (wellFormed && f.length === 4 && result === 'kept' && (KEPT_REASONS as readonly string[]).includes(reason)) outcomes.push({ ip, containerId, result, reason: reason as KeptReason });
    else problems.push(`unexpected line from the release: ${JSON.stringify(line.slice(0, 160))}`);
  }
  if (!locked) problems.push(`the release never said it held ${network}'s lock`);
  if (candidates) {
    const given = new Map(candidates.map((c) => [c.ip, c.containerId]));
    for (const o of outcomes) if (given.get(o.ip) !== o.containerId) problems.push(`the release answered for ${o.ip} ${o.containerId}, which it was not given`);
    const answered = new Set(outcomes.map((o) => o.ip));
    const missing = candidates.filter((c) => !answered.has(c.ip));
    if (missing.length) problems.push(`no answer for ${missing.length} candidate(s), e.g. ${missing[0].ip}`);
  }
  return { network, outcomes, complete: done && locked && problems.length === 0, problems };
}

// ---------------------------------------------------------------------------------------
// The restore

/**
 * $1 network, $2 run tag, then the addresses to restore (none: everything this run
 * quarantined for the network). Under host-local's lock, per address one line, `done` last:
 *   restored <ip> <id>            back in the network directory, as it was
 *   refused <ip> <id> <holder>    the address has a file again (<holder>: its container id, or "?")
 *   missing <ip>                  not in this run's quarantine (never released, or restored already)
 *   failed <ip> <id>              the move did not happen (stderr says why)
 */
export const RESTORE_SCRIPT = [
  'set -u',
  'net=$1; run=$2; shift 2',
  'bad() { echo "ipam-gc restore: $1" >&2; exit 2; }',
  'case "$net" in [A-Za-z0-9]*) ;; *) bad "bad network name" ;; esac',
  'case "$net" in *[!A-Za-z0-9_.-]*) bad "bad network name" ;; esac',
  'case "$run" in [A-Za-z0-9]*) ;; *) bad "bad run tag" ;; esac',
  'case "$run" in *[!A-Za-z0-9-]*) bad "bad run tag" ;; esac',
  'for ip; do case "$ip" in ""|*[!0-9a-fA-F.:]*) bad "bad address" ;; esac; done',
  `d=${CNI_NETWORKS_DIR}/$net`,
  `q=${QUARANTINE_DIR}/$run/$net`,
  'if [ -L "$d" ] || [ ! -d "$d" ]; then echo "$d is not a directory" >&2; exit 3; fi',
  'if [ -L "$d/lock" ] || [ ! -f "$d/lock" ]; then echo "$d/lock is missing: not a directory host-local made" >&2; exit 3; fi',
  'exec 9< "$d/lock" || exit 3',
  `flock -w ${LOCK_WAIT_S} 9 || { echo "$d/lock: not taken within ${LOCK_WAIT_S} s" >&2; exit 4; }`,
  'printf "locked %s\\n" "$net"',
  'if [ $# -eq 0 ]; then',
  '  for f in "$q"/*; do [ -f "$f" ] || continue; b=${f##*/}; case "$b" in *[!0-9a-fA-F.:]*) continue ;; esac; set -- "$@" "$b"; done',
  'fi',
  'cr=$(printf "\\r")',
  // A file's first line, as an id or "?": builtins only.
  'owner() { l=; IFS= read -r l < "$1" || true; l=${l%"$cr"}; case "$l" in ""|*[!0-9a-f]*) l="?" ;; esac; printf %s "$l"; }',
  'for ip; do',
  '  if [ -L "$q/$ip" ] || [ ! -f "$q/$ip" ]; then printf "missing %s\\n" "$ip"; continue; fi',
  '  id=$(owner "$q/$ip")',
  '  if [ -e "$d/$ip" ] || [ -L "$d/$ip" ]; then printf "refused %s %s %s\\n" "$ip" "$id" "$(owner "$d/$ip")"; continue; fi',
  '  if mv -- "$q/$ip" "$d/$ip" 9<&-; then printf "restored %s %s\\n" "$ip" "$id"; else printf "failed %s %s\\n" "$ip" "$id"; fi',
  'done',
  // Empty quarantine directories go: a run whose files are all back leaves nothing behind.
  'rmdir -- "$q" 2>/dev/null && rmdir -- "${q%/*}" 2>/dev/null',
  'printf "done\\n"',
].join('\n');

export function restoreArgv(input: { network: string; runTag: string; ips?: readonly string[] }): string[] {
  checkNetworkAndTag(input.network, input.runTag);
  const ips = input.ips ?? [];
  for (const ip of ips) checkAddress(ip);
  if (ips.length > RELEASE_BATCH) throw new Error(`${ips.length} addresses in one restore; at most ${RELEASE_BATCH} per exec`);
  return ['sh', '-c', RESTORE_SCRIPT, 'kubemend-ipam-restore', input.network, input.runTag, ...ips];
}

/** `?` where the file's first line is not a container id. */
type Id = string;
export type RestoreOutcome =
  | { ip: string; result: 'restored' | 'failed'; containerId: Id }
  | { ip: string; result: 'refused'; containerId: Id; holder: Id }
  | { ip: string; result: 'missing' };

export interface RestoreReport {
  network: string;
  outcomes: RestoreOutcome[];
  complete: boolean;
  problems: string[];
}

export function parseRestore(stdout: string, network: string, ips?: readonly string[]): RestoreReport {
  const outcomes: RestoreOutcome[] = [];
  const problems: string[] = [];
  let done = false;
  let locked = false;
  const id = (v: string | undefined) => v !== undefined && (v === '?' || CONTAINER_ID.test(v));
  for (const line of stdout.split('\n')) {
    if (line === '') continue;
    if (line === `locked ${network}`) {
      locked = true;
      continue;
    }
    if (line === 'done') {
      done = true;
      continue;
    }
    const f = line.split(' ');
    const [result, ip] = f;
    if (!isAddressName(ip ?? '')) problems.push(`unexpected line from the restore: ${JSON.stringify(line.slice(0, 160))}`);
    else if (f.length === 2 && result === 'missing') outcomes.push({ ip, result });
    else if (f.length === 3 && (result === 'restored' || result === 'failed') && id(f[2])) outcomes.push({ ip, result, containerId: f[2] });
    else if (f.length === 4 && result === 'refused' && id(f[2]) && id(f[3])) outcomes.push({ ip, result, containerId: f[2], holder: f[3] });
    else problems.push(`unexpected line from the restore: ${JSON.stringify(line.slice(0, 160))}`);
  }
  if (!locked) problems.push(`the restore never said it held ${network}'s lock`);
  if (ips?.length) {
    const answered = new Set(outcomes.map((o) => o.ip));
    const missing = ips.filter((ip) => !answered.has(ip));
    if (missing.length) problems.push(`no answer for ${missing.length} address(es), e.g. ${missing[0]}`);
  }
  return { network, outcomes, complete: done && locked && problems.length === 0, problems };
}

// ---------------------------------------------------------------------------------------
// The quarantine of a run (for restore)

/**
 * $1 run tag. Read-only: one line per network directory in the run's quarantine,
 * `net <name> <files>`, then `done`. Nothing (but `done`) when the run quarantined nothing
 * on this node, or everything is back already.
 */
export const QUARANTINE_LIST_SCRIPT = [
  'set -u',
  'run=$1',
  'case "$run" in [A-Za-z0-9]*) ;; *) echo "ipam-gc quarantine: bad run tag" >&2; exit 2 ;; esac',
  'case "$run" in *[!A-Za-z0-9-]*) echo "ipam-gc quarantine: bad run tag" >&2; exit 2 ;; esac',
  `q=${QUARANTINE_DIR}/$run`,
  'for d in "$q"/*; do',
  '  [ -d "$d" ] && [ ! -L "$d" ] || continue',
  '  n=${d##*/}',
  '  case "$n" in [A-Za-z0-9]*) ;; *) continue ;; esac',
  '  case "$n" in *[!A-Za-z0-9_.-]*) continue ;; esac',
  '  c=0; for f in "$d"/*; do [ -f "$f" ] && c=$((c + 1)); done',
  '  printf "net %s %d\\n" "$n" "$c"',
  'done',
  'printf "done\\n"',
].join('\n');

export function quarantineListArgv(runTag: string): string[] {
  if (!RUN_TAG.test(runTag)) throw new Error(`not a run tag: ${JSON.stringify(runTag)}`);
  return ['sh', '-c', QUARANTINE_LIST_SCRIPT, 'kubemend-ipam-quarantine', runTag];
}

export function parseQuarantineList(stdout: string): { networks: Array<{ network: string; files: number }> } | { error: string } {
  const networks: Array<{ network: string; files: number }> = [];
  let done = false;
  for (const line of stdout.split('\n')) {
    if (line === '') continue;
    if (line === 'done') {
      done = true;
      continue;
    }
    const m = /^net (\S+) (\d+)$/.exec(line);
    if (!m || !NETWORK_NAME.test(m[1])) return { error: `unexpected line from the quarantine listing: ${JSON.stringify(line.slice(0, 160))}` };
    networks.push({ network: m[1], files: Number(m[2]) });
  }
  return done ? { networks } : { error: 'the quarantine listing was cut short' };
}

// ---------------------------------------------------------------------------------------
// The retention purge

/**
 * $1 retention in seconds, then (run tag, mtime as listed) per run. Deletes a run's
 * quarantine directory only if it is still a directory (not a symlink) under QUARANTINE_DIR,
 * its newest mtime is still the one listed (no release or restore since), and it is at least
 * the retention old on the node's clock now. Prints one line per run, then `done`:
 *   purged <tag> <files>   deleted, with the number of files it held
 *   gone <tag>             no such directory (an earlier attempt deleted it)
 *   kept <tag> <reason>    changed | young | odd
 *   failed <tag>           rm failed (stderr says why)
 * Never follows a symlink (rm -r does not), never leaves the quarantine's filesystem.
 */
export const PURGE_SCRIPT = [
  'set -u',
  `q=${QUARANTINE_DIR}`,
  'bad() { echo "$1" >&2; exit 2; }',
  'ret=$1; shift',
  'case "$ret" in ""|*[!0-9]*) bad "bad retention" ;; esac',
  '[ -L "$q" ] && bad "$q is a symlink"',
  'now=$(date +%s)',
  'while [ $# -ge 2 ]; do',
  '  tag=$1; seen=$2; shift 2',
  '  case "$tag" in ""|-*|*[!A-Za-z0-9-]*) bad "bad run tag" ;; esac',
  '  case "$seen" in ""|*[!0-9]*) bad "bad mtime" ;; esac',
  '  d=$q/$tag',
  '  if [ ! -e "$d" ] && [ ! -L "$d" ]; then printf "gone\\t%s\\n" "$tag"; continue; fi',
  '  if [ -L "$d" ] || [ ! -d "$d" ]; then printf "kept\\t%s\\todd\\n" "$tag"; continue; fi',
  '  m=$(find "$d" -maxdepth 1 -type d -printf "%Ts\\n" | sort -n | tail -n 1)',
  '  if [ "$m" != "$seen" ]; then printf "kept\\t%s\\tchanged\\n" "$tag"; continue; fi',
  '  if [ $((now - m)) -lt "$ret" ]; then printf "kept\\t%s\\tyoung\\n" "$tag"; continue; fi',
  '  n=$(find "$d" -mindepth 2 -maxdepth 2 -type f | wc -l)',
  '  if rm -rf --one-file-system -- "$d"; then printf "purged\\t%s\\t%s\\n" "$tag" "$n"; else printf "failed\\t%s\\n" "$tag"; fi',
  'done',
  '[ $# -eq 0 ] || bad "odd arguments"',
  'echo done',
].join('\n');

export function purgeArgv(retentionS: number, runs: ReadonlyArray<Pick<QuarantineRun, 'runTag' | 'mtime'>>): string[] {
  if (!Number.isSafeInteger(retentionS) || retentionS < 0) throw new Error(`not a retention: ${retentionS}`);
  for (const r of runs) if (!RUN_TAG.test(r.runTag) || !Number.isSafeInteger(r.mtime) || r.mtime < 0) throw new Error(`not a quarantined run: ${JSON.stringify(r)}`);
  return ['sh', '-c', PURGE_SCRIPT, 'kubemend-ipam-purge', String(retentionS), ...runs.flatMap((r) => [r.runTag, String(r.mtime)])];
}

export type PurgeOutcome = { runTag: string; result: 'purged'; files: number } | { runTag: string; result: 'gone' | 'failed' } | { runTag: string; result: 'kept'; reason: 'changed' | 'young' | 'odd' };

export function parsePurge(stdout: string, runs: ReadonlyArray<Pick<QuarantineRun, 'runTag'>>): { outcomes: PurgeOutcome[]; complete: boolean; problems: string[] } {
  const asked = new Set(runs.map((r) => r.runTag));
  const outcomes: PurgeOutcome[] = [];
  const problems: string[] = [];
  let complete = false;
  for (const line of stdout.split('\n')) {
    if (line === '') continue;
    if (line === 'done') {
      complete = true;
      continue;
    }
    const f = line.split('\t');
    if (!asked.has(f[1] ?? '')) problems.push(`unexpected line: ${JSON.stringify(line.slice(0, 120))}`);
    else if (f[0] === 'purged' && /^\d+$/.test(f[2] ?? '') && f.length === 3) outcomes.push({ runTag: f[1], result: 'purged', files: Number(f[2]) });
    else if ((f[0] === 'gone' || f[0] === 'failed') && f.length === 2) outcomes.push({ runTag: f[1], result: f[0] });
    else if (f[0] === 'kept' && (f[2] === 'changed' || f[2] === 'young' || f[2] === 'odd') && f.length === 3) outcomes.push({ runTag: f[1], result: 'kept', reason: f[2] });
    else problems.push(`unexpected line: ${JSON.stringify(line.slice(0, 120))}`);
  }
  const answered = new Set(outcomes.map((o) => o.runTag));
  const missing = runs.filter((r) => !answered.has(r.runTag));
  if (missing.length) problems.push(`no answer for ${missing.map((r) => r.runTag).join(', ')}`);
  return { outcomes, complete: complete && missing.length === 0 && problems.length === 0, problems };
}
