/**
 * The lab's kubelet for calico-node's pods under seed 001's scenarios (nat-advertise,
 * nat-node-ip; manifests.ts's labRunsCalicoNode). The real kube-controller-manager's
 * DaemonSet controller creates and deletes the pods (a changed template env rolls out one node
 * at a time); kwok disregards them (LAB_KUBELET_POD_LABEL); this loop, in the lab daemon, is
 * their kubelet and plays the container's two parts that seed 001 is about:
 *
 *  - startup (calico-node's node/pkg/lifecycle/startup): the IPv4 address for BGP, from the
 *    container's env as Calico v3.29 decides it (calicoStartup below, pure: IP=autodetect,
 *    IP_AUTODETECTION_METHOD unset or first-found, interface=, skip-interface=, cidr=,
 *    can-reach=, kubernetes-internal-ip), over the node's real links (`ip -j addr` in its
 *    netns) and, for can-reach, the kernel's route (`ip -j route get`). Calico's Node resource
 *    in KDD mode keeps the address as the Node annotation projectcalico.org/IPv4Address: a
 *    detected address is written there; another Node already holding it is Calico's "IPv4
 *    address conflict" (the address is cleared and the container exits); a failed detection
 *    with an address already there keeps that address, as Calico does. A container that exits
 *    is reported as a kubelet does (lastState.terminated with its log's tail, CrashLoopBackOff
 *    with the kubelet's back-off: flannel-kubelet.ts's rules). Starts are taken one node at a
 *    time, so the first node to start wins a shared address, as the first calico-node to
 *    write it does.
 *  - readiness (`calico-node -felix-ready -bird-ready`, every readinessProbe.periodSeconds):
 *    BIRD's node-to-node mesh peers with every other Node that has an address; a session is
 *    established only if that node's calico-node runs with it, the address is not one of this
 *    node's own (not ours, not 10.0.2.15 when every node has it), and a real
 *    `ping -c1 -W1 -I <ours> <theirs>` in this node's netns gets its answer. Ready only then;
 *    otherwise the probe's output ("calico/node is not ready: BIRD is not ready: BGP not
 *    established with <peers>") goes into an Unhealthy event, as the kubelet reports a failed probe.
 * Felix is taken as live and ready. What it knows of each pod (restarts, back-off) is in
 * memory, as a kubelet's is; the calico-node log is .lab/nodes/<n>/calico-node.log (the run
 * before: calico-node.previous.log). Calico re-detects every AUTODETECT_POLL_INTERVAL (60 s);
 * the lab detects at container start only.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { api, daemonLogTail, finishDeletion, getList, holders } from './pod-kubelet';
import { apiTime, type ApiPodStatus, type ContainerView, crashLoopMessage, podStatus, type PodRef, replacedIps, RestartBackoff, statusShows, type Terminated, terminationMessageFromLog } from './flannel-kubelet';
import { type IpLink, type IpRoute, isGlobalUnicast4, isIpv4, kubeletApiAccess, nodeNetwork } from './kubelet';
import { LabError, readState } from './lab';
import { CALICO_NODE_CONTAINER, CALICO_NODE_DAEMONSET, KUBELET_LABEL } from './manifests';
import { Patience } from './patience';

// ---- Calico's startup, as facts (pure) ----

/** Calico's DEFAULT_INTERFACES_TO_EXCLUDE (node/pkg/lifecycle/startup/autodetection/autodetection_linux.go). */
export const DEFAULT_INTERFACES_TO_EXCLUDE = ['^docker.*', '^cbr.*', '^dummy.*', '^podman.*', '^virbr.*', '^lxcbr.*', '^veth.*', '^lo', '^cali.*', '^tunl.*', '^flannel.*', '^kube-ipvs.*', '^cni.*', '^vxlan\\.calico.*', '^vxlan-v6\\.calico.*', '^wireguard\\.cali.*', '^wg-v6\\.cali.*'];
/** Where calico-node keeps a Node's BGP address in KDD mode. */
export const CALICO_IPV4_ANNOTATION = 'projectcalico.org/IPv4Address';

export interface CalicoLogLine {
  level: 'INFO' | 'WARNING' | 'ERROR';
  file: string;
  message: string;
}

interface Iface {
  name: string;
  cidrs: Array<{ ip: string; prefixlen: number }>;
}

type Result<T> = { ok: true; value: T } | { ok: false; error: string };

/**
 * Calico's GetInterfaces: every link (up or down), those matching an include regex (if any)
 * and no exclude regex, with their IPv4 addresses. It walks the kernel's list (index order)
 * backwards, "to maintain behavior with older versions": the highest index comes first.
 */
