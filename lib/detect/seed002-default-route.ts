/**
 * Seed 002: after a reboot the uplink did not come up, so the node has no default route and
 * flanneld cannot pick an interface ("Failed to find any valid interface to use: failed to
 * get default interface: Unable to find default route").
 */
import type { Finding } from '../findings';
import { type DiagnoseFacts, VIRTUAL_IF } from './facts';
import { isFixable } from './fixable';

export const NO_DEFAULT_ROUTE = 'Failed to find any valid interface to use: failed to get default interface: Unable to find default route';

export function detectNoDefaultRoute(f: DiagnoseFacts): Finding[] {
  const out: Finding[] = [];
  for (const n of f.nodes) {
    // A node whose routes could not be read is not judged.
    if (n.defaultRoute || n.problems.some((p) => p.startsWith('ip -j route'))) continue;
    const evidence = ['ip route show default: no default route'];
    const state = (ifname: string) => n.addrs.find((a) => a.ifname === ifname);
    const configured = n.netConfig.flatMap((c) => c.defaultRouteInterfaces.map((i) => ({ i, file: c.file })));
    for (const { i, file } of configured) {
      const a = state(i);
      if (!a) evidence.push(`${file} gives ${i} the default route; the node has no interface ${i}`);
      else if (!a.up || a.operstate === 'DOWN') evidence.push(`${file} gives ${i} the default route; ${i} is ${a.operstate ?? 'down'}`);
    }
    if (configured.length === 0) {
      // No network config file names it: the host interfaces that are down but addressed.
      for (const a of n.addrs) if (!VIRTUAL_IF.test(a.ifname) && (!a.up || a.operstate === 'DOWN')) evidence.push(`${a.ifname} is ${a.operstate ?? 'down'}${a.ipv4.length ? ` with ${a.ipv4.join(', ')}` : ''}`);
    }
    for (const p of f.api?.cniPods.filter((x) => x.node === n.name && x.cni === 'flannel') ?? []) {
      if (p.phase !== 'Running' || !p.ready || p.waitingReason) {
        evidence.push(`${p.namespace}/${p.name}: ${p.waitingReason ?? p.phase ?? 'not ready'}, ${p.restarts} restarts${p.message ? `: ${p.message}` : ''}`);
        if (p.lastLog && p.lastLog !== p.message) evidence.push(`${p.namespace}/${p.name} last log line: ${p.lastLog}`);
      }
    }
    const flannel = n.cniConfigs.some((c) => c.types.includes('flannel')) || !!f.api?.cniDaemonSets.some((d) => d.cni === 'flannel');
    if (flannel && n.subnetEnv === null) evidence.push('/run/flannel/subnet.env is missing: flanneld has not started on this boot');
    out.push({ seed: '002', remediation: 'default-route', node: n.name, signature: NO_DEFAULT_ROUTE, evidence, fixable: isFixable('default-route') });
  }
  return out;
}
