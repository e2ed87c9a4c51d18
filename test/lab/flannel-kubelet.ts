/**
 * The lab's kubelet for kube-flannel's pods (opt-in: `npm run lab -- up --real-flannel`).
 *
 * kwok plays the nodes' kubelets for everything else (Node heartbeats, other pods). For the
 * kube-flannel DaemonSet's pod bound to a node, this loop is the node's kubelet: while the node
 * is up and its kubelet runs (the Node's KUBELET_LABEL says running), it runs the pod's
 * container as the real flanneld in the node (flannel.ts) and reports what flanneld does into
 * the pod's status as a kubelet would:
 *  - running: phase Running, the container started; Ready once this run has written
 *    subnet.env (the DaemonSet controller counts numberReady from that condition);
 *  - exited: lastState.terminated with its exit code and, as FallbackToLogsOnError gives it,
 *    the tail of its log; then restarted after the kubelet's back-off (the first restart at
 *    once, then 10 s doubling to 300 s, forgotten after 10 min of calm), CrashLoopBackOff
 *    with the kubelet's message while it waits;
 *  - the pod deleted: its flanneld stopped (SIGTERM) and the deletion finished (grace 0, that
 *    uid only), as a kubelet's status manager does; the DaemonSet's new pod started at once;
 *  - the node rebooted: flanneld died with it; the kubelet that starts with the node starts it
 *    again for the same pod, restartCount + 1, with a fresh back-off (it lives in memory);
 *  - the kubelet stopped (`kubeadm reset`): flanneld stopped, nothing reported;
 *  - the kubelet runs but cannot reach the API server (a previous cluster's credentials:
 *    kubelet.ts's kubeletApiAccess): flanneld keeps running as it was; a new pod is never
 *    started (it stays Pending), nothing is reported, no deletion finished, until a join gives
 *    the kubelet good credentials.
 *
 * kwok leaves these pods alone (control-plane.ts passes it --disregard-status-with-label-selector):
 * its pod-ready stage would otherwise mark each new pod Running and Ready the moment it is
 * bound. The loop runs in the lab daemon and looks at the API and the nodes every TICK_MS; what
 * it knows of each pod (restarts, back-off) is in memory, as a kubelet's is.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { adminRequest, controlPlaneInfo } from './control-plane';
import { type FlanneldRun, flanneldLog, flanneldPid, startFlanneld, stopFlanneld, subnetEnvOfRun } from './flannel';
import { kubeletApiAccess } from './kubelet';
import { labProcesses, LabError, readState } from './lab';
import { FLANNEL_CONTAINER, FLANNEL_DAEMONSET, FLANNEL_NAMESPACE, FLANNEL_POD_LABEL, KUBELET_LABEL } from './manifests';
import { Patience } from './patience';

// ---- The kubelet's rules (pure) ----

/** kubelet's container restart back-off: 10 s, doubling, at most 300 s (pkg/kubelet's backOffPeriod and MaxContainerBackOff). */
export const BACKOFF_INITIAL_MS = 10_000;
export const BACKOFF_MAX_MS = 300_000;
/** FallbackToLogsOnError: the log's last 80 lines, at most their last 2048 bytes (kubelet's MaxContainerTerminationMessageLog*). */
export const TERMINATION_MESSAGE_MAX_LINES = 80;
export const TERMINATION_MESSAGE_MAX_BYTES = 2048;

/**
 * One container's restart back-off as the kubelet keeps it (client-go's flowcontrol.Backoff,
 * no jitter). A container that exits is restarted at once if it is not in back-off, and the
 * back-off then grows (10 s first); one that exits within the back-off waits it out. A
 * container that ran calmly for twice the maximum starts over at 10 s. Times in ms.
 */
export class RestartBackoff {
  private backoffMs?: number;
  private lastUpdateMs = 0;

  /** The current back-off (what the CrashLoopBackOff message names). */
  get currentMs(): number {
    return this.backoffMs ?? 0;
  }

  /** Whether a container that finished at `finishedAtMs` must still wait at `nowMs`. */
  inBackOffSince(finishedAtMs: number, nowMs: number): boolean {
    if (this.backoffMs === undefined || this.expired(finishedAtMs)) return false;
    return nowMs - finishedAtMs < this.backoffMs;
  }

