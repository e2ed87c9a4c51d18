/**
 * Seed 004: Calico's records and the node's interfaces disagree with the pods that exist:
 * IPAM allocations for pods that are gone (or now elsewhere), cali veths no pod owns, and
 * running pods without their veth, which cannot reach their gateway
 * ("? (169.254.1.1) at <incomplete> on eth0").
 */
import type { Finding } from '../findings';
import type { DiagnoseFacts } from './facts';
import { isFixable } from './fixable';

export function detectOrphanCalico(f: DiagnoseFacts): Finding[] {
  const api = f.api;
  if (!api) return [];
  const calico = api.cniDaemonSets.some((d) => d.cni === 'calico') || (api.calicoIpam?.blocks.length ?? 0) > 0;
  if (!calico) return [];
  const evidence = new Map<string, { withoutVeth: boolean; lines: string[] }>();
  const add = (node: string, line: string, withoutVeth = false) => {
    const e = evidence.get(node) ?? { withoutVeth: false, lines: [] };
    e.lines.push(line);
    e.withoutVeth ||= withoutVeth;
    evidence.set(node, e);
  };
  const podKey = (ns: string | null, name: string | null) => `${ns ?? ''}/${name ?? ''}`;
  const pods = new Map(api.pods.map((p) => [podKey(p.namespace, p.name), p]));

  for (const b of api.calicoIpam?.blocks ?? []) {
    for (const a of b.allocations) {
      if (!a.pod) continue; // tunnel addresses and the like name no pod
      const p = pods.get(podKey(a.namespace, a.pod));
      const node = a.node ?? '';
      if (!p) add(node, `IPAM ${a.ip} (block ${b.cidr}, handle ${a.handle ?? 'none'}) is allocated to ${podKey(a.namespace, a.pod)}, which does not exist`);
      else if (a.node && p.node && p.node !== a.node) add(node, `IPAM ${a.ip} (block ${b.cidr}) is allocated to ${podKey(a.namespace, a.pod)} on ${a.node}, but that pod runs on ${p.node}`);
    }
  }

  for (const n of f.nodes) {
    const mine = api.pods.filter((p) => p.node === n.name && p.calicoVeth);
    const expected = new Map(mine.map((p) => [p.calicoVeth!, p]));
    const veths = n.links.filter((l) => l.ifname.startsWith('cali')).map((l) => l.ifname);
    for (const v of veths) if (!expected.has(v)) add(n.name, `${v} matches no pod on ${n.name}`);
    for (const p of mine) if (p.phase === 'Running' && !veths.includes(p.calicoVeth!)) add(n.name, `${podKey(p.namespace, p.name)} is Running on ${n.name} but has no ${p.calicoVeth}`, true);
  }

  return [...evidence.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([node, e]) => ({
    seed: '004',
    remediation: 'calico-orphans',
    node,
    signature: e.withoutVeth ? '? (169.254.1.1) at <incomplete> on eth0' : 'calico IPAM allocations and cali veths without a pod',
    evidence: e.lines,
    fixable: isFixable('calico-orphans'),
  }));
}
