/**
 * Pod sandboxes on lab nodes, attached and detached by the real containernetworking plugins
 * (bridge, host-local, loopback; v1.10.0, built by scripts/build-cni.sh into .tools/cni/bin),
 * the way a kubelet's container runtime does it:
 *  - the sandbox's network namespace is made inside the node (`ip netns add cni-<uuid>` in the
 *    node's mount namespace, so its bind mount lives under the node's own /run/netns, never
 *    on the host);
 *  - the plugins are exec'd inside the node's namespaces with the CNI environment
 *    (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH) and their
 *    network config on stdin: first `loopback` for lo, then the node's own network from the
 *    first file in its /etc/cni/net.d, as libcni orders and builds it;
 *  - host-local keeps its files in the node's /var/lib/cni/networks (the node's overlay).
 *
 * Not served by the module proxy here: the flannel CNI plugin. Its delegation step is done
 * here as flannel does it: read the node's /run/flannel/subnet.env, build a `bridge` config
 * (cni0, isGateway, ipMasq = !FLANNEL_IPMASQ, FLANNEL_MTU; with ipMasq, bridge writes its iptables
 * rules in the node's network namespace) with `host-local` over
 * FLANNEL_SUBNET, save it under /var/lib/cni/flannel/<id> for the DEL, and exec `bridge`.
 * `portmap` is not built: it only acts on pods with hostPorts (none here) and needs iptables,
 * so a conflist's portmap entry is passed over and reported as such.
 *
 * The runtime's record of its sandboxes is the crictl stand-in's file (/var/lib/kmlab/cri on
 * the node), so `crictl pods` lists the sandboxes made here. `crictl runp / stopp / rmp` on a
 * node reach runSandbox, stopSandbox and removeSandbox below through the lab daemon (cri.ts).
 * A plugin's failure names the config entry the runtime ran (flannel's, for the delegated
 * bridge), as libcni's `plugin type="flannel" failed (add): ...` does.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { REPO_ROOT } from '../../worker/paths';
import { LabError, labProcesses, readState } from './lab';

/** Where scripts/build-cni.sh puts the plugins: the lab's CNI_PATH. */
export const CNI_BIN = join(REPO_ROOT, '.tools', 'cni', 'bin');
const PLUGINS = ['bridge', 'host-local', 'loopback'];

/** Bad input (a malformed pod reference, an unknown node or pod): exit 2 at the CLI. */
export class CniInputError extends LabError {}

/**
 * The network config entry a runtime ran when a plugin failed, as libcni names it in
 * `plugin type="flannel" failed (add): ...`: the entry's own type, and its own name where the
 * entry has one (a conflist's entries usually do not; containerd's loopback config does).
 */
export interface NetworkEntry {
  type: string;
  name?: string;
}

/** A plugin's own error result (`{"code", "msg", "details"}` on stdout, exit status non-zero). */
export class CniPluginError extends LabError {
  constructor(
    readonly plugin: string,
    readonly command: 'ADD' | 'DEL',
    readonly code: number | undefined,
    readonly msg: string,
    readonly details?: string,
    /** The entry the runtime ran: flannel's when the lab's delegation exec'd bridge for it. */
    readonly entry: NetworkEntry = { type: plugin },
    /** What the lab adds for a reader of its own CLI; never part of the plugin's message. */
    note?: string,
  ) {
    super(`${plugin} ${command} failed${code === undefined ? '' : ` (code ${code})`}: ${msg}${details ? `; ${details}` : ''}${note ? ` (${note})` : ''}`);
  }

  /** The same failure, charged to the config entry whose step ran the plugin. */
  of(entry: NetworkEntry): CniPluginError {
    return new CniPluginError(this.plugin, this.command, this.code, this.msg, this.details, entry);
  }
}

/** The entry as libcni describes it: its type, and its own "name" if it has one. */
function entryOf(conf: Record<string, unknown> & { type: string }): NetworkEntry {
  return typeof conf.name === 'string' && conf.name ? { type: conf.type, name: conf.name } : { type: conf.type };
}

/** Runs `fn`, charging a plugin failure in it to `entry`. */
async function chargedTo<T>(entry: NetworkEntry, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw err instanceof CniPluginError ? err.of(entry) : err;
  }
}

