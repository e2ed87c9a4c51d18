/**
 * Seed 003: what `kubeadm reset` leaves behind. cni0 and flannel.1 keep the old lease
 * ("\"cni0\" already has an IP address different from 10.244.1.1/24"), /run/flannel/subnet.env
 * is gone ("open /run/flannel/subnet.env: no such file or directory"), a CNI config of
 * another CNI stays in /etc/cni/net.d, and host-local keeps a file for every address it ever
 * gave out until the range is full ("no IP addresses available in network: cbr0").
 */
import type { Finding } from '../findings';
import type { Cni } from '../diagnose-api';
import type { DiagnoseNodeFacts } from '../diagnose-script';
import { apiNode, type DiagnoseFacts, hostLocalCapacity, inCidr, networkOf } from './facts';
import { isFixable } from './fixable';

/** A host-local file younger than this may belong to a sandbox being created right now. */
export const LEAK_GRACE_S = 60;

const PLUGIN_CNI: Record<string, Cni> = { flannel: 'flannel', calico: 'calico', 'weave-net': 'weave' };

function staleInterfaces(f: DiagnoseFacts, n: DiagnoseNodeFacts): Finding | null {
  const evidence: string[] = [];
  let signature: string | null = null;
  const podCidrs = apiNode(f, n.name)?.podCIDRs ?? [];
  const flannelSubnet = n.subnetEnv?.FLANNEL_SUBNET ?? null;
  const flannel = n.cniConfigs.some((c) => c.types.includes('flannel')) || !!f.api?.cniDaemonSets.some((d) => d.cni === 'flannel');
  const expectedGw = flannelSubnet ?? (podCidrs[0] ? `${podCidrs[0].split('/')[0].replace(/\.0$/, '.1')}/${podCidrs[0].split('/')[1]}` : null);
  const addrOf = (ifname: string) => n.addrs.find((a) => a.ifname === ifname)?.ipv4 ?? [];
  for (const a of addrOf('cni0')) {
    const outside = podCidrs.length > 0 && !podCidrs.some((c) => inCidr(a, c));
    const differs = flannelSubnet !== null && a !== flannelSubnet;
    if (outside) evidence.push(`cni0 has ${a}, outside the Node's podCIDR ${podCidrs.join(', ')}`);
    if (differs) evidence.push(`cni0 has ${a}; /run/flannel/subnet.env says FLANNEL_SUBNET=${flannelSubnet}`);
    // Without the API or subnet.env, host-local's own reservations say which subnet is current.
    const cbr0 = n.hostLocal.filter((h) => h.network === 'cbr0').map((h) => h.ip);
    const subnet = networkOf(a);
    const stray = !outside && !differs && podCidrs.length === 0 && flannelSubnet === null && subnet !== null && cbr0.length > 0 && !cbr0.some((ip) => inCidr(ip, subnet));
    if (stray) evidence.push(`cni0 has ${a}, but every host-local reservation in /var/lib/cni/networks/cbr0 is outside ${subnet} (e.g. ${cbr0[0]})`);
    if ((outside || differs) && expectedGw) signature ??= `"cni0" already has an IP address different from ${expectedGw}`;
    if (stray) signature ??= `"cni0" already has an IP address different from the node's pod subnet`;
  }
  for (const a of addrOf('flannel.1')) {
    const lease = networkOf(a.replace(/\/32$/, '/24'));
    if (podCidrs.length > 0 && !podCidrs.some((c) => inCidr(a, c))) evidence.push(`flannel.1 has ${a} from an old lease${lease ? ` (${lease})` : ''}, outside the Node's podCIDR ${podCidrs.join(', ')}`);
    else if (flannelSubnet && !inCidr(a, networkOf(flannelSubnet) ?? flannelSubnet)) evidence.push(`flannel.1 has ${a}; /run/flannel/subnet.env says FLANNEL_SUBNET=${flannelSubnet}`);
  }
  // Without a default route flanneld cannot start at all: that is seed 002's finding.
  if (flannel && n.subnetEnv === null && n.defaultRoute) {
    evidence.push('/run/flannel/subnet.env is missing');
    signature ??= 'open /run/flannel/subnet.env: no such file or directory';
  } else if (flannel && n.subnetEnv === null && evidence.length) evidence.push('/run/flannel/subnet.env is missing');
  // The kubelet uses the first config file by name: is it the installed CNI's?
  const first = [...n.cniConfigs].sort((a, b) => a.file.localeCompare(b.file))[0];
  const installed = [...new Set(f.api?.cniDaemonSets.map((d) => d.cni) ?? [])];
  const firstCni = first ? (first.types.map((t) => PLUGIN_CNI[t]).find(Boolean) ?? null) : null;
  // Not installed: no DaemonSet in the API and no sign of it on the node this boot.
  const runsHere: Record<Cni, boolean> = {
    flannel: n.subnetEnv !== null, // flanneld writes it once it has its lease
    calico: !!f.api?.cniPods.some((p) => p.cni === 'calico' && p.node === n.name),
    weave: n.weaveMac !== null,
  };
  if (first && installed.length && firstCni && !installed.includes(firstCni) && !runsHere[firstCni]) {
    evidence.push(`${first.file} (the first CNI config, which the kubelet uses) is ${firstCni}'s, but the cluster runs ${installed.join(', ')}`);
    signature ??= `network plugin is not ready: cni config uninitialized`;
  }
  if (evidence.length === 0) return null;
  return { seed: '003', remediation: 'stale-cni', node: n.name, signature: signature ?? 'CNI leftovers from kubeadm reset', evidence, fixable: isFixable('stale-cni') };
}

