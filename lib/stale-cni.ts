/**
 * stale-cni (seed 003), the light level, the pure part: what each node's CNI devices, flannel's
 * subnet.env and CNI config say against the Node's podCIDR, the plan, and the checks after the
 * fix. No I/O; facts in, decisions out.
 *
 * `kubeadm reset` leaves cni0 and flannel.1 behind. After a re-join the node's lease (its
 * podCIDR) differs from what they still carry, and every new pod fails in the bridge plugin:
 * `failed to set bridge addr: "cni0" already has an IP address different from 10.244.1.1/24`.
 * The rules an SRE follows by hand, made explicit:
 *  - the Node's podCIDR is what is right (flannel's kube subnet manager leases exactly it): cni0
 *    must carry its first address (the pods' gateway) and flannel.1 its network address /32;
 *    a node without a podCIDR is refused: nothing says what the right state is;
 *  - a stale device is deleted, never re-addressed: the bridge plugin makes cni0 again with the
 *    right gateway at the next pod, flanneld makes flannel.1 again when it starts; the delete is
 *    re-checked on the node (only if it still carries exactly the addresses the plan names);
 *  - flannel is restarted by evicting its pod, so the DaemonSet recreates it now instead of
 *    after the kubelet's back-off: it writes subnet.env and makes flannel.1 afresh;
 *  - the node is cordoned and drained first: deleting cni0 cuts every pod still on it;
 *  - a control-plane node is refused (the refusal gives the manual procedure), as is a node
 *    whose first CNI config is not flannel's, or whose host-local range is full (no pod would
 *    get an address whatever cni0 carries: ipam-gc first).
 */
import { type DiagnoseFacts, hostLocalCapacity, inCidr, networkOf } from './detect/facts';
import { detectStaleCni } from './detect/seed003-stale-cni';
import type { CniPodRef } from './default-route';
import type { Finding } from './findings';
import { isIpv4, kubeletArgsOf, nodeIpFlag } from './node-address';
import { type PlannedNode, planId, type RunbookPlan } from './runbook';

/** The devices the light level deletes, in the order it deletes them. */
export const STALE_DEVICES = ['cni0', 'flannel.1'] as const;
export type StaleDevice = (typeof STALE_DEVICES)[number];

/** What the plan and its checks read of one node (from diagnose's facts: lib/detect/facts.ts). */
export interface StaleCniNodeFacts {
  name: string;
  /** cni0's IPv4 addresses ("a.b.c.d/len"); null when there is no cni0. */
  cni0: string[] | null;
  /** flannel.1's IPv4 addresses; null when there is no flannel.1. */
  flannel1: string[] | null;
  /** /run/flannel/subnet.env as key=value; null when it is missing. */
  subnetEnv: Record<string, string> | null;
  /** The Node's IPv4 podCIDR; null without one (or without a Node object). */
  podCidr: string | null;
  /** /etc/cni/net.d's files, by name (the kubelet uses the first). */
  cniConfigs: Array<{ file: string; network: string | null; types: string[] }>;
  /** The node's kube-flannel pods, as the API lists them. */
  flannelPods: Array<CniPodRef & { ready: boolean; phase: string | null }>;
  /** host-local's reservations per network directory. */
  hostLocal: Record<string, string[]>;
  /** Whether the cluster runs a flannel DaemonSet; null when the API could not be read. */
  clusterRunsFlannel: boolean | null;
}

const IPV4_CIDR = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\/([0-9]|[12]\d|3[0-2])$/;
/** An IPv4 address with its prefix length, as `ip addr` prints it. */
export const isIpv4Cidr = (s: string) => IPV4_CIDR.test(s);