export interface PodRef {
  namespace: string;
  name: string;
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** "<namespace>/<name>": a namespace is a DNS-1123 label, a pod name a DNS-1123 subdomain. */
export function parsePodRef(text: string): PodRef {
  const parts = text.split('/');
  if (parts.length !== 2) throw new CniInputError(`<pod>: must be <namespace>/<name>, got ${JSON.stringify(text)}`);
  const [namespace, name] = parts;
  if (!DNS1123_LABEL.test(namespace)) throw new CniInputError(`<pod>: namespace must be a DNS-1123 label, got ${JSON.stringify(namespace)}`);
  if (!DNS1123_SUBDOMAIN.test(name)) throw new CniInputError(`<pod>: name must be a DNS-1123 subdomain, got ${JSON.stringify(name)}`);
  return { namespace, name };
}

/** A CNI result's first address (cniVersion 0.3.x to 1.x share the `ips` shape). */
export interface CniResult {
  cniVersion?: string;
  interfaces?: Array<{ name: string; mac?: string; sandbox?: string }>;
  ips?: Array<{ address: string; gateway?: string; interface?: number; version?: string }>;
  routes?: Array<{ dst: string; gw?: string }>;
}

export interface Sandbox {
  /** The sandbox (pause container) id: CNI_CONTAINERID. */
  id: string;
  pod: PodRef;
  /** CNI_NETNS as the node sees it. */
  netns: string;
}

export interface PodAddResult extends Sandbox {
  node: string;
  /** eth0's address with its prefix length, as host-local gave it, e.g. 10.244.1.2/24. */
  address: string;
  gateway?: string;
  result: CniResult;
  /** Conflist entries passed over, with why. */
  skipped: string[];
}

/** containerd names a sandbox's netns cni-<uuid>; here the uuid is read off the sandbox id. */
export function netnsName(sandboxId: string): string {
  const h = sandboxId;
  return `cni-${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** The node's holder pid (its namespaces); a node that is down is an error. */
export function holderPid(dir: string, node: string): number {
  const state = readState(dir);
  if (!state) throw new CniInputError('the lab is down');
  if (!state.nodes.some((n) => n.name === node)) throw new CniInputError(`no lab node ${JSON.stringify(node)}`);
  const p = labProcesses(dir).find((x) => x.argv0 === `kmlab-node ${dir} ${node}`);
  if (!p) throw new LabError(`${node} is down`);
  return p.pid;
}


/** Runs argv inside the node's network, mount, UTS and PID namespaces. */
export function nodeExec(pid: number, argv: string[], opts: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('nsenter', ['-t', String(pid), '-n', '-m', '-u', '-p', '--', ...argv], {
      env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', ...opts.env },
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d) => (stdout += d));
    child.stderr?.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    if (child.stdin) {
      child.stdin.on('error', () => undefined); // a plugin that exits before reading its config: its exit status tells
      child.stdin.end(opts.input);
    }
  });
}

async function nodeRun(pid: number, argv: string[]): Promise<void> {
  const r = await nodeExec(pid, argv);
  if (r.code !== 0) throw new LabError(`${argv.join(' ')}: ${(r.stderr || r.stdout).trim()}`);
}

/**
 * Files are read and written inside the node (never through /proc/<pid>/root, where an
 * absolute symlink on the node would resolve on the host).
 */
export async function nodeRead(pid: number, path: string): Promise<string | undefined> {
  const r = await nodeExec(pid, ['cat', '--', path]);
  return r.code === 0 ? r.stdout : undefined;
}

export async function nodeList(pid: number, path: string): Promise<string[]> {
  const r = await nodeExec(pid, ['ls', '-1', '--', path]);
  return r.code === 0 ? r.stdout.split('\n').filter(Boolean) : [];
}

/** Writes (or with append, appends) stdin to a file on the node, making its directory. */
/**
 * Writes a file in the node. A whole-file write goes to a temporary file renamed over the
 * old one, so a reader (e.g. a StopPodSandbox looking up its record while another rewrites
 * the records) sees the old or the new file, never a truncated one.
 */
export async function nodeWrite(pid: number, path: string, text: string, append = false): Promise<void> {
  const write = append ? 'cat >> "$1"' : 'cat > "$1.kmlab-tmp.$$" && mv -f -- "$1.kmlab-tmp.$$" "$1"';
  const r = await nodeExec(pid, ['sh', '-c', `umask 077 && mkdir -p -- "$(dirname -- "$1")" && ${write}`, 'kmlab-write', path], { input: text });
  if (r.code !== 0) throw new LabError(`writing ${path} on the node: ${r.stderr.trim()}`);
}

export async function nodeExists(pid: number, path: string): Promise<boolean> {
  return (await nodeExec(pid, ['test', '-e', path])).code === 0;
}

interface CniEnv {
  command: 'ADD' | 'DEL';
  containerId: string;
  netns: string;
  ifname: string;
  pod: PodRef;
  /** The pod's uid, passed as K8S_POD_UID where the runtime knows it (crictl runp). */
  uid?: string;
}

/** Execs one plugin binary in the node as a runtime does: config on stdin, result or error on stdout. */
async function execPlugin(pid: number, type: string, config: Record<string, unknown>, env: CniEnv): Promise<CniResult> {
  if (!PLUGINS.includes(type)) throw new LabError(`failed to find plugin ${JSON.stringify(type)} in path [${CNI_BIN}] (the lab builds ${PLUGINS.join(', ')})`);
  const r = await nodeExec(pid, [join(CNI_BIN, type)], {
    env: {
      CNI_COMMAND: env.command,
      CNI_CONTAINERID: env.containerId,
      CNI_NETNS: env.netns,
      CNI_IFNAME: env.ifname,
      CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${env.pod.namespace};K8S_POD_NAME=${env.pod.name};K8S_POD_INFRA_CONTAINER_ID=${env.containerId}${env.uid ? `;K8S_POD_UID=${env.uid}` : ''}`,
      CNI_PATH: CNI_BIN,
    },
    input: JSON.stringify(config),
  });
  if (r.code !== 0) {
    let e: { code?: number; msg?: string; details?: string } = {};
    try {
      e = JSON.parse(r.stdout);
    } catch {
      // not a CNI error result: report what it printed
    }
    throw new CniPluginError(type, env.command, e.code, e.msg ?? (r.stdout + r.stderr).trim(), e.details);
  }
  if (env.command === 'DEL' || !r.stdout.trim()) return {};
  return JSON.parse(r.stdout) as CniResult;
}