  /** The kubelet restarts a container that finished at `finishedAtMs`. */
  next(finishedAtMs: number, nowMs: number): void {
    this.backoffMs = this.backoffMs === undefined || this.expired(finishedAtMs) ? BACKOFF_INITIAL_MS : Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
    this.lastUpdateMs = nowMs;
  }

  /** Until when a container that finished at `finishedAtMs` waits. */
  until(finishedAtMs: number): number {
    return finishedAtMs + this.currentMs;
  }

  private expired(eventMs: number): boolean {
    return eventMs - this.lastUpdateMs > 2 * BACKOFF_MAX_MS;
  }
}

/** A whole number of seconds as Go's time.Duration prints it: 10s, 1m20s, 5m0s. */
export function goDuration(ms: number): string {
  const total = Math.round(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h) return `${h}h${m}m${s}s`;
  if (m) return `${m}m${s}s`;
  return `${s}s`;
}

/** What FallbackToLogsOnError makes the termination message: the end of the log's last lines. */
export function terminationMessageFromLog(log: string): string {
  const lines = log.split(/(?<=\n)/);
  const tail = Buffer.from(lines.slice(-TERMINATION_MESSAGE_MAX_LINES).join(''));
  return tail.subarray(Math.max(0, tail.length - TERMINATION_MESSAGE_MAX_BYTES)).toString('utf8');
}

export interface PodRef {
  name: string;
  namespace: string;
  uid: string;
  image: string;
}

/** The kubelet's CrashLoopBackOff message: "back-off 10s restarting failed container=kube-flannel pod=<name>_<namespace>(<uid>)". */
export function crashLoopMessage(backoffMs: number, pod: PodRef, container = FLANNEL_CONTAINER): string {
  return `back-off ${goDuration(backoffMs)} restarting failed container=${container} pod=${pod.name}_${pod.namespace}(${pod.uid})`;
}

/** A time as the API stores it (RFC 3339, whole seconds). */
export const apiTime = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

export interface Terminated {
  exitCode: number;
  reason: string;
  message?: string;
  startedAt: string;
  finishedAt: string;
  containerID: string;
}

/** What the kubelet knows of the pod's one container. */
export interface ContainerView {
  image: string;
  restartCount: number;
  /** The container that runs now. */
  running?: { containerID: string; startedAt: string; ready: boolean };
  /** Why none runs (CrashLoopBackOff while the back-off lasts). */
  waiting?: { reason: string; message?: string };
  lastTerminated?: Terminated;
}

/** The pod's one container's status (kube-flannel's, or another lab-run DaemonSet's: calico-node.ts). */
export function containerStatus(v: ContainerView, name = FLANNEL_CONTAINER): Record<string, unknown> {
  const state = v.running ? { running: { startedAt: v.running.startedAt } } : { waiting: v.waiting ?? { reason: 'ContainerCreating' } };
  return {
    name,
    image: v.image,
    imageID: '',
    // A waiting container shows the last one's id, as the kubelet does.
    containerID: v.running?.containerID ?? v.lastTerminated?.containerID,
    ready: !!v.running?.ready,
    started: !!v.running,
    restartCount: v.restartCount,
    state,
    lastState: v.lastTerminated ? { terminated: v.lastTerminated } : {},
  };
}

interface Condition {
  type: string;
  status: string;
  reason?: string | null;
  message?: string | null;
  lastTransitionTime?: string;
}

export interface ApiPodStatus {
  phase?: string;
  hostIP?: string;
  hostIPs?: Array<{ ip: string }>;
  podIP?: string;
  podIPs?: Array<{ ip: string }>;
  startTime?: string;
  conditions?: Condition[];
  containerStatuses?: Array<Record<string, unknown>>;
}

/**
 * The status the kubelet reports for the pod (a strategic merge patch of pods/status:
 * conditions merge by type, containerStatuses is replaced). A hostNetwork pod's IP is the
 * node's. A condition keeps its transition time while its status stays.
 */
