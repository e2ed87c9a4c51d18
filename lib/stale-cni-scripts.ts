/**
 * stale-cni's node command (seed 003, light level): the verify-then-act delete of a stale CNI
 * device, as a constant script with its argument validator and output parser. The variable
 * parts (the device, the addresses the plan named) are arguments ("$1", "$2"...), validated
 * here and quoted by lib/shell.ts: never pasted into the script.
 */
import { fullBackupDir, isCniConfigPath, isIpv4Cidr, isNetworkName, type DeleteState, STALE_DEVICES, type StaleDevice } from './stale-cni';

/**
 * Deletes the device $1 only if its IPv4 addresses are exactly $2... (the stale ones the plan
 * named), re-read in the same command. Prints one line:
 *  - `gone`: no such device (deleted already: done);
 *  - `deleted <addr> ...`: it carried exactly those and is deleted;
 *  - `differs <addr> ...`: it carries something else (possibly nothing): left as it is.
 * Exit 2: `ip` failed to read the device (its words on stderr); 3: the delete failed.
 */
export const DELETE_STALE_DEVICE_SCRIPT = [
  'set -u',
  'dev=$1; shift',
  'command -v ip >/dev/null 2>&1 || { echo "ip (iproute2) is not on the PATH" >&2; exit 2; }',
  'out=$(ip -o link show dev "$dev" 2>&1); rc=$?',
  'if [ $rc -ne 0 ]; then case "$out" in *"does not exist"*) echo gone; exit 0 ;; *) printf "%s\\n" "$out" >&2; exit 2 ;; esac; fi',
  'addrs=$(ip -4 -o addr show dev "$dev") || exit 2',
  'have=$(printf "%s\\n" "$addrs" | awk \'$3 == "inet" { print $4 }\' | sort | tr "\\n" " ")',
  'want=$(printf "%s\\n" "$@" | sort | tr "\\n" " ")',
  'if [ "$have" != "$want" ]; then printf "differs %s\\n" "$have"; exit 0; fi',
  'ip link delete "$dev" || exit 3',
  'printf "deleted %s\\n" "$have"',
].join('\n');

export const DELETE_READ_FAILED = 2;
export const DELETE_FAILED = 3;

/** At most this many addresses on one device (a bridge with more is not a CNI's leftover). */
const MAX_ADDRESSES = 32;

export function deleteStaleDeviceArgv(dev: string, stale: readonly string[]): string[] {
  if (!(STALE_DEVICES as readonly string[]).includes(dev)) throw new Error(`not a device stale-cni deletes: ${JSON.stringify(dev)}`);
  if (stale.length === 0 || stale.length > MAX_ADDRESSES) throw new Error(`name 1 to ${MAX_ADDRESSES} stale addresses, got ${stale.length}`);
  for (const a of stale) if (!isIpv4Cidr(a)) throw new Error(`not an IPv4 address with its prefix length: ${JSON.stringify(a)}`);
  return ['sh', '-c', DELETE_STALE_DEVICE_SCRIPT, 'kubemend-stale-cni-delete', dev, ...stale];
}

export const isStaleDevice = (dev: string): dev is StaleDevice => (STALE_DEVICES as readonly string[]).includes(dev);

/** The script's one line, or what was wrong with it. */
export function parseDeleteOutput(stdout: string): DeleteState | { problem: string } {
  const text = stdout.replace(/\n$/, '');
  if (text === 'gone') return { state: 'gone' };
  const m = /^(deleted|differs) ?((?:\S+ ?)*)$/.exec(text);
  if (!m || text.includes('\n')) return { problem: `unexpected output: ${JSON.stringify(stdout.slice(0, 200))}` };
  const addresses = m[2].split(' ').filter(Boolean);
  const bad = addresses.filter((a) => !isIpv4Cidr(a));
  if (bad.length) return { problem: `unexpected address ${JSON.stringify(bad[0].slice(0, 60))} in ${JSON.stringify(stdout.slice(0, 200))}` };
  if (m[1] === 'deleted' && addresses.length === 0) return { problem: 'deleted, naming no address' };
  return { state: m[1] as 'deleted' | 'differs', addresses };
}

