/**
 * The proving ground, part 1 (foundation): lab nodes that are real network, UTS and mount
 * namespaces on this machine, each with its own sshd, hostname, machine-id, boot id and
 * interfaces, reachable by kubemend through a loopback port.
 *
 * Nothing touches the host's machine-id, hostname, links, routes or mount table:
 *  - a node is a holder process made by `unshare --net --uts --mount` (no `ip netns add`,
 *    which would leave bind mounts under /run/netns in the host's mount table);
 *  - its /etc and /var/lib are overlays on the host's, with a per-node upper directory in
 *    .lab/nodes/<name>/; /root is the node's own home (.lab/nodes/<name>/root), made at `up`
 *    as a fresh install makes it, so the host's shell rc files never run on a node; /run is a
 *    private tmpfs; all inside the node's mount namespace;
 *  - the host-only network's bridge lives in a lab "hub" namespace, not on the host;
 *  - kubemend reaches a node's sshd (on the node's own lab address) through a socat
 *    forwarder on 127.0.0.1 that connects from inside the node's namespace.
 * Every lab process carries a marker in argv[0] ("kmlab-..." + the lab directory), so
 * `down` finds and stops them from /proc alone, after a crash or a killed `up` too; the
 * namespaces disappear with their last process.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, closeSync, copyFileSync, existsSync, openSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { homedir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { weavePeerMac } from '../../lib/weave';
import { REPO_ROOT, TOOLS_BIN } from '../../worker/paths';
import { Patience } from './patience';
import { freeLowPort, sshdConfig } from './sshd';
import { listeningInode, listensOn } from './tcp-listen';
import { calicoPods, defaultKubeletText, HOSTONLY_PREFIX, INSTANCE_CONFIG_TEXT, joinedAtUp, KUBEADM_FLAGS_TEXT, kubeletsOnNat, LIVE_PODS_PER_NODE, MAX_NODES, NAT_ADDRESS, NAT_GATEWAY, podCidrPrefix, staleLeasePrefix } from './topology';
import { type ControlPlaneInfo, requireBinaries, startControlPlane } from './control-plane';
import { ensureApiServerForwarder, LAB_JOIN_IGNORED_PREFLIGHT } from './kubeadm-cluster';
import { labCnis, labRunsCalicoNode } from './manifests';

export { Patience } from './patience';
export { calicoPodIp, calicoPods, HOSTONLY_PREFIX, LIVE_PODS_PER_NODE, MAX_NODES, NAT_ADDRESS, NAT_GATEWAY, podCidrPrefix, staleLeasePrefix } from './topology';


/** The seeds' failure states. Each is injected at `up` and, where the seed says so, at every boot. */
export const SCENARIOS = {
  'cloned-machine-id': 'seed 000: every node has the same machine-id in both files, so their weave MACs collide',
  'nat-advertise': 'seed 001: the control plane advertises the NAT address 10.0.2.15, the workers never joined',
  'nat-node-ip': "seed 001 on Vagrant: every node joined, but every kubelet registered the NAT address 10.0.2.15 (no --node-ip); calico-node's first-found autodetection picks it too",
  'no-default-route': "seed 002: the control-plane node's uplink stays down at boot: no default route",
  'stale-cni': 'seed 003: cni0/flannel.1 left over from kubeadm reset, leaked host-local IPAM files',
  'orphan-calico': 'seed 004: cali veths without pods, pods without veths',
} as const;
export type Scenario = keyof typeof SCENARIOS;

export function parseScenarios(text: string | undefined): Scenario[] {
  if (!text) return [];
  const names = [...new Set(text.split(',').map((x) => x.trim()).filter(Boolean))];
  const unknown = names.filter((n) => !(n in SCENARIOS));
  if (unknown.length) throw new LabError(`--scenario: unknown ${unknown.map((u) => JSON.stringify(u)).join(', ')}; known: ${Object.keys(SCENARIOS).join(', ')}`);
  return names as Scenario[];
}


/**
 * What kubeadm leaves on a node, so the kubeadm stand-in has real files to act on.
 * Certificates and kubeconfig credentials are placeholders: nothing here is a secret.
 */
function writeKubeadmState(nodeDir: string, node: { index: number; role: 'control-plane' | 'worker'; address: string }, cpAddress: string, advertise: string, joined: boolean, natKubelet: boolean): void {
  const etc = join(nodeDir, 'etc.upper');
  const varlib = join(nodeDir, 'varlib.upper');
  const put = (path: string, text: string) => {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
  };
  // Debian's kubelet package ships /etc/default/kubelet. A correctly provisioned Vagrant node has
  // --node-ip there (kubeadm reset leaves /etc/default alone, so it survives a rejoin); seed 001's nodes have none.
  put(join(etc, 'default', 'kubelet'), defaultKubeletText(natKubelet ? undefined : node.address));
  put(join(nodeDir, 'control', 'kubelet-state'), `${joined ? 'active' : 'inactive'}\n`);
  put(join(etc, 'cni', 'net.d', '10-flannel.conflist'), `${JSON.stringify({ name: 'cbr0', cniVersion: '0.3.1', plugins: [{ type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true } }, { type: 'portmap', capabilities: { portMappings: true } }] }, null, 2)}\n`);
  if (!joined) return;
  put(join(etc, 'kubernetes', 'pki', 'ca.crt'), 'kubemend lab placeholder: not a certificate\n');
  put(join(etc, 'kubernetes', 'kubelet.conf'), kubeconfigText(node.role === 'control-plane' ? advertise : cpAddress, 'system:node'));
  put(join(varlib, 'kubelet', 'config.yaml'), 'apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\n');
  put(join(varlib, 'kubelet', 'kubeadm-flags.env'), KUBEADM_FLAGS_TEXT);
  put(join(varlib, 'kubelet', 'instance-config.yaml'), INSTANCE_CONFIG_TEXT);
  put(join(varlib, 'kubelet', 'pki', 'kubelet.crt'), 'kubemend lab placeholder: not a certificate\n');
  if (node.role !== 'control-plane') return;
  put(join(etc, 'kubernetes', 'admin.conf'), kubeconfigText(advertise, 'kubernetes-admin'));
  for (const c of ['kube-controller-manager', 'kube-scheduler']) put(join(etc, 'kubernetes', 'manifests', `${c}.yaml`), staticPod(c, []));
  // etcd's data directory is its "etcd-data" hostPath volume, where `kubeadm reset` looks for it.
  put(join(etc, 'kubernetes', 'manifests', 'etcd.yaml'), staticPod('etcd', ['--data-dir=/var/lib/etcd'], [{ name: 'etcd-data', path: '/var/lib/etcd' }]));
  put(join(etc, 'kubernetes', 'manifests', 'kube-apiserver.yaml'), staticPod('kube-apiserver', [`--advertise-address=${advertise}`, '--secure-port=6443', '--service-cluster-ip-range=10.96.0.0/12']));
  for (const f of ['ca.key', 'apiserver.crt', 'apiserver.key', 'sa.key', 'sa.pub']) put(join(etc, 'kubernetes', 'pki', f), 'kubemend lab placeholder\n');
  put(join(varlib, 'etcd', 'member', 'snap', 'db'), '');
}

function kubeconfigText(server: string, user: string): string {
  return `apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: a3ViZW1lbmQtbGFi\n    server: https://${server}:6443\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: ${user}\n  name: ${user}@kubernetes\ncurrent-context: ${user}@kubernetes\nusers:\n- name: ${user}\n  user:\n    client-certificate-data: a3ViZW1lbmQtbGFi\n`;
}