export function podStatus(v: ContainerView, hostIP: string, current: ApiPodStatus, nowMs: number, container = FLANNEL_CONTAINER): ApiPodStatus & { conditions: Condition[]; containerStatuses: Array<Record<string, unknown>> } {
  const ready = !!v.running?.ready;
  const cond = (type: string, ok: boolean): Condition => {
    const status = ok ? 'True' : 'False';
    const was = current.conditions?.find((c) => c.type === type);
    const why = ok ? { reason: null, message: null } : { reason: 'ContainersNotReady', message: `containers with unready status: [${container}]` };
    return { type, status, lastTransitionTime: was?.status === status && was.lastTransitionTime ? was.lastTransitionTime : apiTime(nowMs), ...(type === 'Ready' || type === 'ContainersReady' ? why : {}) };
  };
  return {
    phase: 'Running',
    hostIP,
    hostIPs: [{ ip: hostIP }],
    podIP: hostIP,
    podIPs: [{ ip: hostIP }],
    startTime: current.startTime ?? apiTime(nowMs),
    conditions: [cond('PodReadyToStartContainers', true), cond('Initialized', true), cond('ContainersReady', ready), cond('Ready', ready)],
    containerStatuses: [containerStatus(v, container)],
  };
}

/** JSON with sorted keys and without empty values, so what the API returns compares with what was sent. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => {
    if (!x || typeof x !== 'object' || Array.isArray(x)) return x;
    const empty = (y: unknown) => y === undefined || y === null || y === '' || (typeof y === 'object' && !Array.isArray(y) && Object.keys(y as object).length === 0);
    return Object.fromEntries(Object.entries(x).filter(([, y]) => !empty(y)).sort(([a], [b]) => (a < b ? -1 : 1)));
  });
}

/**
 * podIPs and hostIPs merge by ip in a strategic merge patch: a hostNetwork pod whose node
 * changed address (its kubelet's --node-ip) needs the old entries deleted, as the kubelet's
 * generated patch does, or the API refuses two IPs of one family.
 */
export function replacedIps(current: ApiPodStatus, desired: ApiPodStatus): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of ['podIPs', 'hostIPs'] as const) {
    const want = desired[key] ?? [];
    const gone = (current[key] ?? []).filter((x) => !want.some((w) => w.ip === x.ip));
    if (gone.length) out[key] = [...want, ...gone.map((x) => ({ ip: x.ip, $patch: 'delete' }))];
  }
  return out;
}

/** Whether the API already shows what the kubelet would report (then nothing is patched). */
export function statusShows(current: ApiPodStatus, desired: ReturnType<typeof podStatus>): boolean {
  if (current.phase !== desired.phase || current.podIP !== desired.podIP || current.hostIP !== desired.hostIP || !current.startTime) return false;
  if (desired.conditions.some((c) => current.conditions?.find((x) => x.type === c.type)?.status !== c.status)) return false;
  return current.containerStatuses?.length === 1 && canonical(current.containerStatuses[0]) === canonical(desired.containerStatuses[0]);
}

// ---- The loop (in the lab daemon) ----

const TICK_MS = 500;

interface ApiPod {
  metadata: { name: string; namespace: string; uid: string; deletionTimestamp?: string };
  spec: { nodeName?: string; containers: Array<{ name: string; image: string }> };
  status?: ApiPodStatus;
}

interface ApiNode {
  metadata: { name: string; labels?: Record<string, string> };
  status?: { addresses?: Array<{ type: string; address: string }> };
}

/** One flanneld the kubelet started for a pod: one container. */
interface Container {
  id: string;
  startedAtMs: number;
  /** The node's holder pid when it started: another (or none) means the node went down since. */
  holder: number;
  run: FlanneldRun;
  ready: boolean;
  exit?: { code: number; atMs: number; log: string };
  /** The kubelet stops it (pod deleted, kubelet stopping): its exit is no crash. */
  stopping: boolean;
}

/** What the node's kubelet keeps about its kube-flannel pod. */
interface PodRecord {
  ref: PodRef;
  /** Containers started for the pod; restartCount is one less. */
  starts: number;
  container?: Container;
  lastTerminated?: Terminated;
  lastFinishedAtMs?: number;
  backoff: RestartBackoff;
}

interface NodeKubelet {
  name: string;
  /** The node's holder pid while its kubelet runs: a different one is a kubelet started anew (after a reboot). */
  kubelet?: number;
  pod?: PodRecord;
  busy: boolean;
}