export function staleCniFacts(f: DiagnoseFacts, name: string): StaleCniNodeFacts | null {
  const n = f.nodes.find((x) => x.name === name);
  if (!n) return null;
  const addrs = (ifname: string) => {
    const a = n.addrs.find((x) => x.ifname === ifname);
    return a ? [...a.ipv4] : null;
  };
  const api = f.api?.nodes.find((x) => x.name === name) ?? null;
  const hostLocal: Record<string, string[]> = {};
  for (const h of n.hostLocal) (hostLocal[h.network] ??= []).push(h.ip);
  return {
    name,
    cni0: addrs('cni0'),
    flannel1: addrs('flannel.1'),
    subnetEnv: n.subnetEnv,
    podCidr: api?.podCIDRs.find((c) => isIpv4Cidr(c)) ?? null,
    cniConfigs: [...n.cniConfigs].sort((a, b) => a.file.localeCompare(b.file)).map((c) => ({ file: c.file, network: c.network, types: [...c.types] })),
    flannelPods: (f.api?.cniPods ?? []).filter((p) => p.node === name && p.cni === 'flannel').map((p) => ({ namespace: p.namespace, name: p.name, uid: p.uid ?? null, cni: p.cni, ready: p.ready, phase: p.phase })),
    hostLocal,
    clusterRunsFlannel: f.api ? f.api.cniDaemonSets.some((d) => d.cni === 'flannel') : null,
  };
}

/** What the Node's podCIDR says each device and subnet.env must carry. */
export interface Expected {
  /** cni0: the pods' gateway, the podCIDR's first address with its length ("10.244.1.1/24"), as the bridge plugin sets it. */
  cni0: string;
  /** flannel.1: the podCIDR's network address /32 ("10.244.1.0/32"), as flanneld's vxlan backend sets it. */
  flannel1: string;
  /** subnet.env's FLANNEL_SUBNET: the same as cni0's. */
  flannelSubnet: string;
}

/** The address after a network's ("10.244.1.0/24" -> "10.244.1.1"). Here, not diagnose-api's nthAddress: workflow code must not reach lib/calico.ts (node:crypto). */
function firstHost(net: string): string {
  const o = net.split('/')[0].split('.').map(Number);
  const v = (((o[0] << 24) >>> 0) + (o[1] << 16) + (o[2] << 8) + o[3] + 1) >>> 0;
  return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
}

export function expectedFor(podCidr: string): Expected | null {
  if (!isIpv4Cidr(podCidr)) return null;
  const net = networkOf(podCidr);
  const len = Number(podCidr.split('/')[1]);
  if (!net || net !== podCidr || len > 30) return null;
  const gw = `${firstHost(net)}/${len}`;
  return { cni0: gw, flannel1: `${net.split('/')[0]}/32`, flannelSubnet: gw };
}

/** The addresses of a device that differ from the one it must carry (all of them are named, and the delete re-checks all). */
const differs = (addrs: string[] | null, want: string) => addrs !== null && addrs.some((a) => a !== want);

export interface DeviceDelete {
  dev: StaleDevice;
  /** Every IPv4 address the device carried when the plan was made: it is deleted only if it still carries exactly these. */
  stale: string[];
  /** What it must carry once the CNI makes it again. */
  expected: string;
}

export interface StaleCniNode extends PlannedNode {
  podCidr: string;
  expected: Expected;
  /** In order: cni0, then flannel.1. */
  deletes: DeviceDelete[];
  /** kube-flannel pods evicted so the DaemonSet recreates them now (empty: flannel is left running). */
  flannelPods: CniPodRef[];
  /** Why flannel is restarted (or why not). */
  restartWhy: string;
  /** What the node's facts showed, for the approver and the audit. */
  found: string[];
  /** `light`: the devices and flannel; `full`: kubeadm reset and re-join (--full, or a fault the light level cannot fix). */
  level: 'light' | 'full';
  /** A light node whose fix does not verify goes on to the full level (--escalate): the plan says so, and the approval names the plan. */
  escalate: boolean;
  /** The full level's parts, when the node gets it or may escalate to it. */
  full: FullLevel | null;
}

/** What the full level does on a node beyond the light level's steps. */
export interface FullLevel {
  /** The control-plane node that makes the join token. */
  joinFrom: string;
  /** The --node-ip kubeadm's kubeadm-flags.env gave the kubelet (reset deletes that file): the re-join asks for it again. Null: none there. */
  nodeIp: string | null;
  /** Files in /etc/cni/net.d that are not the installed CNI's: moved into the backup, not deleted. */
  moveConfigs: string[];
  /** host-local network directories no remaining CNI config names (a dead network): moved into the backup. */
  deadNetworks: string[];
  /** The steps, as the approver reads them. */
  steps: string[];
}

export interface StaleCniPlan extends RunbookPlan {
  nodes: StaleCniNode[];
  refused: string[];
}