function staticPod(component: string, args: string[], volumes: Array<{ name: string; path: string }> = []): string {
  const vols = volumes.length ? ['  volumes:', ...volumes.flatMap((v) => [`  - hostPath:`, `      path: ${v.path}`, `      type: DirectoryOrCreate`, `    name: ${v.name}`])] : [];
  return [`apiVersion: v1`, `kind: Pod`, `metadata:`, `  name: ${component}`, `  namespace: kube-system`, `spec:`, `  hostNetwork: true`, `  containers:`, `  - name: ${component}`, `    command:`, `    - ${component}`, ...args.map((a) => `    - ${a}`), ...vols, ''].join('\n');
}

/** seed 002: it was the control-plane node whose uplink did not come up after reboot. */
const uplinkStaysDown = (scenarios: readonly Scenario[], index: number) => scenarios.includes('no-default-route') && index === 1;

export interface LabNode {
  name: string;
  index: number;
  role: 'control-plane' | 'worker';
  /** The node's address on the lab's host-only network (enp0s8), where its sshd listens. */
  address: string;
  /** Loopback port of the forwarder to the node's sshd. */
  port: number;
  /** The machine-id the lab gave the node at `up` (the node may change it since). */
  machineId: string;
  bootId: string;
  /** The weave bridge's MAC at the node's last boot (Weave Net's peer name). */
  weaveMac: string;
  /** /etc/machine-id as the node had it at its last boot: what its kubelet reports. */
  bootMachineId: string;
  /** 1 after `up`, +1 per simulated reboot. */
  boots: number;
}

/** What `up` and reboots record. Processes are never found from here: only by their argv[0] marker. */
export interface LabState {
  dir: string;
  /** How long a rebooting node stays down before it comes back. */
  rebootDowntimeMs: number;
  scenarios: Scenario[];
  /** Whether the lab runs a Kubernetes control plane (control-plane.ts). */
  controlPlane?: boolean;
  /** Whether the nodes' kubelets run kube-flannel's pods as the real flanneld (flannel-kubelet.ts) instead of the boot faking flannel. */
  realFlannel?: boolean;
  nodes: LabNode[];
}

export class LabError extends Error {}

const SSHD = '/usr/sbin/sshd';

/**
 * Runs inside a new node's namespaces (network, UTS, mount, PID with its own /proc), before
 * anything else: mounts its persistent state over /etc and /var/lib, gives it a private
 * /run, its own boot id and hostname, and becomes the marked holder, the node's PID 1.
 * Root on a node sees only the node's processes; when the holder dies, they all die.
 * Arguments: $1 lab dir, $2 node dir, $3 name.
 */
const NODE_SETUP = [
  'set -e',
  'mount -t overlay kmlab-etc -o "lowerdir=/etc,upperdir=$2/etc.upper,workdir=$2/etc.work" /etc',
  'mount -t overlay kmlab-varlib -o "lowerdir=/var/lib,upperdir=$2/varlib.upper,workdir=$2/varlib.work" /var/lib',
  'mount --bind "$2/root" /root', // the node's own home, not an overlay: nothing of the host's /root shows through
  'mount -t tmpfs kmlab-run /run',
  'mount -t sysfs kmlab-sys /sys', // the node's own interfaces under /sys/class/net
  'mkdir -p /run/sshd /run/flannel',
  'mount --bind "$2/run-flannel" /run/flannel',
  'mount --bind "$2/boot_id" /proc/sys/kernel/random/boot_id',
  // Stand-ins (reboot, systemctl) first in PATH; requests to the lab daemon go through /run/kmlab.
  'mount --bind "$1/bin" /usr/local/sbin',
  'mkdir -p /run/kmlab',
  'mount --bind "$2/control" /run/kmlab',
  'hostname "$3"',
  'ip link set lo up',
  // PID 1 of the node's own PID namespace: the host finds it by this argv[0].
  'exec -a "kmlab-node $1 $3" sleep infinity',
].join('\n');

/** The hub holds the host-only bridge. Arguments: $1 lab dir. */
const HUB_SETUP = ['set -e', 'ip link set lo up', 'ip link add br-lab type bridge', 'ip link set br-lab up', 'exec -a "kmlab-hub $1" sleep infinity'].join('\n');

/** Runs a command without blocking the event loop (other nodes boot meanwhile); `input` goes to its stdin. */
function exec(cmd: string, args: string[], input = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { encoding: 'utf8', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new LabError(`${cmd} ${args.join(' ')}: ${(stderr || err.message).trim()}`));
      else resolve(stdout);
    });
    child.stdin?.on('error', () => undefined); // a command that exits early closes its stdin
    child.stdin?.end(input);
  });
}

/**
 * `ip` commands for one network namespace, run as one `ip -batch` (one exec, where each
 * command used to be an nsenter and an ip of its own). Words are the lab's own names and
 * addresses, checked here: nothing else is ever pasted into a batch line.
 */
class IpBatch {
  readonly lines: string[] = [];
  add(...words: string[]): void {
    for (const w of words) if (!/^[A-Za-z0-9._:/-]+$/.test(w)) throw new LabError(`refusing ${JSON.stringify(w)} in an ip batch`);
    this.lines.push(words.join(' '));
  }
  /** The script for `ip -batch -`; a failure names the line ("Command failed -:N"). */
  get text(): string {
    return `${this.lines.join('\n')}\n`;
  }
  explain(err: unknown): LabError {
    const line = /Command failed -:(\d+)/.exec((err as Error).message)?.[1];
    return new LabError(`${(err as Error).message}${line ? ` (line ${line}: ${this.lines[Number(line) - 1]})` : ''}`);
  }
}

/** Runs a batch in the network namespace of `pid`. */
async function ipBatch(pid: number, batch: IpBatch): Promise<void> {
  if (!batch.lines.length) return;
  await exec('nsenter', ['-t', String(pid), '-n', '--', 'ip', '-batch', '-'], batch.text).catch((err) => {
    throw batch.explain(err);
  });
}

/**
 * What flanneld and the CNI bridge plugin leave on a healthy flannel node: flannel.1 with
 * the node's lease (.0/32), cni0 as the pods' gateway (.1/24), and /run/flannel/subnet.env.
 * Without a default route flanneld cannot start (seed 002): none of it, and no subnet.env.
 */
function flannelAtBoot(net: IpBatch, nodeDir: string, index: number, running: boolean): void {
  const subnetEnv = join(nodeDir, 'run-flannel', 'subnet.env');
  if (!running) {
    rmSync(subnetEnv, { force: true });
    return;
  }
  const lease = podCidrPrefix(index);
  net.add('link', 'add', 'flannel.1', 'type', 'vxlan', 'id', '1', 'dev', 'enp0s8', 'dstport', '8472', 'nolearning');
  net.add('addr', 'add', `${lease}.0/32`, 'dev', 'flannel.1');
  net.add('link', 'set', 'flannel.1', 'mtu', '1450', 'up');
  net.add('link', 'add', 'cni0', 'type', 'bridge');
  net.add('addr', 'add', `${lease}.1/24`, 'dev', 'cni0');
  net.add('link', 'set', 'cni0', 'mtu', '1450', 'up');
  writeFileSync(subnetEnv, `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=${lease}.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n`);
}