export function calicoInterfaces(links: readonly IpLink[], incl: readonly string[] = [], excl: readonly string[] = []): Result<Iface[]> {
  let inc: RegExp | undefined;
  let exc: RegExp | undefined;
  try {
    if (incl.length) inc = new RegExp(`(${incl.join(')|(')})`);
    if (excl.length) exc = new RegExp(`(${excl.join(')|(')})`);
  } catch (err) {
    return { ok: false, error: `error parsing regexp: ${(err as Error).message}` };
  }
  const sorted = [...links].sort((a, b) => b.ifindex - a.ifindex);
  const out = sorted
    .filter((l) => (!inc || inc.test(l.ifname)) && !(exc && exc.test(l.ifname)))
    .map((l) => ({ name: l.ifname, cidrs: (l.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => ({ ip: a.local, prefixlen: a.prefixlen })) }));
  return { ok: true, value: out };
}

const inCidr = (ip: string, cidr: { net: number; bits: number }) => {
  const n = ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  const size = 2 ** (32 - cidr.bits);
  return Math.floor(n / size) === Math.floor(cidr.net / size);
};

function parseCidr(text: string): { net: number; bits: number; text: string } | undefined {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(text);
  if (!m || !isIpv4(m[1]) || Number(m[2]) > 32) return undefined;
  const bits = Number(m[2]);
  const n = m[1].split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  const net = bits === 0 ? 0 : Math.floor(n / 2 ** (32 - bits)) * 2 ** (32 - bits);
  const ip = [24, 16, 8, 0].map((s) => Math.floor(net / 2 ** s) % 256).join('.');
  return { net, bits, text: `${ip}/${bits}` };
}

/** Calico's FilteredEnumeration: the first global unicast IPv4 (within `cidrs`, if given) of the filtered interfaces. */
function filteredEnumeration(links: readonly IpLink[], incl: readonly string[], excl: readonly string[], cidrs: ReturnType<typeof parseCidr>[] = []): Result<{ iface: string; cidr: string }> {
  const ifaces = calicoInterfaces(links, incl, excl);
  if (!ifaces.ok) return ifaces;
  if (!ifaces.value.length) return { ok: false, error: 'no valid host interfaces found' };
  for (const i of ifaces.value) {
    for (const c of i.cidrs) {
      if (isGlobalUnicast4(c.ip) && (!cidrs.length || cidrs.some((x) => x && inCidr(c.ip, x)))) return { ok: true, value: { iface: i.name, cidr: `${c.ip}/${c.prefixlen}` } };
    }
  }
  return { ok: false, error: 'no valid IPv4 addresses found on the host interfaces' };
}

/** The address a route to `dest` leaves from (the source a UDP socket would get), or the error. */
export type Reach = { src: string } | { error: string };

export interface CalicoStartupInput {
  nodeName: string;
  /** The container's env (IP, IP_AUTODETECTION_METHOD). */
  env: Record<string, string>;
  /** The address Calico's Node already has (the annotation), if any: "ip/prefix". */
  existing?: string;
  links: readonly IpLink[];
  /** The route to can-reach's destination, looked up by the caller. */
  reach?: Reach;
  /** The Kubernetes Node's InternalIP addresses. */
  internalIps: readonly string[];
  /** Other Calico Nodes' addresses ("ip/prefix"), by node name. */
  others: ReadonlyArray<{ name: string; address: string }>;
}

export interface CalicoStartup {
  /** The container carries on (true) or exits 1 (Calico's Terminate). */
  ok: boolean;
  /** The Node's address afterwards: a string to write, null to clear, undefined to leave. */
  address?: string | null;
  lines: CalicoLogLine[];
}

/** The can-reach destination, when that is the method. */
export const canReachDestination = (method: string | undefined) => (method?.startsWith('can-reach=') ? method.slice('can-reach='.length) : undefined);

/**
 * calico-node's IPv4 part of startup (configureIPsAndSubnets, AutoDetectCIDR and the conflict
 * check of Calico v3.29's startup.go and autodetection/*.go), with its log lines.
 */