export interface PlanOptions {
  cluster: string;
  selected: readonly string[];
  excluded: readonly string[];
  controlPlane: readonly string[];
  /** How long the run waits for flannel's new pod and subnet.env, in ms (shown in the plan). */
  podTimeoutMs: number;
  /** Every planned node gets the full level (--full). */
  full?: boolean;
  /** A light node that does not verify goes on to the full level (--escalate). */
  escalate?: boolean;
  /** The control-plane node that makes join tokens (in the worker's config, not a target); null: none is reachable. */
  joinFrom?: string | null;
  /** How long a re-joined node has to be Ready, in ms. */
  joinTimeoutMs?: number;
}

/** The only findings this remediation acts on: diagnose's own seed-003 detector, its stale-cni ones (not ipam-gc's). */
export function detectStaleCniFindings(f: DiagnoseFacts): Finding[] {
  return detectStaleCni(f).filter((x) => x.remediation === 'stale-cni');
}

const secs = (ms: number) => `${Math.round(ms / 1000)} s`;

/** The procedure an operator follows by hand on a node kubemend will not touch (a control plane). */
export function manualProcedure(n: StaleCniNodeFacts, expected: Expected | null, deletes: DeviceDelete[], restartFlannel: boolean): string {
  const pods = n.flannelPods;
  const steps = [
    `kubectl drain ${n.name} --ignore-daemonsets (its static pods stay; plan for the API server's pod network being cut)`,
    ...deletes.map((d) => `on ${n.name}: ip -4 addr show dev ${d.dev} (expect ${d.stale.join(' ')}), then ip link delete ${d.dev}`),
    ...(!restartFlannel ? [] : pods.length ? [`kubectl -n ${pods[0].namespace} delete pod ${pods.map((p) => p.name).join(' ')}`] : [`restart flanneld on ${n.name} (delete the node's kube-flannel pod)`]),
    `wait until /run/flannel/subnet.env says FLANNEL_SUBNET=${expected?.flannelSubnet ?? '<the Node\'s podCIDR, .1>'}`,
    `start a pod pinned to ${n.name} and check its address is in ${n.podCidr ?? 'the Node\'s podCIDR'} and cni0 carries ${expected?.cni0 ?? 'its gateway'}`,
    `kubectl uncordon ${n.name}`,
  ];
  return steps.map((s, i) => `(${i + 1}) ${s}`).join('; ');
}

/** A file directly in /etc/cni/net.d, with a name kubemend will move (no dot first, no slash, no shell-special characters). */
export const isCniConfigPath = (p: string) => /^\/etc\/cni\/net\.d\/[A-Za-z0-9_][A-Za-z0-9._-]{0,200}$/.test(p);
/** A host-local network directory's name under /var/lib/cni/networks (a CNI network name). */
export const isNetworkName = (n: string) => /^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}$/.test(n);

/** Where the full level keeps a node's backup: one directory per run, on the node. */
export const fullBackupDir = (runTag: string) => `/var/lib/kubemend/backup/${runTag}/stale-cni`;

function fullSteps(n: StaleCniNodeFacts, expected: Expected, deletes: DeviceDelete[], f: Omit<FullLevel, 'steps'>, opts: PlanOptions): string[] {
  return [
    `back up, once: /etc/kubernetes, /var/lib/kubelet's kubeadm-flags.env and config.yaml, /etc/cni/net.d, and the node's addresses and routes, into ${fullBackupDir('<run>')}/ on ${n.name}`,
    "kubeadm reset -f (its output goes into the audit record); from here there is no undo: reset deleted the node's credentials and kubelet configuration (the backup keeps them); a node that fails stays cordoned and the status says how to finish by hand",
    ...deletes.map((d) => `ip link delete ${d.dev}: only if it still carries exactly ${d.stale.join(' ')} (gone, or only ${d.expected}, counts as done)`),
    ...f.moveConfigs.map((c) => `move ${c} (not the installed CNI's: ${n.cniConfigs.find((x) => x.file === c)?.types.join(', ') || 'no plugin types'}) into the backup`),
    ...f.deadNetworks.map((d) => `move /var/lib/cni/networks/${d} (host-local's reservations for ${d}, a network no remaining CNI config names) into the backup`),
    `wait up to ${secs(opts.joinTimeoutMs ?? 300_000)} until the Node is no longer Ready (the node lifecycle controller's grace period): kubeadm join refuses the name of a Ready Node, and the Node object is kept (its podCIDR, labels and taints), not deleted`,
    `kubeadm token create --ttl 15m0s --print-join-command on ${f.joinFrom}; kubeadm join --config as ${n.name} (the JoinConfiguration through ssh's stdin into a 0600 file, removed after${f.nodeIp ? `; nodeRegistration keeps --node-ip=${f.nodeIp} from kubeadm-flags.env` : ''}); kubeadm token delete, whatever the join did`,
    `wait up to ${secs(opts.joinTimeoutMs ?? 300_000)} for the Node Ready with a kubelet heartbeat after the join`,
    `wait up to ${secs(opts.podTimeoutMs)} for the node's kube-flannel pod Ready and /run/flannel/subnet.env inside ${n.podCidr}`,
    `crictl runp a probe sandbox: it must get an address in ${n.podCidr}; check cni0 carries ${expected.cni0} only, flannel.1 ${expected.flannel1}, subnet.env FLANNEL_SUBNET=${expected.flannelSubnet}`,
  ];
}