function leakedIps(f: DiagnoseFacts, n: DiagnoseNodeFacts): Finding[] {
  if (n.sandboxes === null || n.now === null) return []; // cannot tell live from leaked
  const live = new Set([...n.sandboxes, ...(n.containers ?? [])]);
  const isLive = (id: string) => [...live].some((l) => l === id || (id.length >= 12 && l.startsWith(id)) || (l.length >= 12 && id.startsWith(l)));
  const byNetwork = new Map<string, typeof n.hostLocal>();
  for (const h of n.hostLocal) byNetwork.set(h.network, [...(byNetwork.get(h.network) ?? []), h]);
  const out: Finding[] = [];
  for (const [network, files] of [...byNetwork].sort(([a], [b]) => a.localeCompare(b))) {
    const leaked = files.filter((h) => h.mtime !== null && n.now! - h.mtime >= LEAK_GRACE_S && !isLive(h.containerId));
    if (leaked.length === 0) continue;
    const range = n.subnetEnv?.FLANNEL_SUBNET ? networkOf(n.subnetEnv.FLANNEL_SUBNET) : (apiNode(f, n.name)?.podCIDRs[0] ?? null);
    const capacity = range ? hostLocalCapacity(range) : null;
    const full = capacity !== null && files.length >= capacity;
    const evidence = [
      `${leaked.length} of ${files.length} files in /var/lib/cni/networks/${network} name a container that no live sandbox has (crictl pods -q, crictl ps -a -q list ${live.size})`,
      ...(range && capacity !== null ? [`the range ${range} has ${capacity} addresses; ${files.length} are reserved${full ? ': none is free' : ''}`] : []),
      ...leaked.slice(0, 5).map((h) => `${h.ip} held by ${h.containerId.slice(0, 12) || '(empty)'}, written ${n.now! - h.mtime!} s ago`),
      ...(leaked.length > 5 ? [`and ${leaked.length - 5} more`] : []),
    ];
    out.push({ seed: '003', remediation: 'ipam-gc', node: n.name, signature: full ? `no IP addresses available in network: ${network}` : `host-local IPs leaked in network ${network} (sandboxes gone)`, evidence, fixable: isFixable('ipam-gc') });
  }
  return out;
}

export function detectStaleCni(f: DiagnoseFacts): Finding[] {
  return f.nodes.flatMap((n) => [staleInterfaces(f, n), ...leakedIps(f, n)].filter((x): x is Finding => x !== null));
}

