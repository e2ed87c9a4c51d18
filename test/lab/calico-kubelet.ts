/**
 * The lab's kubelet for seed 004's pods (the orphan-calico scenario with the control plane).
 *
 * kwok plays the nodes' kubelets for everything else; pods labelled LAB_KUBELET_POD_LABEL
 * (lab.kubemend.io/kubelet-pods=lab) it disregards (control-plane.ts passes it
 * --disregard-status-with-label-selector), and this loop, in the lab daemon, is their kubelet
 * on each node whose kubelet runs (the Node's KUBELET_LABEL says running):
 *  - a pod bound to the node with no sandbox of its uid: a Calico-style sandbox (calico-cni.ts:
 *    IPAM in the API, netns, cali veth, the runtime's record); a sandbox made at `up` for the
 *    pod's name, before the pod existed (no uid in its record), is the pod's: it is adopted;
 *  - then its status as a kubelet reports it: phase Running, Ready, podIP/podIPs the sandbox's
 *    address, hostIP the node's, each container running (patched only when the API does not
 *    show it yet);
 *  - a pod being deleted (deletionTimestamp): its sandboxes' DEL (address released, veth and
 *    netns gone, record dropped), then the deletion finished (grace 0, that uid only), as the
 *    kubelet's status manager does;
 *  - a sandbox made here whose pod is gone from the API altogether (a forced deletion): DEL.
 * The sandboxes' network is not watched: a pod whose veth went missing still shows Running,
 * as on a real node (seed 004's db pods). What it knows is read each tick from the API and
 * the node; nothing is kept in memory.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { adoptSandbox, calicoAdd, calicoDelete, calicoRecords } from './calico-cni';
import type { SandboxRecord } from './cni';
import { adminRequest, controlPlaneInfo } from './control-plane';
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
  status?: { phase?: string; podIP?: string; podIPs?: Array<{ ip: string }>; hostIP?: string; startTime?: string; conditions?: Condition[]; containerStatuses?: Array<{ name: string; ready?: boolean; state?: { running?: unknown } }> };
}

interface ApiNode {
  metadata: { name: string; labels?: Record<string, string> };
  status?: { addresses?: Array<{ type: string; address: string }> };
}

/** A time as the API stores it (RFC 3339, whole seconds). */
const apiTime = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

/** The status a kubelet reports for a pod whose sandbox and containers run (pure). */
export function runningStatus(pod: ApiPod, sandbox: Pick<SandboxRecord, 'id' | 'ip' | 'createdAtMs'>, hostIP: string, nowMs: number): Record<string, unknown> {
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
      restartCount: 0,
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

function say(text: string): void {
  console.error(`${new Date().toISOString()} calico-kubelet: ${text}`);
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

// calico-node's pods carry the label too where the lab runs them (nat-advertise, nat-node-ip): calico-node.ts is their kubelet.
const podsPath = `/api/v1/pods?labelSelector=${encodeURIComponent(`${LAB_KUBELET_POD_LABEL.key}=${LAB_KUBELET_POD_LABEL.value},k8s-app!=calico-node`)}`;

/** Holder pids of the lab's nodes that are up, by name. */
export function holders(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const prefix = `kmlab-node ${dir} `;
  for (const p of labProcesses(dir)) if (p.argv0.startsWith(prefix)) out.set(p.argv0.slice(prefix.length), p.pid);
  return out;
}

/** Runs every node's kubelet for the labelled pods until the lab is gone; errors are logged and retried next tick. */
export async function runCalicoKubelets(dir: string): Promise<void> {
  const busy = new Set<string>();
  say('started');
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
        sync(dir, node, pods.filter((p) => p.spec.nodeName === n.name))
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
async function sync(dir: string, node: ApiNode, pods: ApiPod[]): Promise<void> {
  const name = node.metadata.name;
  const records = await calicoRecords(dir, name);
  const samePod = (r: SandboxRecord, p: ApiPod) => r.pod.namespace === p.metadata.namespace && r.pod.name === p.metadata.name;
  /** The pod's sandboxes: those of its uid, and one made at `up` for its name (no uid yet). */
  const sandboxesOf = (p: ApiPod) => records.filter((r) => r.uid === p.metadata.uid || (!r.uid && samePod(r, p)));

  for (const p of pods.filter((x) => x.metadata.deletionTimestamp)) {
    for (const r of sandboxesOf(p)) {
      say(`${name}: ${p.metadata.namespace}/${p.metadata.name} deleted: DEL of sandbox ${r.id.slice(0, 13)}`);
      await calicoDelete(dir, name, r.id);
    }
    await finishDeletion(dir, p);
  }

  // Sandboxes of pods the API no longer has (deleted with grace 0 before this kubelet saw them).
  const uids = new Set(pods.map((p) => p.metadata.uid));
  for (const r of records.filter((x) => x.uid && !uids.has(x.uid))) {
    say(`${name}: the pod of sandbox ${r.id.slice(0, 13)} (${r.pod.namespace}/${r.pod.name}) is gone: DEL`);
    await calicoDelete(dir, name, r.id);
  }

  const hostIP = node.status?.addresses?.find((a) => a.type === 'InternalIP')?.address ?? '';
  for (const p of pods.filter((x) => !x.metadata.deletionTimestamp)) {
    let sandbox = sandboxesOf(p).find((r) => r.state === 'SANDBOX_READY');
    if (sandbox && !sandbox.uid) {
      await adoptSandbox(dir, name, sandbox.id, p.metadata.uid);
      sandbox = { ...sandbox, uid: p.metadata.uid };
    }
    if (!sandbox) {
      sandbox = await calicoAdd(dir, name, { namespace: p.metadata.namespace, name: p.metadata.name, uid: p.metadata.uid, container: p.spec.containers[0]?.name });
      say(`${name}: ${p.metadata.namespace}/${p.metadata.name}: sandbox ${sandbox.id.slice(0, 13)} with ${sandbox.ip}`);
    }
    if (showsRunning(p, sandbox.ip)) continue;
    const path = `/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}/status`;
    const r = await api(dir, 'PATCH', path, { contentType: 'application/strategic-merge-patch+json', data: { metadata: { uid: p.metadata.uid }, status: runningStatus(p, sandbox, hostIP, Date.now()) } });
    if (r.status === 404 || r.status === 409 || r.status === 422) continue; // deleted or replaced meanwhile
    if (r.status !== 200) throw new LabError(`patching ${path}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
    say(`${name}: ${p.metadata.namespace}/${p.metadata.name}: Running, Ready, podIP ${sandbox.ip}`);
  }
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
