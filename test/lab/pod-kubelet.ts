/**
 * The lab's kubelet for the pods kwok does not play (lab.kubemend.io/kubelet-pods=lab,
 * LAB_KUBELET_POD_LABEL: control-plane.ts passes kwok --disregard-status-with-label-selector).
 * Which pods those are, and whose CNI makes their sandboxes, depends on the lab:
 *  - orphan-calico (seed 004's web and db pods): Calico-style sandboxes (calico-cni.ts: IPAM
 *    in the API, netns, cali veth, the runtime's record). A sandbox made at `up` for the pod's
 *    name, before the pod existed (no uid in its record), is the pod's: it is adopted.
 *  - --real-flannel (every pod the lab's Deployments place: coredns and demo/web): sandboxes
 *    made by the real plugins through the node's /etc/cni/net.d, as containerd makes them
 *    (cni.ts runSandbox: a cni-<uuid> netns, loopback, flannel's delegation to bridge and
 *    host-local), recorded as the kubelet's own with a container line per container.
 * On each node whose kubelet runs (the Node's KUBELET_LABEL says running, and it reaches the
 * API server), every tick:
 *  - a pod bound to the node with no ready sandbox of its uid: RunPodSandbox. A failure is
 *    reported as a kubelet reports it: the pod stays Pending, its containers waiting in
 *    ContainerCreating, and a Warning event FailedCreatePodSandBox carries the runtime's
 *    words ("Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup
 *    network for sandbox ...: plugin type="flannel" failed (add): ..."); it is tried again
 *    after the kubelet's 10 s back-off;
 *  - then its status: phase Running, Ready, podIP/podIPs the sandbox's address, hostIP the
 *    node's, each container running (patched only when the API does not show it yet);
 *  - a pod being deleted (deletionTimestamp): its sandboxes torn down (CNI DEL, netns gone,
 *    record dropped), then the deletion finished (grace 0, that uid only), as the kubelet's
 *    status manager does; a sandbox of the kubelet's whose pod is gone from the API: the same;
 *  - flannel only: after the node booted (a new holder), a ready sandbox whose netns went with
 *    the boot is stopped (CNI DEL with no netns: host-local releases its address) and the pod
 *    gets a new one (attempt + 1, a new address), the old one removed once the new one runs.
 * The sandboxes' network is not watched otherwise: a pod whose veth went missing still shows
 * Running, as on a real node (seed 004's db pods). What it knows is read from the API and the
 * node; in memory are only the back-off and event of a failing pod and each node's last boot.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { adoptSandbox, calicoAdd, calicoDelete, calicoRecords } from './calico-cni';
import { nodeList, runSandbox, removeSandbox, SandboxNetworkError, type SandboxRecord, sandboxRecords, stopSandbox } from './cni';
import { cniFailure, goQuote } from './cri';
import { adminRequest, controlPlaneInfo } from './control-plane';
import { replacedIps } from './flannel-kubelet';
import { kubeletApiAccess } from './kubelet';
import { labProcesses, LabError, readState } from './lab';
import { KUBELET_LABEL, LAB_KUBELET_POD_LABEL } from './manifests';
import { Patience } from './patience';
import { calicoPods } from './topology';

const TICK_MS = 500;

interface Condition {
  type: string;
  status: string;
  lastTransitionTime?: string;
}

export interface ApiPod {
  metadata: { name: string; namespace: string; uid: string; deletionTimestamp?: string; labels?: Record<string, string> };
  spec: { nodeName?: string; containers: Array<{ name: string; image: string }> };
  status?: { phase?: string; podIP?: string; podIPs?: Array<{ ip: string }>; hostIP?: string; hostIPs?: Array<{ ip: string }>; startTime?: string; conditions?: Condition[]; containerStatuses?: Array<{ name: string; ready?: boolean; state?: { running?: unknown } }> };
}

interface ApiNode {
  metadata: { name: string; labels?: Record<string, string> };
  status?: { addresses?: Array<{ type: string; address: string }> };
}

/** A time as the API stores it (RFC 3339, whole seconds). */
const apiTime = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