interface NetConfList {
  file: string;
  name: string;
  cniVersion: string;
  plugins: Array<Record<string, unknown> & { type: string }>;
}

/** The node's network, as libcni picks it: the first .conf/.conflist/.json in /etc/cni/net.d by name. */
async function nodeNetwork(pid: number): Promise<NetConfList> {
  const files = (await nodeList(pid, '/etc/cni/net.d')).filter((f) => /\.(conf|conflist|json)$/.test(f)).sort();
  if (!files.length) throw new LabError('no network config found in /etc/cni/net.d');
  const file = `/etc/cni/net.d/${files[0]}`;
  const text = await nodeRead(pid, file);
  if (text === undefined) throw new LabError(`cannot read ${file} on the node`);
  const conf = JSON.parse(text) as Record<string, unknown>;
  const plugins = (Array.isArray(conf.plugins) ? conf.plugins : [conf]) as NetConfList['plugins'];
  return { file, name: String(conf.name), cniVersion: String(conf.cniVersion ?? '0.3.1'), plugins };
}

/**
 * flannel's delegation step: the config its plugin hands to `bridge`, from the conflist entry
 * and subnet.env. A delegate's own keys win; the rest as flannel fills them in.
 */
export function flannelDelegate(net: { name: string; cniVersion: string }, entry: Record<string, unknown>, subnetEnv: string): Record<string, unknown> {
  const env = Object.fromEntries(
    subnetEnv
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#') && l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
  for (const k of ['FLANNEL_NETWORK', 'FLANNEL_SUBNET', 'FLANNEL_MTU', 'FLANNEL_IPMASQ']) if (env[k] === undefined) throw new LabError(`flannel delegation: ${k} is missing from /run/flannel/subnet.env`);
  const subnet = maskCidr(env.FLANNEL_SUBNET);
  const delegate: Record<string, unknown> = { ...((entry.delegate as Record<string, unknown> | undefined) ?? {}) };
  delegate.name ??= net.name;
  delegate.type ??= 'bridge';
  delegate.ipMasq ??= env.FLANNEL_IPMASQ !== 'true';
  delegate.mtu ??= Number(env.FLANNEL_MTU);
  if (delegate.type === 'bridge') delegate.isGateway ??= true;
  delegate.cniVersion = net.cniVersion;
  delegate.ipam ??= { type: 'host-local', ranges: [[{ subnet }]], routes: env.FLANNEL_NETWORK.split(',').map((dst: string) => ({ dst })) };
  return delegate;
}

/** 10.244.1.1/24 -> 10.244.1.0/24 (host-local refuses a subnet with host bits set). */
export function maskCidr(cidr: string): string {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(cidr);
  if (!m) throw new LabError(`flannel delegation: FLANNEL_SUBNET ${JSON.stringify(cidr)} is not an IPv4 CIDR`);
  const bits = Number(m[5]);
  const n = ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
  const masked = bits === 0 ? 0 : (n & (~0 << (32 - bits))) >>> 0;
  return `${masked >>> 24}.${(masked >>> 16) & 255}.${(masked >>> 8) & 255}.${masked & 255}/${bits}`;
}

const LOOPBACK = { cniVersion: '0.3.1', name: 'cni-loopback', type: 'loopback' };
const FLANNEL_DATA = '/var/lib/cni/flannel';
export const CRI_DB = '/var/lib/kmlab/cri';
/** What a sandbox made by `crictl runp` was asked for (labels, annotations, namespace options), one JSON file each. */
const CRI_CONFIGS = '/var/lib/kmlab/sandboxes';

/** flannel's CNI plugin's own words when flanneld has not written its lease. */
const NO_SUBNET_ENV = 'loadFlannelSubnetEnv failed: open /run/flannel/subnet.env: no such file or directory';

export type SandboxState = 'SANDBOX_READY' | 'SANDBOX_NOTREADY';

/**
 * A sandbox as the runtime records it: one line of /var/lib/kmlab/cri,
 * "pod <id> <name> <namespace> <state> [<uid> <attempt> <created ms> <ip> [<owner>]]" ("-" for empty).
 * Lines the lab writes at `up` and `pod add` have the first five fields only; `owner` is
 * "kubelet" on the sandboxes the lab's kubelet made for API pods (pod-kubelet.ts), which it
 * alone tears down when their pod goes, as a kubelet leaves sandboxes it did not make alone.
 */
export interface SandboxRecord extends Sandbox {
  state: SandboxState;
  /** '' where the record has none. */
  uid: string;
  attempt: number;
  /** Milliseconds since the epoch, where recorded. */
  createdAtMs?: number;
  /** eth0's address without its prefix; '' once stopped, or where not recorded. */
  ip: string;
  /** 'kubelet' where the lab's kubelet made it for an API pod. */
  owner?: 'kubelet';
}

export function parseRecordLine(line: string): SandboxRecord | undefined {
  const f = line.split(' ');
  if (f[0] !== 'pod' || f.length < 5) return undefined;
  const opt = (k: number) => (f[k] === undefined || f[k] === '-' ? '' : f[k]);
  return {
    id: f[1],
    pod: { name: f[2], namespace: f[3] },
    netns: `/var/run/netns/${netnsName(f[1])}`,
    state: f[4] === 'SANDBOX_READY' ? 'SANDBOX_READY' : 'SANDBOX_NOTREADY',
    uid: opt(5),
    attempt: /^\d+$/.test(opt(6)) ? Number(opt(6)) : 0,
    ...(/^\d+$/.test(opt(7)) ? { createdAtMs: Number(opt(7)) } : {}),
    ip: opt(8),
    ...(opt(9) === 'kubelet' ? { owner: 'kubelet' as const } : {}),
  };
}

export function recordLine(r: SandboxRecord): string {
  const words = [r.id, r.pod.name, r.pod.namespace, r.state, r.uid || '-', String(r.attempt), r.createdAtMs === undefined ? '-' : String(r.createdAtMs), r.ip || '-', ...(r.owner ? [r.owner] : [])];
  // Every word is the runtime's own or checked before it gets here (DNS-1123 names, a uid without spaces).
  for (const w of words) if (!/^[A-Za-z0-9._:-]+$/.test(w)) throw new LabError(`refusing ${JSON.stringify(w)} in a runtime record`);
  return `pod ${words.join(' ')}`;
}

/** Sandboxes the node's runtime knows (the crictl stand-in's pod lines). */
export async function sandboxes(dir: string, node: string): Promise<Sandbox[]> {
  return (await recordsOf(holderPid(dir, node))).map(({ id, pod, netns }) => ({ id, pod, netns }));
}

/** Every sandbox record on the node, with crictl's metadata where it has it. */
export async function sandboxRecords(dir: string, node: string): Promise<SandboxRecord[]> {
  return recordsOf(holderPid(dir, node));
}

export async function recordsOf(pid: number): Promise<SandboxRecord[]> {
  return ((await nodeRead(pid, CRI_DB)) ?? '')
    .split('\n')
    .map(parseRecordLine)
    .filter((r): r is SandboxRecord => r !== undefined);
}

async function findSandbox(pid: number, node: string, pod: PodRef): Promise<Sandbox> {
  const s = (await recordsOf(pid)).find((x) => x.pod.namespace === pod.namespace && x.pod.name === pod.name);
  if (!s) throw new CniInputError(`no pod ${pod.namespace}/${pod.name} on ${node}`);
  return s;
}

/** Record changes on one node are serialized within this process (read, filter, write back). */
const recordLocks = new Map<number, Promise<unknown>>();
export function withRecordLock<T>(pid: number, fn: () => Promise<T>): Promise<T> {
  const next = (recordLocks.get(pid) ?? Promise.resolve()).then(fn, fn);
  recordLocks.set(pid, next.catch(() => undefined));
  return next;
}

export async function forgetSandboxRecord(pid: number, id: string): Promise<void> {
  return withRecordLock(pid, () => rewriteRecords(pid, id, 'forget'));
}

/** Rewrites the sandbox's pod line with `change`; with 'forget', the line and its containers' go. */
export async function rewriteRecords(pid: number, id: string, change: ((r: SandboxRecord) => SandboxRecord) | 'forget'): Promise<void> {
  const text = await nodeRead(pid, CRI_DB);
  if (text === undefined) return;
  const kept: string[] = [];
  for (const l of text.split('\n')) {
    const f = l.split(' ');
    const pod = f[0] === 'pod' && f[1] === id ? parseRecordLine(l) : undefined;
    if (change === 'forget' ? pod || (f[0] === 'container' && f[2] === id) : false) continue;
    kept.push(pod && change !== 'forget' ? recordLine(change(pod)) : l);
  }
  await nodeWrite(pid, CRI_DB, kept.join('\n'));
}

/** One CNI ADD or DEL of the node's network (after loopback on ADD, before it on DEL). */
async function runNetwork(pid: number, command: 'ADD' | 'DEL', sandbox: Sandbox, uid?: string): Promise<{ result: CniResult; skipped: string[] }> {
  const net = await nodeNetwork(pid);
  const env: CniEnv = { command, containerId: sandbox.id, netns: sandbox.netns, ifname: 'eth0', pod: sandbox.pod, uid };
  const skipped: string[] = [];
  let result: CniResult = {};
  const entries = command === 'ADD' ? net.plugins : [...net.plugins].reverse();
  for (const entry of entries) {
    if (entry.type === 'portmap') {
      skipped.push(`portmap (${net.file}): not built; it acts only on pods with hostPorts and needs iptables`);
      continue;
    }
    if (entry.type === 'flannel') {
      const saved = `${FLANNEL_DATA}/${sandbox.id}`;
      if (command === 'ADD') {
        const subnetEnv = await nodeRead(pid, '/run/flannel/subnet.env');
        if (subnetEnv === undefined) {
          // The flannel plugin's own error (it returns it as a generic error: code 999).
          throw new CniPluginError('flannel', 'ADD', 999, NO_SUBNET_ENV, undefined, entryOf(entry), "the lab does flannel's delegation, its plugin is not built here: /run/flannel/subnet.env is missing on the node, flanneld has not written its lease");
        }
        const delegate = flannelDelegate(net, entry, subnetEnv);
        await nodeWrite(pid, saved, JSON.stringify(delegate));
        result = await chargedTo(entryOf(entry), () => execPlugin(pid, String(delegate.type), delegate, env));
      } else {
        const text = await nodeRead(pid, saved);
        if (text === undefined) continue; // nothing was delegated for this sandbox
        const delegate = JSON.parse(text) as Record<string, unknown>;
        await chargedTo(entryOf(entry), () => execPlugin(pid, String(delegate.type), delegate, env));
        await nodeRun(pid, ['rm', '-f', '--', saved]);
      }
      continue;
    }
    const config: Record<string, unknown> = { ...entry, name: net.name, cniVersion: net.cniVersion };
    if (command === 'ADD' && result.ips) config.prevResult = result;
    const r = await chargedTo(entryOf(entry), () => execPlugin(pid, entry.type, config, env));
    if (command === 'ADD') result = r;
  }
  return { result, skipped };
}

/**
 * A new sandbox's network, attached as a kubelet's runtime attaches it: a new netns in the
 * node, loopback ADD, then the node's network ADD; then `commit` records it. On any failure
 * the runtime's cleanup follows (DEL, netns removed) and the error is rethrown: a plugin's
 * as a CniPluginError.
 */
async function attach(pid: number, sandbox: Sandbox, uid: string | undefined, commit: (ip: NonNullable<CniResult['ips']>[number]) => Promise<void>): Promise<{ result: CniResult; skipped: string[] }> {
  await nodeRun(pid, ['ip', 'netns', 'add', netnsName(sandbox.id)]);
  try {
    await chargedTo(entryOf(LOOPBACK), () => execPlugin(pid, 'loopback', LOOPBACK, { command: 'ADD', containerId: sandbox.id, netns: sandbox.netns, ifname: 'lo', pod: sandbox.pod, uid }));
    const { result, skipped } = await runNetwork(pid, 'ADD', sandbox, uid);
    const ip = result.ips?.[0];
    if (!ip) throw new LabError(`the network's ADD returned no address: ${JSON.stringify(result)}`);
    await commit(ip);
    return { result, skipped };
  } catch (err) {
    await teardown(pid, sandbox, uid).catch(() => undefined); // as the runtime cleans up a failed sandbox
    throw err;
  }
}

/**
 * A pod sandbox on `node`, attached as a kubelet's runtime attaches it (see `attach`); the
 * plugin's own error is thrown (CniPluginError) after the runtime's cleanup.
 */
export async function podAdd(dir: string, node: string, pod: PodRef): Promise<PodAddResult> {
  const pid = holderPid(dir, node);
  if ((await recordsOf(pid)).some((x) => x.pod.namespace === pod.namespace && x.pod.name === pod.name)) throw new CniInputError(`pod ${pod.namespace}/${pod.name} already has a sandbox on ${node}`);
  const id = randomBytes(32).toString('hex');
  const sandbox: Sandbox = { id, pod, netns: `/var/run/netns/${netnsName(id)}` };
  let address: { address: string; gateway?: string } = { address: '' };
  const { result, skipped } = await attach(pid, sandbox, undefined, async (ip) => {
    address = ip;
    await withRecordLock(pid, () => nodeWrite(pid, CRI_DB, `pod ${id} ${pod.name} ${pod.namespace} SANDBOX_READY\n`, true));
  });
  return { ...sandbox, node, address: address.address, gateway: address.gateway, result, skipped };
}

/** CNI DEL of the node's network then loopback's; the netns goes afterwards, or always with `always`. */
async function teardown(pid: number, sandbox: Sandbox, uid?: string, netnsGoes: 'always' | 'on-success' = 'always'): Promise<void> {
  let ok = false;
  try {
    await runNetwork(pid, 'DEL', sandbox, uid);
    await chargedTo(entryOf(LOOPBACK), () => execPlugin(pid, 'loopback', LOOPBACK, { command: 'DEL', containerId: sandbox.id, netns: sandbox.netns, ifname: 'lo', pod: sandbox.pod, uid }));
    ok = true;
  } finally {
    if (ok || netnsGoes === 'always') await removeNetns(pid, sandbox);
  }
}

async function removeNetns(pid: number, sandbox: Pick<Sandbox, 'id'>): Promise<void> {
  if (await nodeExists(pid, `/run/netns/${netnsName(sandbox.id)}`)) await nodeRun(pid, ['ip', 'netns', 'delete', netnsName(sandbox.id)]);
}

/** CNI DEL of the pod's sandbox (host-local releases its address), then the netns and the record go. */
export async function podDel(dir: string, node: string, pod: PodRef): Promise<Sandbox> {
  const pid = holderPid(dir, node);
  const sandbox = await findSandbox(pid, node, pod);
  await teardown(pid, sandbox);
  await forgetSandboxRecord(pid, sandbox.id);
  return sandbox;
}

/**
 * The sandbox disappears without a CNI DEL, as a runtime restart that lost its state leaves
 * it: the netns and the runtime's record go, host-local's reservation stays (leaked).
 */
export async function podForget(dir: string, node: string, pod: PodRef): Promise<Sandbox> {
  const pid = holderPid(dir, node);
  const sandbox = await findSandbox(pid, node, pod);
  await removeNetns(pid, sandbox);
  await forgetSandboxRecord(pid, sandbox.id);
  return sandbox;
}

/*
 * The runtime's side of `crictl runp / inspectp / stopp / rmp` (test/lab/cri.ts is crictl's):
 * RunPodSandbox, PodSandboxStatus's data, StopPodSandbox and RemovePodSandbox as containerd
 * does them, over the same network code as `pod add` and `pod del`.
 */

/** What RunPodSandbox is asked for, already checked (cri.ts parsePodSandboxConfig). */
export interface SandboxSpec {
  pod: PodRef;
  uid: string;
  attempt: number;
  /** The pod config as crictl sent it, kept for the sandbox's status. */
  config: unknown;
  /** Set by the lab's kubelet: the sandbox is its own, and its pod's containers run in it (one "container" line each). */
  kubelet?: { containers: string[] };
}

/** containerd's name for a sandbox, reserved from RunPodSandbox until RemovePodSandbox. */
export const sandboxName = (s: { pod: PodRef; uid: string; attempt: number }) => `${s.pod.name}_${s.pod.namespace}_${s.uid}_${s.attempt}`;

/** A RunPodSandbox whose name another sandbox holds (containerd's name index). */
export class SandboxNameReservedError extends LabError {
  constructor(
    readonly sandboxName: string,
    readonly holder: string,
  ) {
    super(`failed to reserve sandbox name ${JSON.stringify(sandboxName)}: name ${JSON.stringify(sandboxName)} is reserved for ${JSON.stringify(holder)}`);
  }
}

/** A RunPodSandbox whose network setup failed; the runtime has cleaned up. */
export class SandboxNetworkError extends LabError {
  constructor(
    readonly sandboxId: string,
    readonly phase: 'setup' | 'destroy',
    readonly failure: Error,
  ) {
    super(`failed to ${phase} network for sandbox ${JSON.stringify(sandboxId)}: ${failure.message}`);
  }
}

/** Names being reserved by RunPodSandbox calls in flight, per node holder: name -> sandbox id. */
const reserving = new Map<number, Map<string, string>>();

/**
 * RunPodSandbox: a new sandbox id, its name reserved, the network attached by the real
 * plugins, the record written. A network failure leaves no sandbox, netns or IPAM file.
 */
export async function runSandbox(dir: string, node: string, spec: SandboxSpec): Promise<SandboxRecord> {
  const pid = holderPid(dir, node);
  const id = randomBytes(32).toString('hex');
  const name = sandboxName(spec);
  const inFlight = reserving.get(pid) ?? new Map<string, string>();
  reserving.set(pid, inFlight);
  await withRecordLock(pid, async () => {
    const holder = (await recordsOf(pid)).find((r) => sandboxName(r) === name)?.id ?? inFlight.get(name);
    if (holder) throw new SandboxNameReservedError(name, holder);
    inFlight.set(name, id);
  });
  try {
    const record: SandboxRecord = { id, pod: spec.pod, netns: `/var/run/netns/${netnsName(id)}`, state: 'SANDBOX_READY', uid: spec.uid, attempt: spec.attempt, createdAtMs: Date.now(), ip: '', ...(spec.kubelet ? { owner: 'kubelet' as const } : {}) };
    try {
      await attach(pid, record, spec.uid, async (ip) => {
        record.ip = ip.address.split('/')[0];
        await nodeWrite(pid, `${CRI_CONFIGS}/${id}.json`, `${JSON.stringify(spec.config)}\n`);
        await withRecordLock(pid, () => nodeWrite(pid, CRI_DB, `${recordLine(record)}\n${(spec.kubelet?.containers ?? []).map((c) => containerLine(record, c)).join('')}`, true));
      });
    } catch (err) {
      await nodeRun(pid, ['rm', '-f', '--', `${CRI_CONFIGS}/${id}.json`]).catch(() => undefined);
      throw new SandboxNetworkError(id, 'setup', err as Error);
    }
    return record;
  } finally {
    inFlight.delete(name);
  }
}

/** The runtime's line for a container running in the sandbox: "container <id> <sandbox-id> <name> <pod> CONTAINER_RUNNING". */
export function containerLine(r: Pick<SandboxRecord, 'id' | 'pod'>, container: string): string {
  if (!DNS1123_LABEL.test(container)) throw new LabError(`refusing container name ${JSON.stringify(container)} in a runtime record`);
  return `container ${randomBytes(32).toString('hex')} ${r.id} ${container} ${r.pod.name} CONTAINER_RUNNING\n`;
}

/** The pod config a `crictl runp` sandbox was made with; undefined for the lab's own records. */
export async function sandboxConfig(dir: string, node: string, id: string): Promise<unknown> {
  if (!/^[0-9a-f]{64}$/.test(id)) return undefined;
  const text = await nodeRead(holderPid(dir, node), `${CRI_CONFIGS}/${id}.json`);
  return text === undefined ? undefined : (JSON.parse(text) as unknown);
}

/**
 * StopPodSandbox of a recorded sandbox (the caller resolves its id): CNI DEL by the real
 * plugins, then the netns goes and the sandbox is NOTREADY. As containerd, a stopped
 * sandbox's DEL runs again with an empty CNI_NETNS (the plugins make that a no-op); a failed
 * DEL leaves the sandbox as it was and throws SandboxNetworkError.
 */
export async function stopSandbox(dir: string, node: string, id: string): Promise<void> {
  const pid = holderPid(dir, node);
  const r = (await recordsOf(pid)).find((x) => x.id === id);
  if (!r) return; // gone meanwhile: StopPodSandbox is idempotent
  const netnsThere = await nodeExists(pid, `/run/netns/${netnsName(id)}`);
  try {
    await teardown(pid, { ...r, netns: netnsThere ? r.netns : '' }, r.uid || undefined, 'on-success');
  } catch (err) {
    throw new SandboxNetworkError(id, 'destroy', err as Error);
  }
  await withRecordLock(pid, () => rewriteRecords(pid, id, (x) => ({ ...x, state: 'SANDBOX_NOTREADY', ip: '' })));
}

/** RemovePodSandbox of a recorded sandbox: its netns (if any is left), its config and its record go. */
export async function removeSandbox(dir: string, node: string, id: string): Promise<void> {
  const pid = holderPid(dir, node);
  await removeNetns(pid, { id });
  if (/^[0-9a-f]{64}$/.test(id)) await nodeRun(pid, ['rm', '-f', '--', `${CRI_CONFIGS}/${id}.json`]);
  await forgetSandboxRecord(pid, id);
}

/**
 * seed 003's leak, made as it happens: for each sandbox id, in order, the real host-local ADD
 * that the node's network (the first config in /etc/cni/net.d, flannel's delegation over
 * `subnetEnv`) runs for a new sandbox, and then no DEL, as a runtime that lost its state
 * never sends one. The sandbox's netns and veth went with it; host-local's reservation is all
 * that is left, in the node's /var/lib/cni/networks. One shell in the node runs them all
 * (a process per ADD costs milliseconds here, an nsenter each would cost more). The first
 * failure stops it with host-local's own error.
 */
export async function leakReservations(pid: number, subnetEnv: string, ids: readonly string[]): Promise<void> {
  for (const id of ids) if (!/^[0-9a-f]{64}$/.test(id)) throw new LabError(`refusing sandbox id ${JSON.stringify(id)}`);
  const net = await nodeNetwork(pid);
  const entry = net.plugins.find((p) => p.type === 'flannel');
  if (!entry) throw new LabError(`${net.file} on the node has no flannel entry to leak addresses of`);
  const delegate = flannelDelegate(net, entry, subnetEnv);
  const config = JSON.stringify({ cniVersion: delegate.cniVersion, name: delegate.name, ipam: delegate.ipam });
  const script = [
    'cfg=$(cat)',
    'for id; do',
    '  out=$(printf %s "$cfg" | CNI_COMMAND=ADD CNI_CONTAINERID=$id CNI_NETNS=/var/run/netns/gone CNI_IFNAME=eth0 CNI_PATH="$P" "$P/host-local") || { printf "%s\\n" "$out" >&2; exit 1; }',
    'done',
  ].join('\n');
  const r = await nodeExec(pid, ['sh', '-c', script, 'kmlab-leak', ...ids], { env: { P: CNI_BIN }, input: config, timeoutMs: 120_000 });
  if (r.code !== 0) throw new LabError(`host-local ADD while leaking addresses: ${r.stderr.trim() || r.stdout.trim()}`);
}