export function planStaleCni(facts: DiagnoseFacts, findings: readonly Finding[], opts: PlanOptions): StaleCniPlan {
  const skipped: Array<{ name: string; reason: string }> = [];
  const refused: string[] = [];
  const nodes: StaleCniNode[] = [];
  const faulty = [...new Set(findings.filter((f) => f.seed === '003' && f.remediation === 'stale-cni').map((f) => f.node))];
  for (const name of faulty) {
    if (!opts.selected.includes(name)) {
      skipped.push({ name, reason: 'not selected (--node)' });
      continue;
    }
    if (opts.excluded.includes(name)) {
      skipped.push({ name, reason: 'labelled kubemend.io/exclude=true' });
      continue;
    }
    const n = staleCniFacts(facts, name)!;
    const found = findings.filter((f) => f.node === name && f.remediation === 'stale-cni').flatMap((f) => f.evidence);
    const expected = n.podCidr ? expectedFor(n.podCidr) : null;
    if (!n.podCidr || !expected) {
      refused.push(
        `${name}: nothing says what its CNI devices should carry: the Node ${n.podCidr ? `has podCIDR ${JSON.stringify(n.podCidr)}, which is not an IPv4 network of /30 or larger` : 'has no IPv4 podCIDR (no Node object, or the controller manager allocates none)'}; kubemend takes neither cni0's nor subnet.env's word for it. Found: ${found.join('; ')}`,
      );
      continue;
    }
    if (n.clusterRunsFlannel === false) {
      refused.push(`${name}: the light level restarts flannel, and the cluster runs no flannel DaemonSet: fix its CNI devices by hand (ip link delete cni0; ip link delete flannel.1) and restart the installed CNI's pod on the node`);
      continue;
    }
    const mayFull = !!opts.full || !!opts.escalate;
    const first = n.cniConfigs[0];
    const foreignFirst = !!first && !first.types.includes('flannel');
    if (foreignFirst && !mayFull) {
      refused.push(`${name}: ${first.file} is the first CNI config (the kubelet uses it) and is not flannel's (${first.types.join(', ') || 'no plugin types'}): the light level changes no CNI config; move it aside by hand (mv ${first.file} /root/) and run again, or run with --full (kubeadm reset, the config moved into a backup, re-join)`);
      continue;
    }
    const deletes: DeviceDelete[] = [];
    if (differs(n.cni0, expected.cni0)) deletes.push({ dev: 'cni0', stale: [...n.cni0!], expected: expected.cni0 });
    if (differs(n.flannel1, expected.flannel1)) deletes.push({ dev: 'flannel.1', stale: [...n.flannel1!], expected: expected.flannel1 });
    const bad = deletes.flatMap((d) => d.stale).filter((a) => !isIpv4Cidr(a));
    if (bad.length) {
      refused.push(`${name}: its devices carry addresses kubemend cannot name exactly (${bad.map((b) => JSON.stringify(b)).join(', ')}): fix by hand`);
      continue;
    }
    const subnet = n.subnetEnv?.FLANNEL_SUBNET ?? null;
    const notReady = n.flannelPods.filter((p) => !p.ready || p.phase !== 'Running');
    const restartFor = [
      ...(deletes.some((d) => d.dev === 'flannel.1') ? ['flanneld makes flannel.1 only when it starts'] : []),
      ...(n.subnetEnv === null ? ['/run/flannel/subnet.env is missing'] : subnet !== expected.flannelSubnet ? [`subnet.env says FLANNEL_SUBNET=${subnet ?? '(none)'}, not ${expected.flannelSubnet}`] : []),
      ...(notReady.length ? [`${notReady.map((p) => `${p.namespace}/${p.name}`).join(', ')} not Running and Ready`] : []),
    ];
    const lightFixes = deletes.length > 0 || restartFor.length > 0;
    if (!lightFixes && !mayFull) {
      refused.push(`${name}: the finding (${found.join('; ')}) is not one the light level fixes: cni0 and flannel.1 carry what the podCIDR ${n.podCidr} says, and flannel runs with subnet.env ${subnet}; --full resets and re-joins the node`);
      continue;
    }
    if (opts.controlPlane.includes(name)) {
      refused.push(
        `${name} is a control-plane node: kubemend does not take one out of service for this fix (its static pods stay on the node, and with them the API every other node needs)${mayFull ? ', and never runs kubeadm reset on one (it deletes the static pods and, with stacked etcd, the etcd member: re-initialising a control plane is a cluster rebuild)' : ''}. By hand: ${manualProcedure(n, expected, deletes, restartFor.length > 0)}`,
      );
      continue;
    }
    const network = n.cniConfigs.find((c) => c.types.includes('flannel'))?.network ?? 'cbr0';
    const capacity = hostLocalCapacity(n.podCidr);
    const reserved = (n.hostLocal[network] ?? []).filter((ip) => inCidr(ip, n.podCidr!)).length;
    if (capacity !== null && reserved >= capacity) {
      refused.push(
        `${name}: host-local's range for ${network} (${n.podCidr}) is full (${reserved} of ${capacity} addresses reserved): a new pod gets no address whatever cni0 carries, so the fix could not be verified; release the leaked ones first: kubemend run ipam-gc --cluster ${opts.cluster} --node ${name}`,
      );
      continue;
    }
    if (restartFor.length && n.flannelPods.length === 0) {
      refused.push(`${name}: flannel must be restarted (${restartFor.join('; ')}), and the API lists no kube-flannel pod on the node: check the DaemonSet's node selector and tolerations`);
      continue;
    }
    // The full level: --full; or --escalate on a node the light level cannot fix (a foreign first CNI config, nothing of its own to do).
    const level: 'light' | 'full' = opts.full || foreignFirst || !lightFixes ? 'full' : 'light';
    let full: FullLevel | null = null;
    if (mayFull) {
      if (!opts.joinFrom) {
        refused.push(`${name}: the full level re-joins the node with a token made on a control-plane node, and the worker's config lists none besides the nodes being fixed: add one to the config, or run without --full and --escalate`);
        continue;
      }
      const moveConfigs = n.cniConfigs.filter((c) => !c.types.includes('flannel')).map((c) => c.file);
      const kept = new Set(n.cniConfigs.filter((c) => c.types.includes('flannel')).map((c) => c.network));
      const deadNetworks = Object.keys(n.hostLocal).filter((net) => !kept.has(net)).sort();
      const odd = [...moveConfigs.filter((f) => !isCniConfigPath(f)), ...deadNetworks.filter((d) => !isNetworkName(d))];
      if (odd.length) {
        refused.push(`${name}: the full level moves CNI leftovers into its backup, and these names are not ones kubemend moves: ${odd.map((o) => JSON.stringify(o.slice(0, 100))).join(', ')}; move them by hand`);
        continue;
      }
      const dn = facts.nodes.find((x) => x.name === name);
      const args = dn ? kubeletArgsOf(dn) : null;
      const kubeadmFlags = args?.lines.find((l) => l.file === '/var/lib/kubelet/kubeadm-flags.env');
      if (kubeadmFlags && kubeadmFlags.args === null) {
        refused.push(`${name}: its kubeadm-flags.env line ${JSON.stringify((kubeadmFlags.line ?? '').slice(0, 200))} cannot be read with certainty (${kubeadmFlags.problem}): the re-join could not keep the kubelet's flags; fix the file by hand`);
        continue;
      }
      const flagIp = kubeadmFlags?.args ? (nodeIpFlag(kubeadmFlags.args) ?? null) : null;
      if (flagIp !== null && !isIpv4(flagIp)) {
        refused.push(`${name}: kubeadm-flags.env gives the kubelet --node-ip=${JSON.stringify(flagIp.slice(0, 60))}, which is not an IPv4 address: the re-join could not keep it; fix the file by hand`);
        continue;
      }
      const parts = { joinFrom: opts.joinFrom, nodeIp: flagIp, moveConfigs, deadNetworks };
      full = { ...parts, steps: fullSteps(n, expected, deletes, parts, opts) };
    }
    const flannelPods: CniPodRef[] = restartFor.length ? n.flannelPods.map((p) => ({ namespace: p.namespace, name: p.name, uid: p.uid, cni: p.cni })) : [];
    const restartWhy = restartFor.length ? restartFor.join('; ') : `not restarted: flannel runs with subnet.env ${subnet} and flannel.1 ${n.flannel1?.join(' ') ?? '(none)'} as the podCIDR says`;
    const steps = [
      ...deletes.map((d) => `ip link delete ${d.dev}: only if it still carries exactly ${d.stale.join(' ')} (re-checked on the node in the same command; already gone counts as done); the ${d.dev === 'cni0' ? 'bridge plugin makes it again at the next pod' : 'new flanneld makes it again'} with ${d.expected}`),
      ...flannelPods.map((p) => `evict pod ${p.namespace}/${p.name}${p.uid ? ` (uid ${p.uid})` : ''}: its DaemonSet recreates it now instead of after the crash-loop back-off (${restartWhy})`),
      `wait up to ${secs(opts.podTimeoutMs)} for ${flannelPods.length ? "the node's new kube-flannel pod Ready and " : ''}/run/flannel/subnet.env inside ${n.podCidr}`,
      `crictl runp a probe sandbox on the node: it must get an address in ${n.podCidr} (a real CNI ADD); then crictl stopp and rmp it`,
      `check: cni0 carries ${expected.cni0} only${deletes.some((d) => d.dev === 'flannel.1') || flannelPods.length ? `, flannel.1 ${expected.flannel1} only` : ''}, subnet.env FLANNEL_SUBNET=${expected.flannelSubnet}`,
    ];
    const escalate = level === 'light' && !!opts.escalate;
    const nodeSteps = level === 'full' ? full!.steps : escalate ? [...steps, `if any check above fails (or flannel's pod is not Ready in time): escalate to the full level: ${full!.steps.join('; ')}`] : steps;
    nodes.push({ name, role: 'worker', steps: nodeSteps, podCidr: n.podCidr, expected, deletes, flannelPods, restartWhy, found, level, escalate, full });
  }
  const anyFull = nodes.some((n) => n.level === 'full' || n.escalate);
  const summary = [
    opts.full
      ? 'Full level on every node: back up, kubeadm reset -f, delete the stale devices, move the CNI leftovers into the backup, re-join with a fresh short-lived token, then verify as the light level does.'
      : `Light level: the node's stale CNI devices are deleted and flannel restarted; no kubeadm reset, no re-join, no CNI config or host-local file is touched${opts.escalate ? '. Escalation allowed (--escalate): a node whose light fix does not verify, or that the light level cannot fix, gets the full level (kubeadm reset and re-join)' : ''}.`,
    'Cordon and drain first: deleting cni0 cuts every pod still attached to it (DaemonSet pods stay; flannel\'s own pod is host-network).',
    'No undo for a deleted device: the CNI makes it again with the podCIDR\'s address; putting the old address back would be the fault. A node that fails stays cordoned; the status says where it stopped.',
    ...(anyFull ? ['Full level: nothing destructive before the backup; after kubeadm reset there is no undo (reset deleted the node\'s credentials and kubelet configuration; the backup keeps them): a node that fails stays cordoned, and the status and audit give the steps to finish by hand. The join token lives 15 minutes, is deleted after the join, and appears in no input, result, history or audit record.'] : []),
  ];
  // A light-only node's part is what it was before the full level existed, so its plan id is too.
  const content = { nodes: nodes.map((n) => [n.name, n.podCidr, n.deletes, n.flannelPods, ...(n.full ? [n.level, n.escalate, [n.full.joinFrom, n.full.nodeIp, n.full.moveConfigs, n.full.deadNetworks]] : [])]), skipped, refused };
  return { id: planId(content), nodes, skipped, refused, summary };
}

