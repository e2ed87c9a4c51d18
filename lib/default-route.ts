/**
 * default-route (seed 002), the pure part: which network manager owns a node's uplink, the
 * commands that bring the node's own configuration back up, the plan, the checks after the
 * fix, and why the fault will come back at the next boot. No I/O; facts in, decisions out.
 *
 * The rules an SRE would follow by hand, made explicit:
 *  - only the node's own configuration is re-applied, by the manager that owns it
 *    (`netplan apply`, `ifup <if>`, `nmcli device connect <if>`); no file is edited and no
 *    gateway is invented, so a node whose configuration gives no interface the default route
 *    is refused, as is one where two managers both claim it;
 *  - the CNI pod that crash-looped for want of a route is deleted so its DaemonSet recreates
 *    it at once, instead of after the kubelet's back-off (up to 5 minutes);
 *  - nothing is drained: the node's pod network is already down, and moving its pods onto the
 *    other nodes would add load there without helping this node.
 */
import type { DiagnoseFacts } from './detect/facts';
import { inCidr } from './detect/facts';
import type { CniPodFacts } from './diagnose-api';
import type { DiagnoseNodeFacts, NetConfigFacts } from './diagnose-script';
import type { Finding } from './findings';
import { IFNAME } from './patterns';
import { type PlannedNode, planId, type RunbookPlan } from './runbook';
import { commandLine } from './shell';

export type NetManager = NetConfigFacts['kind'];
export const NET_MANAGERS: readonly NetManager[] = ['netplan', 'ifupdown', 'networkmanager'];

/** The uplink as the node's own configuration describes it. */
export interface Uplink {
  manager: NetManager;
  /** The configuration files that give an interface the default route. */
  files: string[];
  /** Interfaces those files give the default route. */
  interfaces: string[];
  /** Of those, the ones that are down now. */
  down: string[];
}

const isDown = (n: DiagnoseNodeFacts, ifname: string) => {
  const a = n.addrs.find((x) => x.ifname === ifname);
  return !a || !a.up || a.operstate === 'DOWN';
};

/** The node's uplink, or why kubemend will not touch it. */
export function uplinkOf(n: DiagnoseNodeFacts): Uplink | { refusal: string } {
  const configured = n.netConfig.filter((c) => c.defaultRouteInterfaces.length > 0);
  if (configured.length === 0) {
    const read = n.netConfig.map((c) => c.file);
    return {
      refusal: `${n.name}: no default route, and no network configuration on the node gives one (${read.length ? `read: ${read.join(', ')}` : 'no netplan, ifupdown or NetworkManager files'}); kubemend never invents a gateway: fix the node's configuration by hand`,
    };
  }
  const managers = [...new Set(configured.map((c) => c.kind))];
  if (managers.length > 1) {
    return { refusal: `${n.name}: ${configured.map((c) => `${c.file} (${c.kind})`).join(' and ')} both give an interface the default route: which manager owns the uplink is ambiguous, so kubemend leaves it to you` };
  }
  const interfaces = [...new Set(configured.flatMap((c) => c.defaultRouteInterfaces))];
  const bad = interfaces.filter((i) => !IFNAME.test(i));
  if (bad.length) return { refusal: `${n.name}: the configuration names interface(s) that are not valid Linux interface names: ${bad.map((b) => JSON.stringify(b)).join(', ')}` };
  const missing = interfaces.filter((i) => !n.addrs.some((a) => a.ifname === i));
  if (missing.length === interfaces.length) {
    return { refusal: `${n.name}: the configuration gives the default route to ${interfaces.join(', ')}, and the node has no such interface (renamed or missing NIC): re-applying the configuration cannot help` };
  }
  return { manager: managers[0], files: configured.map((c) => c.file), interfaces, down: interfaces.filter((i) => isDown(n, i)) };
}

/**
 * The commands that bring the configuration up, as argv. netplan applies the whole
 * configuration (as in the seed); ifupdown and NetworkManager bring up each interface that
 * is down (all of them if none is, e.g. up without an address).
 */
export function managerCommands(manager: NetManager, interfaces: readonly string[]): string[][] {
  for (const i of interfaces) if (!IFNAME.test(i)) throw new Error(`not an interface name: ${JSON.stringify(i)}`);
  if (manager === 'netplan') return [['netplan', 'apply']];
  if (manager === 'ifupdown') return interfaces.map((i) => ['ifup', i]);
  return interfaces.map((i) => ['nmcli', 'device', 'connect', i]);
}

/** The tool each manager's commands run, checked on the node before anything is applied. */
export const MANAGER_TOOL: Record<NetManager, string> = { netplan: 'netplan', ifupdown: 'ifup', networkmanager: 'nmcli' };