function say(text: string): void {
  console.error(`${new Date().toISOString()} flannel-kubelet: ${text}`);
}

async function api(dir: string, method: string, path: string, body?: { contentType: string; data: unknown }): Promise<{ status: number; body: string }> {
  const info = controlPlaneInfo(dir);
  if (!info) throw new LabError('the lab has no control plane');
  return adminRequest(dir, Number(new URL(info.server).port), method, path, body);
}

async function getList<T>(dir: string, path: string): Promise<T[]> {
  const r = await api(dir, 'GET', path);
  if (r.status !== 200) throw new LabError(`GET ${path}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  return (JSON.parse(r.body) as { items: T[] }).items;
}

const podsPath = `/api/v1/namespaces/${FLANNEL_NAMESPACE}/pods?labelSelector=${encodeURIComponent(`${FLANNEL_POD_LABEL.key}=${FLANNEL_POD_LABEL.value}`)}`;

/** Holder pids of the lab's nodes that are up, by name. */
function holders(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const prefix = `kmlab-node ${dir} `;
  for (const p of labProcesses(dir)) if (p.argv0.startsWith(prefix)) out.set(p.argv0.slice(prefix.length), p.pid);
  return out;
}

/**
 * Runs every node's kubelet for its kube-flannel pod until the lab is gone. Errors are
 * logged and the next tick tries again, as a kubelet keeps syncing.
 */
export async function runFlannelKubelets(dir: string): Promise<void> {
  const kubelets = new Map<string, NodeKubelet>();
  say('started');
  for (;;) {
    const state = readState(dir);
    if (!state) return; // the lab is gone
    try {
      const [nodes, pods] = await Promise.all([getList<ApiNode>(dir, '/api/v1/nodes'), getList<ApiPod>(dir, podsPath)]);
      const up = holders(dir);
      for (const n of state.nodes) {
        let k = kubelets.get(n.name);
        if (!k) kubelets.set(n.name, (k = { name: n.name, busy: false }));
        if (k.busy) continue; // still stopping or starting flanneld from an earlier tick
        const kubelet = k;
        kubelet.busy = true;
        sync(dir, kubelet, nodes.find((x) => x.metadata.name === n.name), pods.filter((p) => p.spec.nodeName === n.name), up.get(n.name))
          .catch((err) => say(`${n.name}: ${(err as Error).message}`))
          .finally(() => (kubelet.busy = false));
      }
    } catch (err) {
      say((err as Error).message);
    }
    await sleep(TICK_MS);
  }
}

/** One sync of a node's kubelet for its kube-flannel pod. */
async function sync(dir: string, k: NodeKubelet, node: ApiNode | undefined, pods: ApiPod[], holder: number | undefined): Promise<void> {
  const access = kubeletApiAccess(dir, k.name, holder);
  if (access === 'unreachable') {
    // It runs but cannot reach the API server: its containers keep running; it sees no new pod, reports nothing, finishes no deletion.
    return;
  }
  if (holder === undefined || access !== 'reaches' || node?.metadata.labels?.[KUBELET_LABEL] !== 'running') {
    // A kubelet that stops (`kubeadm reset`) stops its containers; a node that went down took them with it.
    const c = k.pod?.container;
    if (c && !c.exit && !c.stopping && c.holder === holder) {
      say(`${k.name}: kubelet stopped: stopping flanneld of ${k.pod!.ref.name}`);
      await stopContainer(dir, k.name, c);
    }
    k.kubelet = undefined;
    return;
  }
  if (k.kubelet !== holder) {
    k.kubelet = holder;
    if (k.pod) kubeletStarted(k, k.pod, holder);
  }

  // Pods being deleted: their container is stopped, then the deletion finished (that uid only).
  for (const p of pods.filter((x) => x.metadata.deletionTimestamp)) {
    if (k.pod?.ref.uid === p.metadata.uid) {
      const c = k.pod.container;
      if (c && !c.exit) {
        say(`${k.name}: ${p.metadata.name} deleted: stopping its flanneld`);
        await stopContainer(dir, k.name, c);
      }
      k.pod = undefined;
    }
    const body = { kind: 'DeleteOptions', apiVersion: 'v1', gracePeriodSeconds: 0, preconditions: { uid: p.metadata.uid } };
    const r = await api(dir, 'DELETE', `/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}`, { contentType: 'application/json', data: body });
    if (r.status !== 200 && r.status !== 404 && r.status !== 409) throw new LabError(`deleting pod ${p.metadata.name}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  }

  const live = pods.find((x) => !x.metadata.deletionTimestamp);
  if (k.pod && k.pod.ref.uid !== live?.metadata.uid) {
    // Its pod is gone (deleted while this kubelet did not look): its container goes too.
    const c = k.pod.container;
    if (c && !c.exit) await stopContainer(dir, k.name, c);
    k.pod = undefined;
  }
  if (!live) return;
  if (!k.pod) {
    const spec = live.spec.containers.find((c) => c.name === FLANNEL_CONTAINER) ?? live.spec.containers[0];
    k.pod = { ref: { name: live.metadata.name, namespace: live.metadata.namespace, uid: live.metadata.uid, image: spec.image }, starts: 0, backoff: new RestartBackoff() };
  }
  const rec = k.pod;

  const c = rec.container;
  if (c?.exit) {
    if (currentHolder(dir, k.name) !== c.holder) return; // it died with its node: the kubelet that boots with the node picks it up
    rec.lastTerminated = terminated(c, c.exit.code, c.exit.code === 0 ? 'Completed' : 'Error', c.exit.code === 0 ? undefined : terminationMessageFromLog(c.exit.log));
    rec.lastFinishedAtMs = c.exit.atMs;
    rec.container = undefined;
    say(`${k.name}: flanneld of ${rec.ref.name} exited ${c.exit.code}`);
  }
  if (!rec.container) {
    const now = Date.now();
    const finished = rec.lastFinishedAtMs;
    if (finished === undefined || !rec.backoff.inBackOffSince(finished, now)) {
      await startContainer(dir, k.name, rec, holder);
      // A restart (not a pod's first start) moves the back-off on, as the kubelet's doBackOff does.
      if (finished !== undefined) rec.backoff.next(finished, now);
    }
  } else if (!rec.container.ready && subnetEnvOfRun(dir, k.name, rec.container.run)) {
    rec.container.ready = true;
  }
  await report(dir, k.name, live, rec, node);
}

