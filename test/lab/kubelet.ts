/**
 * The lab's kubelet unit on each node (with the control plane): what happens when it starts
 * (boot, `kubeadm join`/`init`, `systemctl start|restart kubelet`) and stops (reboot,
 * `kubeadm reset`, `systemctl stop kubelet`). kwok still heartbeats the Node while the
 * kubelet runs (KUBELET_LABEL); this module decides whether it runs and what it reports.
 *
 * At each start, as kubelet v1.34 does:
 *  - its flags come from kubeadm's /var/lib/kubelet/kubeadm-flags.env (KUBELET_KUBEADM_ARGS)
 *    then Debian's /etc/default/kubelet (KUBELET_EXTRA_ARGS), in that order on the command
 *    line (kubeadm's 10-kubeadm.conf drop-in), so the last --node-ip wins;
 *  - with --node-ip, the Node's InternalIP is that address if the node has it on an interface;
 *    if not, the kubelet still runs but its address setter fails on every status update
 *    ("Failed to set some node status fields" err="failed to validate nodeIP: node IP: \"X\"
 *    not found in the host's network interfaces", pkg/kubelet/nodestatus/setters.go and
 *    kubelet_node_status.go's validateNodeIP): the addresses stay what they were;
 *  - without it (the hostname resolving only to 127.0.1.1 in /etc/hosts, as on the lab's and
 *    Debian's nodes: the kubelet skips a loopback address), the first global IPv4
 *    address of the interface holding the default route (apimachinery's ChooseHostInterface);
 *    without a default route the setter fails with ChooseHostInterface's own error;
 *  - then InternalIP and Hostname are patched into the Node's status.
 * A kubelet that cannot start at all (no kubelet.conf: never joined; or a fault injected with
 * failNextKubeletStart) logs klog's "command failed" line and exits; systemd restarts it after
 * RestartSec=10 (kubelet.service: Restart=always), `systemctl is-active kubelet` says
 * "activating" meanwhile, and the Node goes NotReady once its grace period passes without
 * heartbeats. The kubelet's log is .lab/nodes/<n>/control/kubelet.log, /run/kmlab/kubelet.log
 * on the node; the unit's state is control/kubelet-state.
 */
import { execFile } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { api } from './pod-kubelet';
import { BOOTSTRAP_KUBELET_CONF, checkKubeletCredentials, readNodeFile, startHealthz, stopHealthz, tlsBootstrap } from './kubeadm-cluster';
import { setKubelet } from './control-plane';
import { kubeletConfigured, labProcesses, LabError, readState } from './lab';
import { nodeObject } from './manifests';

// ---- Files and flags (pure) ----

/** Where kubeadm writes the kubelet's flags, and where Debian's package keeps the admin's. */
export const KUBEADM_FLAGS_ENV = '/var/lib/kubelet/kubeadm-flags.env';
export const DEFAULT_KUBELET = '/etc/default/kubelet';
/** systemd restarts the kubelet this long after it exits (kubelet.service: Restart=always, RestartSec=10). */
export const RESTART_SEC_MS = 10_000;

/** The value of `name` in an environment file as systemd's EnvironmentFile= reads it (last assignment wins; quotes removed). */
export function envFileValue(text: string | undefined, name: string): string | undefined {
  let value: string | undefined;
  for (const raw of (text ?? '').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const v = m[2];
    value = /^".*"$/.test(v) || /^'.*'$/.test(v) ? v.slice(1, -1) : v;
  }
  return value;
}

/** The last --node-ip in an argument list (`--node-ip=X` or `--node-ip X`), as pflag keeps the last; '' clears it. */
export function nodeIpFlag(args: readonly string[]): string | undefined {
  let ip: string | undefined;
  for (let i = 0; i < args.length; i++) {
    if (args[i].startsWith('--node-ip=')) ip = args[i].slice('--node-ip='.length);
    else if (args[i] === '--node-ip' && i + 1 < args.length) ip = args[++i];
  }
  return ip === undefined || ip === '' ? undefined : ip;
}

/** The kubelet's --node-ip from its two files: $KUBELET_KUBEADM_ARGS then $KUBELET_EXTRA_ARGS, split on whitespace as systemd does. */
export function kubeletNodeIp(kubeadmFlags: string | undefined, defaults: string | undefined): string | undefined {
  const words = (v: string | undefined) => (v ?? '').split(/\s+/).filter(Boolean);
  return nodeIpFlag([...words(envFileValue(kubeadmFlags, 'KUBELET_KUBEADM_ARGS')), ...words(envFileValue(defaults, 'KUBELET_EXTRA_ARGS'))]);
}

