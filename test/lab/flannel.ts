/**
 * The real flanneld (flannel-io/flannel v0.28.10, built by scripts/build-flannel.sh into
 * .tools/bin/flanneld) run inside a lab node, as kube-flannel's DaemonSet runs it on a
 * machine: `--kube-subnet-mgr --ip-masq`, the node's name in NODE_NAME, the network config
 * kube-flannel ships (10.244.0.0/16, vxlan), no --iface unless asked for. It reads the
 * node's podCIDR from the lab's kube-apiserver, writes /run/flannel/subnet.env, creates
 * flannel.1 and annotates the Node, or exits with its own message.
 *
 * In the node: flanneld is exec'd in the node's network, mount, UTS and PID namespaces, so
 * its interfaces, iptables rules and files are the node's and it dies with the node (a
 * reboot, `down`). Its identity is its own: a client certificate from the lab's CA for the
 * user `kubemend-lab:flannel:<node>`, bound by a ClusterRoleBinding of its own to the
 * ClusterRole `flannel` (get, list and watch nodes; patch nodes/status), written with its
 * kubeconfig and network config to .lab/nodes/<node>/flannel/.
 *
 * The API server listens on the host's 127.0.0.1, which a node cannot reach. A forwarder in
 * the node (socat on the node's own 127.0.0.1, the API server's port) opens each connection
 * from the API server's own network namespace, so the kubeconfig says
 * https://127.0.0.1:<port> as on a control-plane node, and no route of the node is needed.
 *
 * Markers: flanneld, the nsenter that started it, and the forwarder carry
 * "kmlab-flanneld <dir> <node> ..." in argv[0]. They all live in the node's network and PID
 * namespaces, so the lab's `down` and a node's reboot stop them as they stop sshd.
 *
 * Each start keeps the previous run's output in flanneld.previous.log (as `kubectl logs
 * --previous`) and writes the new one to flanneld.log, both in .lab/nodes/<node>/.
 */
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { TOOLS_BIN } from '../../worker/paths';
import { adminApi, controlPlaneInfo } from './control-plane';
import { LabError, labProcesses, readState } from './lab';

export const FLANNELD = join(TOOLS_BIN, 'flanneld');
export const FLANNEL_VERSION = 'v0.28.10';
/** kube-flannel.yml's net-conf.json. */
export const FLANNEL_NET_CONF = { Network: '10.244.0.0/16', EnableNFTables: false, Backend: { Type: 'vxlan' } };
export const FLANNEL_CLUSTER_ROLE = 'flannel';

const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export const flanneldMarker = (dir: string, node: string) => `kmlab-flanneld ${dir} ${node}`;
const forwarderMarker = (dir: string, node: string) => `kmlab-flanneld ${dir} ${node} api-forwarder`;
export const flannelUser = (node: string) => `kubemend-lab:flannel:${node}`;

const nodeDir = (dir: string, node: string) => join(dir, 'nodes', node);
const flannelDir = (dir: string, node: string) => join(nodeDir(dir, node), 'flannel');
export const flanneldLogPath = (dir: string, node: string) => join(nodeDir(dir, node), 'flanneld.log');
export const flanneldPreviousLogPath = (dir: string, node: string) => join(nodeDir(dir, node), 'flanneld.previous.log');
/** The node's /run/flannel/subnet.env, as the host sees it (the node's /run/flannel is bound to it). */
export const subnetEnvPath = (dir: string, node: string) => join(nodeDir(dir, node), 'run-flannel', 'subnet.env');

/** Bad input (an unknown node, a malformed interface name): exit 2 at the CLI. */
export class FlannelInputError extends LabError {}

function holderPid(dir: string, node: string): number {
  const state = readState(dir);
  if (!state) throw new FlannelInputError('the lab is down');
  if (!state.nodes.some((n) => n.name === node)) throw new FlannelInputError(`no lab node ${JSON.stringify(node)}`);
  const p = labProcesses(dir).find((x) => x.argv0 === `kmlab-node ${dir} ${node}`);
  if (!p) throw new LabError(`${node} is down`);
  return p.pid;
}

