/** The host's state as an operator would compare it; lab tests assert it never changes. */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

/** Identity, links, addresses, routes, mounts and named network namespaces. */
export function hostSnapshot() {
  const read = (p: string) => (existsSync(p) ? readFileSync(p, 'utf8') : null);
  const json = (args: string[]) => JSON.parse(execFileSync('ip', ['-j', ...args], { encoding: 'utf8' }) || '[]');
  return {
    machineId: read('/etc/machine-id'),
    dbusMachineId: read('/var/lib/dbus/machine-id'),
    bootId: read('/proc/sys/kernel/random/boot_id'),
    hostname: execFileSync('hostname', { encoding: 'utf8' }),
    links: (json(['link']) as Array<Record<string, unknown>>).map((l) => [l.ifname, l.address, l.operstate, l.mtu]),
    addrs: (json(['addr']) as Array<{ ifname: string; addr_info: Array<{ local: string }> }>).map((a) => [a.ifname, a.addr_info.map((i) => i.local)]),
    routes: json(['route']),
    routes6: json(['-6', 'route']),
    mounts: readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ').slice(4, 5).join('')).sort(),
    netns: execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }),
  };
}