/**
 * seed 003, in the kernel: what flannel made before `kubeadm reset` and reset left behind.
 * cni0 keeps the old lease's gateway address; flannel.1 the old lease's .0/32 (VXLAN 1, port
 * 8472, as flannel's vxlan backend). /run/flannel/subnet.env is absent: /run starts empty.
 */
function staleCniInterfaces(net: IpBatch, index: number): void {
  const old = staleLeasePrefix(index);
  net.add('link', 'add', 'cni0', 'type', 'bridge');
  net.add('addr', 'add', `${old}.1/24`, 'dev', 'cni0');
  net.add('link', 'set', 'cni0', 'mtu', '1450', 'up');
  net.add('link', 'add', 'flannel.1', 'type', 'vxlan', 'id', '1', 'dev', 'enp0s8', 'dstport', '8472', 'nolearning');
  net.add('addr', 'add', `${old}.0/32`, 'dev', 'flannel.1');
  net.add('link', 'set', 'flannel.1', 'mtu', '1450', 'up');
}

/**
 * What weave reads: /etc/machine-id as the node sees it, else /var/lib/dbus/machine-id, raw.
 * Read through /proc/<holder>/root, which resolves paths in the node's mount namespace
 * (its overlays), without an exec.
 */
function nodeMachineIdFile(pid: number): string {
  for (const file of ['etc/machine-id', 'var/lib/dbus/machine-id']) {
    try {
      return readFileSync(`/proc/${pid}/root/${file}`, 'utf8');
    } catch {
      // missing: try the next, as weave does
    }
  }
  return '';
}

function detached(cmd: string, args: string[], logFile?: string): ChildProcess {
  const out = logFile ? openSync(logFile, 'a') : 'ignore';
  const child = spawn(cmd, args, { detached: true, stdio: ['ignore', out, out] });
  if (typeof out === 'number') closeSync(out);
  child.on('error', () => undefined); // reported by the wait for its marker
  child.unref();
  return child;
}