export function calicoStartup(input: CalicoStartupInput): CalicoStartup {
  const lines: CalicoLogLine[] = [];
  const info = (file: string, message: string) => lines.push({ level: 'INFO', file, message });
  const warn = (file: string, message: string) => lines.push({ level: 'WARNING', file, message });
  const error = (file: string, message: string) => lines.push({ level: 'ERROR', file, message });
  const AD = 'autodetection/autodetection_methods.go';
  const ST = 'startup/startup.go';
  const terminate = (address?: string | null): CalicoStartup => {
    warn('utils/utils.go', 'Terminating');
    return { ok: false, address, lines };
  };
  const failConfigure = (err: string, address?: string | null) => {
    error(ST, `Failed to configure IP addresses error=${err}`);
    return terminate(address);
  };
  info(ST, `Starting node ${input.nodeName} with version v3.29.3`);
  const all = input.links;
  const localCidr = (ip: string): string => {
    const ifaces = calicoInterfaces(all);
    for (const i of ifaces.ok ? ifaces.value : []) for (const c of i.cidrs) if (c.ip === ip) return `${c.ip}/${c.prefixlen}`;
    warn(AD, `Unable to find matching host interface for IP ${ip}`);
    return ip;
  };
  const validateIP = (cidr: string) => {
    const ip = cidr.split('/')[0];
    const ifaces = calicoInterfaces(all);
    if (!(ifaces.ok ? ifaces.value : []).some((i) => i.cidrs.some((c) => c.ip === ip))) warn(ST, `Unable to confirm IPv4 address ${ip} is assigned to this host`);
  };

  /** AutoDetectCIDR: the address, undefined when detection failed, 'terminate' for an unknown method. */
  const autodetect = (method: string): string | undefined | 'terminate' => {
    if (method === '' || method === 'first-found') {
      const r = filteredEnumeration(all, [], DEFAULT_INTERFACES_TO_EXCLUDE);
      if (!r.ok) return void warn(AD, `Unable to auto-detect an IPv4 address: ${r.error}`);
      info(AD, `Using autodetected IPv4 address on interface ${r.value.iface}: ${r.value.cidr}`);
      return r.value.cidr;
    }
    if (method.startsWith('interface=')) {
      const regexes = method.slice('interface='.length).split(/\s*,\s*/);
      const r = filteredEnumeration(all, regexes, []);
      if (!r.ok) return void warn(AD, `Unable to auto-detect an IPv4 address using interface regexes [${regexes.join(' ')}]: ${r.error}`);
      info(AD, `Using autodetected IPv4 address ${r.value.cidr} on matching interface ${r.value.iface}`);
      return r.value.cidr;
    }
    if (method.startsWith('cidr=')) {
      const cidrs: Array<NonNullable<ReturnType<typeof parseCidr>>> = [];
      for (const c of method.slice('cidr='.length).split(/\s*,\s*/)) {
        const p = parseCidr(c);
        if (!p) return void error(AD, `Invalid CIDR ${JSON.stringify(c)} for IP autodetection method: ${method}`);
        cidrs.push(p);
      }
      const r = filteredEnumeration(all, [], [], cidrs);
      const list = `[${cidrs.map((c) => c.text).join(' ')}]`;
      if (!r.ok) return void warn(AD, `Unable to auto-detect an IPv4 address using interface cidr ${list}: ${r.error}`);
      info(AD, `Using autodetected IPv4 address ${r.value.cidr} on interface ${r.value.iface} matching cidrs ${list}`);
      return r.value.cidr;
    }
    if (method.startsWith('can-reach=')) {
      const dest = method.slice('can-reach='.length);
      const reach = input.reach ?? { error: `dial udp4 [${dest}]:80: no route looked up` };
      if ('error' in reach) return void warn(AD, `Unable to auto-detect IPv4 address by connecting to ${dest}: ${reach.error}`);
      const ifaces = calicoInterfaces(all);
      for (const i of ifaces.ok ? ifaces.value : []) {
        for (const c of i.cidrs) {
          if (c.ip === reach.src) {
            info(AD, `Using autodetected IPv4 address ${c.ip}/${c.prefixlen}, detected by connecting to ${dest}`);
            return `${c.ip}/${c.prefixlen}`;
          }
        }
      }
      return void warn(AD, `Unable to auto-detect IPv4 address by connecting to ${dest}: autodetected IPv4 address does not match any addresses found on local interfaces: ${reach.src}`);
    }
    if (method.startsWith('skip-interface=')) {
      const regexes = method.slice('skip-interface='.length).split(/\s*,\s*/);
      const r = filteredEnumeration(all, [], [...DEFAULT_INTERFACES_TO_EXCLUDE, ...regexes]);
      if (!r.ok) return void warn(AD, `Unable to auto-detect an IPv4 address while excluding [${regexes.join(' ')}]: ${r.error}`);
      info(AD, `Using autodetected IPv4 address on interface ${r.value.iface}: ${r.value.cidr} while skipping matching interfaces`);
      return r.value.cidr;
    }
    if (method.startsWith('kubernetes-internal-ip')) {
      const ip = input.internalIps.find(isIpv4);
      const address = ip ? localCidr(ip) : '';
      if (!parseCidr(address)) return void error(AD, `Unable to parse CIDR ${address} : invalid CIDR address: ${address}`);
      return address;
    }
    error(AD, `Invalid IP autodetection method: ${method}`);
    return 'terminate';
  };

  const ipEnv = input.env.IP ?? '';
  const old = input.existing ?? '';
  let address = old;
  if (ipEnv === 'autodetect' || (ipEnv === '' && old === '')) {
    const cidr = autodetect(input.env.IP_AUTODETECTION_METHOD ?? '');
    if (cidr === 'terminate') return terminate();
    if (cidr !== undefined) address = cidr;
    else if (old === '') {
      warn(ST, "Couldn't autodetect an IPv4 address. If auto-detecting, choose a different autodetection method. Otherwise provide an explicit address.");
      return failConfigure('failed to configure IP addresses and subnets: failed to autodetect an IPv4 address');
    } else {
      warn(ST, `Autodetection of IPv4 address failed, keeping existing value: ${old}`);
      validateIP(old);
    }
  } else if (ipEnv === 'none') {
    if (old) {
      info(ST, `Autodetection for IPv4 disabled, keeping existing value: ${old}`);
      validateIP(old);
    }
  } else {
    if (ipEnv !== '') {
      const cidr = localCidr(ipEnv);
      const parsed = parseCidr(cidr.includes('/') ? cidr : `${cidr}/32`);
      if (!parsed || !isIpv4(cidr.split('/')[0])) {
        warn(ST, `Environment does not contain a valid IPv4 address: IP=${cidr}`);
        return terminate();
      }
      info(ST, `Using IPv4 address from environment: IP=${cidr}`);
      address = cidr.includes('/') ? cidr : `${cidr}/32`;
    }
    validateIP(address);
  }
  if (!address) return failConfigure('no IPv4 or IPv6 addresses configured or detected, required for Calico networking');
  if (address !== old) {
    info(ST, 'Node IPv4 changed, will check for conflicts');
    const ours = address.split('/')[0];
    const clash = input.others.filter((o) => o.address.split('/')[0] === ours);
    for (const o of clash) warn(ST, `Calico node '${o.name}' is already using the IPv4 address ${ours}.`);
    // Calico clears the Node's address on a conflict when it autodetects (clearNodeIPs).
    if (clash.length) return failConfigure('conflicting node detected: IPv4 address conflict', ipEnv === 'autodetect' ? null : undefined);
  }
  info(ST, `Using node name: ${input.nodeName}`);
  return { ok: true, address: address === old ? undefined : address, lines };
}