/** `ip -j addr show` entries (what is read of them). */
export interface IpLink {
  ifindex: number;
  ifname: string;
  operstate?: string;
  flags?: string[];
  addr_info?: Array<{ family: string; local: string; prefixlen: number; scope?: string }>;
}
/** `ip -j route show default` / `ip -j route get` entries. */
export interface IpRoute {
  dst?: string;
  gateway?: string;
  dev?: string;
  prefsrc?: string;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
export const isIpv4 = (s: string) => IPV4.test(s);

/** Whether an IPv4 address is global unicast as Go's net.IP.IsGlobalUnicast says (not 0/8-unspecified, loopback, link-local, multicast, broadcast). */
export function isGlobalUnicast4(ip: string): boolean {
  if (!isIpv4(ip)) return false;
  const [a, b] = ip.split('.').map(Number);
  return !(ip === '0.0.0.0' || ip === '255.255.255.255' || a === 127 || (a === 169 && b === 254) || a >= 224);
}

export type NodeAddressChoice = { ok: true; ip: string } | { ok: false; error: string };

/**
 * The kubelet's InternalIP choice (pure): --node-ip if the node has it, else the first global
 * IPv4 of the default route's interface. Errors are the kubelet's own (see the file comment).
 */
export function chooseNodeIp(nodeIp: string | undefined, links: readonly IpLink[], defaultRoutes: readonly IpRoute[]): NodeAddressChoice {
  const v4 = (l: IpLink) => (l.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => a.local);
  if (nodeIp !== undefined) {
    if (links.some((l) => v4(l).includes(nodeIp))) return { ok: true, ip: nodeIp };
    return { ok: false, error: `failed to validate nodeIP: node IP: "${nodeIp}" not found in the host's network interfaces` };
  }
  if (!defaultRoutes.length) return { ok: false, error: `can't get ip address of node %NODE%. error: no default routes found in "/proc/net/route" or "/proc/net/ipv6_route"` };
  for (const r of defaultRoutes) {
    const ip = v4(links.find((l) => l.ifname === r.dev) ?? { ifindex: 0, ifname: '' }).find(isGlobalUnicast4);
    if (ip) return { ok: true, ip };
  }
  return { ok: false, error: "can't get ip address of node %NODE%. error: unable to select an IP from default routes." };
}

/** A klog header line as the kubelet writes it: "E1126 09:00:00.123456    1234 file] message". */
export function klogLine(severity: 'I' | 'W' | 'E', file: string, message: string, at = new Date(), pid = 1): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  const t = `${p(at.getUTCMonth() + 1)}${p(at.getUTCDate())} ${p(at.getUTCHours())}:${p(at.getUTCMinutes())}:${p(at.getUTCSeconds())}.${p(at.getUTCMilliseconds(), 3)}000`;
  return `${severity}${t} ${String(pid).padStart(7)} ${file}] ${message}`;
}

