/**
 * Seed 001: on VirtualBox NAT every node has 10.0.2.15 on its first interface. `kubeadm init`
 * without --apiserver-advertise-address advertises it, the workers' joins fail ("dial tcp
 * 10.0.2.15:6443: connect: connection refused"), kubelets register it as their InternalIP,
 * and Calico's first-found autodetection picks it on every node.
 */
import type { Finding } from '../findings';
import { type DiagnoseFacts, VIRTUAL_IF } from './facts';
import { isFixable } from './fixable';

/** Host addresses (IPv4, no prefix) held by two or more nodes: address -> "node/ifname" holders. */
export function sharedHostAddresses(f: DiagnoseFacts): Map<string, string[]> {
  const holders = new Map<string, string[]>();
  for (const n of f.nodes) {
    for (const a of n.addrs) {
      if (VIRTUAL_IF.test(a.ifname)) continue;
      for (const cidr of a.ipv4) {
        const ip = cidr.split('/')[0];
        holders.set(ip, [...(holders.get(ip) ?? []), `${n.name}/${a.ifname}`]);
      }
    }
  }
  return new Map([...holders].filter(([, h]) => new Set(h.map((x) => x.split('/')[0])).size > 1));
}

export function detectNatAdvertise(f: DiagnoseFacts): Finding[] {
  const shared = sharedHostAddresses(f);
  const evidence = new Map<string, { signature: string; lines: string[] }>();
  const add = (node: string, signature: string, line: string) => {
    const e = evidence.get(node) ?? { signature, lines: [] };
    if (!e.lines.includes(line)) e.lines.push(line);
    evidence.set(node, e);
  };
  const holdersText = (ip: string) => shared.get(ip)!.map((h) => h.replace('/', ' on ')).join(', ');

  // The control plane advertises an address several nodes have: the joins dial themselves.
  for (const n of f.nodes) {
    const adv = n.apiserverAdvertise;
    if (!adv || !shared.has(adv)) continue;
    const sig = `dial tcp ${adv}:6443: connect: connection refused`;
    add(n.name, sig, `kube-apiserver --advertise-address=${adv} (/etc/kubernetes/manifests/kube-apiserver.yaml)`);
    add(n.name, sig, `${adv} is on ${holdersText(adv)}`);
    // Configured nodes that never joined: no Node object, no kubelet.conf.
    for (const name of f.configured) {
      if (name === n.name) continue;
      const joinedApi = f.api ? f.api.nodes.some((x) => x.name === name) : null;
      const facts = f.nodes.find((x) => x.name === name);
      if (joinedApi === false || (joinedApi === null && facts && facts.kubeletServer === null)) {
        add(n.name, sig, `${name} never joined (no Node object${facts && facts.kubeletServer === null ? ', no /etc/kubernetes/kubelet.conf' : ''})`);
        add(name, sig, `never joined: ${f.api ? 'no Node object' : 'not known to the API'}${facts?.kubeletServer === null ? ', no /etc/kubernetes/kubelet.conf' : ''}`);
        add(name, sig, `the control plane ${n.name} advertises ${adv}, which this node has too`);
      }
    }
  }

  // Configured nodes that never joined, under a control plane that advertises an address of its own.
  if (f.api) {
    const cps = f.nodes.filter((n) => n.apiserverAdvertise && !shared.has(n.apiserverAdvertise));
    for (const name of f.configured) {
      if (f.api.nodes.some((x) => x.name === name) || evidence.has(name)) continue;
      const facts = f.nodes.find((x) => x.name === name);
      if (!facts || facts.kubeletServer !== null || cps.length === 0) continue;
      add(name, 'never joined', `never joined: no Node object, no /etc/kubernetes/kubelet.conf; the control plane ${cps[0].name} advertises ${cps[0].apiserverAdvertise}`);
    }
  }

  // Nodes registered with one InternalIP.
  for (const node of f.api?.nodes ?? []) {
    for (const ip of node.internalIPs) {
      const same = (f.api?.nodes ?? []).filter((o) => o.name !== node.name && o.internalIPs.includes(ip)).map((o) => o.name);
      if (same.length) add(node.name, `INTERNAL-IP ${ip} on ${same.length + 1} Nodes`, `Node ${node.name} has InternalIP ${ip}, as ${same.join(', ')}`);
    }
  }

  // Calico picks the first interface it finds unless told otherwise: the shared one.
  const auto = f.api?.calicoAutodetection;
  if (auto && shared.size && (auto.method === null || /^first-found/.test(auto.method))) {
    const line = `${auto.daemonSet} IP_AUTODETECTION_METHOD is ${auto.method === null ? 'not set (first-found)' : auto.method}, and ${[...shared.keys()].map((ip) => `${ip} is on ${holdersText(ip)}`).join('; ')}`;
    const cps = f.api?.nodes.filter((n) => n.controlPlane).map((n) => n.name) ?? [];
    const target = [...evidence.keys()].find((k) => cps.includes(k)) ?? [...evidence.keys()][0];
    if (target !== undefined) add(target, evidence.get(target)!.signature, line);
    else add('', 'calico/node is not ready: BIRD is not ready', line);
  }

  return [...evidence.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([node, e]) => ({ seed: '001', remediation: 'node-address', node, signature: e.signature, evidence: e.lines, fixable: isFixable('node-address') }));
}