/** Host pids whose argv[0] starts with this lab node's flanneld marker. */
export function flannelProcesses(dir: string, node?: string): Array<{ pid: number; argv0: string; comm: string }> {
  const prefix = node === undefined ? `kmlab-flanneld ${dir} ` : `${flanneldMarker(dir, node)}`;
  const out: Array<{ pid: number; argv0: string; comm: string }> = [];
  for (const entry of readdirNumeric()) {
    try {
      const argv0 = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')[0];
      if (argv0 !== prefix && !argv0.startsWith(node === undefined ? prefix : `${prefix} `)) continue;
      if (/\bState:\s+Z/.test(readFileSync(`/proc/${entry}/status`, 'utf8'))) continue;
      out.push({ pid: entry, argv0, comm: readFileSync(`/proc/${entry}/comm`, 'utf8').trim() });
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

function readdirNumeric(): number[] {
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .map(Number);
}

/** The pid of the node's running flanneld (the binary itself, not its nsenter), if any. */
export function flanneldPid(dir: string, node: string): number | undefined {
  return flannelProcesses(dir, node).find((p) => p.argv0 === flanneldMarker(dir, node) && p.comm === 'flanneld')?.pid;
}

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new LabError(`openssl ${args.join(' ')}: ${String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim()}`);
  }
}

/**
 * The node's flannel identity and files (made once per lab node; a restart reuses them):
 * a key and certificate signed by the lab CA, a kubeconfig, net-conf.json, and in the API
 * the ClusterRole `flannel` (if the lab has none yet) and a binding of it to this user.
 */
export async function ensureFlannelIdentity(dir: string, node: string): Promise<{ kubeconfig: string; netConf: string }> {
  const info = controlPlaneInfo(dir);
  if (!info) throw new LabError('the lab has no control plane: flanneld needs its kube-apiserver (bring the lab up without --no-control-plane)');
  const fdir = flannelDir(dir, node);
  const kubeconfig = join(fdir, 'kubeconfig');
  const netConf = join(fdir, 'net-conf.json');
  if (!existsSync(kubeconfig)) {
    mkdirSync(fdir, { recursive: true, mode: 0o700 });
    const pki = join(dir, 'cp', 'pki');
    writeFileSync(join(fdir, 'client.ext'), 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n');
    openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'client.key', '-out', 'client.csr', '-subj', `/CN=${flannelUser(node)}`], fdir);
    openssl(['x509', '-req', '-in', 'client.csr', '-CA', join(pki, 'ca.crt'), '-CAkey', join(pki, 'ca.key'), '-CAcreateserial', '-CAserial', join(fdir, 'ca.srl'), '-days', '30', '-out', 'client.crt', '-extfile', 'client.ext'], fdir);
    const b64 = (f: string) => readFileSync(f).toString('base64');
    const config = {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'kubemend-lab', cluster: { server: info.server, 'certificate-authority-data': b64(join(pki, 'ca.crt')) } }],
      users: [{ name: 'flannel', user: { 'client-certificate-data': b64(join(fdir, 'client.crt')), 'client-key-data': b64(join(fdir, 'client.key')) } }],
      contexts: [{ name: 'flannel@kubemend-lab', context: { cluster: 'kubemend-lab', user: 'flannel' } }],
      'current-context': 'flannel@kubemend-lab',
    };
    writeFileSync(`${kubeconfig}.tmp`, `# Written by the kubemend lab for ${node}'s flanneld; it holds a private key.\n${stringify(config)}`, { mode: 0o600 });
    renameSync(`${kubeconfig}.tmp`, kubeconfig);
  }
  writeFileSync(netConf, `${JSON.stringify(FLANNEL_NET_CONF, null, 2)}\n`);

  const api = adminApi(dir);
  const createIfAbsent = async (obj: Parameters<typeof api.create>[0]) => {
    try {
      await api.create(obj);
    } catch (err) {
      if ((err as { code?: number }).code !== 409) throw new LabError(`creating ${obj.kind} ${obj.metadata?.name}: ${(err as Error).message}`);
    }
  };
  // kube-flannel.yml's ClusterRole, without `get pods` (flanneld reads its pod only when NODE_NAME is unset).
  await createIfAbsent({
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRole',
    metadata: { name: FLANNEL_CLUSTER_ROLE },
    rules: [
      { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'watch'] },
      { apiGroups: [''], resources: ['nodes/status'], verbs: ['patch'] },
    ],
  } as Parameters<typeof api.create>[0]);
  await createIfAbsent({
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name: `kubemend-lab-flannel-${node}` },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: FLANNEL_CLUSTER_ROLE },
    subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: flannelUser(node) }],
  } as Parameters<typeof api.create>[0]);
  return { kubeconfig, netConf };
}