/** The host pids of `parent`'s children (/proc/<pid>/task/<pid>/children), or undefined where the kernel lacks that file. */
function childrenOf(parent: number): number[] | undefined {
  try {
    return readFileSync(`/proc/${parent}/task/${parent}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' && existsSync(`/proc/${parent}`) ? undefined : [];
  }
}

function argv0Of(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0];
  } catch {
    return undefined;
  }
}

/**
 * Starts a holder (`unshare ... --fork bash -c setup`) and returns its host pid once it
 * carries its marker, having run its setup. It is found as the child of its unshare,
 * without scanning /proc; a setup that fails is reported at once, not after the deadline.
 */
async function startHolder(dir: string, marker: string, setup: string, args: string[], unshareFlags: string[]): Promise<number> {
  const child = detached('unshare', [...unshareFlags, '--propagation', 'private', '--fork', '--', 'bash', '-c', setup, 'kmlab-setup', ...args]);
  const patience = new Patience(10_000);
  while (!patience.exhausted) {
    const kids = child.pid === undefined ? [] : childrenOf(child.pid);
    const pid = kids === undefined ? markedPid(dir, marker) : kids.find((k) => argv0Of(k) === marker);
    if (pid !== undefined) return pid;
    if (child.exitCode !== null || child.signalCode !== null) throw new LabError(`${marker}: its setup failed (unshare exited ${child.exitCode ?? child.signalCode})`);
    await patience.sleep(10);
  }
  throw new LabError(`${marker} did not start`);
}

/** Nodes booted at once at `up`: each is mostly waiting on forks and the kernel. */
const BOOT_CONCURRENCY = 8;

/**
 * Runs `fn` over `items`, at most `limit` at a time, results in order. After a failure no
 * new item starts, and it is thrown once those already started have settled (so a `down`
 * after it finds everything they made).
 */
async function boundedAll<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  let failure: { err: unknown } | undefined;
  const lane = async () => {
    while (!failure && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i]);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  if (failure) throw failure.err;
  return results;
}

async function keygen(path: string): Promise<string> {
  await exec('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'kubemend-test', '-f', path]);
  return readFileSync(`${path}.pub`, 'utf8').trim();
}

/** Marks a directory as a lab's: `down` deletes nothing that lacks it. */
const SENTINEL = '.kubemend-lab';

/**
 * The lab directory is deleted as root by `down`, so it must be unmistakable: absolute, no
 * whitespace, ',' or ':' (they break overlay options and the argv[0] markers), and never /,
 * the home directory, the repository, or a directory above any of them.
 */
export function checkLabDir(dir: string): void {
  if (!isAbsolute(dir)) throw new LabError(`lab directory must be an absolute path, got ${JSON.stringify(dir)}`);
  if (/[\s,:]/.test(dir)) throw new LabError(`lab directory must not contain whitespace, ',' or ':', got ${JSON.stringify(dir)}`);
  const d = resolve(dir);
  for (const guarded of ['/', homedir(), REPO_ROOT]) {
    const g = resolve(guarded);
    if (d === g || g.startsWith(`${d}/`)) throw new LabError(`refusing ${d} as a lab directory: it is or contains ${g}`);
  }
  if (existsSync(d) && readdirSync(d).length > 0 && !existsSync(join(d, SENTINEL))) {
    throw new LabError(`${d} exists, is not empty and is not a lab directory (no ${SENTINEL}); refusing to use or delete it`);
  }
}

export function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new LabError('the lab needs root: it creates network and mount namespaces (run it as root or with sudo)');
}

export function statePath(dir: string): string {
  return join(dir, 'state.json');
}

function writeState(state: LabState): void {
  const tmp = `${statePath(state.dir)}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`);
  renameSync(tmp, statePath(state.dir));
}

export function readState(dir: string): LabState | undefined {
  return existsSync(statePath(dir)) ? (JSON.parse(readFileSync(statePath(dir), 'utf8')) as LabState) : undefined;
}

/** What the crictl stand-in reports for a node, gathered from every scenario, written once. */
class CriRecords {
  private readonly lines: string[] = ['# kubemend lab: what the crictl stand-in reports. pod <sandbox-id> <name> <namespace> <state> | container <id> <sandbox-id> <name> <pod> <state>'];
  pod(name: string, namespace: string, sandbox = randomBytes(32).toString('hex'), ip?: string): string {
    // With an address, the full record (no uid: the pod's kubelet gives it its pod's, pod-kubelet.ts).
    this.lines.push(`pod ${sandbox} ${name} ${namespace} SANDBOX_READY${ip ? ` - 0 ${Date.now()} ${ip}` : ''}`);
    this.lines.push(`container ${randomBytes(32).toString('hex')} ${sandbox} app ${name} CONTAINER_RUNNING`);
    return sandbox;
  }
  write(nodeDir: string): void {
    mkdirSync(join(nodeDir, 'varlib.upper', 'kmlab'), { recursive: true });
    writeFileSync(join(nodeDir, 'varlib.upper', 'kmlab', 'cri'), `${this.lines.join('\n')}\n`);
  }
}


/**
 * seed 003's leaked reservations: host-local's files for every address of the node's /24 (a
 * pool with "no IP addresses available in network: cbr0"), each holding "<sandbox id>\r\n<ifname>",
 * plus last_reserved_ip.0 and lock. Only LIVE_PODS_PER_NODE of those sandboxes still exist
 * (the crictl stand-in lists them); the rest leaked. With `real` (--real-flannel) only the sandbox ids are
 * chosen here (the live ones first, so host-local gives them .2 to .4); the node's real
 * host-local makes the files once the node is up (cni.ts leakReservations). Otherwise the lab
 * writes them as host-local would.
 */
async function writeStaleCni(nodeDir: string, index: number, name: string, cri: CriRecords, real: boolean): Promise<string[]> {
  const prefix = podCidrPrefix(index);
  const ids: string[] = [];
  for (let host = 2; host <= 254; host++) {
    const live = host <= 1 + LIVE_PODS_PER_NODE;
    ids.push(live ? cri.pod(`app-${name}-${host - 1}`, 'default') : randomBytes(32).toString('hex'));
  }
  if (real) return ids;
  const cbr0 = join(nodeDir, 'varlib.upper', 'cni', 'networks', 'cbr0');
  mkdirSync(cbr0, { recursive: true });
  const files: Array<[string, string]> = ids.map((sandbox, k) => [`${prefix}.${k + 2}`, `${sandbox}\r\neth0`]);
  files.push(['last_reserved_ip.0', `${prefix}.254`], ['lock', '']);
  // Written side by side, off the event loop: 255 small files cost seconds here, one after another.
  await Promise.all(files.map(([f, text]) => writeFile(join(cbr0, f), text)));
  return [];
}

/**
 * root's home as a fresh Debian install leaves it: .bashrc and .profile from base-files (its
 * postinst copies /usr/share/base-files/dot.* to /root), or /etc/skel's where base-files' are
 * absent. Nothing of the host's /root: on this machine its .bashrc runs `pyenv init`, some
 * 0.75 s of every SSH command.
 */
function freshRootHome(home: string): void {
  mkdirSync(home, { recursive: true, mode: 0o700 });
  chmodSync(home, 0o700);
  for (const f of ['.bashrc', '.profile']) {
    const source = [join('/usr/share/base-files', `dot${f}`), join('/etc/skel', f)].find((p) => existsSync(p));
    if (source) copyFileSync(source, join(home, f));
  }
}

/**
 * The node's network configuration, as cloud-init writes it on a VirtualBox VM: the NAT
 * uplink (enp0s3) by DHCP, which gives the default route, and the host-only network
 * (enp0s8) with a static address. The netplan stand-in applies it (seed 002's fix).
 */
function writeNetplan(nodeDir: string, address: string): void {
  mkdirSync(join(nodeDir, 'etc.upper', 'netplan'), { recursive: true });
  const yaml = ['# written by the kubemend lab, as cloud-init writes it on a VirtualBox VM', 'network:', '  version: 2', '  ethernets:', '    enp0s3:', '      dhcp4: true', '    enp0s8:', '      addresses:', `        - ${address}/24`, ''].join('\n');
  writeFileSync(join(nodeDir, 'etc.upper', 'netplan', '50-cloud-init.yaml'), yaml, { mode: 0o600 });
}

/**
 * The node's /etc/hosts as Debian's installer and Vagrant's Debian boxes leave it: the node's
 * name on 127.0.1.1. kubeadm join's Hostname preflight check then resolves it at once (without
 * it, it waits on DNS the lab's nodes cannot reach); the kubelet skips the loopback address
 * and still takes the default route's interface when it has no --node-ip.
 */
export function nodeHostsText(name: string): string {
  return [
    '127.0.0.1\tlocalhost',
    `127.0.1.1\t${name}`,
    '',
    '# The following lines are desirable for IPv6 capable hosts',
    '::1     localhost ip6-localhost ip6-loopback',
    'ff02::1 ip6-allnodes',
    'ff02::2 ip6-allrouters',
    '',
  ].join('\n');
}

/** Files a node keeps across reboots: identity, host key, sshd config, overlay upper dirs, root's home. */
async function prepareNode(dir: string, index: number, clientPub: string, sharedMachineId?: string): Promise<Omit<LabNode, 'port' | 'bootId' | 'boots' | 'weaveMac' | 'bootMachineId'>> {
  const name = `node${index}`;
  const nodeDir = join(dir, 'nodes', name);
  for (const d of ['etc.upper/ssh', 'etc.work', 'varlib.upper/dbus', 'varlib.work', 'run-flannel', 'ssh', 'control']) mkdirSync(join(nodeDir, d), { recursive: true });
  freshRootHome(join(nodeDir, 'root'));
  const machineId = sharedMachineId ?? randomBytes(16).toString('hex');
  writeFileSync(join(nodeDir, 'etc.upper', 'machine-id'), `${machineId}\n`);
  writeFileSync(join(nodeDir, 'varlib.upper', 'dbus', 'machine-id'), `${machineId}\n`);
  writeFileSync(join(nodeDir, 'etc.upper', 'hostname'), `${name}\n`);
  writeFileSync(join(nodeDir, 'etc.upper', 'hosts'), nodeHostsText(name));
  writeNetplan(nodeDir, `${HOSTONLY_PREFIX}.${10 + index}`);
  const hostKey = join(nodeDir, 'ssh', 'ssh_host_ed25519_key');
  await keygen(hostKey);
  writeFileSync(join(nodeDir, 'ssh', 'authorized_keys'), `${clientPub}\n`, { mode: 0o600 });
  const address = `${HOSTONLY_PREFIX}.${10 + index}`;
  writeFileSync(join(nodeDir, 'ssh', 'sshd_config'), sshdConfig({ listen: `${address}:22`, hostKey, authorizedKeys: join(nodeDir, 'ssh', 'authorized_keys'), pidFile: '/run/sshd.pid' }));
  return { name, index, role: index === 1 ? 'control-plane' : 'worker', address, machineId };
}

/**
 * Boots a prepared node: new namespaces and boot id, interfaces built afresh, sshd, and the
 * loopback forwarder on the node's port. What lives in the overlays' upper dirs survives.
 */
interface BootOptions {
  uplinkDown: boolean;
  /**
   * Write what flanneld would have made this boot: it needs a default route, and has not run
   * since a `kubeadm reset`. False with real flannel: the node's kubelet runs the real one.
   */
  flannel: boolean;
  /** Interfaces a scenario leaves behind; only at `up`, since a real reboot clears them too. */
  leftovers?: (b: BootBatches) => void;
}

/** A boot's interfaces: the hub's side runs first (veths into the node), then the node's. */
interface BootBatches {
  holderPid: number;
  hub: IpBatch;
  node: IpBatch;
}

/** Where each node's VirtualBox-NAT gateway (10.0.2.2) has its network namespace: the node's own /run. */
export const NAT_NETNS = '/run/kmlab-nat.netns';

/**
 * Runs inside a booting node: the NAT gateway's namespace and its veth pair (nat0 there,
 * enp0s3 in the node: "netns 1" is the node's PID 1, its holder), then the node's batch on
 * stdin, then sshd. $0 sshd, $1 its config, $2 NAT_NETNS, $3 the gateway's address/len, $4 sshd's
 * log (its errors, in the node's ssh directory).
 */
const NODE_BOOT = [
  'touch "$2" && unshare --net="$2" true',
  'nsenter --net="$2" sh -c \'ip link set lo up && ip link add nat0 type veth peer name enp0s3 netns 1 && ip addr add "$0" dev nat0 && ip link set nat0 up\' "$3"',
  'ip -batch -',
  'exec "$0" -f "$1" -E "$4"',
].join(' && ');

async function bootNode(dir: string, hubPid: number, node: Pick<LabNode, 'name' | 'address' | 'index'>, port: number | (() => Promise<number>), boot: BootOptions): Promise<{ port: number; bootId: string; weaveMac: string; bootMachineId: string }> {
  const { name, address } = node;
  const nodeDir = join(dir, 'nodes', name);
  const bootId = randomUUID();
  writeFileSync(join(nodeDir, 'boot_id'), `${bootId}\n`);
  const holderPid = await startHolder(dir, nodeMarker(dir, name), NODE_SETUP, [dir, nodeDir, name], ['--net', '--uts', '--mount', '--pid', '--mount-proc']);
  const b: BootBatches = { holderPid, hub: new IpBatch(), node: new IpBatch() };

  // enp0s8: the host-only network, its peer on the hub's bridge.
  const hubSide = `h-${name}`;
  b.hub.add('link', 'add', hubSide, 'type', 'veth', 'peer', 'name', 'enp0s8', 'netns', String(holderPid));
  b.hub.add('link', 'set', hubSide, 'master', 'br-lab', 'up');
  // enp0s3: VirtualBox NAT lookalike, 10.0.2.15 on every node. Each VM has a NAT engine of
  // its own, so the gateway's end (10.0.2.2, which answers pings) is in a network namespace
  // of the node's own, bound at NAT_NETNS on the node's private /run (made below, before the
  // batch): one hub holding 10.0.2.2 on every node's link could not send each node its replies.
  b.node.add('addr', 'add', `${address}/24`, 'dev', 'enp0s8');
  b.node.add('addr', 'add', NAT_ADDRESS, 'dev', 'enp0s3');
  b.node.add('link', 'set', 'enp0s8', 'up');
  if (!boot.uplinkDown) {
    b.node.add('link', 'set', 'enp0s3', 'up');
    b.node.add('route', 'add', 'default', 'via', NAT_GATEWAY, 'dev', 'enp0s3');
  }
  // weave: the bridge Weave Net creates, its MAC derived from the machine-id the node has
  // now (lab nodes have no DMI product_uuid, like a VM whose hypervisor does not expose it).
  const machineIdFile = nodeMachineIdFile(holderPid);
  const weaveMac = weavePeerMac(machineIdFile);
  b.node.add('link', 'add', 'weave', 'type', 'bridge');
  b.node.add('link', 'set', 'weave', 'address', weaveMac, 'mtu', '1376', 'up');
  flannelAtBoot(b.node, nodeDir, node.index, boot.flannel);
  boot.leftovers?.(b);

  await ipBatch(hubPid, b.hub);
  // The node's interfaces, then its sshd (which daemonizes), in one exec inside the node.
  await exec('nsenter', ['-t', String(holderPid), '-n', '-u', '-m', '-p', '--', 'sh', '-c', NODE_BOOT, SSHD, join(nodeDir, 'ssh', 'sshd_config'), NAT_NETNS, `${NAT_GATEWAY}/24`, join(nodeDir, 'ssh', 'sshd.log')], b.node.text).catch((err) => {
    throw b.node.explain(err);
  });

  // socat's errors (a failed bind first of all) go to the node's forwarder.log, new each boot.
  const forwarderLog = join(nodeDir, 'forwarder.log');
  rmSync(forwarderLog, { force: true });
  // At `up`, the port is picked now, milliseconds before socat binds it, not when the lab
  // starts (50 nodes take many seconds to boot), and below the kernel's ephemeral range, so no
  // outgoing connection on the machine takes it meanwhile: one that holds it makes socat's
  // bind fail ("Address already in use") and the forwarder exit. A reboot keeps the node's port.
  const forwarderPort = typeof port === 'number' ? port : await port();
  detached('bash', [
    '-c',
    'exec -a "kmlab-fwd $1 $2" socat "TCP-LISTEN:$3,bind=127.0.0.1,reuseaddr,fork" "EXEC:nsenter -t $4 -n -- socat STDIO TCP\\:$5\\:22"',
    'kmlab-fwd',
    dir,
    name,
    String(forwarderPort),
    String(holderPid),
    address,
  ], forwarderLog);
  return { port: forwarderPort, bootId, weaveMac, bootMachineId: machineIdFile.trim() };
}

/**
 * What each node's weave stand-in knows about its peers: every node's address, weave MAC
 * and name, written into every node's control directory (/run/kmlab/peers) whenever a
 * node boots, as Weave Net's gossip would spread it.
 */
function writePeers(state: LabState): void {
  const text = state.nodes.map((n) => `${n.address} ${n.weaveMac} ${n.name}`).join('\n');
  for (const n of state.nodes) writeFileSync(join(state.dir, 'nodes', n.name, 'control', 'peers'), `${text}\n`);
}

/**
 * Banner checks through the forwarders at once, across the lab's nodes. Each check is a fork
 * chain (socat, nsenter, socat) and an sshd child that re-executes sshd: some 65 ms of CPU on
 * this 2-core machine, so 50 at once keep both cores busy for well over a second.
 */
const SSH_CHECK_CONCURRENCY = 4;

/** At most `limit` jobs run at once; the others wait their turn, in order. */
class Slots {
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(private readonly limit: number) {}
  async run<T>(job: () => Promise<T>): Promise<T> {
    if (this.running < this.limit) this.running++;
    else await new Promise<void>((r) => this.waiting.push(r)); // the slot is handed over, running unchanged
    try {
      return await job();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}
const sshChecks = new Slots(SSH_CHECK_CONCURRENCY);

/**
 * Waits until a node's sshd answers through its forwarder. First the kernel, which costs
 * no process: sshd listening on the node's address in the node's network namespace
 * (/proc/<holder>/net/tcp) and the node's own forwarder, not some other process, listening on
 * 127.0.0.1 (a forwarder that failed is reported at once, with its log). Then one SSH banner
 * through the forwarder, SSH_CHECK_CONCURRENCY nodes at a time, each waited for until it
 * comes or the connection closes. A check is never given up for being slow: giving up and
 * starting over (a new fork chain and sshd child each time, the old ones still running) only
 * added load until no check finished in time (50 nodes here, each check cut off after 1 s:
 * `up` failed its 15 s wait; given 120 s, it took 178 s and 3,216 cut-off checks).
 */
async function waitForSsh(dir: string, node: LabNode, timeoutMs = 15_000): Promise<void> {
  const patience = new Patience(timeoutMs);
  const holderPid = markedPid(dir, nodeMarker(dir, node.name));
  if (holderPid === undefined) throw new LabError(`${node.name} is down (no holder) while its sshd was awaited`);
  const fail = (what: string) => new LabError(`${node.name}: ${what} within ${timeoutMs} ms of waiting${sshdLogTail(dir, node.name)}`);
  for (;;) {
    let nodeTable: string;
    try {
      nodeTable = readFileSync(`/proc/${holderPid}/net/tcp`, 'utf8');
    } catch {
      throw new LabError(`${node.name} went down while its sshd was awaited`);
    }
    const sshdListens = listensOn(nodeTable, node.address, 22);
    // The port's listener must be the node's own forwarder: another process may hold the port.
    const inode = listeningInode(readFileSync('/proc/self/net/tcp', 'utf8'), '127.0.0.1', node.port);
    const forwarder = inode === undefined ? undefined : forwarderPid(dir, node.name);
    const forwarderListens = forwarder !== undefined && holdsSocket(forwarder, inode!);
    if (!forwarderListens) {
      const log = readTail(join(dir, 'nodes', node.name, 'forwarder.log'));
      if (log) throw new LabError(`${node.name}: its forwarder on 127.0.0.1:${node.port} failed: ${log}`);
    }
    if (sshdListens && forwarderListens) break;
    if (patience.exhausted) {
      if (!sshdListens) throw fail(`sshd did not listen on ${node.address}:22 in the node`);
      throw fail(inode === undefined ? `its forwarder did not listen on 127.0.0.1:${node.port}` : `127.0.0.1:${node.port} is held by a process other than its forwarder`);
    }
    await patience.sleep(20);
  }
  for (;;) {
    const banner = await sshChecks.run(() => sshBanner(node.port, patience));
    if (banner.startsWith('SSH-2.0-')) return;
    if (patience.exhausted) throw fail(`sshd did not answer through 127.0.0.1:${node.port}${banner ? ` (it sent ${JSON.stringify(banner.slice(0, 40))})` : ''}`);
    await patience.sleep(100);
  }
}

/**
 * What the server behind a loopback port sends first ('' if the connection closes before
 * anything comes, or the patience runs out). Waited for in slices charged at most 100 ms
 * each, so time the event loop spent blocked costs at most one slice.
 */
async function sshBanner(port: number, patience: Patience): Promise<string> {
  const { createConnection } = await import('node:net');
  let data = '';
  let closed = false;
  const s = createConnection({ host: '127.0.0.1', port });
  const done = new Promise<void>((resolve) => {
    s.on('data', (d) => {
      data += d.toString();
      if (data.length >= 8) s.destroy(); // enough for "SSH-2.0-"
    });
    s.on('error', () => undefined); // 'close' follows
    s.on('close', () => {
      closed = true;
      resolve();
    });
  });
  while (!closed && !patience.exhausted) await patience.charge(Promise.race([done, sleep(100)]), 100);
  s.destroy();
  return data;
}

/** The end of the node's sshd log (sshd -E, errors only), for an error message. */
function sshdLogTail(dir: string, name: string): string {
  const text = readTail(join(dir, 'nodes', name, 'ssh', 'sshd.log'));
  return text ? `; its sshd.log ends: ${text}` : '';
}

/** The last 1000 characters of a log, trimmed; '' if it is empty or missing. */
function readTail(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim().slice(-1000);
  } catch {
    return '';
  }
}

/** The node's forwarder: a child of this process, which booted the node (bootNode). */
function forwarderPid(dir: string, name: string): number | undefined {
  const marker = `kmlab-fwd ${dir} ${name}`;
  const kids = childrenOf(process.pid);
  return kids === undefined ? markedPid(dir, marker) : kids.find((k) => argv0Of(k) === marker);
}

/** Whether one of the process's descriptors is the socket with this inode. */
function holdsSocket(pid: number, inode: string): boolean {
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return false; // exited
  }
  return fds.some((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`) === `socket:[${inode}]`;
    } catch {
      return false;
    }
  });
}