// ---- The full level: backup, kubeadm reset, CNI leftovers ----

/** A run tag as the runbook makes it (the run ID with anything but letters, digits and '-' replaced): safe in a path. */
const RUN_TAG = /^[A-Za-z0-9-]{1,200}$/;

function backupDirOf(runTag: string): string {
  if (!RUN_TAG.test(runTag)) throw new Error(`not a run tag: ${JSON.stringify(runTag.slice(0, 100))}`);
  return fullBackupDir(runTag);
}

/**
 * Copies what `kubeadm reset` deletes, and what the node's network looked like, into $1 once:
 * built in $1.partial (a half-made one from a killed attempt is made again), renamed into
 * place whole. /etc/kubernetes, the kubelet's kubeadm-flags.env, config.yaml,
 * instance-config.yaml (kubeadm 1.34 keeps the CRI endpoint there) and pki,
 * /etc/cni/net.d, `ip -o addr` and `ip route show table all`. Mode 0700: it holds the node's
 * credentials. Prints `made` or `already`, then the backup's kubeadm-flags.env after a
 * `--- kubeadm-flags.env` line. Exit 3: a copy failed (stderr says which).
 */
export const BACKUP_SCRIPT = [
  'set -u',
  'd=$1; p="$1.partial"',
  'if [ -e "$d/complete" ]; then echo already; else',
  '  rm -rf "$p" && mkdir -p "$p" && chmod 700 "$p" || exit 3',
  '  if [ -d /etc/kubernetes ]; then cp -a /etc/kubernetes "$p/etc-kubernetes" || exit 3; fi',
  '  mkdir "$p/var-lib-kubelet" || exit 3',
  '  for f in kubeadm-flags.env config.yaml instance-config.yaml pki; do if [ -e "/var/lib/kubelet/$f" ]; then cp -a "/var/lib/kubelet/$f" "$p/var-lib-kubelet/" || exit 3; fi; done',
  '  if [ -d /etc/cni/net.d ]; then cp -a /etc/cni/net.d "$p/cni-net.d" || exit 3; fi',
  '  ip -o addr show > "$p/addresses" || exit 3',
  '  ip route show table all > "$p/routes" || exit 3',
  '  date -u +%Y-%m-%dT%H:%M:%SZ > "$p/complete" || exit 3',
  '  rm -rf "$d" && mv "$p" "$d" || exit 3',
  '  echo made',
  'fi',
  'echo "--- kubeadm-flags.env"',
  'cat "$d/var-lib-kubelet/kubeadm-flags.env" 2>/dev/null',
  'exit 0',
].join('\n');
export const BACKUP_FAILED = 3;

export function backupArgv(runTag: string): string[] {
  return ['sh', '-c', BACKUP_SCRIPT, 'kubemend-stale-cni-backup', backupDirOf(runTag)];
}

export function parseBackupOutput(stdout: string): { state: 'made' | 'already'; kubeadmFlags: string } | { problem: string } {
  const m = /^(made|already)\n--- kubeadm-flags\.env\n([\s\S]*)$/.exec(stdout);
  if (!m) return { problem: `unexpected output: ${JSON.stringify(stdout.slice(0, 200))}` };
  return { state: m[1] as 'made' | 'already', kubeadmFlags: m[2] };
}

/**
 * `kubeadm reset -f`, once per run: only with the run's backup complete, and not again once
 * it succeeded (a marker next to its saved output; a retry prints `already` and that output).
 * Prints `reset` or `already`, the reset's finish time on the node's clock (seconds since the
 * epoch: the kubelet's heartbeats after it are the new kubelet's), then kubeadm's output.
 * Exit 4: no complete backup (nothing was run); 5: no kubeadm on the PATH; 6: kubeadm reset
 * failed (its exit code on the first line, `failed <rc>`, then its output).
 */