/** Where the boot's own log of the link is, per manager. */
const BOOT_LOG: Record<NetManager, string> = {
  netplan: 'journalctl -b -u systemd-networkd (or -u NetworkManager if netplan renders to it)',
  ifupdown: 'journalctl -b -u networking',
  networkmanager: 'journalctl -b -u NetworkManager',
};

/**
 * Why the uplink will be down again after the next reboot, from the configuration alone.
 * A finding for the result, never a change: fixing the configuration is the operator's call.
 */
export function recurrence(n: DiagnoseNodeFacts, u: Uplink): string[] {
  const out: string[] = [];
  for (const c of n.netConfig) {
    for (const i of u.interfaces) {
      if (!c.interfaces.includes(i)) continue;
      const setting = c.notAtBoot?.[i];
      if (setting) out.push(`${c.file}: ${setting} for ${i}: the configuration does not bring ${i} up at boot, so the next reboot leaves the node without a default route again`);
      if (c.wifi?.includes(i)) out.push(`${i} is a Wi-Fi link (${c.file}): it carries the default route only once it associates, which did not happen at this boot; expect the same after the next reboot until the supplicant or driver start is fixed`);
      if (c.optional?.includes(i)) out.push(`${c.file} marks ${i} optional: boot does not wait for it, so services (kubelet, flannel) start before it is up`);
    }
  }
  if (out.length === 0) {
    out.push(
      `${u.files.join(', ')} bring${u.files.length === 1 ? 's' : ''} ${u.interfaces.join(', ')} up at boot, yet after boot ${n.bootId ?? '(unknown)'} ${u.down.length ? u.down.join(', ') : u.interfaces.join(', ')} had no default route: the cause is outside the configuration (driver, firmware, carrier, boot order), so the next reboot will probably do the same; see ${BOOT_LOG[u.manager]}`,
    );
  }
  return out;
}

export interface CniPodRef {
  namespace: string;
  name: string;
  uid: string | null;
  cni: CniPodFacts['cni'];
}

export interface DefaultRouteNode extends PlannedNode {
  manager: NetManager;
  interfaces: string[];
  down: string[];
  commands: string[][];
  /** CNI pods on the node that are not Running and Ready: deleted so their DaemonSet recreates them now. */
  cniPods: CniPodRef[];
  /** The Node's podCIDR: flannel's subnet.env and the probe sandbox's address must be inside it. */
  podCidr: string | null;
  /** Whether the node runs flannel (so /run/flannel/subnet.env must come back). */
  flannel: boolean;
  /** Why it will happen again (a finding, not a change). */
  willRecur: string[];
}

export interface DefaultRoutePlan extends RunbookPlan {
  nodes: DefaultRouteNode[];
  /** Nodes with the fault that kubemend refuses to touch, and why: the run fails on them, before anything changes. */
  refused: string[];
}

export interface PlanOptions {
  selected: readonly string[];
  excluded: readonly string[];
  controlPlane: readonly string[];
  /** How long the run waits for the default route, and then for the CNI pod, in ms (shown in the plan). */
  routeTimeoutMs: number;
  podTimeoutMs: number;
}

const secs = (ms: number) => `${Math.round(ms / 1000)} s`;