export interface UpOptions {
  dir: string;
  nodes: number;
  /** How long a rebooting node stays down (default 1 s). */
  rebootDowntimeMs?: number;
  scenarios?: Scenario[];
  /** Start a Kubernetes control plane with the nodes (default: no). */
  controlPlane?: boolean;
  /**
   * Each node's kubelet runs its kube-flannel pod's container as the real flanneld and reports
   * it in the pod's status (flannel-kubelet.ts); boots no longer write flannel.1, cni0 or
   * subnet.env. Needs the control plane and a lab that runs flannel (default: no).
   */
  realFlannel?: boolean;
}

/** Brings the lab up. A lab already there is taken down first. */
export async function up(opts: UpOptions): Promise<LabState> {
  requireRoot();
  if (!Number.isInteger(opts.nodes) || opts.nodes < 1 || opts.nodes > MAX_NODES) throw new LabError(`--nodes must be an integer from 1 to ${MAX_NODES}, got ${opts.nodes}`);
  checkLabDir(opts.dir);
  requireKubeadm();
  if (opts.controlPlane) requireBinaries();
  const scenarios = opts.scenarios ?? [];
  if (opts.realFlannel) {
    if (!opts.controlPlane) throw new LabError('--real-flannel needs the control plane: flanneld and the kube-flannel pods live on its API (drop --no-control-plane)');
    if (!labCnis(scenarios).includes('flannel')) throw new LabError(`--real-flannel needs a lab that runs flannel; scenarios ${scenarios.join(', ')} run ${labCnis(scenarios).join(', ')}`);
    // kwok takes one label selector for the pods it leaves to the lab's kubelets (control-plane.ts).
    if (scenarios.includes('orphan-calico')) throw new LabError('--real-flannel with orphan-calico: kwok can leave only one set of pods to the lab (one label selector); bring them up in separate labs');
    if (labRunsCalicoNode(scenarios)) throw new LabError(`--real-flannel with ${scenarios.filter((x) => x.startsWith('nat-')).join(', ')}: the lab runs calico-node's pods there, and kwok can leave only one set of pods to the lab (one label selector); bring them up in separate labs`);
    if (!existsSync(join(TOOLS_BIN, 'flanneld'))) throw new LabError(`--real-flannel: missing ${join(TOOLS_BIN, 'flanneld')}: run \`bash scripts/build-flannel.sh\` (or \`npm run setup\`)`);
  }
  await down(opts.dir);
  mkdirSync(opts.dir, { recursive: true });
  writeFileSync(join(opts.dir, SENTINEL), 'kubemend lab directory: `npm run lab -- down` deletes it\n');
  const clientKey = join(opts.dir, 'id_ed25519');
  const clientPub = await keygen(clientKey);
  installStandIns(opts.dir);
  // seed 000: the nodes were cloned from one image, machine-id and all.
  const clonedId = scenarios.includes('cloned-machine-id') ? randomBytes(16).toString('hex') : undefined;
  let state: LabState;
  try {
    const hubPid = await startHolder(opts.dir, hubMarker(opts.dir), HUB_SETUP, [opts.dir], ['--net']);
    // Each node's forwarder port is picked as the forwarder starts (bootNode), distinct within the lab.
    const taken = new Set<number>();
    const pickPort = async (): Promise<number> => {
      for (;;) {
        const port = await freeLowPort();
        if (taken.has(port)) continue;
        taken.add(port);
        return port;
      }
    };
    const indexes = Array.from({ length: opts.nodes }, (_, k) => k + 1);
    const nodes = await boundedAll(indexes, BOOT_CONCURRENCY, async (i): Promise<LabNode> => {
      const prepared = await prepareNode(opts.dir, i, clientPub, clonedId);
      const nodeDir = join(opts.dir, 'nodes', prepared.name);
      const cri = new CriRecords();
      const staleCni = scenarios.includes('stale-cni');
      const orphanCalico = scenarios.includes('orphan-calico');
      const leaks = staleCni ? await writeStaleCni(nodeDir, i, prepared.name, cri, !!opts.realFlannel) : [];
      // seed 004: the runtime's records of the pods that have a sandbox, and what a Calico-style DEL needs (calico-cni.ts).
      const calicoSeeds = orphanCalico ? (await import('./calico-cni')).seedSandboxes(prepared, calicoPods(prepared.name).namespace) : [];
      for (const s of calicoSeeds.filter((x) => x.kind !== 'vethOnly')) {
        mkdirSync(join(nodeDir, 'varlib.upper', 'kmlab', 'calico'), { recursive: true });
        writeFileSync(join(nodeDir, 'varlib.upper', 'kmlab', 'calico', s.id), `${JSON.stringify(s.data)}\n`);
        cri.pod(s.pod, calicoPods(prepared.name).namespace, s.id, s.ip);
      }
      cri.write(nodeDir);
      // seed 001: `kubeadm init` without --apiserver-advertise-address on a NAT box advertised
      // 10.0.2.15, and the workers could not join.
      const natAdvertise = scenarios.includes('nat-advertise');
      const cpAddress = `${HOSTONLY_PREFIX}.11`;
      writeKubeadmState(nodeDir, prepared, cpAddress, natAdvertise ? NAT_ADDRESS.split('/')[0] : cpAddress, joinedAtUp(scenarios, prepared.role), kubeletsOnNat(scenarios));
      const leftovers = (b: BootBatches) => {
        if (staleCni) staleCniInterfaces(b.node, i);
      };
      const uplinkDown = uplinkStaysDown(scenarios, i);
      const boot: BootOptions = { uplinkDown, flannel: !uplinkDown && !staleCni && !opts.realFlannel, leftovers };
      const booted = { ...prepared, ...(await bootNode(opts.dir, hubPid, prepared, pickPort, boot)), boots: 1 };
      if (calicoSeeds.length) await (await import('./calico-cni')).seedOrphanCalico(markedPid(opts.dir, nodeMarker(opts.dir, prepared.name))!, calicoSeeds);
      if (leaks.length) {
        // The flannel lease the node had when its sandboxes leaked: its podCIDR, as flanneld writes subnet.env for it.
        const subnetEnv = `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=${podCidrPrefix(i)}.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n`;
        await (await import('./cni')).leakReservations(markedPid(opts.dir, nodeMarker(opts.dir, prepared.name))!, subnetEnv, leaks);
      }
      return booted;
    });
    await Promise.all(nodes.map((n) => waitForSsh(opts.dir, n)));
    state = { dir: opts.dir, rebootDowntimeMs: opts.rebootDowntimeMs ?? 1000, scenarios, controlPlane: !!opts.controlPlane, ...(opts.realFlannel ? { realFlannel: true } : {}), nodes };
    writeState(state);
    writePeers(state);
    const cp = opts.controlPlane ? await startControlPlane(state) : undefined;
    writeKubemendConfig(state, clientKey, cp);
    await startDaemon(opts.dir);
    if (opts.realFlannel) {
      // The daemon's kubelets start flanneld now: up returns once each pod has shown how that went.
      // Loaded here, not at the top: flannel-kubelet.ts reaches this module through flannel.ts.
      const { waitForFlannelPodsSettled } = await import('./flannel-kubelet');
      await waitForFlannelPodsSettled(opts.dir);
      // Then the Deployments' pods get their real sandboxes (pod-kubelet.ts): up returns once each has run or failed in one.
      const { waitForAppPodsSettled } = await import('./pod-kubelet');
      await waitForAppPodsSettled(opts.dir);
    }
    if (opts.controlPlane && scenarios.includes('orphan-calico')) {
      // seed 004's pods are run by the daemon's kubelet (pod-kubelet.ts): up returns once each reports Running.
      const { waitForCalicoPodsRunning } = await import('./pod-kubelet');
      await waitForCalicoPodsRunning(opts.dir);
    }
    if (opts.controlPlane && labRunsCalicoNode(scenarios)) {
      // seed 001: calico-node is the daemon's kubelet's (calico-node.ts): up returns once each pod has started or crashed.
      const { waitForCalicoNodesSettled } = await import('./calico-node');
      await waitForCalicoNodesSettled(opts.dir);
    }
  } catch (err) {
    await down(opts.dir);
    throw err;
  }
  return state;
}