/** A log line in calico-node's format: "2026-01-01 00:00:00.000 [INFO][1] startup/startup.go: message". */
export function calicoLogText(l: CalicoLogLine, at = new Date()): string {
  return `${at.toISOString().replace('T', ' ').replace('Z', '')} [${l.level}][1] ${l.file}: ${l.message}`;
}

export interface BirdPeer {
  name: string;
  /** The peer's address ("ip/prefix", the Node annotation). */
  address: string;
  /** Whether the peer's calico-node runs with that address. */
  running: boolean;
}

/**
 * BIRD's readiness over the node-to-node mesh (pure but for `reaches`): every other Node
 * with an address is a peer; established if its calico-node runs with it, the address is not
 * one of ours, and it answers from ours. Output as `calico-node -bird-ready` prints it.
 */
export async function birdReadiness(ownAddrs: readonly string[], peers: readonly BirdPeer[], reaches: (peerIp: string) => Promise<boolean>): Promise<{ ready: boolean; output: string }> {
  const results = await Promise.all(peers.map(async (p) => {
    const ip = p.address.split('/')[0];
    return { ip, up: p.running && !ownAddrs.includes(ip) && (await reaches(ip)) };
  }));
  const down = results.filter((r) => !r.up).map((r) => r.ip);
  const count = `Number of node(s) with BGP peering established = ${results.length - down.length}`;
  return down.length ? { ready: false, output: `${count}\ncalico/node is not ready: BIRD is not ready: BGP not established with ${down.join(',')}` } : { ready: true, output: count };
}

// ---- The loop (in the lab daemon) ----

const TICK_MS = 500;

interface ApiPod {
  metadata: { name: string; namespace: string; uid: string; deletionTimestamp?: string };
  spec: { nodeName?: string; containers: Array<{ name: string; image: string; env?: Array<{ name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }>; readinessProbe?: { periodSeconds?: number } }> };
  status?: ApiPodStatus;
}