export interface AfterFix {
  cni0: string[] | null;
  flannel1: string[] | null;
  subnet: string | null;
  probeIp: string | null;
  /** The Node's Ready condition ("True", "False", "Unknown", null: none); undefined when not read (runs recorded before it was). */
  nodeReady?: string | null;
}

/** What is still wrong with a node after its fix; empty when it is fixed. */
export function problemsAfter(planned: Pick<StaleCniNode, 'podCidr' | 'expected' | 'deletes' | 'flannelPods'>, after: AfterFix): string[] {
  const out: string[] = [];
  const e = planned.expected;
  if (!after.probeIp) out.push('the probe sandbox got no address');
  else if (!inCidr(after.probeIp, planned.podCidr)) out.push(`the probe sandbox got ${after.probeIp}, outside the Node's podCIDR ${planned.podCidr}`);
  // After a pod's ADD the bridge plugin has made cni0 with the gateway.
  if (after.cni0 === null) out.push(`no cni0 after the probe's ADD`);
  else if (after.cni0.length !== 1 || after.cni0[0] !== e.cni0) out.push(`cni0 carries ${after.cni0.join(' ') || 'no address'}, not ${e.cni0}`);
  const flannelTouched = planned.deletes.some((d) => d.dev === 'flannel.1') || planned.flannelPods.length > 0;
  if (flannelTouched && (after.flannel1 === null || after.flannel1.length !== 1 || after.flannel1[0] !== e.flannel1)) out.push(`flannel.1 carries ${after.flannel1 === null ? 'nothing (missing)' : after.flannel1.join(' ') || 'no address'}, not ${e.flannel1}`);
  if (after.subnet !== e.flannelSubnet) out.push(`/run/flannel/subnet.env says FLANNEL_SUBNET=${after.subnet ?? '(missing)'}, not ${e.flannelSubnet}`);
  // A pod network that works on the node is not enough: its kubelet must report the node Ready, or nothing new is scheduled there.
  if (after.nodeReady !== undefined && after.nodeReady !== 'True') out.push(`the Node is not Ready (Ready=${after.nodeReady ?? 'never reported'}): its kubelet does not report to the API server`);
  return out;
}