/** The status a kubelet reports for a pod whose sandbox and containers run (pure). A sandbox's attempt is its containers' restart count. */
export function runningStatus(pod: ApiPod, sandbox: Pick<SandboxRecord, 'id' | 'ip' | 'createdAtMs'> & { attempt?: number }, hostIP: string, nowMs: number): Record<string, unknown> {
  const started = apiTime(sandbox.createdAtMs ?? nowMs);
  const cond = (type: string) => {
    const was = pod.status?.conditions?.find((c) => c.type === type);
    return { type, status: 'True', lastTransitionTime: was?.status === 'True' && was.lastTransitionTime ? was.lastTransitionTime : apiTime(nowMs) };
  };
  return {
    phase: 'Running',
    hostIP,
    hostIPs: [{ ip: hostIP }],
    podIP: sandbox.ip,
    podIPs: [{ ip: sandbox.ip }],
    startTime: pod.status?.startTime ?? started,
    conditions: [cond('PodReadyToStartContainers'), cond('Initialized'), cond('ContainersReady'), cond('Ready')],
    containerStatuses: pod.spec.containers.map((c) => ({
      name: c.name,
      image: c.image,
      imageID: '',
      // A stable id per sandbox and container: the runtime's, as far as the API is concerned.
      containerID: `containerd://${createHash('sha256').update(`${sandbox.id}/${c.name}`).digest('hex')}`,
      ready: true,
      started: true,
      restartCount: sandbox.attempt ?? 0,
      state: { running: { startedAt: started } },
      lastState: {},
    })),
  };
}

/** Whether the API already shows the pod running in that sandbox. */
export function showsRunning(pod: ApiPod, ip: string): boolean {
  const s = pod.status;
  if (!s || s.phase !== 'Running' || s.podIP !== ip || s.podIPs?.[0]?.ip !== ip || !s.hostIP) return false;
  if (!['Ready', 'ContainersReady'].every((t) => s.conditions?.some((c) => c.type === t && c.status === 'True'))) return false;
  return pod.spec.containers.every((c) => s.containerStatuses?.some((x) => x.name === c.name && x.ready && x.state?.running));
}

/**
 * The status a kubelet reports for a pod whose sandbox could not be made (pure): Pending, not
 * ready to start containers, each container waiting in ContainerCreating.
 */
export function sandboxFailedStatus(pod: ApiPod, hostIP: string, nowMs: number): Record<string, unknown> {
  const names = pod.spec.containers.map((c) => c.name);
  const cond = (type: string, status: string, extra: Record<string, string> = {}) => {
    const was = pod.status?.conditions?.find((c) => c.type === type);
    return { type, status, ...extra, lastTransitionTime: was?.status === status && was.lastTransitionTime ? was.lastTransitionTime : apiTime(nowMs) };
  };
  const unready = { reason: 'ContainersNotReady', message: `containers with unready status: [${names.join(' ')}]` };
  return {
    phase: 'Pending',
    hostIP,
    hostIPs: [{ ip: hostIP }],
    startTime: pod.status?.startTime ?? apiTime(nowMs),
    conditions: [cond('PodReadyToStartContainers', 'False'), cond('Initialized', 'True'), cond('Ready', 'False', unready), cond('ContainersReady', 'False', unready)],
    containerStatuses: pod.spec.containers.map((c) => ({ name: c.name, image: c.image, imageID: '', ready: false, started: false, restartCount: 0, state: { waiting: { reason: 'ContainerCreating' } }, lastState: {} })),
  };
}

/** Whether the API already shows the pod waiting for its sandbox. */
export const showsSandboxFailed = (pod: ApiPod) =>
  pod.status?.phase === 'Pending' && !!pod.status.hostIP && pod.spec.containers.every((c) => (pod.status?.containerStatuses?.find((x) => x.name === c.name) as { state?: { waiting?: { reason?: string } } } | undefined)?.state?.waiting?.reason === 'ContainerCreating');

/** The kubelet's event message for a RunPodSandbox whose network setup failed, with the runtime's and libcni's words. */
export function sandboxFailedMessage(err: SandboxNetworkError): string {
  return `Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox ${goQuote(err.sandboxId)}: ${cniFailure(err.failure, 'add')}`;
}