interface ApiNode {
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  status?: { addresses?: Array<{ type: string; address: string }> };
}

interface Container {
  id: string;
  startedAtMs: number;
  holder: number;
  /** The address it runs with ("ip/prefix"). */
  address: string;
  ready: boolean;
  nextProbeMs: number;
  lastOutput?: string;
  lastEventMs?: number;
}

interface PodRecord {
  ref: PodRef;
  starts: number;
  container?: Container;
  lastTerminated?: Terminated;
  lastFinishedAtMs?: number;
  backoff: RestartBackoff;
}

interface NodeKubelet {
  name: string;
  kubelet?: number;
  pod?: PodRecord;
  busy: boolean;
}

function say(text: string): void {
  console.error(`${new Date().toISOString()} calico-node: ${text}`);
}

const podsPath = `/api/v1/namespaces/kube-system/pods?labelSelector=${encodeURIComponent(`k8s-app=${CALICO_NODE_DAEMONSET}`)}`;
export const calicoNodeLogPath = (dir: string, node: string) => join(dir, 'nodes', node, 'calico-node.log');

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { encoding: 'utf8', timeout: 10_000 }, (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
  });
}

/** The route to `dest` in the node's netns: the source address a UDP socket would get, or the dial error Go would give. */
async function routeTo(holder: number, dest: string): Promise<Reach> {
  if (!isIpv4(dest)) return { error: `dial udp4: address ${dest}: the lab resolves no names (give an IPv4 address)` };
  const r = await run('nsenter', ['-t', String(holder), '-n', '--', 'ip', '-j', 'route', 'get', dest]);
  if (r.code !== 0) return { error: `dial udp4 [${dest}]:80: connect: network is unreachable` };
  const route = (JSON.parse(r.stdout || '[]') as IpRoute[])[0];
  return route?.prefsrc ? { src: route.prefsrc } : { error: `no address detected by connecting to ${dest}` };
}

/** A real ping between two lab node addresses, from inside the node. */
async function pings(holder: number, from: string, to: string): Promise<boolean> {
  if (!isIpv4(from) || !isIpv4(to)) return false;
  return (await run('nsenter', ['-t', String(holder), '-n', '--', 'ping', '-n', '-q', '-c1', '-W1', '-I', from, to])).code === 0;
}

/** Calico's starts run one at a time across the lab: the first node to write a shared address keeps it. */
let startups: Promise<unknown> = Promise.resolve();
function oneAtATime<T>(job: () => Promise<T>): Promise<T> {
  const next = startups.then(job, job);
  startups = next.catch(() => undefined);
  return next;
}

/** Runs every node's kubelet for its calico-node pod until the lab is gone. */
export async function runCalicoNodes(dir: string): Promise<void> {
  const kubelets = new Map<string, NodeKubelet>();
  say('started');
  for (;;) {
    const state = readState(dir);
    if (!state) return;
    try {
      const [nodes, pods] = await Promise.all([getList<ApiNode>(dir, '/api/v1/nodes'), getList<ApiPod>(dir, podsPath)]);
      const up = holders(dir);
      for (const n of state.nodes) {
        let k = kubelets.get(n.name);
        if (!k) kubelets.set(n.name, (k = { name: n.name, busy: false }));
        if (k.busy) continue;
        const kubelet = k;
        kubelet.busy = true;
        sync(dir, kubelet, kubelets, nodes, pods.filter((p) => p.spec.nodeName === n.name), up)
          .catch((err) => say(`${n.name}: ${(err as Error).message}`))
          .finally(() => (kubelet.busy = false));
      }
    } catch (err) {
      say((err as Error).message);
    }
    await sleep(TICK_MS);
  }
}

function terminated(c: { id: string; startedAtMs: number }, exitCode: number, reason: string, finishedAtMs: number, message?: string): Terminated {
  return { exitCode, reason, ...(message ? { message } : {}), startedAt: apiTime(c.startedAtMs), finishedAt: apiTime(finishedAtMs), containerID: c.id };
}