/** A value inside klog's quotes: backslashes and quotes escaped, as its structured output does. */
export const klogQuote = (s: string) => s.replace(/\\/g, '\\\\').replace(/"/g, '\\"');

// ---- The unit on a node (in the lab daemon) ----

export type KubeletState = 'active' | 'activating' | 'inactive';

const controlDir = (dir: string, node: string) => join(dir, 'nodes', node, 'control');
export const kubeletLogPath = (dir: string, node: string) => join(controlDir(dir, node), 'kubelet.log');
const statePath = (dir: string, node: string) => join(controlDir(dir, node), 'kubelet-state');
const faultPath = (dir: string, node: string) => join(controlDir(dir, node), 'kubelet-fault.json');

/** What `systemctl is-active kubelet` says on the node. */
export function kubeletState(dir: string, node: string): KubeletState {
  try {
    return readFileSync(statePath(dir, node), 'utf8').trim() as KubeletState;
  } catch {
    return 'inactive';
  }
}

export function writeKubeletState(dir: string, node: string, s: KubeletState): void {
  const tmp = `${statePath(dir, node)}.tmp`;
  writeFileSync(tmp, `${s}\n`);
  renameSync(tmp, statePath(dir, node));
}

function log(dir: string, node: string, line: string): void {
  appendFileSync(kubeletLogPath(dir, node), `${line}\n`);
}

/**
 * What a node's kubelet can do with the API server, read from the kubelet itself (its unit's
 * state and the credentials in its kubelet.conf), not from the Node object:
 *  - 'reaches': it runs with credentials the API server takes: it sees the pods bound to its
 *    node, starts them, reports their status and finishes their deletion;
 *  - 'unreachable': it runs, but every call to the API server fails (a previous cluster's
 *    credentials): its containers keep running, but it sees no new pod, reports nothing and
 *    finishes no deletion (a new pod stays Pending; a deleted one stays Terminating);
 *  - 'stopped': not running (never joined, `kubeadm reset`, crash-looping, or the node is down).
 * Every lab kubelet model (flannel-kubelet.ts, pod-kubelet.ts, calico-node.ts) asks this as
 * well as KUBELET_LABEL (kwok's selector), which the lab sets from the same facts at each start.
 */
export type KubeletApiAccess = 'reaches' | 'unreachable' | 'stopped';
export function kubeletApiAccess(dir: string, node: string, holder: number | undefined): KubeletApiAccess {
  if (holder === undefined || kubeletState(dir, node) !== 'active') return 'stopped';
  return checkKubeletCredentials(dir, holder, (s) => s).ok ? 'reaches' : 'unreachable';
}

/** The default failure: containerd not answering, the commonest reason a kubelet will not start. */
const DEFAULT_FAULT = 'failed to run Kubelet: validate service connection: validate CRI v1 runtime API for endpoint "unix:///var/run/containerd/containerd.sock": rpc error: code = Unavailable desc = connection error: desc = "transport: Error while dialing: dial unix /var/run/containerd/containerd.sock: connect: no such file or directory"';

/**
 * Fault injection for tests: the node's next `starts` kubelet starts fail (systemd's automatic
 * restarts count), each logging `message` as the kubelet's "command failed" error; later
 * starts work. The lab daemon reads it at the next start.
 */
export function failNextKubeletStart(labDir: string, node: string, message = DEFAULT_FAULT, starts = 1): void {
  if (!readState(labDir)?.nodes.some((n) => n.name === node)) throw new LabError(`no lab node ${JSON.stringify(node)}`);
  if (!Number.isInteger(starts) || starts < 1) throw new LabError(`starts must be a positive integer, got ${starts}`);
  writeFileSync(faultPath(labDir, node), `${JSON.stringify({ starts, message })}\n`);
}

/** Takes one failure from the node's injected fault, if there is one. */
function takeFault(dir: string, node: string): string | undefined {
  const path = faultPath(dir, node);
  if (!existsSync(path)) return undefined;
  const f = JSON.parse(readFileSync(path, 'utf8')) as { starts: number; message: string };
  if (f.starts <= 1) rmSync(path, { force: true });
  else writeFileSync(path, `${JSON.stringify({ ...f, starts: f.starts - 1 })}\n`);
  return f.message;
}

/** systemd's pending automatic restarts, by node (only the lab daemon starts kubelets). */
const restarts = new Map<string, NodeJS.Timeout>();

function cancelRestart(node: string): void {
  const t = restarts.get(node);
  if (t) clearTimeout(t);
  restarts.delete(node);
}

function holderOf(dir: string, node: string): number | undefined {
  return labProcesses(dir).find((p) => p.argv0 === `kmlab-node ${dir} ${node}`)?.pid;
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: 'utf8', maxBuffer: 4 << 20 }, (err, stdout, stderr) => (err ? reject(new LabError(`${cmd} ${args.join(' ')}: ${(stderr || err.message).trim()}`)) : resolve(stdout)));
  });
}

/** The node's links with addresses and its default routes, read inside its network namespace. */
export async function nodeNetwork(holder: number): Promise<{ links: IpLink[]; defaultRoutes: IpRoute[] }> {
  const [a, r] = await Promise.all([run('nsenter', ['-t', String(holder), '-n', '--', 'ip', '-j', 'addr', 'show']), run('nsenter', ['-t', String(holder), '-n', '--', 'ip', '-j', '-4', 'route', 'show', 'default'])]);
  return { links: JSON.parse(a || '[]') as IpLink[], defaultRoutes: JSON.parse(r || '[]') as IpRoute[] };
}

