/**
 * node-address (seed 001), the pure part: on VirtualBox NAT every node has 10.0.2.15 on its
 * first interface, so the kubelets register it as their InternalIP and Calico's first-found
 * autodetection picks it. Facts in (diagnose's read of every node and of the API), a plan out.
 *
 * The rules an SRE would follow by hand, made explicit:
 *  - the right address of a node is its one address on the network the nodes really share:
 *    the network (found, or given by --network or --interface) on which every node has
 *    exactly one address, no two nodes the same, and none of them the shared NAT address;
 *    if none or several networks qualify, kubemend refuses and asks which;
 *  - the kubelet's --node-ip goes where the node keeps it: the file whose line already
 *    carries --node-ip, else /etc/default/kubelet's KUBELET_EXTRA_ARGS (the file kubeadm's
 *    own documentation points overrides to, which kubeadm never rewrites); only the
 *    --node-ip flag of that one line changes, everything else on it is kept as written;
 *  - a line kubemend cannot read with certainty (single quotes, backslashes, `$`) is not
 *    rewritten: the node is refused, with the line;
 *  - Calico's autodetection becomes `can-reach=<the control plane's address>` (or
 *    `interface=<name>` with --interface, `cidr=<network>` with --network, or exactly what
 *    --calico-method says), on the calico-node DaemonSet; an operator-managed calico-node
 *    (the Tigera operator owns the DaemonSet) is left alone with the Installation field to set;
 *  - the control plane's advertise address is never changed by kubemend (see
 *    `advertiseProcedure`), and workers that never joined are listed with how to join them
 *    once it is fixed.
 */
import { type DiagnoseFacts, inCidr, networkOf, VIRTUAL_IF } from './detect/facts';
import { sharedHostAddresses } from './detect/seed001-nat-advertise';
import type { DiagnoseNodeFacts } from './diagnose-script';
import type { Finding } from './findings';
import { IFNAME } from './patterns';
import { type PlannedNode, planId, type RunbookPlan } from './runbook';

/** The files a kubeadm node's kubelet reads its extra flags from, and the variable each holds. */
export const KUBELET_FILES = {
  '/var/lib/kubelet/kubeadm-flags.env': 'KUBELET_KUBEADM_ARGS',
  '/etc/default/kubelet': 'KUBELET_EXTRA_ARGS',
} as const;
export type KubeletFile = keyof typeof KUBELET_FILES;
export type KubeletVariable = (typeof KUBELET_FILES)[KubeletFile];
/** kubeadm's systemd drop-in passes $KUBELET_KUBEADM_ARGS before $KUBELET_EXTRA_ARGS: a flag in the second wins. */
const FILE_ORDER: KubeletFile[] = ['/var/lib/kubelet/kubeadm-flags.env', '/etc/default/kubelet'];
export const isKubeletFile = (f: string): f is KubeletFile => f in KUBELET_FILES;

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
export const isIpv4 = (v: string) => IPV4.test(v);
export const isIpv4Cidr = (v: string) => {
  const [a, len, more] = v.split('/');
  return more === undefined && isIpv4(a) && /^\d{1,2}$/.test(len ?? '') && Number(len) <= 32;
};

/** One KUBELET_*_ARGS line, read: its flags, or why it cannot be read with certainty. */
export interface ArgsLine {
  file: KubeletFile;
  variable: KubeletVariable;
  /** The line as written on the node; null when the file has no such line. */
  line: string | null;
  /** The flags, split as the shell would; null when the line is not plain enough to rewrite. */
  args: string[] | null;
  /** Why `args` is null. */
  problem?: string;
}

/**
 * Parses `VAR=value`, `VAR="value"` (systemd EnvironmentFile syntax, as kubeadm and Debian
 * write it). Anything with single quotes, backslashes, `$` or backticks, or a quote that does
 * not close the value, is refused: kubemend would not know what the kubelet sees.
 */