async function sync(dir: string, k: NodeKubelet, all: Map<string, NodeKubelet>, nodes: ApiNode[], pods: ApiPod[], up: Map<string, number>): Promise<void> {
  const holder = up.get(k.name);
  const node = nodes.find((n) => n.metadata.name === k.name);
  const rec0 = k.pod;
  // A container whose node went down went with it (containerd reports it lost: 255, Unknown).
  if (rec0?.container && rec0.container.holder !== holder) {
    rec0.lastTerminated = terminated(rec0.container, 255, 'Unknown', Date.now());
    rec0.lastFinishedAtMs = Date.now();
    rec0.container = undefined;
  }
  if (holder === undefined || node?.metadata.labels?.[KUBELET_LABEL] !== 'running' || kubeletApiAccess(dir, k.name, holder) !== 'reaches') {
    k.kubelet = undefined; // a stopped kubelet leaves its containers running, and reports nothing
    return;
  }
  if (k.kubelet !== holder) {
    k.kubelet = holder;
    if (k.pod) k.pod.backoff = new RestartBackoff(); // a kubelet's back-off lives in its memory
  }
  for (const p of pods.filter((x) => x.metadata.deletionTimestamp)) {
    if (k.pod?.ref.uid === p.metadata.uid) k.pod = undefined; // its container stops with it
    await finishDeletion(dir, p);
  }
  const live = pods.find((x) => !x.metadata.deletionTimestamp);
  if (k.pod && k.pod.ref.uid !== live?.metadata.uid) k.pod = undefined;
  if (!live) return;
  const spec = live.spec.containers.find((c) => c.name === CALICO_NODE_CONTAINER) ?? live.spec.containers[0];
  if (!k.pod) k.pod = { ref: { name: live.metadata.name, namespace: live.metadata.namespace, uid: live.metadata.uid, image: spec.image }, starts: 0, backoff: new RestartBackoff() };
  const rec = k.pod;
  const now = Date.now();
  if (!rec.container) {
    const finished = rec.lastFinishedAtMs;
    if (finished === undefined || !rec.backoff.inBackOffSince(finished, now)) {
      await oneAtATime(() => startContainer(dir, k.name, holder, rec, spec));
      if (finished !== undefined) rec.backoff.next(finished, now);
    }
  }
  const c = rec.container;
  if (c && now >= c.nextProbeMs) {
    c.nextProbeMs = now + (spec.readinessProbe?.periodSeconds ?? 10) * 1000;
    await probe(dir, k, c, live, nodes, all, holder);
  }
  await report(dir, live, rec, node);
}