/** A file as the node sees it (through its mount namespace), or undefined. */
function nodeFile(holder: number, path: string): string | undefined {
  try {
    return readFileSync(`/proc/${holder}/root${path}`, 'utf8');
  } catch {
    return undefined;
  }
}

const merge = (data: unknown) => ({ contentType: 'application/merge-patch+json', data });

/** The kubelet exits: no heartbeats (the Node goes NotReady after its grace), systemd restarts it later. */
async function exited(dir: string, node: string, message: string, nodeExists: boolean): Promise<void> {
  stopHealthz(dir, node);
  log(dir, node, klogLine('E', 'run.go', `"command failed" err="${klogQuote(message)}"`));
  if (nodeExists) await setKubelet(dir, node, false);
  writeKubeletState(dir, node, 'activating');
  cancelRestart(node);
  restarts.set(
    node,
    setTimeout(() => {
      restarts.delete(node);
      if (kubeletState(dir, node) !== 'activating' || !holderOf(dir, node)) return;
      startKubelet(dir, node).catch((err) => console.error(`lab daemon: kubelet restart on ${node}: ${(err as Error).message}`));
    }, RESTART_SEC_MS),
  );
}

export interface KubeletStart {
  started: boolean;
  /** The Node's InternalIP as this start reported it (undefined: left as it was). */
  internalIp?: string;
}

/**
 * The kubelet starts on a node (see the file comment). `ids`: the machine and boot ids it
 * reports (a reboot passes the booting node's; otherwise the node's current ones).
 */
export function startKubelet(dir: string, name: string, ids?: { machineId: string; bootId: string }): Promise<KubeletStart> {
  return oneAtATime(name, () => start(dir, name, ids));
}

/**
 * A node's kubelet starts and stops, one after another: systemd's automatic restart and a
 * requested one (kubeadm join, systemctl) must not interleave, or the one that read the node's
 * files first could patch the Node last.
 */
const lanes = new Map<string, Promise<unknown>>();
function oneAtATime<T>(node: string, fn: () => Promise<T>): Promise<T> {
  const next = (lanes.get(node) ?? Promise.resolve()).then(fn, fn);
  lanes.set(node, next.catch(() => undefined));
  return next;
}