/**
 * A kubelet starts (the node booted, or `kubeadm join`): its back-off starts empty, and a
 * container of the kubelet before it is over: gone with the node (reported as containerd
 * reports a container lost in a reboot: exit 255, reason Unknown) or stopped with that kubelet.
 * The next sync starts the pod's container again, restartCount + 1.
 */
function kubeletStarted(k: NodeKubelet, rec: PodRecord, holder: number): void {
  rec.backoff = new RestartBackoff();
  const c = rec.container;
  if (!c || (c.holder === holder && !c.exit)) return; // still running: a kubelet restart leaves containers be
  const lost = c.holder !== holder || !c.exit;
  rec.lastTerminated = lost ? terminated(c, 255, 'Unknown') : terminated(c, c.exit!.code, c.exit!.code === 0 ? 'Completed' : 'Error');
  rec.lastFinishedAtMs = c.exit?.atMs ?? Date.now();
  rec.container = undefined;
  say(`${k.name}: kubelet started: flanneld of ${rec.ref.name} ${lost ? 'went with the node' : 'was stopped with the kubelet'}`);
}

function terminated(c: Container, exitCode: number, reason: string, message?: string): Terminated {
  return { exitCode, reason, ...(message ? { message } : {}), startedAt: apiTime(c.startedAtMs), finishedAt: apiTime(c.exit?.atMs ?? Date.now()), containerID: c.id };
}

function currentHolder(dir: string, name: string): number | undefined {
  return labProcesses(dir).find((p) => p.argv0 === `kmlab-node ${dir} ${name}`)?.pid;
}