/**
 * One forwarded connection: $1 the lab dir, $2 the node, $3 the API server's network
 * namespace, $4 its port. Runs as the forwarder's child, in the node's PID namespace.
 */
const API_CONNECT = [
  '#!/bin/bash',
  "# kubemend lab: one connection of a node's flanneld to the API server (test/lab/flannel.ts)",
  'exec nsenter --net="$3" bash -c \'exec -a "$0" socat STDIO "TCP:127.0.0.1:$1"\' "kmlab-flanneld $1 $2 api-connection" "$4"',
  '',
].join('\n');

/** The kube-apiserver's host pid (its network namespace is where 127.0.0.1:<port> answers). */
function apiServerPid(dir: string): number {
  const p = labProcesses(dir).find((x) => x.argv0 === `kmlab-cp ${dir} kube-apiserver`);
  if (!p) throw new LabError("the lab's kube-apiserver is not running");
  return p.pid;
}

/**
 * Starts, if it is not running, the node's forwarder to the API server: socat listening on
 * the node's 127.0.0.1:<API port>, each connection made from the API server's network
 * namespace. It runs in the node's network and PID namespaces (dies with the node) and the
 * host's mount namespace (its /proc names the API server's namespace).
 */
async function ensureApiForwarder(dir: string, node: string, holder: number): Promise<void> {
  const marker = forwarderMarker(dir, node);
  if (flannelProcesses(dir, node).some((p) => p.argv0 === marker && p.comm === 'socat')) return;
  const port = String(Number(new URL(controlPlaneInfo(dir)!.server).port));
  const apiNet = `/proc/${apiServerPid(dir)}/ns/net`;
  readlinkSync(apiNet); // fails now, not at the first connection, if it is gone
  // socat's EXEC splits its command at spaces and the lab dir has none (checkLabDir): each
  // connection runs this script, which marks itself and joins the API server's namespace.
  const connect = join(flannelDir(dir, node), 'api-connect.sh');
  writeFileSync(connect, API_CONNECT, { mode: 0o755 });
  const log = openSync(join(nodeDir(dir, node), 'flannel-api-forwarder.log'), 'a');
  const child = spawn(
    'bash',
    ['-c', 'exec -a "$0" nsenter -t "$1" -n -p -- bash -c \'exec -a "$0" socat "TCP-LISTEN:$1,bind=127.0.0.1,reuseaddr,fork" "EXEC:bash $2 $3 $4 $5 $1"\' "$0" "${@:2}"', marker, String(holder), port, connect, dir, node, apiNet],
    { detached: true, stdio: ['ignore', log, log], env: { PATH } },
  );
  closeSync(log);
  child.on('error', () => undefined);
  child.unref();
  for (let i = 0; i < 250; i++) {
    const r = await nodeExecOut(holder, ['bash', '-c', 'exec 3<>"/dev/tcp/127.0.0.1/$1"', 'kmlab-probe', String(port)]);
    if (r === 0) return;
    if (child.exitCode !== null) break;
    await sleep(20);
  }
  throw new LabError(`${node}: the API forwarder did not listen on the node's 127.0.0.1:${port}`);
}

function nodeExecOut(holder: number, argv: string[]): Promise<number> {
  return new Promise((resolve) => {
    const c = spawn('nsenter', ['-t', String(holder), '-n', '--', ...argv], { stdio: 'ignore', env: { PATH } });
    c.on('error', () => resolve(1));
    c.on('close', (code) => resolve(code ?? 1));
  });
}