async function start(dir: string, name: string, ids?: { machineId: string; bootId: string }): Promise<KubeletStart> {
  cancelRestart(name);
  const state = readState(dir);
  const node = state?.nodes.find((n) => n.name === name);
  if (!state || !node) throw new LabError(`no lab node ${name}`);
  const holder = holderOf(dir, name);
  if (holder === undefined) throw new LabError(`${name} is down`);
  const got = state.controlPlane ? await api(dir, 'GET', `/api/v1/nodes/${encodeURIComponent(name)}`) : { status: 404, body: '' };
  if (got.status !== 200 && got.status !== 404) throw new LabError(`reading Node ${name}: HTTP ${got.status} ${got.body.slice(0, 300)}`);
  let nodeExists = got.status === 200;
  log(dir, name, klogLine('I', 'server.go', `"Kubelet version" kubeletVersion="v1.34.4"`));
  const fault = takeFault(dir, name);
  if (fault !== undefined) {
    await exited(dir, name, fault, nodeExists);
    return { started: false };
  }
  if (!kubeletConfigured(dir, name)) {
    if (!state.controlPlane || readNodeFile(holder, BOOTSTRAP_KUBELET_CONF) === undefined) {
      // Before `kubeadm join` the kubelet has neither kubelet.conf nor a bootstrap kubeconfig: it crash-loops.
      await exited(dir, name, `failed to run Kubelet: unable to load bootstrap kubeconfig: stat ${BOOTSTRAP_KUBELET_CONF}: no such file or directory`, nodeExists);
      return { started: false };
    }
    // `kubeadm join` wrote the bootstrap kubeconfig: the kubelet's TLS bootstrap, for real (kubeadm-cluster.ts).
    writeKubeletState(dir, name, 'activating');
    await startHealthz(dir, name, holder);
    try {
      await tlsBootstrap(dir, holder, name, (line) => log(dir, name, klogLine('I', 'bootstrap.go', line)));
    } catch (err) {
      stopHealthz(dir, name);
      await exited(dir, name, (err as Error).message, nodeExists);
      return { started: false };
    }
  }
  writeKubeletState(dir, name, 'active');
  if (!state.controlPlane) return { started: true };
  await startHealthz(dir, name, holder);
  // Its client: kubelet.conf's CA and client certificate, as the API server sees them.
  const server = (s: string) => `Post "${s}/api/v1/nodes"`;
  const creds = checkKubeletCredentials(dir, holder, server);
  if (!creds.ok) {
    // It runs, but every call fails: no registration, no status, no heartbeat (NotReady after the grace period).
    log(dir, name, klogLine('E', 'kubelet_node_status.go', `"Unable to register node with API server" err="${klogQuote(creds.error)}" node="${name}"`));
    if (nodeExists) await setKubelet(dir, name, false);
    return { started: true };
  }
  const machineIdFile = join(dir, 'nodes', name, 'etc.upper', 'machine-id');
  const machineId = ids?.machineId ?? (existsSync(machineIdFile) ? readFileSync(machineIdFile, 'utf8').trim() : node.bootMachineId);
  const bootId = ids?.bootId ?? node.bootId;
  if (!nodeExists) {
    // A node that never joined before: its kubelet registers the Node.
    const created = await api(dir, 'POST', '/api/v1/nodes', { contentType: 'application/json', data: nodeObject({ ...node, bootMachineId: machineId, bootId }, state.scenarios) });
    if (created.status !== 201) throw new LabError(`registering Node ${name}: HTTP ${created.status} ${created.body.slice(0, 300)}`);
    nodeExists = true;
  }
  const nodeIp = kubeletNodeIp(nodeFile(holder, KUBEADM_FLAGS_ENV), nodeFile(holder, DEFAULT_KUBELET));
  const net = await nodeNetwork(holder);
  const choice = chooseNodeIp(nodeIp, net.links, net.defaultRoutes);
  let internalIp: string | undefined;
  if (choice.ok) {
    const r = await api(dir, 'PATCH', `/api/v1/nodes/${encodeURIComponent(name)}/status`, merge({ status: { addresses: [{ type: 'InternalIP', address: choice.ip }, { type: 'Hostname', address: name }] } }));
    if (r.status !== 200) throw new LabError(`status patch of Node ${name}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
    internalIp = choice.ip;
  } else {
    log(dir, name, klogLine('E', 'kubelet_node_status.go', `"Failed to set some node status fields" err="${klogQuote(choice.error.replace('%NODE%', name))}" node="${name}"`));
  }
  // Its credentials again, as they are now: a fault written while this start ran must not see the label go back to running.
  if (!checkKubeletCredentials(dir, holder, server).ok) {
    await setKubelet(dir, name, false);
    return { started: true, internalIp };
  }
  await setKubelet(dir, name, true, { machineId, bootId });
  log(dir, name, klogLine('I', 'kubelet.go', `"Started kubelet"${internalIp ? ` nodeIP="${internalIp}"` : ''}`));
  return { started: true, internalIp };
}

/** The kubelet stops (systemctl stop, kubeadm reset, the node going down): no heartbeats, no restart. */
export function stopKubelet(dir: string, name: string): Promise<void> {
  return oneAtATime(name, () => stop(dir, name));
}

async function stop(dir: string, name: string): Promise<void> {
  cancelRestart(name);
  stopHealthz(dir, name);
  const was = kubeletState(dir, name);
  writeKubeletState(dir, name, 'inactive');
  if (was !== 'inactive') log(dir, name, klogLine('I', 'kubelet.go', '"Shutting down kubelet"'));
  if (readState(dir)?.controlPlane) {
    const got = await api(dir, 'GET', `/api/v1/nodes/${encodeURIComponent(name)}`);
    if (got.status === 200) await setKubelet(dir, name, false);
  }
}

/**
 * A request from the node's systemctl or kubeadm stand-in: start (nothing if it runs),
 * restart, stop. `kubeadm join`/`init` restart it, as kubeadm's kubelet-start phase does.
 */
export async function kubeletRequest(dir: string, name: string, verb: 'start' | 'restart' | 'stop'): Promise<void> {
  if (verb === 'stop') return stopKubelet(dir, name);
  if (verb === 'start' && kubeletState(dir, name) === 'active') return;
  if (verb === 'restart' && kubeletState(dir, name) === 'active') log(dir, name, klogLine('I', 'kubelet.go', '"Shutting down kubelet"'));
  await startKubelet(dir, name);
}