export function parseArgsLine(file: KubeletFile, line: string | null): ArgsLine {
  const variable = KUBELET_FILES[file];
  if (line === null) return { file, variable, line, args: [] };
  const m = new RegExp(`^\\s*${variable}=(.*)$`).exec(line);
  if (!m) return { file, variable, line, args: null, problem: `not a ${variable}= line` };
  let value = m[1].trim();
  if (/['\\$`]/.test(value)) return { file, variable, line, args: null, problem: 'it uses quoting or expansion (\', \\, $ or `) that kubemend does not rewrite' };
  if (value.startsWith('"')) {
    if (!/^"[^"]*"$/.test(value)) return { file, variable, line, args: null, problem: 'its double quotes do not enclose the whole value' };
    value = value.slice(1, -1);
  } else if (value.includes('"')) {
    return { file, variable, line, args: null, problem: 'a double quote inside an unquoted value' };
  }
  return { file, variable, line, args: value.split(/\s+/).filter(Boolean) };
}

/** --node-ip's value in a list of flags (the last one wins, as in Go's flag parsing); undefined if absent. */
export function nodeIpFlag(args: readonly string[]): string | undefined {
  let found: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a.startsWith('--node-ip=')) found = a.slice('--node-ip='.length);
    else if (a === '--node-ip' && i + 1 < args.length) found = args[++i];
  }
  return found;
}

/** The flags with every --node-ip removed and `--node-ip=<ip>` appended. */
export function withNodeIp(args: readonly string[], ip: string): string[] {
  if (!isIpv4(ip)) throw new Error(`not an IPv4 address: ${JSON.stringify(ip)}`);
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i].startsWith('--node-ip=')) continue;
    if (args[i] === '--node-ip') {
      i++;
      continue;
    }
    out.push(args[i]);
  }
  return [...out, `--node-ip=${ip}`];
}

export const argsLineText = (variable: KubeletVariable, args: readonly string[]) => `${variable}="${args.join(' ')}"`;

/**
 * The node's kubelet argument lines, from diagnose's `kubeletArgs` ("<file>: <line>"): the
 * last assignment in each file (systemd keeps the last), and the --node-ip in effect.
 */
export function kubeletArgsOf(n: Pick<DiagnoseNodeFacts, 'kubeletArgs'>): { lines: ArgsLine[]; nodeIp: string | null; nodeIpFile: KubeletFile | null } {
  const lines = FILE_ORDER.map((file) => {
    const variable = KUBELET_FILES[file];
    const mine = n.kubeletArgs.filter((l) => l.startsWith(`${file}: `)).map((l) => l.slice(file.length + 2)).filter((l) => new RegExp(`^\\s*${variable}=`).test(l));
    return parseArgsLine(file, mine.length ? mine[mine.length - 1] : null);
  });
  let nodeIp: string | null = null;
  let nodeIpFile: KubeletFile | null = null;
  for (const l of lines) {
    const v = l.args ? nodeIpFlag(l.args) : undefined;
    if (v !== undefined) {
      nodeIp = v;
      nodeIpFile = l.file;
    }
  }
  return { lines, nodeIp, nodeIpFile };
}

/** A node's address on the chosen network. */
export interface NodeAddress {
  ifname: string;
  /** "a.b.c.d" */
  address: string;
  prefixlen: number;
}

export interface NetworkChoice {
  /** How it was chosen, for the plan. */
  by: string;
  /** The network (a CIDR), or the interface name with --interface. */
  network: string;
  addresses: Record<string, NodeAddress>;
}

const hostAddrs = (n: DiagnoseNodeFacts, ifname?: string) =>
  n.addrs
    .filter((a) => (ifname ? a.ifname === ifname : !VIRTUAL_IF.test(a.ifname)))
    .flatMap((a) => a.ipv4.map((cidr) => ({ ifname: a.ifname, address: cidr.split('/')[0], prefixlen: Number(cidr.split('/')[1]), cidr })));

/**
 * The network the nodes really share, with each node's one address on it, or why there is
 * no such choice. `nodes` are every node that was read; `shared` the addresses several hold.
 */