export interface FlanneldRun {
  /**
   * Resolves with flanneld's exit status (as nsenter passes it on) when it exits, or 128 +
   * the signal's number if nsenter was killed (a reboot kills it with SIGKILL: 137). The child
   * is unref'd (a CLI that starts flanneld need not wait for it): a caller that awaits this
   * must keep its own event loop alive meanwhile (a test runner does).
   */
  exited: Promise<number>;
  /** subnet.env's modification time (ns) when this run started, if it existed: what a write of this run changes. */
  subnetEnvMtimeNs?: bigint;
}

function subnetEnvMtimeNs(dir: string, node: string): bigint | undefined {
  try {
    return statSync(subnetEnvPath(dir, node), { bigint: true }).mtimeNs;
  } catch {
    return undefined;
  }
}

export interface StartOptions {
  /** Passed as --iface; kube-flannel.yml passes none, and seed 002 needs none. */
  iface?: string;
}

/**
 * Starts the real flanneld in the node. Refuses if one runs there already. Returns at once;
 * `waitForSubnetEnv` or `exited` tell how it went.
 */
export async function startFlanneld(dir: string, node: string, opts: StartOptions = {}): Promise<FlanneldRun> {
  if (!existsSync(FLANNELD)) throw new FlannelInputError(`missing ${FLANNELD}: run \`bash scripts/build-flannel.sh\` (or \`npm run setup\`)`);
  if (opts.iface !== undefined && !/^[A-Za-z0-9._-]{1,15}$/.test(opts.iface)) throw new FlannelInputError(`--iface: not an interface name: ${JSON.stringify(opts.iface)}`);
  const holder = holderPid(dir, node);
  if (flanneldPid(dir, node) !== undefined) throw new LabError(`${node}: flanneld is already running`);
  const { kubeconfig, netConf } = await ensureFlannelIdentity(dir, node);
  await ensureApiForwarder(dir, node, holder);

  const mtimeBefore = subnetEnvMtimeNs(dir, node);
  const logPath = flanneldLogPath(dir, node);
  if (existsSync(logPath)) renameSync(logPath, flanneldPreviousLogPath(dir, node));
  const log = openSync(logPath, 'w');
  const args = ['--kube-subnet-mgr', '--ip-masq', `--kubeconfig-file=${kubeconfig}`, `--net-config-path=${netConf}`, ...(opts.iface ? [`--iface=${opts.iface}`] : [])];
  const marker = flanneldMarker(dir, node);
  // The outer bash becomes nsenter under the marker; nsenter forks flanneld into the node's PID namespace.
  const child = spawn('bash', ['-c', 'exec -a "$0" nsenter -t "$1" -n -m -u -p -- bash -c \'exec -a "$0" "$@"\' "$0" "${@:2}"', marker, String(holder), FLANNELD, ...args], {
    detached: true,
    stdio: ['ignore', log, log],
    env: { PATH, NODE_NAME: node },
  });
  closeSync(log);
  child.unref();
  const exited = new Promise<number>((resolve) => {
    child.on('error', () => resolve(127));
    // A signal is reported as a shell (and the kubelet) reports it: 128 + its number (SIGKILL 137, SIGTERM 143).
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 + (constants.signals[signal] ?? 0) : 1)));
  });
  return { exited, subnetEnvMtimeNs: mtimeBefore };
}

