/**
 * stale-cni's node command (seed 003, light level): the verify-then-act delete of a stale CNI
 * device, as a constant script with its argument validator and output parser. The variable
 * parts (the device, the addresses the plan named) are arguments ("$1", "$2"...), validated
 * here and quoted by lib/shell.ts: never pasted into the script.
 */
import { isIpv4Cidr, type DeleteState, STALE_DEVICES, type StaleDevice } from './stale-cni';

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
