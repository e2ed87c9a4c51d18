/**
 * The shell scripts kubemend runs on nodes for the machine-id fix (seed 000). Each is a
 * constant; its only inputs are positional arguments validated here and quoted by
 * lib/shell. Each step checks the node first and does nothing it has already done, so a
 * retried or replayed activity never repeats a destructive action.
 */
import { BACKUP_DIR } from './machine-id';

const MACHINE_ID = /^[0-9a-f]{32}$/;
const BOOT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
/** A run's tag in backup file names: derived from the run ID, letters, digits and '-'. */
const TAG = /^[A-Za-z0-9][A-Za-z0-9-]{0,200}$/;

/** Reads the node's ids, boot id, weave MAC and weave's collision count: key value lines behind a marker. */
export const IDENTITY_SCRIPT = [
  'm=$1',
  'v() { printf "%s %s %s\\n" "$m" "$1" "$2"; }',
  'v machineId "$(cat /etc/machine-id 2>/dev/null | head -c 64)"',
  'v dbusMachineId "$(cat /var/lib/dbus/machine-id 2>/dev/null | head -c 64)"',
  'v bootId "$(cat /proc/sys/kernel/random/boot_id)"',
  'v weaveMac "$(cat /sys/class/net/weave/address 2>/dev/null)"',
  'if command -v weave >/dev/null 2>&1; then v collisions "$(weave status connections 2>/dev/null | grep -c "peer names collision")"; fi',
].join('\n');

export interface NodeIdentityReading {
  machineId: string | null;
  dbusMachineId: string | null;
  bootId: string;
  weaveMac: string | null;
  /** Connections weave refuses for a peer-name collision; null where weave cannot be asked. */
  collisions: number | null;
}

export function identityArgv(marker: string): string[] {
  if (!/^[0-9a-f]{16,64}$/.test(marker)) throw new Error('marker must be 16-64 lowercase hex digits');
  return ['sh', '-c', IDENTITY_SCRIPT, 'kubemend-identity', marker];
}

/** Parses the identity script's output; an id that is not well-formed counts as absent. */
export function parseIdentity(stdout: string, marker: string): NodeIdentityReading | { error: string } {
  const values = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    if (!line.startsWith(`${marker} `)) continue;
    const [, key, ...rest] = line.split(' ');
    values.set(key, rest.join(' ').trim());
  }
  const bootId = values.get('bootId') ?? '';
  if (!BOOT_ID.test(bootId)) return { error: `no boot id in the node's answer (got ${JSON.stringify(bootId.slice(0, 60))}); did the script run?` };
  const id = (k: string) => (MACHINE_ID.test(values.get(k) ?? '') ? values.get(k)! : null);
  const mac = (values.get('weaveMac') ?? '').toLowerCase();
  const collisions = values.get('collisions');
  return { machineId: id('machineId'), dbusMachineId: id('dbusMachineId'), bootId, weaveMac: MAC.test(mac) ? mac : null, collisions: collisions !== undefined && /^\d+$/.test(collisions) ? Number(collisions) : null };
}

/** Exit status of REGENERATE_SCRIPT when the node is not as the plan saw it. */
export const UNEXPECTED_STATE_EXIT = 3;

/**
 * Regenerates the machine-id once per run: $1 the run's tag, $2 the id the plan saw. If the
 * id is already new and this run's backup exists, it was done: prints the id and stops. A
 * node whose id is neither the planned one nor this run's new one is left alone (exit 3).
 * Every regeneration appends a line to regenerated.log.
 */
export const REGENERATE_SCRIPT = [
  'set -eu',
  'tag=$1; old=$2; dir=' + BACKUP_DIR,
  'cur=$(cat /etc/machine-id 2>/dev/null || true)',
  'if [ -n "$cur" ] && [ "$cur" != "$old" ]; then',
  '  if [ -f "$dir/etc-machine-id.$tag" ]; then',
  // Done before, perhaps cut short after systemd-machine-id-setup: finish the dbus copy and the log line.
  '    mkdir -p /var/lib/dbus; cmp -s /etc/machine-id /var/lib/dbus/machine-id || cp /etc/machine-id /var/lib/dbus/machine-id',
  '    grep -q " $tag $old " "$dir/regenerated.log" 2>/dev/null || printf "%s %s %s %s\\n" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$tag" "$old" "$cur" >> "$dir/regenerated.log"',
  '    printf "already %s\\n" "$cur"; exit 0',
  '  fi',
  '  echo "/etc/machine-id is $cur, not $old as planned: changed since the plan" >&2; exit 3',
  'fi',
  'if [ -z "$cur" ] && [ ! -f "$dir/etc-machine-id.$tag" ]; then echo "/etc/machine-id is missing or empty and there is no backup from this run" >&2; exit 3; fi',
  'mkdir -p "$dir"',
  '[ -f "$dir/etc-machine-id.$tag" ] || cp /etc/machine-id "$dir/etc-machine-id.$tag"',
  '[ -f "$dir/dbus-machine-id.$tag" ] || [ ! -e /var/lib/dbus/machine-id ] || cp /var/lib/dbus/machine-id "$dir/dbus-machine-id.$tag"',
  'rm -f /etc/machine-id /var/lib/dbus/machine-id',
  'systemd-machine-id-setup >/dev/null 2>&1',
  'new=$(cat /etc/machine-id)',
  'mkdir -p /var/lib/dbus',
  'cp /etc/machine-id /var/lib/dbus/machine-id',
  'printf "%s %s %s %s\\n" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$tag" "$old" "$new" >> "$dir/regenerated.log"',
  'printf "new %s\\n" "$new"',
].join('\n');

export function regenerateArgv(tag: string, oldId: string): string[] {
  if (!TAG.test(tag)) throw new Error(`bad run tag ${JSON.stringify(tag)}`);
  if (!MACHINE_ID.test(oldId)) throw new Error(`bad machine-id ${JSON.stringify(oldId)}`);
  return ['sh', '-c', REGENERATE_SCRIPT, 'kubemend-machine-id', tag, oldId];
}

export function parseRegenerate(stdout: string): { newId: string; already: boolean } | undefined {
  const m = /^(new|already) ([0-9a-f]{32})$/m.exec(stdout);
  return m ? { newId: m[2], already: m[1] === 'already' } : undefined;
}

/** Asks the node to reboot (systemd's orderly reboot). The caller checks the boot id first. */
export const REBOOT_ARGV = ['systemctl', 'reboot'];