/** The kubelet's back-off before it tries a failed pod sync again (kubelet.go's backOffPeriod). */
export const SANDBOX_RETRY_MS = 10_000;

function say(text: string): void {
  console.error(`${new Date().toISOString()} pod-kubelet: ${text}`);
}

export async function api(dir: string, method: string, path: string, body?: { contentType: string; data: unknown }): Promise<{ status: number; body: string }> {
  const info = controlPlaneInfo(dir);
  if (!info) throw new LabError('the lab has no control plane');
  return adminRequest(dir, Number(new URL(info.server).port), method, path, body);
}

export async function getList<T>(dir: string, path: string): Promise<T[]> {
  const r = await api(dir, 'GET', path);
  if (r.status !== 200) throw new LabError(`GET ${path}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  return (JSON.parse(r.body) as { items: T[] }).items;
}

// calico-node's and kube-flannel's pods carry the label too where the lab runs them: calico-node.ts and flannel-kubelet.ts are their kubelets.
const podsPath = `/api/v1/pods?labelSelector=${encodeURIComponent(`${LAB_KUBELET_POD_LABEL.key}=${LAB_KUBELET_POD_LABEL.value},k8s-app notin (calico-node,kube-flannel-ds)`)}`;

/** Holder pids of the lab's nodes that are up, by name. */
export function holders(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const prefix = `kmlab-node ${dir} `;
  for (const p of labProcesses(dir)) if (p.argv0.startsWith(prefix)) out.set(p.argv0.slice(prefix.length), p.pid);
  return out;
}

/** How a node's runtime makes and tears down the kubelet's sandboxes, per the lab's CNI. */
interface PodRuntime {
  /** The sandboxes that are the kubelet's (made by it, or adopted). */
  records(dir: string, node: string): Promise<SandboxRecord[]>;
  add(dir: string, node: string, pod: ApiPod, attempt: number): Promise<SandboxRecord>;
  /** StopPodSandbox: network torn down, the record kept NOTREADY. Runtimes without it only remove. */
  stop?(dir: string, node: string, id: string): Promise<void>;
  remove(dir: string, node: string, id: string): Promise<void>;
  adopt?(dir: string, node: string, id: string, uid: string): Promise<void>;
}

const calicoRuntime: PodRuntime = {
  records: calicoRecords,
  add: (dir, node, p) => calicoAdd(dir, node, { namespace: p.metadata.namespace, name: p.metadata.name, uid: p.metadata.uid, container: p.spec.containers[0]?.name }),
  remove: (dir, node, id) => calicoDelete(dir, node, id),
  adopt: adoptSandbox,
};

const flannelRuntime: PodRuntime = {
  records: async (dir, node) => (await sandboxRecords(dir, node)).filter((r) => r.owner === 'kubelet'),
  add: (dir, node, p, attempt) => {
    const { name, namespace, uid } = p.metadata;
    // The pod sandbox config a kubelet sends (kuberuntime's generatePodSandboxConfig), the parts the lab keeps.
    const config = {
      metadata: { name, namespace, uid, attempt },
      hostname: name,
      log_directory: `/var/log/pods/${namespace}_${name}_${uid}`,
      labels: { ...(p.metadata.labels ?? {}), 'io.kubernetes.pod.name': name, 'io.kubernetes.pod.namespace': namespace, 'io.kubernetes.pod.uid': uid },
      linux: {},
    };
    return runSandbox(dir, node, { pod: { namespace, name }, uid, attempt, config, kubelet: { containers: p.spec.containers.map((c) => c.name) } });
  },
  stop: stopSandbox,
  remove: async (dir, node, id) => {
    await stopSandbox(dir, node, id);
    await removeSandbox(dir, node, id);
  },
};

/** What the kubelet keeps in memory: a failing pod's next try and event, each node's boot it last saw. */
interface KubeletMemory {
  failing: Map<string, { nextTryMs: number; event?: { name: string; namespace: string; message: string; count: number } }>;
  boots: Map<string, number>;
}

/** Runs every node's kubelet for the labelled pods until the lab is gone; errors are logged and retried next tick. */
export async function runPodKubelets(dir: string): Promise<void> {
  const busy = new Set<string>();
  const st = readState(dir);
  const runtime = st?.scenarios.includes('orphan-calico') ? calicoRuntime : flannelRuntime;
  const memory: KubeletMemory = { failing: new Map(), boots: new Map() };
  say(`started (${runtime === calicoRuntime ? 'Calico' : 'flannel'} sandboxes)`);
  for (;;) {
    const state = readState(dir);
    if (!state) return;
    try {
      const [nodes, pods] = await Promise.all([getList<ApiNode>(dir, '/api/v1/nodes'), getList<ApiPod>(dir, podsPath)]);
      const up = holders(dir);
      for (const n of state.nodes) {
        const node = nodes.find((x) => x.metadata.name === n.name);
        // Only a kubelet that reaches the API server sees its pods (kubelet.ts's kubeletApiAccess), as well as kwok's label.
        if (busy.has(n.name) || !up.has(n.name) || node?.metadata.labels?.[KUBELET_LABEL] !== 'running' || kubeletApiAccess(dir, n.name, up.get(n.name)) !== 'reaches') continue;
        busy.add(n.name);
        sync(dir, runtime, memory, node, up.get(n.name)!, pods.filter((p) => p.spec.nodeName === n.name))
          .catch((err) => say(`${n.name}: ${(err as Error).message}`))
          .finally(() => busy.delete(n.name));
      }
    } catch (err) {
      say((err as Error).message);
    }
    await sleep(TICK_MS);
  }
}

/** A kubelet finishes a pod's deletion once its containers are gone: grace 0, that uid only (a newer pod of the same name stays). */
export async function finishDeletion(dir: string, p: Pick<ApiPod, 'metadata'>): Promise<void> {
  const body = { kind: 'DeleteOptions', apiVersion: 'v1', gracePeriodSeconds: 0, preconditions: { uid: p.metadata.uid } };
  const r = await api(dir, 'DELETE', `/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}`, { contentType: 'application/json', data: body });
  if (r.status !== 200 && r.status !== 404 && r.status !== 409) throw new LabError(`deleting pod ${p.metadata.name}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
}