function writeKubemendConfig(state: LabState, clientKey: string, cp: ControlPlaneInfo | undefined): void {
  const hostKeyLine = (n: LabNode) => {
    const [type, key] = readFileSync(join(state.dir, 'nodes', n.name, 'ssh', 'ssh_host_ed25519_key.pub'), 'utf8').trim().split(/\s+/);
    return `[127.0.0.1]:${n.port} ${type} ${key}`;
  };
  const knownHosts = join(state.dir, 'known_hosts');
  writeFileSync(knownHosts, `${state.nodes.map(hostKeyLine).join('\n')}\n`);
  writeFileSync(
    join(state.dir, 'kubemend.yaml'),
    `# Written by \`npm run lab -- up\`: the lab's nodes, reached through loopback forwarders.\n${stringify({
      clusters: [
        {
          name: 'lab',
          ...(cp ? { kubeconfig: cp.workerKubeconfig } : {}),
          ssh: { user: 'root', privateKeyPath: clientKey, knownHostsPath: knownHosts },
          nodes: state.nodes.map((n) => ({ name: n.name, role: n.role, host: '127.0.0.1', port: n.port })),
        },
      ],
    })}`,
  );
}

/** Directories of every lab with a process on this machine. */
export function runningLabs(): string[] {
  const dirs = new Set<string>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv0 = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')[0];
      if (/^kmlab-(node|hub|fwd|daemon|cp) /.test(argv0)) dirs.add(argv0.split(' ')[1]);
    } catch {
      // exited meanwhile
    }
  }
  return [...dirs];
}