async function startContainer(dir: string, node: string, rec: PodRecord, holder: number): Promise<void> {
  // A flanneld the kubelet did not start (`npm run lab -- flanneld start`) is not the pod's: it goes first.
  if (flanneldPid(dir, node) !== undefined) {
    say(`${node}: stopping a flanneld that is not ${rec.ref.name}'s`);
    await stopFlanneld(dir, node);
  }
  const run = await startFlanneld(dir, node);
  const c: Container = { id: `containerd://${randomBytes(32).toString('hex')}`, startedAtMs: Date.now(), holder, run, ready: false, stopping: false };
  rec.container = c;
  rec.starts += 1;
  // Read at once: the next start moves this log aside.
  void run.exited.then((code) => (c.exit = { code, atMs: Date.now(), log: flanneldLog(dir, node) }));
  say(`${node}: started flanneld for ${rec.ref.name} (restartCount ${rec.starts - 1})`);
}

async function stopContainer(dir: string, node: string, c: Container): Promise<void> {
  c.stopping = true;
  await stopFlanneld(dir, node);
  await c.run.exited;
}

/** Patches the pod's status when the API does not show it yet (kubelet's status manager). */
async function report(dir: string, nodeName: string, pod: ApiPod, rec: PodRecord, node: ApiNode | undefined): Promise<void> {
  const c = rec.container;
  const view: ContainerView = {
    image: rec.ref.image,
    restartCount: Math.max(0, rec.starts - 1),
    running: c && !c.exit ? { containerID: c.id, startedAt: apiTime(c.startedAtMs), ready: c.ready } : undefined,
    waiting: c ? undefined : rec.lastFinishedAtMs !== undefined ? { reason: 'CrashLoopBackOff', message: crashLoopMessage(rec.backoff.currentMs, rec.ref) } : undefined,
    lastTerminated: rec.lastTerminated,
  };
  const hostIP = node?.status?.addresses?.find((a) => a.type === 'InternalIP')?.address ?? '';
  const current = pod.status ?? {};
  const desired = podStatus(view, hostIP, current, Date.now());
  if (statusShows(current, desired)) return;
  const path = `/api/v1/namespaces/${pod.metadata.namespace}/pods/${pod.metadata.name}/status`;
  const r = await api(dir, 'PATCH', path, { contentType: 'application/strategic-merge-patch+json', data: { metadata: { uid: pod.metadata.uid }, status: { ...desired, ...replacedIps(current, desired) } } });
  if (r.status === 404 || r.status === 409 || r.status === 422) return; // deleted or replaced meanwhile
  if (r.status !== 200) throw new LabError(`patching ${path}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  const cs = desired.containerStatuses[0] as { ready: boolean; restartCount: number; state: Record<string, unknown> };
  say(`${nodeName}: ${pod.metadata.name}: ${Object.keys(cs.state)[0]}${cs.ready ? ', ready' : ''}, restartCount ${cs.restartCount}`);
}

// ---- What tests and `up` read ----

/** A kube-flannel pod as the API shows it. */
export interface FlannelPod {
  name: string;
  uid: string;
  node: string;
  phase?: string;
  /** Being deleted. */
  deleting: boolean;
  /** Its Ready condition is True (what the DaemonSet controller counts). */
  ready: boolean;
  restartCount: number;
  containerID?: string;
  running?: { startedAt: string };
  waiting?: { reason: string; message?: string };
  lastTerminated?: Omit<Terminated, 'containerID'> & { containerID?: string };
}

function flannelPodOf(p: ApiPod): FlannelPod {
  const cs = p.status?.containerStatuses?.find((s) => s.name === FLANNEL_CONTAINER) as
    | { restartCount?: number; containerID?: string; state?: { running?: FlannelPod['running']; waiting?: FlannelPod['waiting'] }; lastState?: { terminated?: FlannelPod['lastTerminated'] } }
    | undefined;
  return {
    name: p.metadata.name,
    uid: p.metadata.uid,
    node: p.spec.nodeName ?? '',
    phase: p.status?.phase,
    deleting: !!p.metadata.deletionTimestamp,
    ready: p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
    restartCount: cs?.restartCount ?? 0,
    containerID: cs?.containerID,
    running: cs?.state?.running,
    waiting: cs?.state?.waiting,
    lastTerminated: cs?.lastState?.terminated,
  };
}

/** Every kube-flannel pod (of the lab's DaemonSet). */
export async function flannelPods(dir: string): Promise<FlannelPod[]> {
  return (await getList<ApiPod>(dir, podsPath)).map(flannelPodOf);
}

/** The node's kube-flannel pod that is not being deleted, if there is one. */
export async function flannelPod(dir: string, node: string): Promise<FlannelPod | undefined> {
  return (await flannelPods(dir)).find((p) => p.node === node && !p.deleting);
}

/** Whether the pod is in CrashLoopBackOff (its container waits out the kubelet's back-off). */
export const inCrashLoop = (p: FlannelPod) => p.waiting?.reason === 'CrashLoopBackOff';

function daemonLogTail(dir: string): string {
  const path = join(dir, 'daemon.log');
  return existsSync(path) ? readFileSync(path, 'utf8').trimEnd().split('\n').slice(-15).join('\n') : '(no daemon log)';
}

/**
 * Waits until the node's kube-flannel pod (not one being deleted) satisfies `test`, and
 * returns it. The deadline counts time waited (Patience); on failure the error shows the pod
 * as last seen, and the tails of flanneld's and the lab daemon's logs.
 */
export async function waitForFlannelPod(dir: string, node: string, what: string, test: (p: FlannelPod) => boolean, timeoutMs = 120_000): Promise<FlannelPod> {
  const patience = new Patience(timeoutMs);
  let last: FlannelPod | undefined;
  let error = '';
  while (!patience.exhausted) {
    try {
      last = await patience.charge(flannelPod(dir, node), 5000);
      error = '';
      if (last && test(last)) return last;
    } catch (err) {
      error = (err as Error).message;
    }
    await patience.sleep(200);
  }
  const flanneld = flanneldLog(dir, node).trimEnd().split('\n').slice(-5).join('\n');
  throw new LabError(`${node}: kube-flannel pod not ${what} within ${timeoutMs} ms of waiting; last seen: ${last ? JSON.stringify(last) : error || 'no pod'}\n--- flanneld.log (last lines) ---\n${flanneld}\n--- daemon.log (last lines) ---\n${daemonLogTail(dir)}`);
}

/** Waits until the node's kube-flannel pod is Ready: its flanneld runs and has written subnet.env. */
export function waitForFlannelPodReady(dir: string, node: string, timeoutMs?: number): Promise<FlannelPod> {
  return waitForFlannelPod(dir, node, 'Ready', (p) => p.ready && !!p.running, timeoutMs);
}

/** Waits until the node's kube-flannel pod is in CrashLoopBackOff. */
export function waitForFlannelCrashLoop(dir: string, node: string, timeoutMs?: number): Promise<FlannelPod> {
  return waitForFlannelPod(dir, node, 'in CrashLoopBackOff', inCrashLoop, timeoutMs);
}

/**
 * Waits until the DaemonSet has a pod on every node it wants one on, and each is Ready or in
 * CrashLoopBackOff: what `up --real-flannel` waits for before it returns.
 */
export async function waitForFlannelPodsSettled(dir: string, timeoutMs = 120_000): Promise<FlannelPod[]> {
  const patience = new Patience(timeoutMs);
  let seen = 'nothing yet';
  while (!patience.exhausted) {
    try {
      const [ds, pods] = await patience.charge(
        Promise.all([api(dir, 'GET', `/apis/apps/v1/namespaces/${FLANNEL_NAMESPACE}/daemonsets/${FLANNEL_DAEMONSET}`), flannelPods(dir)]),
        5000,
      );
      const want = ds.status === 200 ? ((JSON.parse(ds.body) as { status?: { desiredNumberScheduled?: number } }).status?.desiredNumberScheduled ?? 0) : 0;
      const live = pods.filter((p) => !p.deleting);
      seen = `${want} wanted; ${live.map((p) => `${p.node} ${p.ready ? 'Ready' : (p.waiting?.reason ?? (p.running ? 'Running' : p.phase))}`).join(', ') || 'no pods'}`;
      if (want > 0 && live.length === want && live.every((p) => p.ready || inCrashLoop(p))) return live;
    } catch (err) {
      seen = (err as Error).message;
    }
    await patience.sleep(200);
  }
  throw new LabError(`kube-flannel pods not Ready or in CrashLoopBackOff within ${timeoutMs} ms of waiting (${seen})\n--- daemon.log (last lines) ---\n${daemonLogTail(dir)}`);
}