export const RESET_SCRIPT = [
  'set -u',
  'd=$1',
  '[ -e "$d/complete" ] || { echo "no complete backup in $d: kubemend runs kubeadm reset only on a node it has backed up" >&2; exit 4; }',
  'if [ -e "$d/reset.done" ]; then echo already; cat "$d/reset.done"; cat "$d/reset.out"; exit 0; fi',
  'command -v kubeadm >/dev/null 2>&1 || { echo "kubeadm is not on the PATH" >&2; exit 5; }',
  'kubeadm reset -f > "$d/reset.out" 2>&1; rc=$?',
  'if [ $rc -ne 0 ]; then echo "failed $rc"; cat "$d/reset.out"; exit 6; fi',
  'date +%s > "$d/reset.done.tmp" && mv "$d/reset.done.tmp" "$d/reset.done" || exit 3',
  'echo reset; cat "$d/reset.done"; cat "$d/reset.out"',
].join('\n');
export const RESET_NO_BACKUP = 4;
export const RESET_NO_KUBEADM = 5;
export const RESET_FAILED = 6;

export function resetArgv(runTag: string): string[] {
  return ['sh', '-c', RESET_SCRIPT, 'kubemend-stale-cni-reset', backupDirOf(runTag)];
}

export function parseResetOutput(stdout: string): { state: 'reset' | 'already'; at: number; output: string[] } | { problem: string } {
  const m = /^(reset|already)\n(\d{9,12})\n([\s\S]*)$/.exec(stdout);
  if (!m) return { problem: `unexpected output: ${JSON.stringify(stdout.slice(0, 200))}` };
  return { state: m[1] as 'reset' | 'already', at: Number(m[2]), output: m[3].split('\n').map((l) => l.trimEnd()).filter(Boolean) };
}

/**
 * Moves CNI leftovers into the run's backup ($1): `config:<path in /etc/cni/net.d>` into
 * moved-cni-net.d/, `network:<name>` (host-local's /var/lib/cni/networks/<name>) into
 * moved-cni-networks/. One line per item: `moved <item>` or `gone <item>` (not there: moved
 * before, or removed by someone). A copy left by a killed move across filesystems (both ends
 * present) is made again. Exit 3: a move failed; 4: no complete backup (nothing moved).
 */
export const MOVE_LEFTOVERS_SCRIPT = [
  'set -u',
  'd=$1; shift',
  '[ -e "$d/complete" ] || { echo "no complete backup in $d" >&2; exit 4; }',
  'mkdir -p "$d/moved-cni-net.d" "$d/moved-cni-networks" || exit 3',
  'for item in "$@"; do',
  '  case "$item" in',
  '    config:*) src=${item#config:}; dst="$d/moved-cni-net.d/${src##*/}" ;;',
  '    network:*) src="/var/lib/cni/networks/${item#network:}"; dst="$d/moved-cni-networks/${item#network:}" ;;',
  '    *) echo "not an item: $item" >&2; exit 3 ;;',
  '  esac',
  '  if [ -e "$src" ] || [ -L "$src" ]; then',
  '    rm -rf "$dst" && mv "$src" "$dst" || exit 3',
  '    echo "moved $item"',
  '  else',
  '    echo "gone $item"',
  '  fi',
  'done',
].join('\n');

export function moveLeftoversArgv(runTag: string, configs: readonly string[], networks: readonly string[]): string[] {
  for (const c of configs) if (!isCniConfigPath(c)) throw new Error(`not a CNI config kubemend moves: ${JSON.stringify(c.slice(0, 100))}`);
  for (const n of networks) if (!isNetworkName(n)) throw new Error(`not a CNI network name: ${JSON.stringify(n.slice(0, 100))}`);
  return ['sh', '-c', MOVE_LEFTOVERS_SCRIPT, 'kubemend-stale-cni-move', backupDirOf(runTag), ...configs.map((c) => `config:${c}`), ...networks.map((n) => `network:${n}`)];
}

export function parseMoveOutput(stdout: string, items: number): { moved: string[]; gone: string[] } | { problem: string } {
  const lines = stdout.split('\n').filter(Boolean);
  const moved: string[] = [];
  const gone: string[] = [];
  for (const l of lines) {
    const m = /^(moved|gone) ((?:config|network):\S+)$/.exec(l);
    if (!m) return { problem: `unexpected output: ${JSON.stringify(l.slice(0, 200))}` };
    (m[1] === 'moved' ? moved : gone).push(m[2]);
  }
  if (lines.length !== items) return { problem: `${lines.length} lines for ${items} items` };
  return { moved, gone };
}