/** The pid of the process whose argv[0] is exactly `argv0`: a stored pid is never trusted. */
function markedPid(dir: string, argv0: string): number | undefined {
  return labProcesses(dir).find((p) => p.argv0 === argv0)?.pid;
}

const hubMarker = (dir: string) => `kmlab-hub ${dir}`;
const nodeMarker = (dir: string, name: string) => `kmlab-node ${dir} ${name}`;

/** Whether a node's holder is running (a rebooting node is down for a moment). */
export function nodeIsUp(dir: string, name: string): boolean {
  return markedPid(dir, nodeMarker(dir, name)) !== undefined;
}

/** Processes of this lab: argv[0] "kmlab-<kind> <dir> ...". */
export function labProcesses(dir: string): Array<{ pid: number; argv0: string }> {
  const out: Array<{ pid: number; argv0: string }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv0: string;
    try {
      argv0 = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')[0];
    } catch {
      continue; // exited meanwhile
    }
    if (/^kmlab-(node|hub|fwd|daemon|cp) /.test(argv0) && argv0.split(' ')[1] === dir) out.push({ pid: Number(entry), argv0 });
  }
  return out;
}

function netnsOf(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
}

/**
 * Stops every process of the lab in `dir` (holders, forwarders, and whatever runs in a
 * node's namespaces: sshd, sessions) and removes the directory. Safe to repeat.
 */
export async function down(dir: string): Promise<{ killed: number }> {
  requireRoot();
  checkLabDir(dir);
  const marked = labProcesses(dir);
  const hostNet = netnsOf(process.pid);
  const labNets = new Set(marked.filter((p) => /^kmlab-(node|hub) /.test(p.argv0)).map((p) => netnsOf(p.pid)).filter((n): n is string => !!n && n !== hostNet));
  const victims = new Set(marked.map((p) => p.pid));
  if (labNets.size) {
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const ns = netnsOf(Number(entry));
      if (ns && labNets.has(ns)) victims.add(Number(entry));
    }
  }
  await killAndWait(victims);
  if (existsSync(join(dir, SENTINEL))) rmSync(dir, { recursive: true, force: true });
  return { killed: victims.size };
}