export function chooseNetwork(nodes: readonly DiagnoseNodeFacts[], shared: ReadonlySet<string>, opts: { network?: string; interface?: string }): NetworkChoice | { refusal: string } {
  if (nodes.length === 0) return { refusal: 'no node could be read' };
  const check = (by: string, network: string, pick: (n: DiagnoseNodeFacts) => ReturnType<typeof hostAddrs>): NetworkChoice | { refusal: string } => {
    const addresses: Record<string, NodeAddress> = {};
    const problems: string[] = [];
    for (const n of nodes) {
      const got = pick(n);
      if (got.length !== 1) {
        problems.push(`${n.name} has ${got.length === 0 ? 'no address' : `${got.length} addresses (${got.map((g) => g.cidr).join(', ')})`} on ${network}`);
        continue;
      }
      if (shared.has(got[0].address)) problems.push(`${n.name}'s ${got[0].address} is held by other nodes too`);
      addresses[n.name] = { ifname: got[0].ifname, address: got[0].address, prefixlen: got[0].prefixlen };
    }
    const seen = new Map<string, string>();
    for (const [name, a] of Object.entries(addresses)) {
      const other = seen.get(a.address);
      if (other) problems.push(`${other} and ${name} both have ${a.address}`);
      seen.set(a.address, name);
    }
    return problems.length ? { refusal: `${by}: ${problems.join('; ')}` } : { by, network, addresses };
  };
  if (opts.interface !== undefined) {
    if (!IFNAME.test(opts.interface)) return { refusal: `--interface ${JSON.stringify(opts.interface)} is not an interface name` };
    return check(`--interface ${opts.interface}`, opts.interface, (n) => hostAddrs(n, opts.interface));
  }
  if (opts.network !== undefined) {
    if (!isIpv4Cidr(opts.network) || networkOf(opts.network) !== opts.network) return { refusal: `--network ${JSON.stringify(opts.network)} is not an IPv4 network in CIDR form (a.b.c.0/24)` };
    return check(`--network ${opts.network}`, opts.network, (n) => hostAddrs(n).filter((a) => inCidr(a.address, opts.network!)));
  }
  const candidates = [...new Set(nodes.flatMap((n) => hostAddrs(n).map((a) => networkOf(a.cidr)!)))].sort();
  const good = candidates.map((c) => check(`found ${c}`, c, (n) => hostAddrs(n).filter((a) => networkOf(a.cidr) === c))).filter((c): c is NetworkChoice => 'addresses' in c);
  if (good.length === 1) return good[0];
  if (good.length === 0) return { refusal: `no network on which every node has its own address (networks seen: ${candidates.join(', ') || 'none'}): give the network with --network CIDR or --interface NAME` };
  return { refusal: `several networks could be the nodes' own (${good.map((g) => g.network).join(', ')}): choose one with --network CIDR` };
}