/** The container starts: calico-node's startup, then it runs or exits 1. */
async function startContainer(dir: string, name: string, holder: number, rec: PodRecord, spec: ApiPod['spec']['containers'][number]): Promise<void> {
  const env: Record<string, string> = {};
  for (const e of spec.env ?? []) env[e.name] = e.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName' ? name : (e.value ?? '');
  // Fresh reads: another node's start may have just written its address.
  const nodes = await getList<ApiNode>(dir, '/api/v1/nodes');
  const me = nodes.find((n) => n.metadata.name === name);
  const { links } = await nodeNetwork(holder);
  const dest = canReachDestination(env.IP_AUTODETECTION_METHOD);
  const result = calicoStartup({
    nodeName: name,
    env,
    existing: me?.metadata.annotations?.[CALICO_IPV4_ANNOTATION],
    links,
    reach: dest === undefined ? undefined : await routeTo(holder, dest),
    internalIps: (me?.status?.addresses ?? []).filter((a) => a.type === 'InternalIP').map((a) => a.address),
    others: nodes.filter((n) => n.metadata.name !== name && n.metadata.annotations?.[CALICO_IPV4_ANNOTATION]).map((n) => ({ name: n.metadata.name, address: n.metadata.annotations![CALICO_IPV4_ANNOTATION] })),
  });
  const logPath = calicoNodeLogPath(dir, name);
  if (existsSync(logPath)) renameSync(logPath, join(dir, 'nodes', name, 'calico-node.previous.log'));
  const startedAtMs = Date.now();
  writeFileSync(logPath, `${result.lines.map((l) => calicoLogText(l)).join('\n')}\n`);
  if (result.address !== undefined) {
    const r = await api(dir, 'PATCH', `/api/v1/nodes/${encodeURIComponent(name)}`, { contentType: 'application/merge-patch+json', data: { metadata: { annotations: { [CALICO_IPV4_ANNOTATION]: result.address } } } });
    if (r.status !== 200) throw new LabError(`annotating Node ${name}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  }
  rec.starts += 1;
  const id = `containerd://${randomBytes(32).toString('hex')}`;
  if (!result.ok) {
    const at = Date.now();
    rec.lastTerminated = terminated({ id, startedAtMs }, 1, 'Error', at, terminationMessageFromLog(readFileSync(logPath, 'utf8')));
    rec.lastFinishedAtMs = at;
    say(`${name}: calico-node of ${rec.ref.name} exited 1 (${result.lines.at(-2)?.message ?? ''})`);
    return;
  }
  const address = result.address ?? me?.metadata.annotations?.[CALICO_IPV4_ANNOTATION] ?? '';
  rec.container = { id, startedAtMs, holder, address, ready: false, nextProbeMs: startedAtMs };
  say(`${name}: calico-node of ${rec.ref.name} runs with ${address} (restartCount ${rec.starts - 1})`);
}

/** The readiness probe: BIRD's sessions with every other Node that has an address. */
async function probe(dir: string, k: NodeKubelet, c: Container, pod: ApiPod, nodes: ApiNode[], all: Map<string, NodeKubelet>, holder: number): Promise<void> {
  const own = c.address.split('/')[0];
  const { links } = await nodeNetwork(holder);
  const ownAddrs = links.flatMap((l) => (l.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => a.local));
  const peers: BirdPeer[] = nodes
    .filter((n) => n.metadata.name !== k.name && n.metadata.annotations?.[CALICO_IPV4_ANNOTATION])
    .map((n) => {
      const address = n.metadata.annotations![CALICO_IPV4_ANNOTATION];
      const theirs = all.get(n.metadata.name)?.pod?.container;
      return { name: n.metadata.name, address, running: !!theirs && theirs.address === address };
    });
  // Only addresses some lab node's calico-node detected on its own links are ever pinged (running peers').
  const { ready, output } = await birdReadiness(ownAddrs, peers, (ip) => pings(holder, own, ip));
  const changed = c.ready !== ready;
  c.ready = ready;
  if (changed) say(`${k.name}: calico-node of ${pod.metadata.name} ${ready ? 'Ready' : `not Ready: ${output.split('\n').at(-1)}`}`);
  if (ready) {
    c.lastOutput = undefined;
    return;
  }
  const now = Date.now();
  if (c.lastOutput === output && c.lastEventMs !== undefined && now - c.lastEventMs < 60_000) return;
  c.lastOutput = output;
  c.lastEventMs = now;
  await unhealthyEvent(dir, k.name, pod, `Readiness probe failed: ${output}`);
}

async function unhealthyEvent(dir: string, node: string, pod: ApiPod, message: string): Promise<void> {
  const t = new Date().toISOString();
  const event = {
    apiVersion: 'v1',
    kind: 'Event',
    metadata: { generateName: `${pod.metadata.name}.`, namespace: pod.metadata.namespace },
    involvedObject: { apiVersion: 'v1', kind: 'Pod', namespace: pod.metadata.namespace, name: pod.metadata.name, uid: pod.metadata.uid, fieldPath: `spec.containers{${CALICO_NODE_CONTAINER}}` },
    reason: 'Unhealthy',
    message,
    type: 'Warning',
    source: { component: 'kubelet', host: node },
    firstTimestamp: t,
    lastTimestamp: t,
    count: 1,
  };
  const r = await api(dir, 'POST', `/api/v1/namespaces/${pod.metadata.namespace}/events`, { contentType: 'application/json', data: event });
  if (r.status !== 201) say(`${node}: event for ${pod.metadata.name}: HTTP ${r.status}`);
}

async function report(dir: string, pod: ApiPod, rec: PodRecord, node: ApiNode | undefined): Promise<void> {
  const c = rec.container;
  const view: ContainerView = {
    image: rec.ref.image,
    restartCount: Math.max(0, rec.starts - 1),
    running: c ? { containerID: c.id, startedAt: apiTime(c.startedAtMs), ready: c.ready } : undefined,
    waiting: c ? undefined : rec.lastFinishedAtMs !== undefined ? { reason: 'CrashLoopBackOff', message: crashLoopMessage(rec.backoff.currentMs, rec.ref, CALICO_NODE_CONTAINER) } : undefined,
    lastTerminated: rec.lastTerminated,
  };
  const hostIP = node?.status?.addresses?.find((a) => a.type === 'InternalIP')?.address ?? '';
  const current = pod.status ?? {};
  const desired = podStatus(view, hostIP, current, Date.now(), CALICO_NODE_CONTAINER);
  if (statusShows(current, desired)) return;
  const path = `/api/v1/namespaces/${pod.metadata.namespace}/pods/${pod.metadata.name}/status`;
  const r = await api(dir, 'PATCH', path, { contentType: 'application/strategic-merge-patch+json', data: { metadata: { uid: pod.metadata.uid }, status: { ...desired, ...replacedIps(current, desired) } } });
  if (r.status === 404 || r.status === 409) return; // deleted or replaced meanwhile
  if (r.status !== 200) throw new LabError(`patching ${path}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
}


// ---- What tests and `up` read ----

export interface CalicoNodePod {
  name: string;
  uid: string;
  node: string;
  deleting: boolean;
  ready: boolean;
  running: boolean;
  restartCount: number;
  waiting?: { reason: string; message?: string };
  lastTerminated?: { exitCode: number; reason: string; message?: string };
  /** IP_AUTODETECTION_METHOD in the pod's spec ('' when unset). */
  method: string;
}

function viewOf(p: ApiPod): CalicoNodePod {
  const cs = p.status?.containerStatuses?.find((s) => s.name === CALICO_NODE_CONTAINER) as
    | { restartCount?: number; state?: { running?: unknown; waiting?: CalicoNodePod['waiting'] }; lastState?: { terminated?: CalicoNodePod['lastTerminated'] } }
    | undefined;
  const spec = p.spec.containers.find((c) => c.name === CALICO_NODE_CONTAINER);
  return {
    name: p.metadata.name,
    uid: p.metadata.uid,
    node: p.spec.nodeName ?? '',
    deleting: !!p.metadata.deletionTimestamp,
    ready: p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
    running: !!cs?.state?.running,
    restartCount: cs?.restartCount ?? 0,
    waiting: cs?.state?.waiting,
    lastTerminated: cs?.lastState?.terminated,
    method: spec?.env?.find((e) => e.name === 'IP_AUTODETECTION_METHOD')?.value ?? '',
  };
}

/** calico-node's pods as the API shows them. */
export async function calicoNodePods(dir: string): Promise<CalicoNodePod[]> {
  return (await getList<ApiPod>(dir, podsPath)).map(viewOf);
}

/** The calico-node DaemonSet's status counts. */
export async function calicoNodeDaemonSetStatus(dir: string): Promise<{ desired: number; ready: number; updated: number; generation: number; observed: number }> {
  const r = await api(dir, 'GET', `/apis/apps/v1/namespaces/kube-system/daemonsets/${CALICO_NODE_DAEMONSET}`);
  if (r.status !== 200) throw new LabError(`GET daemonset ${CALICO_NODE_DAEMONSET}: HTTP ${r.status}`);
  const ds = JSON.parse(r.body) as { metadata: { generation: number }; status?: { desiredNumberScheduled?: number; numberReady?: number; updatedNumberScheduled?: number; observedGeneration?: number } };
  return { desired: ds.status?.desiredNumberScheduled ?? 0, ready: ds.status?.numberReady ?? 0, updated: ds.status?.updatedNumberScheduled ?? 0, generation: ds.metadata.generation, observed: ds.status?.observedGeneration ?? 0 };
}

/** Waits until `test` holds for the live calico-node pods (and the DaemonSet's counts); the deadline counts time waited. */
export async function waitForCalicoNodes(dir: string, what: string, test: (pods: CalicoNodePod[], ds: Awaited<ReturnType<typeof calicoNodeDaemonSetStatus>>) => boolean, timeoutMs = 120_000): Promise<CalicoNodePod[]> {
  const patience = new Patience(timeoutMs);
  let seen = 'nothing yet';
  while (!patience.exhausted) {
    try {
      const [pods, ds] = await patience.charge(Promise.all([calicoNodePods(dir), calicoNodeDaemonSetStatus(dir)]), 5000);
      const live = pods.filter((p) => !p.deleting);
      seen = `ds ${JSON.stringify(ds)}; ${live.map((p) => `${p.node} ${p.ready ? 'Ready' : (p.waiting?.reason ?? (p.running ? 'Running' : '-'))} [${p.method || 'first-found'}]`).join(', ') || 'no pods'}`;
      if (test(live, ds)) return live;
    } catch (err) {
      seen = (err as Error).message;
    }
    await patience.sleep(250);
  }
  throw new LabError(`calico-node: ${what}: not within ${timeoutMs} ms of waiting (${seen})\n--- daemon.log (last lines) ---\n${daemonLogTail(dir)}`);
}

/** Every pod the DaemonSet wants is Running (ready or not) or in CrashLoopBackOff: what `up` waits for. */
export function waitForCalicoNodesSettled(dir: string, timeoutMs?: number): Promise<CalicoNodePod[]> {
  return waitForCalicoNodes(dir, 'every pod running or in CrashLoopBackOff', (pods, ds) => ds.desired > 0 && pods.length === ds.desired && pods.every((p) => p.running || p.waiting?.reason === 'CrashLoopBackOff'), timeoutMs);
}