/**
 * Stand-ins on every node's PATH (/usr/local/sbin, bind-mounted from .lab/bin): kubeadm,
 * crictl, netplan, systemctl, reboot, weave. `reboot` and `systemctl reboot` ask the lab
 * daemon to reboot the node, as the real commands ask systemd; `systemctl start|restart|stop
 * kubelet` ask it to act on the node's kubelet (kubelet.ts). The kubeadm script hands the
 * subcommands that are real to the real kubeadm (KUBEADM, its path written in here: the
 * repository's .tools/bin is the same path inside a node).
 */
function installStandIns(dir: string): void {
  const bin = join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  for (const name of readdirSync(STAND_INS)) {
    const text = readFileSync(join(STAND_INS, name), 'utf8');
    writeFileSync(join(bin, name), name === 'kubeadm' ? text.replaceAll('@KUBEADM@', KUBEADM).replaceAll('@JOIN_IGNORED_PREFLIGHT@', LAB_JOIN_IGNORED_PREFLIGHT.join(',')) : text);
    chmodSync(join(bin, name), 0o755);
  }
}

/** The real kubeadm v1.34.4 (scripts/build-k8s.sh): lab nodes run it for what is real of kubeadm (standins/kubeadm). */
export const KUBEADM = join(TOOLS_BIN, 'kubeadm');

function requireKubeadm(): void {
  if (!existsSync(KUBEADM)) throw new LabError(`missing ${KUBEADM}: run \`bash scripts/build-k8s.sh\` (or \`npm run setup\`)`);
  if (/['\s]/.test(KUBEADM)) throw new LabError(`${KUBEADM}: the lab's kubeadm path must not contain whitespace or a quote`);
}

/** Stops everything in a node's namespaces and its forwarder; the node's files stay. */
async function killNode(dir: string, node: Pick<LabNode, 'name'>): Promise<void> {
  const holderPid = markedPid(dir, nodeMarker(dir, node.name));
  const net = holderPid === undefined ? undefined : netnsOf(holderPid);
  const victims = new Set<number>();
  for (const p of labProcesses(dir)) if (p.argv0 === `kmlab-fwd ${dir} ${node.name}`) victims.add(p.pid);
  if (net && net !== netnsOf(process.pid)) {
    for (const entry of readdirSync('/proc')) if (/^\d+$/.test(entry) && netnsOf(Number(entry)) === net) victims.add(Number(entry));
  }
  await killAndWait(victims);
}

/** SIGKILLs the processes and waits (up to 10 s) until none is alive; zombies count as gone. */
async function killAndWait(pids: Set<number>): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  const patience = new Patience(10_000);
  while ([...pids].some((pid) => isAlive(pid)) && !patience.exhausted) await patience.sleep(20);
}

function isAlive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/**
 * A simulated reboot: the node goes down (its processes, sessions and interfaces vanish),
 * stays down for the lab's downtime, and boots again with a new boot id; with a file
 * control/stay-down in the node's directory it stays down. Only the lab
 * daemon calls this, so state.json has one writer.
 */
export async function rebootNode(dir: string, name: string): Promise<LabNode> {
  const state = readState(dir);
  const node = state?.nodes.find((n) => n.name === name);
  if (!state || !node) throw new LabError(`no lab node ${name}`);
  // Loaded here: kubelet.ts reads this module.
  const kubelet = state.controlPlane ? await import('./kubelet') : undefined;
  if (kubelet && kubeletConfigured(dir, name)) await kubelet.stopKubelet(dir, name).catch((err) => console.error(`lab: ${(err as Error).message}`));
  await killNode(dir, node);
  // A test can make a node fail to come back, as a machine that hangs in its firmware.
  if (existsSync(join(dir, 'nodes', name, 'control', 'stay-down'))) return node;
  await sleep(state.rebootDowntimeMs);
  const hubPid = markedPid(dir, hubMarker(dir));
  if (hubPid === undefined) throw new LabError('the lab hub is gone; run `npm run lab -- down` and `up` again');
  const uplinkDown = uplinkStaysDown(state.scenarios, node.index);
  try {
    // With real flannel, the node's kubelet starts flanneld once the node is back (flannel-kubelet.ts).
    Object.assign(node, await bootNode(dir, hubPid, node, node.port, { uplinkDown, flannel: !uplinkDown && !state.realFlannel }), { boots: node.boots + 1 });
  } catch (err) {
    await killNode(dir, node); // nothing half-booted stays behind
    throw err;
  }
  await waitForSsh(dir, node);
  // kube-apiserver's :6443 on the control-plane node (a forwarder in its namespaces) comes back with it.
  if (state.controlPlane && node.role === 'control-plane') await ensureApiServerForwarder(dir, name);
  // The kubelet starts at boot if the node is joined (kubeadm left it a kubelet.conf), with its flags and the node's addresses (kubelet.ts).
  if (kubelet && kubeletConfigured(dir, name)) await kubelet.startKubelet(dir, name, { machineId: node.bootMachineId, bootId: node.bootId });
  // Other nodes may have rebooted meanwhile: update this node in the current state only
  // (no await between read and write, so the daemon's other reboots cannot interleave).
  const current = readState(dir)!;
  current.nodes = current.nodes.map((n) => (n.name === name ? node : n));
  writeState(current);
  writePeers(current);
  return node;
}

/** Whether the node has a kubelet.conf (it is joined), read from its /etc overlay's upper directory. */
export function kubeletConfigured(dir: string, name: string): boolean {
  try {
    return statSync(join(dir, 'nodes', name, 'etc.upper', 'kubernetes', 'kubelet.conf')).isFile(); // a whiteout is a device
  } catch {
    return false;
  }
}

/** Asks the daemon to reboot a node (as the node's own `reboot` does) and waits until it is back. */
export async function requestReboot(dir: string, name: string, timeoutMs = 60_000): Promise<LabNode> {
  const before = readState(dir)?.nodes.find((n) => n.name === name);
  if (!before) throw new LabError(`no lab node ${JSON.stringify(name)}${readState(dir) ? '' : ' (the lab is down)'}`);
  writeFileSync(join(dir, 'nodes', name, 'control', 'request'), 'reboot\n');
  const patience = new Patience(timeoutMs);
  while (!patience.exhausted) {
    const now = readState(dir)?.nodes.find((n) => n.name === name);
    if (now && now.boots > before.boots) return now;
    await patience.sleep(50);
  }
  throw new LabError(`${name} did not come back from reboot within ${timeoutMs} ms`);
}

/** Shell stand-ins for tools that cannot run here (test/lab/standins/, one file each). */
const STAND_INS = join(REPO_ROOT, 'test', 'lab', 'standins');

/** Compiled daemon (the lab may be driven from ts sources in tests, the daemon runs from dist/). */
const DAEMON = join(REPO_ROOT, 'dist', 'test', 'lab', 'daemon.js');

async function startDaemon(dir: string): Promise<void> {
  if (!existsSync(DAEMON)) throw new LabError(`${DAEMON} is missing: run \`npm run build\` first`);
  const log = join(dir, 'daemon.log');
  detached('bash', ['-c', 'exec -a "kmlab-daemon $1" "$2" "$3" "$1"', 'kmlab-daemon', dir, process.execPath, DAEMON], log);
  const patience = new Patience(10_000);
  while (!patience.exhausted) {
    if (labProcesses(dir).some((p) => p.argv0 === `kmlab-daemon ${dir}`)) return;
    await patience.sleep(20);
  }
  throw new LabError(`the lab daemon did not start: ${existsSync(log) ? readFileSync(log, 'utf8').slice(-2000) : 'no log'}`);
}