/** Calico's IP_AUTODETECTION_METHOD values kubemend accepts from --calico-method. */
export function isCalicoMethod(v: string): boolean {
  if (v === 'first-found' || v === 'kubernetes-internal-ip') return true;
  const m = /^(can-reach|interface|skip-interface|cidr)=(.{1,200})$/.exec(v);
  if (!m) return false;
  const [, kind, arg] = m;
  if (kind === 'can-reach') return isIpv4(arg) || /^[A-Za-z0-9]([-A-Za-z0-9.]{0,252})$/.test(arg);
  if (kind === 'cidr') return arg.split(',').every(isIpv4Cidr);
  // interface= and skip-interface= take comma-separated regular expressions (Go's RE2 syntax).
  return arg.split(',').every((r) => {
    if (r.length === 0 || /[\s"'`]/.test(r)) return false;
    try {
      new RegExp(r);
      return true;
    } catch {
      return false;
    }
  });
}

const escapeRegex = (s: string) => s.replace(/[.]/g, '\\.');

export interface CalicoChange {
  /** namespace/name of the calico-node DaemonSet. */
  daemonSet: string;
  namespace: string;
  name: string;
  /** The method now (null: unset, which is first-found). */
  from: string | null;
  to: string;
  /** Whether kubemend predicted the new method's choice from the nodes' addresses (false for --calico-method). */
  predicted: boolean;
}

interface NodeBase extends PlannedNode {
  /** The address the kubelet must report, and where it is. */
  target: NodeAddress;
  internalIpsBefore: string[];
}

/** A joined node whose kubelet gets --node-ip in its own file and a restart. */
export interface KubeletNode extends NodeBase {
  kind: 'kubelet';
  file: KubeletFile;
  variable: KubeletVariable;
  /** The line as it is now (null: the file has no such line); the write refuses if it changed. */
  lineBefore: string | null;
  lineAfter: string;
}

/** A node that never joined, joined now with --node-ip in its JoinConfiguration. */
export interface JoinNode extends NodeBase {
  kind: 'join';
  /** The control-plane node that makes the join token. */
  controlPlane: string;
  /** The endpoint its join command must name ("<address>:6443"). */
  endpoint: string;
}

export type NodeAddressNode = KubeletNode | JoinNode;

/** How long a join token lives: long enough for one join, short enough not to matter after. */
export const JOIN_TOKEN_TTL = '15m0s';

export interface NodeAddressPlan extends RunbookPlan {
  nodes: NodeAddressNode[];
  network: { by: string; network: string; addresses: Record<string, string> } | null;
  calico: CalicoChange | null;
  /** What kubemend does not do, with the exact procedure (the control plane's advertise address, never-joined workers). */
  manual: string[];
  refused: string[];
}

export interface PlanOptions {
  selected: readonly string[];
  /** Whether the run covers every node (no --node): calico-node's setting is one for all of them. */
  everyNodeSelected: boolean;
  excluded: readonly string[];
  network?: string;
  interface?: string;
  calicoMethod?: string;
  kubeletTimeoutMs: number;
  rolloutTimeoutMs: number;
  runTag: string;
}

/** Where a node's kubelet files are backed up before they change. */
export const backupDir = (runTag: string) => `/var/lib/kubemend/backup/${runTag}`;

/**
 * The manual procedure for moving a kubeadm control plane's advertise address: why kubemend
 * does not do it, and the steps in order, with this cluster's addresses.
 */
export function advertiseProcedure(node: string, from: string, to: string): string {
  return [
    `${node}: kube-apiserver advertises ${from}, an address other nodes hold too; kubemend does not move a control plane's advertise address:`,
    `its serving certificate's SANs, etcd's peer and client URLs, the kubeadm-config and cluster-info ConfigMaps and every kubeconfig's server change together, and a half-done change cuts every node off the API.`,
    `By hand on ${node}, after an etcd snapshot and a copy of /etc/kubernetes:`,
    `(1) set advertiseAddress: ${to} (localAPIEndpoint) in the kubeadm-config ConfigMap's ClusterConfiguration/InitConfiguration and save it as kubeadm.yaml;`,
    `(2) mv /etc/kubernetes/pki/apiserver.{crt,key} /root/ && kubeadm init phase certs apiserver --config kubeadm.yaml;`,
    `(3) kubeadm init phase control-plane apiserver --config kubeadm.yaml and kubeadm init phase etcd local --config kubeadm.yaml (etcd: etcdctl member update <id> --peer-urls=https://${to}:2380 first);`,
    `(4) replace https://${from}:6443 with https://${to}:6443 in /etc/kubernetes/{admin,kubelet,controller-manager,scheduler,super-admin}.conf, in kube-public/cluster-info and in kube-system/kube-proxy's kubeconfig.conf;`,
    `(5) systemctl restart kubelet, then kubeadm token create --print-join-command on ${node} prints a join command for https://${to}:6443.`,
    `Re-initialising the cluster with kubeadm init --apiserver-advertise-address=${to}, as the seed did, is the alternative.`,
  ].join(' ');
}

const secs = (ms: number) => `${Math.round(ms / 1000)} s`;

/**
 * The plan: per node, the kubelet's --node-ip (in the node's own file) and a restart; then,
 * once for the cluster, calico-node's autodetection; and what is left to the operator.
 */
export function planNodeAddress(facts: DiagnoseFacts, findings: readonly Finding[], o: PlanOptions): NodeAddressPlan {
  const shared = new Set(sharedHostAddresses(facts).keys());
  const apiNodes = facts.api?.nodes ?? [];
  const choice = chooseNetwork(facts.nodes, shared, { network: o.network, interface: o.interface });
  const refused: string[] = [];
  const manual: string[] = [];
  const skipped: Array<{ name: string; reason: string }> = [];
  const nodes: NodeAddressNode[] = [];
  const unread = facts.configured.filter((c) => !facts.nodes.some((n) => n.name === c));
  if (unread.length) refused.push(`${unread.join(', ')} could not be read: the nodes' own network cannot be chosen without every node`);
  if ('refusal' in choice) refused.push(`the nodes' own network: ${choice.refusal}`);
  const addresses = 'addresses' in choice ? choice.addresses : {};
  const cp = apiNodes.filter((n) => n.controlPlane).map((n) => n.name).sort()[0] ?? null;
  const cpAddress = cp ? addresses[cp] : undefined;

  for (const n of [...facts.nodes].sort((a, b) => a.name.localeCompare(b.name))) {
    const target = addresses[n.name];
    const api = apiNodes.find((a) => a.name === n.name);
    if (!target) continue;
    const { lines, nodeIp, nodeIpFile } = kubeletArgsOf(n);
    if (!api) continue; // never joined: no kubelet to fix (see `manual`)
    if (api.internalIPs.length === 1 && api.internalIPs[0] === target.address && nodeIp === target.address) continue;
    if (!o.selected.includes(n.name)) {
      skipped.push({ name: n.name, reason: `not selected (--node): its InternalIP is ${api.internalIPs.join(', ') || 'none'}, it should be ${target.address}` });
      continue;
    }
    if (o.excluded.includes(n.name)) {
      skipped.push({ name: n.name, reason: `excluded by its label: its InternalIP is ${api.internalIPs.join(', ') || 'none'}, it should be ${target.address}` });
      continue;
    }
    // The file that already sets --node-ip, else /etc/default/kubelet.
    const file: KubeletFile = nodeIpFile ?? '/etc/default/kubelet';
    const line = lines.find((l) => l.file === file)!;
    if (line.args === null) {
      refused.push(`${n.name}: ${file} has ${JSON.stringify(line.line)}: ${line.problem}; set --node-ip=${target.address} there by hand`);
      continue;
    }
    const lineAfter = argsLineText(line.variable, withNodeIp(line.args, target.address));
    const backup = `${backupDir(o.runTag)}/${file.replace(/\//g, '_')}`;
    nodes.push({
      kind: 'kubelet',
      name: n.name,
      role: api.controlPlane ? 'control-plane' : 'worker',
      target,
      internalIpsBefore: api.internalIPs,
      file,
      variable: line.variable,
      lineBefore: line.line,
      lineAfter,
      steps: [
        `copy ${file} to ${backup} (once)`,
        `${file}: ${line.line === null ? `add ${lineAfter}` : `${line.line} -> ${lineAfter}`}${nodeIp !== null && nodeIpFile !== file ? ` (--node-ip=${nodeIp} in ${nodeIpFile} is overridden by it)` : ''}`,
        'systemctl restart kubelet (running pods keep running)',
        `wait until Node ${n.name} is Ready with InternalIP ${target.address} on ${target.ifname} (at most ${secs(o.kubeletTimeoutMs)}); if it is not, restore ${file} from the copy and restart the kubelet again`,
      ],
    });
  }
  // kubemend restarts the control plane's kubelet last: the workers' show the change works first.
  nodes.sort((a, b) => (a.role === b.role ? 0 : a.role === 'control-plane' ? 1 : -1));

  // Calico: its autodetection, once for the cluster.
  let calico: CalicoChange | null = null;
  const auto = facts.api?.calicoAutodetection;
  if (auto) {
    const [namespace, name] = auto.daemonSet.split('/');
    const firstFound = auto.method === null || auto.method === 'first-found';
    let to: string | null = null;
    let predicted = true;
    if (o.calicoMethod !== undefined) {
      if (!isCalicoMethod(o.calicoMethod)) refused.push(`--calico-method ${JSON.stringify(o.calicoMethod)} is not one of Calico's IP_AUTODETECTION_METHOD forms (first-found, can-reach=<ip>, interface=<regex,...>, skip-interface=<regex,...>, cidr=<cidr,...>, kubernetes-internal-ip)`);
      else if (o.calicoMethod !== auto.method) to = o.calicoMethod;
      predicted = false;
    } else if (firstFound && (shared.size > 0 || o.network !== undefined || o.interface !== undefined) && 'addresses' in choice) {
      if (o.interface !== undefined) to = `interface=${escapeRegex(o.interface)}`;
      else if (o.network !== undefined) to = `cidr=${o.network}`;
      else if (cpAddress) to = `can-reach=${cpAddress.address}`;
      else refused.push('Calico: no control-plane Node to reach: give --interface or --network');
    }
    if (to !== null && !o.everyNodeSelected) {
      skipped.push({ name: auto.daemonSet, reason: `not changed by a run limited with --node: IP_AUTODETECTION_METHOD is one setting for every node (it would become ${to}); run without --node` });
    } else if (to !== null) {
      if (namespace === 'calico-system') refused.push(`Calico: ${auto.daemonSet} is the Tigera operator's (it would undo a change to the DaemonSet): set spec.calicoNetwork.nodeAddressAutodetectionV4 in the Installation "default" to ${to} instead`);
      else calico = { daemonSet: auto.daemonSet, namespace, name, from: auto.method, to, predicted };
    }
  }

  // What kubemend leaves to the operator.
  for (const n of facts.nodes) {
    const adv = n.apiserverAdvertise;
    if (adv && shared.has(adv)) manual.push(advertiseProcedure(n.name, adv, addresses[n.name]?.address ?? '<its own address>'));
  }
  // Nodes that never joined: joined now if the control plane advertises its own address on the
  // nodes' network (what cluster-info names, and so what a join talks to); else it is manual.
  const never = facts.api ? facts.configured.filter((c) => !apiNodes.some((a) => a.name === c)).sort() : [];
  const cpFacts = cp ? facts.nodes.find((n) => n.name === cp) : undefined;
  const cpAdvertisesOwn = !!cpAddress && !!cpFacts && cpFacts.apiserverAdvertise === cpAddress.address;
  const joins: JoinNode[] = [];
  for (const name of never) {
    const target = addresses[name];
    const n = facts.nodes.find((x) => x.name === name);
    if (!target || !n || !cp || !cpAddress) continue;
    if (!cpAdvertisesOwn) {
      manual.push(`never joined: ${name}. Once the control plane advertises an address it reaches, kubemend run node-address joins it (or by hand: kubeadm token create --print-join-command --ttl 15m on ${cp}, and the command it prints on ${name})`);
      continue;
    }
    if (n.kubeletServer !== null) {
      refused.push(`${name}: no Node object, yet it has /etc/kubernetes/kubelet.conf (server ${n.kubeletServer}): a join left half done, or another cluster's; run kubeadm reset -f on it first`);
      continue;
    }
    if (!o.selected.includes(name)) {
      skipped.push({ name, reason: `not selected (--node): it never joined` });
      continue;
    }
    const endpoint = `${cpAddress.address}:6443`;
    joins.push({
      kind: 'join',
      unregistered: true,
      name,
      role: 'worker',
      target,
      internalIpsBefore: [],
      controlPlane: cp,
      endpoint,
      steps: [
        `on ${cp}: kubeadm token create --ttl ${JOIN_TOKEN_TTL} --print-join-command, and check it names ${endpoint} (the token stays inside the activity: never in a workflow input, result or history, nor in the audit trail)`,
        `on ${name}: kubeadm join --config <a 0600 file under /run, removed after> (JoinConfiguration: apiServerEndpoint ${endpoint}, the token, the CA hash, nodeRegistration.kubeletExtraArgs node-ip=${target.address})`,
        `on ${cp}: kubeadm token delete <its id>`,
        `wait until Node ${name} is Ready with InternalIP ${target.address} (at most ${secs(o.kubeletTimeoutMs)}); no undo: undoing a join is kubeadm reset -f, which deletes more than the join made`,
      ],
    });
  }
  // Workers' kubelets first, then the joins, the control plane's kubelet last.
  nodes.splice(nodes.findIndex((n) => n.role === 'control-plane') === -1 ? nodes.length : nodes.findIndex((n) => n.role === 'control-plane'), 0, ...joins);

  const summary = [
    'addresses' in choice ? `the nodes' own network: ${choice.network} (${choice.by}): ${Object.entries(addresses).map(([k, v]) => `${k} ${v.address}`).join(', ')}` : `the nodes' own network: not chosen`,
    ...(shared.size ? [`shared by several nodes: ${[...shared].join(', ')}`] : []),
    nodes.some((n) => n.kind === 'kubelet') ? `kubelets: --node-ip on ${nodes.filter((n) => n.kind === 'kubelet').map((n) => n.name).join(', ')}, one at a time, each only while the cluster is within its disruption budget` : 'kubelets: every Node already reports its own address',
    ...(joins.length ? [`joins: ${joins.map((n) => n.name).join(', ')} to ${joins[0].endpoint}, with --node-ip from the start`] : []),
    calico
      ? `Calico: ${calico.daemonSet} IP_AUTODETECTION_METHOD ${calico.from ?? '(unset: first-found)'} -> ${calico.to}${calico.predicted ? '' : ' (as given: not predicted from the nodes\' addresses)'}; then wait for every calico-node pod Ready (at most ${secs(o.rolloutTimeoutMs)}), else restore the DaemonSet's template exactly as it was`
      : auto
        ? `Calico: ${auto.daemonSet} IP_AUTODETECTION_METHOD ${auto.method ?? '(unset: first-found)'} is left as it is`
        : 'Calico: no calico-node DaemonSet',
    ...manual.map((m) => `manual: ${m}`),
  ];
  const content = { nodes: nodes.map((n) => ({ name: n.name, steps: n.steps, lineBefore: n.kind === 'kubelet' ? n.lineBefore : null })), calico, manual, skipped, refused, findings: findings.map((f) => `${f.node}:${f.signature}`) };
  const cluster = calico ? [`${calico.daemonSet}: IP_AUTODETECTION_METHOD ${calico.from ?? '(unset)'} -> ${calico.to}`, `wait until every calico-node pod runs the new template and is Ready (at most ${secs(o.rolloutTimeoutMs)}); if not, put the env entry back and check the template is byte for byte the one before`] : [];
  return { id: planId(content), nodes, cluster, network: 'addresses' in choice ? { by: choice.by, network: choice.network, addresses: Object.fromEntries(Object.entries(addresses).map(([k, v]) => [k, v.address])) } : null, calico, manual, skipped, summary, refused };
}

/** What is still wrong after the run, from fresh facts (for the result and the cluster's verification). */
export function problemsAfter(facts: DiagnoseFacts, plan: Pick<NodeAddressPlan, 'network' | 'calico'>): string[] {
  const out: string[] = [];
  const apiNodes = facts.api?.nodes ?? [];
  for (const n of apiNodes) {
    const want = plan.network?.addresses[n.name];
    if (want && !(n.internalIPs.length === 1 && n.internalIPs[0] === want)) out.push(`${n.name}: InternalIP ${n.internalIPs.join(', ') || 'none'}, expected ${want}`);
    if (n.ready !== 'True') out.push(`${n.name}: Node not Ready (${n.readyReason ?? 'no reason'})`);
  }
  if (plan.calico) {
    const auto = facts.api?.calicoAutodetection;
    if (auto?.method !== plan.calico.to) out.push(`${plan.calico.daemonSet}: IP_AUTODETECTION_METHOD is ${auto?.method ?? 'unset'}, expected ${plan.calico.to}`);
    for (const p of facts.api?.cniPods.filter((c) => c.cni === 'calico') ?? []) {
      if (!p.ready) out.push(`${p.namespace}/${p.name} on ${p.node}: not Ready${p.waitingReason ? ` (${p.waitingReason}${p.lastLog ? `: ${p.lastLog}` : ''})` : ''}`);
    }
  }
  return out;
}