/** Stops the node's flanneld (SIGTERM, as a kubelet stops a container) and waits until it is gone. */
export async function stopFlanneld(dir: string, node: string, timeoutMs = 10_000): Promise<void> {
  const victims = flannelProcesses(dir, node).filter((p) => p.argv0 === flanneldMarker(dir, node));
  for (const p of victims) {
    try {
      process.kill(p.pid, 'SIGTERM');
    } catch {
      // gone
    }
  }
  const deadline = Date.now() + timeoutMs;
  while (flanneldPid(dir, node) !== undefined) {
    if (Date.now() > deadline) throw new LabError(`${node}: flanneld did not stop within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** subnet.env as KEY=VALUE pairs, or undefined while the file is absent. */
export function readSubnetEnv(dir: string, node: string): Record<string, string> | undefined {
  const path = subnetEnvPath(dir, node);
  if (!existsSync(path)) return undefined;
  const out: Record<string, string> = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

/** subnet.env if this run of flanneld has written it (a file left by an earlier run or the lab's boot does not count). */
export function subnetEnvOfRun(dir: string, node: string, run: FlanneldRun): Record<string, string> | undefined {
  const mtime = subnetEnvMtimeNs(dir, node);
  const env = mtime !== undefined && mtime !== run.subnetEnvMtimeNs ? readSubnetEnv(dir, node) : undefined;
  return env?.FLANNEL_SUBNET ? env : undefined;
}

/**
 * Waits until this run of flanneld has written the node's subnet.env (it writes it once its
 * lease and backend are up; a file left by an earlier run or the lab does not count); fails
 * at once with flanneld's log if flanneld exits first.
 */
export async function waitForSubnetEnv(dir: string, node: string, run: FlanneldRun, timeoutMs = 60_000): Promise<Record<string, string>> {
  let exitCode: number | undefined;
  void run.exited.then((c) => (exitCode = c));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const env = subnetEnvOfRun(dir, node, run);
    if (env) return env;
    if (exitCode !== undefined) throw new LabError(`${node}: flanneld exited (${exitCode}) before writing subnet.env:\n${flanneldLog(dir, node)}`);
    if (Date.now() > deadline) throw new LabError(`${node}: flanneld wrote no subnet.env within ${timeoutMs} ms:\n${flanneldLog(dir, node)}`);
    await sleep(100);
  }
}

export function flanneldLog(dir: string, node: string): string {
  const path = flanneldLogPath(dir, node);
  return existsSync(path) ? readFileSync(path, 'utf8') : '';
}

/**
 * Removes what the lab itself writes for flannel on a healthy node at boot (flannel.1 and
 * subnet.env), so that what is there afterwards is the real flanneld's work. cni0 stays: it
 * is the bridge plugin's, not flanneld's.
 */
export async function removeLabFlannelState(dir: string, node: string): Promise<void> {
  const holder = holderPid(dir, node);
  const code = await nodeExecOut(holder, ['sh', '-c', '! ip link show flannel.1 >/dev/null 2>&1 || ip link del flannel.1']);
  if (code !== 0) throw new LabError(`${node}: could not remove the lab's flannel.1`);
  rmSync(subnetEnvPath(dir, node), { force: true });
}

/**
 * `npm run lab -- flanneld start|stop <node>`: start waits until flanneld has written
 * subnet.env (exit 0) or has exited (its status and last log lines; exit 1).
 */
export async function flanneldCommand(dir: string, action: string, node: string, iface?: string): Promise<number> {
  if (action !== 'start' && action !== 'stop') throw new FlannelInputError(`<action>: must be start or stop, got ${JSON.stringify(action)}`);
  holderPid(dir, node); // an unknown node or a lab that is down: bad input, before anything happens
  if (action === 'stop') {
    await stopFlanneld(dir, node);
    console.log(`${node}: flanneld stopped`);
    return 0;
  }
  const run = await startFlanneld(dir, node, { iface });
  const outcome = await Promise.race([waitForSubnetEnv(dir, node, run).then((env) => ({ env })), run.exited.then((status) => ({ status }))]).catch((err: Error) => ({ error: err.message }));
  if ('env' in outcome) {
    console.log(`${node}: flanneld running (pid ${flanneldPid(dir, node)}), FLANNEL_SUBNET=${outcome.env.FLANNEL_SUBNET} FLANNEL_MTU=${outcome.env.FLANNEL_MTU}; log ${flanneldLogPath(dir, node)}`);
    return 0;
  }
  const tail = flanneldLog(dir, node).trimEnd().split('\n').slice(-3).join('\n');
  console.error('status' in outcome ? `${node}: flanneld exited with status ${outcome.status}:\n${tail}` : outcome.error);
  return 1;
}