export type DeleteState = { state: 'gone' } | { state: 'deleted'; addresses: string[] } | { state: 'differs'; addresses: string[] };

/**
 * What the verify-then-act delete's answer means for the run: applied (it carried exactly the
 * stale addresses and is deleted), already done (gone, or carrying only the right address or
 * none: the CNI made it again), or a refusal (it carries something the plan did not name:
 * nothing was changed, plan again).
 */
export function deleteOutcome(d: Pick<DeviceDelete, 'dev' | 'stale' | 'expected'>, r: DeleteState): { outcome: 'applied' | 'already-done' } | { refusal: string } {
  if (r.state === 'deleted') return { outcome: 'applied' };
  if (r.state === 'gone') return { outcome: 'already-done' };
  if (r.addresses.length === 0 || (r.addresses.length === 1 && r.addresses[0] === d.expected)) return { outcome: 'already-done' };
  return { refusal: `${d.dev} now carries ${r.addresses.join(' ')}, not the ${d.stale.join(' ')} the plan named: it was changed since the plan, so it was left as it is; run again for a new plan` };
}

/** The faults the facts show, as lines ("node: evidence; ..."). */
export const staleCniLines = (facts: DiagnoseFacts) => detectStaleCniFindings(facts).map((f) => `${f.node}: ${f.evidence.join('; ')}`);

/** A node stale-cni fixed, as the run's result shows it. */
export interface StaleCniFixed {
  name: string;
  podCidr: string;
  /** Devices this run deleted, and those found gone or made again already (a retry, or the CNI got there first). */
  deleted: string[];
  alreadyGone: string[];
  restartedPods: string[];
  newPods: string[];
  flannelSubnet: string | null;
  probeIp: string | null;
  /** cni0 and flannel.1 as read after the probe. */
  cni0: string[] | null;
  flannel1: string[] | null;
  /** The level that fixed it, and why the full level ran when it was an escalation. */
  level: 'light' | 'full';
  escalatedBecause: string | null;
  /** The full level: whether this run reset the node (or found it reset by an earlier attempt), what it moved, whether it joined. */
  reset?: 'reset' | 'already';
  moved?: string[];
  joined?: 'joined' | 'already';
}