export function planDefaultRoute(facts: DiagnoseFacts, findings: readonly Finding[], opts: PlanOptions): DefaultRoutePlan {
  const skipped: Array<{ name: string; reason: string }> = [];
  const refused: string[] = [];
  const nodes: DefaultRouteNode[] = [];
  const faulty = [...new Set(findings.filter((f) => f.seed === '002').map((f) => f.node))];
  for (const name of faulty) {
    if (!opts.selected.includes(name)) {
      skipped.push({ name, reason: 'not selected (--node)' });
      continue;
    }
    if (opts.excluded.includes(name)) {
      skipped.push({ name, reason: 'labelled kubemend.io/exclude=true' });
      continue;
    }
    const n = facts.nodes.find((x) => x.name === name)!;
    const u = uplinkOf(n);
    if ('refusal' in u) {
      refused.push(u.refusal);
      continue;
    }
    const api = facts.api?.nodes.find((x) => x.name === name) ?? null;
    const podCidr = api?.podCIDRs.find((c) => c.includes('.')) ?? null;
    const cniPods: CniPodRef[] = (facts.api?.cniPods ?? [])
      .filter((p) => p.node === name && (p.phase !== 'Running' || !p.ready || p.waitingReason !== null))
      .map((p) => ({ namespace: p.namespace, name: p.name, uid: p.uid ?? null, cni: p.cni }));
    const flannel = n.cniConfigs.some((c) => c.types.includes('flannel')) || !!facts.api?.cniDaemonSets.some((d) => d.cni === 'flannel');
    const commands = managerCommands(u.manager, u.manager === 'netplan' ? u.interfaces : u.down.length ? u.down : u.interfaces);
    const steps = [
      `${commands.map(commandLine).join('; ')}: re-apply the node's own ${u.manager} configuration (${u.files.join(', ')}); no file is edited, no gateway invented`,
      `wait up to ${secs(opts.routeTimeoutMs)} for a default route via ${u.interfaces.join(' or ')}, then ping its gateway once from the node`,
      ...cniPods.map((p) => `evict pod ${p.namespace}/${p.name}${p.uid ? ` (uid ${p.uid})` : ''}: its DaemonSet recreates it now instead of after the crash-loop back-off`),
      `wait up to ${secs(opts.podTimeoutMs)} for the node's CNI pod${cniPods.length === 1 ? '' : 's'} Ready${flannel ? ` and /run/flannel/subnet.env${podCidr ? ` inside ${podCidr}` : ''}` : ''}`,
      `crictl runp a probe sandbox on the node: it must get an address${podCidr ? ` in ${podCidr}` : ''} (a real CNI ADD); then crictl stopp and rmp it`,
    ];
    nodes.push({
      name,
      role: opts.controlPlane.includes(name) ? 'control-plane' : 'worker',
      steps,
      manager: u.manager,
      interfaces: u.interfaces,
      down: u.down,
      commands,
      cniPods,
      podCidr,
      flannel,
      willRecur: recurrence(n, u),
    });
  }
  // Workers first: a control-plane node's uplink carries the API for everyone else.
  nodes.sort((a, b) => (a.role === b.role ? 0 : a.role === 'worker' ? -1 : 1));
  const summary = [
    'No drain: the node\'s pod network is already down; moving its pods onto the other nodes would add load there without helping this node.',
    'No undo: each step re-applies the node\'s own configuration or lets a DaemonSet recreate its pod; putting the link back down would only restore the fault. Links and routes are recorded before and after.',
    ...nodes.flatMap((n) => n.willRecur.map((w) => `${n.name} will break again: ${w}`)),
  ];
  const content = { nodes: nodes.map((n) => [n.name, n.manager, n.interfaces, n.commands, n.cniPods, n.podCidr]), skipped, refused };
  return { id: planId(content), nodes, skipped, refused, summary };
}

export interface AfterFix {
  defaultRoute: { dev: string | null; gateway: string | null } | null;
  subnet: string | null;
  probeIp: string | null;
}

/** What is still wrong with a node after its fix; empty when it is fixed. */
export function problemsAfter(planned: Pick<DefaultRouteNode, 'name' | 'interfaces' | 'podCidr' | 'flannel'>, after: AfterFix): string[] {
  const out: string[] = [];
  if (!after.defaultRoute) out.push('still no default route');
  else if (!after.defaultRoute.dev || !planned.interfaces.includes(after.defaultRoute.dev)) out.push(`the default route goes via ${after.defaultRoute.dev ?? 'no device'}, not ${planned.interfaces.join(' or ')} as the configuration says`);
  if (planned.flannel) {
    if (!after.subnet) out.push('/run/flannel/subnet.env has no FLANNEL_SUBNET: flanneld did not start');
    else if (planned.podCidr && !inCidr(after.subnet, planned.podCidr)) out.push(`FLANNEL_SUBNET ${after.subnet} is outside the Node's podCIDR ${planned.podCidr}`);
  }
  if (!after.probeIp) out.push('the probe sandbox got no address');
  else if (planned.podCidr && !inCidr(after.probeIp, planned.podCidr)) out.push(`the probe sandbox got ${after.probeIp}, outside the Node's podCIDR ${planned.podCidr}`);
  return out;
}

/** The probe sandbox's CRI config (crictl runp's input), from validated values only. */
export function probeSandboxConfig(runTag: string, node: string): string {
  if (!/^[A-Za-z0-9-]{1,100}$/.test(runTag)) throw new Error(`not a run tag: ${JSON.stringify(runTag)}`);
  const name = `kubemend-probe-${node}`.slice(0, 63).replace(/[^a-z0-9-]/g, '-').replace(/-+$/, '');
  return JSON.stringify({ metadata: { name, namespace: 'kube-system', uid: `kubemend-${runTag}`.slice(0, 100), attempt: 0 }, log_directory: '/tmp', linux: {} });
}