/** One sync of a node's kubelet for its labelled pods. */
async function sync(dir: string, runtime: PodRuntime, memory: KubeletMemory, node: ApiNode, holder: number, pods: ApiPod[]): Promise<void> {
  const name = node.metadata.name;
  let records = await runtime.records(dir, name);

  // The node booted since this kubelet last looked: sandboxes whose netns went with the boot are dead (containerd reports them NOTREADY).
  if (runtime.stop && memory.boots.get(name) !== holder) {
    const netns = new Set(await nodeList(holder, '/run/netns'));
    for (const r of records.filter((x) => x.state === 'SANDBOX_READY' && !netns.has(x.netns.split('/').pop()!))) {
      say(`${name}: sandbox ${r.id.slice(0, 13)} of ${r.pod.namespace}/${r.pod.name} did not survive the node's boot: StopPodSandbox`);
      await runtime.stop(dir, name, r.id);
    }
    memory.boots.set(name, holder);
    records = await runtime.records(dir, name);
  }

  const samePod = (r: SandboxRecord, p: ApiPod) => r.pod.namespace === p.metadata.namespace && r.pod.name === p.metadata.name;
  /** The pod's sandboxes: those of its uid, and (Calico) one made at `up` for its name (no uid yet). */
  const sandboxesOf = (p: ApiPod) => records.filter((r) => r.uid === p.metadata.uid || (!!runtime.adopt && !r.uid && samePod(r, p)));

  for (const p of pods.filter((x) => x.metadata.deletionTimestamp)) {
    for (const r of sandboxesOf(p)) {
      say(`${name}: ${p.metadata.namespace}/${p.metadata.name} deleted: DEL of sandbox ${r.id.slice(0, 13)}`);
      await runtime.remove(dir, name, r.id);
    }
    memory.failing.delete(p.metadata.uid);
    await finishDeletion(dir, p);
  }

  // Sandboxes of pods the API no longer has (deleted with grace 0 before this kubelet saw them).
  const uids = new Set(pods.map((p) => p.metadata.uid));
  for (const r of records.filter((x) => x.uid && !uids.has(x.uid))) {
    say(`${name}: the pod of sandbox ${r.id.slice(0, 13)} (${r.pod.namespace}/${r.pod.name}) is gone: DEL`);
    await runtime.remove(dir, name, r.id);
    memory.failing.delete(r.uid);
  }

  const hostIP = node.status?.addresses?.find((a) => a.type === 'InternalIP')?.address ?? '';
  for (const p of pods.filter((x) => !x.metadata.deletionTimestamp)) {
    const own = sandboxesOf(p);
    let sandbox = own.find((r) => r.state === 'SANDBOX_READY');
    if (sandbox && !sandbox.uid && runtime.adopt) {
      await runtime.adopt(dir, name, sandbox.id, p.metadata.uid);
      sandbox = { ...sandbox, uid: p.metadata.uid };
    }
    if (!sandbox) {
      const failing = memory.failing.get(p.metadata.uid);
      if (failing && Date.now() < failing.nextTryMs) continue;
      const attempt = own.length ? Math.max(...own.map((r) => r.attempt)) + 1 : 0;
      try {
        sandbox = await runtime.add(dir, name, p, attempt);
      } catch (err) {
        if (!(err instanceof SandboxNetworkError)) throw err;
        await sandboxFailed(dir, memory, name, hostIP, p, sandboxFailedMessage(err));
        continue;
      }
      memory.failing.delete(p.metadata.uid);
      say(`${name}: ${p.metadata.namespace}/${p.metadata.name}: sandbox ${sandbox.id.slice(0, 13)} (attempt ${attempt}) with ${sandbox.ip}`);
      // The dead sandboxes it replaces go now (the kubelet's garbage collector keeps none here).
      for (const old of own.filter((r) => r.state !== 'SANDBOX_READY')) await runtime.remove(dir, name, old.id);
    }
    if (showsRunning(p, sandbox.ip)) continue;
    const path = `/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}/status`;
    const status = runningStatus(p, sandbox, hostIP, Date.now()) as { podIPs: Array<{ ip: string }>; hostIPs: Array<{ ip: string }> };
    // A new sandbox's address replaces the old one (a strategic merge would keep both, which the API refuses).
    const r = await api(dir, 'PATCH', path, { contentType: 'application/strategic-merge-patch+json', data: { metadata: { uid: p.metadata.uid }, status: { ...status, ...replacedIps(p.status ?? {}, status) } } });
    if (r.status === 404 || r.status === 409) continue; // deleted or replaced meanwhile
    if (r.status !== 200) throw new LabError(`patching ${path}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
    say(`${name}: ${p.metadata.namespace}/${p.metadata.name}: Running, Ready, podIP ${sandbox.ip}`);
  }
}

/** A failed RunPodSandbox as the kubelet reports it: the pod's status (once), a Warning event (counted on repeats), the next try after the back-off. */
async function sandboxFailed(dir: string, memory: KubeletMemory, node: string, hostIP: string, p: ApiPod, message: string): Promise<void> {
  const nowMs = Date.now();
  const failing = memory.failing.get(p.metadata.uid) ?? { nextTryMs: 0 };
  failing.nextTryMs = nowMs + SANDBOX_RETRY_MS;
  memory.failing.set(p.metadata.uid, failing);
  say(`${node}: ${p.metadata.namespace}/${p.metadata.name}: ${message}`);
  if (!showsSandboxFailed(p)) {
    const path = `/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}/status`;
    const status = sandboxFailedStatus(p, hostIP, nowMs) as { hostIPs: Array<{ ip: string }> };
    const r = await api(dir, 'PATCH', path, { contentType: 'application/strategic-merge-patch+json', data: { metadata: { uid: p.metadata.uid }, status: { ...status, ...replacedIps({ hostIPs: p.status?.hostIPs }, status) } } });
    if (r.status !== 200 && r.status !== 404 && r.status !== 409) throw new LabError(`patching ${path}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  }
  const ev = failing.event;
  if (ev && ev.message === message) {
    ev.count += 1;
    const r = await api(dir, 'PATCH', `/api/v1/namespaces/${ev.namespace}/events/${ev.name}`, { contentType: 'application/merge-patch+json', data: { count: ev.count, lastTimestamp: apiTime(nowMs) } });
    if (r.status === 200) return;
  }
  const name = `${p.metadata.name}.${nowMs.toString(16)}`;
  const event = {
    apiVersion: 'v1',
    kind: 'Event',
    metadata: { name, namespace: p.metadata.namespace },
    involvedObject: { apiVersion: 'v1', kind: 'Pod', namespace: p.metadata.namespace, name: p.metadata.name, uid: p.metadata.uid },
    reason: 'FailedCreatePodSandBox',
    message,
    type: 'Warning',
    source: { component: 'kubelet', host: node },
    reportingComponent: 'kubelet',
    reportingInstance: node,
    firstTimestamp: apiTime(nowMs),
    lastTimestamp: apiTime(nowMs),
    count: 1,
  };
  const r = await api(dir, 'POST', `/api/v1/namespaces/${p.metadata.namespace}/events`, { contentType: 'application/json', data: event });
  if (r.status !== 201) throw new LabError(`recording event FailedCreatePodSandBox for ${p.metadata.name}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  failing.event = { name, namespace: p.metadata.namespace, message, count: 1 };
}

// ---- What tests and `up` read ----

/** The labelled pods as the API shows them. */
export async function labKubeletPods(dir: string): Promise<ApiPod[]> {
  return getList<ApiPod>(dir, podsPath);
}

/** The lab daemon's last log lines, for a wait's error. */
export function daemonLogTail(dir: string): string {
  const path = join(dir, 'daemon.log');
  return existsSync(path) ? readFileSync(path, 'utf8').trimEnd().split('\n').slice(-15).join('\n') : '(no daemon log)';
}

/** Waits until `test` holds for the labelled pods and returns them; the deadline counts time waited. */
export async function waitForLabPods(dir: string, what: string, test: (pods: ApiPod[]) => boolean, timeoutMs = 120_000): Promise<ApiPod[]> {
  const patience = new Patience(timeoutMs);
  let seen = 'nothing yet';
  while (!patience.exhausted) {
    try {
      const pods = await patience.charge(labKubeletPods(dir), 5000);
      seen = pods.map((p) => `${p.metadata.name} ${p.metadata.deletionTimestamp ? 'deleting' : (p.status?.phase ?? '-')} ${p.status?.podIP ?? ''}`).join(', ') || 'no pods';
      if (test(pods)) return pods;
    } catch (err) {
      seen = (err as Error).message;
    }
    await patience.sleep(200);
  }
  throw new LabError(`${what}: not within ${timeoutMs} ms of waiting (seen: ${seen})\n--- daemon.log (last lines) ---\n${daemonLogTail(dir)}`);
}

/** Whether the pod is Running with an address, Ready and not being deleted. */
export const isRunning = (p: ApiPod) => !p.metadata.deletionTimestamp && p.status?.phase === 'Running' && !!p.status.podIP && !!p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');

/**
 * Waits until seed 004's pods on every node whose kubelet runs (web and db pods) are Running
 * with their address: what `up` waits for. Nodes that never joined (seed 001) have none running.
 */
export async function waitForCalicoPodsRunning(dir: string, timeoutMs = 120_000): Promise<ApiPod[]> {
  const state = readState(dir);
  if (!state) throw new LabError('the lab is down');
  const nodes = await getList<ApiNode>(dir, '/api/v1/nodes');
  const running = nodes.filter((n) => n.metadata.labels?.[KUBELET_LABEL] === 'running').map((n) => n.metadata.name);
  const want = running.flatMap((n) => [...calicoPods(n).withVeth, ...calicoPods(n).withoutVeth].map((pod) => ({ node: n, pod })));
  return waitForLabPods(dir, `seed 004's pods Running on ${running.join(', ')}`, (pods) => want.every((w) => pods.some((p) => p.metadata.name === w.pod && p.spec.nodeName === w.node && isRunning(p))), timeoutMs);
}

/** Whether the kubelet has shown how the pod's sandbox went: Running, or waiting in ContainerCreating after a failed try. */
export const sandboxSettled = (p: ApiPod) => isRunning(p) || showsSandboxFailed(p);

/** flannel's plugin's words while flanneld has not written the node's lease yet. */
const NO_LEASE_YET = 'loadFlannelSubnetEnv failed';

interface ApiEvent {
  metadata: { name: string };
  involvedObject: { uid?: string };
  message?: string;
  lastTimestamp?: string;
}

/** The latest FailedCreatePodSandBox message per pod uid. */
async function lastSandboxFailures(dir: string): Promise<Map<string, string>> {
  const events = await getList<ApiEvent>(dir, `/api/v1/events?fieldSelector=${encodeURIComponent('reason=FailedCreatePodSandBox')}`);
  events.sort((a, b) => (a.lastTimestamp ?? '').localeCompare(b.lastTimestamp ?? '') || a.metadata.name.localeCompare(b.metadata.name));
  const out = new Map<string, string>();
  for (const e of events) if (e.involvedObject.uid) out.set(e.involvedObject.uid, e.message ?? '');
  return out;
}

/**
 * With --real-flannel: waits until the Deployments' pods (coredns, demo/web) are all placed
 * and each has shown how its sandbox goes once its node's flanneld has: Running in a real
 * sandbox, or Pending after a failed one (a stale cni0, a full range; on a node whose
 * kube-flannel pod crash-loops, no lease). A try that failed only because flanneld had not
 * written the lease yet does not count: the kubelet tries again after its back-off, as a real
 * one does. What `up` waits for. Pods on a node whose kubelet does not run are not waited for.
 */
export async function waitForAppPodsSettled(dir: string, timeoutMs = 120_000): Promise<ApiPod[]> {
  const patience = new Patience(timeoutMs);
  let seen = 'nothing yet';
  while (!patience.exhausted) {
    try {
      const [deployments, pods, nodes, flannel, failures] = await patience.charge(
        Promise.all([
          getList<{ spec: { replicas?: number; template: { metadata: { labels?: Record<string, string> } } } }>(dir, '/apis/apps/v1/deployments'),
          labKubeletPods(dir),
          getList<ApiNode>(dir, '/api/v1/nodes'),
          getList<ApiPod>(dir, `/api/v1/pods?labelSelector=${encodeURIComponent('k8s-app=kube-flannel-ds')}`),
          lastSandboxFailures(dir),
        ]),
        5000,
      );
      const want = deployments.filter((d) => d.spec.template.metadata.labels?.[LAB_KUBELET_POD_LABEL.key] === LAB_KUBELET_POD_LABEL.value).reduce((n, d) => n + (d.spec.replicas ?? 1), 0);
      const running = new Set(nodes.filter((n) => n.metadata.labels?.[KUBELET_LABEL] === 'running').map((n) => n.metadata.name));
      const noLease = new Set(flannel.filter((f) => !f.metadata.deletionTimestamp && !f.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')).map((f) => f.spec.nodeName));
      const settled = (p: ApiPod) => isRunning(p) || (showsSandboxFailed(p) && (noLease.has(p.spec.nodeName) || !(failures.get(p.metadata.uid) ?? NO_LEASE_YET).includes(NO_LEASE_YET)));
      const live = pods.filter((p) => !p.metadata.deletionTimestamp);
      seen = `${want} wanted; ${live.map((p) => `${p.metadata.name}@${p.spec.nodeName ?? '-'} ${p.status?.phase ?? '-'} ${p.status?.podIP ?? ''}`).join(', ') || 'no pods'}`;
      if (live.length === want && live.every((p) => p.spec.nodeName && (!running.has(p.spec.nodeName) || settled(p)))) return live;
    } catch (err) {
      seen = (err as Error).message;
    }
    await patience.sleep(200);
  }
  throw new LabError(`the Deployments' pods not Running or failed in their sandbox within ${timeoutMs} ms of waiting (${seen})\n--- daemon.log (last lines) ---\n${daemonLogTail(dir)}`);
}
