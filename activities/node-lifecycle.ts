/**
 * Node lifecycle, shared by every remediation on the runbook: the budget, cordon, drain,
 * uncordon, reboot and the wait for a node to come back. Thin adapters over SSH and the
 * Kubernetes API; each checks the node or object first and does nothing it has already
 * done, so Temporal may retry or replay it after a crash without repeating a destructive
 * action. Decisions (what to evict, whether the budget allows a node) are pure, in lib/.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiException, PatchStrategy, setHeaderOptions, type V1Node } from '@kubernetes/client-node';
import { ApplicationFailure } from '@temporalio/common';
import { AuditReason } from '../lib/audit';
import { type ClusterNode, clusterHealthy, CORDONED_BY_ANNOTATION, mayDisrupt } from '../lib/budget';
import type { NodeTarget } from '../lib/config';
import { drainDecision, type DrainOptions } from '../lib/drain';
import { Failure } from '../lib/failures';
import { parseBootId } from '../lib/node-facts';
import { nodeObjectFacts } from '../lib/node-object';
import { REBOOT_ARGV } from '../lib/node-scripts';
import type { AuditContext } from '../lib/remediation-input';
import type { Recorder } from './audit';
import { whileHeartbeating } from './heartbeat';
import { apiMessage, type KubeCluster, kubeFailure } from './kube';
import type { SshPort } from './ssh';

export interface LifecycleContext {
  ssh: SshPort;
  target(cluster: string, node: string): NodeTarget;
  /** The cluster's API client; refuses (non-retryable) when the config gives it no kubeconfig. */
  kube(cluster: string): KubeCluster;
  record: Recorder;
}

const fail = (type: string, message: string, nonRetryable = true) => ApplicationFailure.create({ type, message, nonRetryable });

/**
 * How long to wait before looking again: 250 ms at first (most evictions and lab reboots
 * finish within a second or two), doubling every fourth look up to `max`, so a long wait
 * costs the API and the node little.
 */
export function pollDelay(round: number, max: number): number {
  return Math.min(250 * 2 ** Math.floor(round / 4), max);
}
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** The kernel's boot id: a new one after every boot. */
const BOOT_ID_ARGV = ['cat', '/proc/sys/kernel/random/boot_id'] as const;

export function toClusterNode(n: V1Node): ClusterNode {
  return { name: n.metadata?.name ?? '', ...nodeObjectFacts(n), cordonedBy: n.metadata?.annotations?.[CORDONED_BY_ANNOTATION] ?? null };
}

export function createLifecycleActivities(rc: LifecycleContext) {
  const record = rc.record;
  async function api<T>(what: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      throw kubeFailure(err, what);
    }
  }
  const listNodes = async (cluster: string) => (await api(`listing the Nodes of ${cluster}`, () => rc.kube(cluster).core.listNode({}))).items.map(toClusterNode);
  const readRawNode = (cluster: string, node: string) => api(`reading Node ${node}`, () => rc.kube(cluster).core.readNode({ name: node }));
  const readNode = async (cluster: string, node: string) => toClusterNode(await readRawNode(cluster, node));

  async function bootId(cluster: string, node: string, signal?: AbortSignal): Promise<string> {
    const r = await rc.ssh.withSession(rc.target(cluster, node), (s) => s.run(BOOT_ID_ARGV), signal);
    const parsed = parseBootId(r.stdout);
    // e.g. a forced command ran instead of ours: nothing was read.
    if (!parsed.ok) throw fail(Failure.ProbeNoOutput, `${node}: ${parsed.problem}`);
    return parsed.value;
  }

  /**
   * Cordons the node and marks it as this run's. Idempotent: a node this run already
   * cordoned reports wasCordoned false again; a node cordoned by someone else is left as
   * it is and reported wasCordoned true (so the run never uncordons it).
   */
  async function cordonOnce(input: { cluster: string; node: string; runId: string; audit: AuditContext }): Promise<{ wasCordoned: boolean }> {
    const raw = await readRawNode(input.cluster, input.node);
    const n = toClusterNode(raw);
    const action = `PATCH /api/v1/nodes/${input.node} {"spec":{"unschedulable":true},"metadata":{"annotations":{"${CORDONED_BY_ANNOTATION}":"${input.runId}"}}}`;
    const base = { cluster: input.cluster, node: input.node, step: `${input.node}/cordon`, action };
    if (n.cordonedBy === input.runId) {
      await record(input.audit, { ...base, before: { unschedulable: true }, after: { unschedulable: true }, outcome: 'already-done', event: { reason: AuditReason.NodeCordoned, message: 'cordoned by kubemend' } });
      return { wasCordoned: false };
    }
    if (n.unschedulable) {
      await record(input.audit, { ...base, action: 'none: the node was already cordoned by someone else; kubemend will not uncordon it', before: { unschedulable: true }, after: { unschedulable: true }, outcome: 'skipped' });
      return { wasCordoned: true };
    }
    await api(`cordoning ${input.node}`, () =>
      // resourceVersion: if anyone changed the Node since it was read (cordoned it, say), the
      // API answers 409 and the retry reads it again, so kubemend never claims another's cordon.
      rc.kube(input.cluster).core.patchNode({ name: input.node, body: { metadata: { resourceVersion: raw.metadata?.resourceVersion, annotations: { [CORDONED_BY_ANNOTATION]: input.runId } }, spec: { unschedulable: true } } }, mergePatch),
    );
    await record(input.audit, { ...base, before: { unschedulable: false }, after: { unschedulable: true }, outcome: 'applied', event: { reason: AuditReason.NodeCordoned, message: 'cordoned by kubemend' } });
    return { wasCordoned: false };
  }

  /**
   * Uncordons a node this run cordoned. With onlyIfReady (the undo after a failure), a node
   * that is not Ready stays cordoned and the reason is returned.
   */
  async function uncordonOnce(input: { cluster: string; node: string; runId: string; onlyIfReady: boolean; rebootedFrom?: string; audit: AuditContext; step: string }): Promise<{ uncordoned: boolean; reason: string }> {
    const r = await uncordonDecided(input);
    const action = r.uncordoned ? `PATCH /api/v1/nodes/${input.node} {"spec":{"unschedulable":null},"metadata":{"annotations":{"${CORDONED_BY_ANNOTATION}":null}}}` : `none: ${r.reason}`;
    // Not cordoned any more (e.g. a retry after this run's own uncordon): nothing left cordoned.
    const notCordoned = r.reason === 'not cordoned';
    await record(input.audit, {
      cluster: input.cluster,
      node: input.node,
      step: `${input.node}/${input.step}`,
      action,
      before: { unschedulable: !notCordoned },
      after: { unschedulable: !r.uncordoned && !notCordoned },
      outcome: r.uncordoned ? 'applied' : notCordoned ? 'already-done' : 'skipped',
      event: r.uncordoned
        ? { reason: AuditReason.NodeUncordoned, message: 'uncordoned by kubemend' }
        : notCordoned
          ? undefined
          : { reason: AuditReason.Compensated, message: `kubemend left the node cordoned: ${r.reason}`, warning: true },
    });
    return { uncordoned: r.uncordoned || notCordoned, reason: r.reason };
  }

  async function uncordonDecided(input: { cluster: string; node: string; runId: string; onlyIfReady: boolean; rebootedFrom?: string }): Promise<{ uncordoned: boolean; reason: string }> {
    const raw = await readRawNode(input.cluster, input.node);
    const n = toClusterNode(raw);
    if (n.cordonedBy !== input.runId) return { uncordoned: false, reason: n.cordonedBy ? `cordoned by another run (${n.cordonedBy})` : n.unschedulable ? 'cordoned by someone else' : 'not cordoned' };
    if (input.onlyIfReady && n.ready !== 'True') return { uncordoned: false, reason: `left cordoned: the Node is not Ready (Ready=${n.ready ?? 'never'}${n.readyReason ? `, ${n.readyReason}` : ''})` };
    // After a reboot, a Ready condition can be stale for the node monitor's grace period:
    // the node must answer SSH on a new boot, and its kubelet must report that boot.
    if (input.rebootedFrom) {
      let now: string;
      try {
        now = await bootId(input.cluster, input.node);
      } catch (err) {
        return { uncordoned: false, reason: `left cordoned: the node does not answer since its reboot (${(err as Error).message.slice(0, 200)})` };
      }
      if (now === input.rebootedFrom) return { uncordoned: false, reason: 'left cordoned: the node has not rebooted as planned' };
      if (n.bootId !== now) return { uncordoned: false, reason: `left cordoned: its kubelet has not reported the new boot (${now}) yet` };
    }
    await api(`uncordoning ${input.node}`, () =>
      rc.kube(input.cluster).core.patchNode({ name: input.node, body: { metadata: { resourceVersion: raw.metadata?.resourceVersion, annotations: { [CORDONED_BY_ANNOTATION]: null } }, spec: { unschedulable: null } } }, mergePatch),
    );
    return { uncordoned: true, reason: 'uncordoned' };
  }

  return {
    /** The cluster's Nodes as the budget sees them (read-only). */
    async listClusterNodes(input: { cluster: string }): Promise<ClusterNode[]> {
      return whileHeartbeating(() => listNodes(input.cluster));
    },

    /** Refuses to start on a cluster whose NotReady nodes (other than the run's own targets) already use the budget. */
    async checkClusterHealth(input: { cluster: string; maxUnavailable: number; targets?: string[] }): Promise<void> {
      const verdict = clusterHealthy(await whileHeartbeating(() => listNodes(input.cluster)), input.maxUnavailable, input.targets ?? []);
      if (!verdict.ok) throw fail(Failure.BudgetExhausted, verdict.reason);
    },

    /**
     * May this node be taken out now? Reads every Node afresh; a refusal is not retried, an
     * API error is (and if it persists, the node stays untouched: fail closed).
     */
    async checkBudget(input: { cluster: string; node: string; maxUnavailable: number }): Promise<void> {
      const nodes = await whileHeartbeating(() => listNodes(input.cluster));
      const verdict = mayDisrupt(nodes, input.node, input.maxUnavailable);
      if (!verdict.ok) throw fail(/exclude/.test(verdict.reason) ? Failure.NodeExcluded : Failure.BudgetExhausted, verdict.reason);
    },

    /** Refuses a node labelled kubemend.io/exclude=true (for fixes that do not take the node out of service). */
    async checkExcluded(input: { cluster: string; node: string }): Promise<void> {
      const n = await whileHeartbeating(() => readNode(input.cluster, input.node));
      if (n.excluded) throw fail(Failure.NodeExcluded, `${input.node} is labelled kubemend.io/exclude=true`);
    },

    /** The node's boot id, read before a step that reboots it. */
    async readBootId(input: { cluster: string; node: string }): Promise<{ bootId: string }> {
      return { bootId: await whileHeartbeating((signal) => bootId(input.cluster, input.node, signal)) };
    },

    /**
     * Takes the node out of service within the budget, in one activity: check the budget,
     * cordon it for this run, check the budget again. The second check is what stops two runs
     * that passed the first at the same moment on different nodes: each sees the other's
     * cordon. A refusal at either check is not retried, an API error is (fail closed). The
     * caller registers the uncordon undo before calling: it acts only on this run's cordon.
     * On a retry the first check does not count this run's own cordon, and the cordon is
     * found done.
     */
    async takeOutOfService(input: { cluster: string; node: string; runId: string; maxUnavailable: number; audit: AuditContext }): Promise<{ wasCordoned: boolean }> {
      return whileHeartbeating(async () => {
        const check = async () => {
          const verdict = mayDisrupt(await listNodes(input.cluster), input.node, input.maxUnavailable);
          if (!verdict.ok) throw fail(/exclude/.test(verdict.reason) ? Failure.NodeExcluded : Failure.BudgetExhausted, verdict.reason);
        };
        await check();
        const cordoned = await cordonOnce(input);
        await check();
        return cordoned;
      });
    },

    /** Cordons the node for this run (see cordonOnce). */
    async cordon(input: { cluster: string; node: string; runId: string; audit: AuditContext }): Promise<{ wasCordoned: boolean }> {
      return whileHeartbeating(() => cordonOnce(input));
    },

    /** Uncordons a node this run cordoned (see uncordonOnce). */
    async uncordon(input: { cluster: string; node: string; runId: string; onlyIfReady: boolean; rebootedFrom?: string; audit: AuditContext; step: string }): Promise<{ uncordoned: boolean; reason: string }> {
      return whileHeartbeating(() => uncordonOnce(input));
    },

    /**
     * Drains through the Eviction API, so PodDisruptionBudgets hold: evictions answered 429
     * are retried every 2 s until the drain timeout, then the run fails with what blocked.
     * Done when no evicted pod (by UID) is left on the node. Idempotent by construction.
     */
    async drain(input: { cluster: string; node: string; timeoutMs: number; audit: AuditContext } & DrainOptions): Promise<{ evicted: string[]; skipped: string[] }> {
      const core = rc.kube(input.cluster).core;
      const podsOnNode = async () => (await api(`listing pods on ${input.node}`, () => core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${input.node}` }))).items;
      const nodeReady = nodeObjectFacts(await api(`reading Node ${input.node}`, () => core.readNode({ name: input.node }))).ready === 'True';
      const decision = drainDecision(await podsOnNode(), input, nodeReady);
      if (decision.refuse.length) throw fail(Failure.DrainRefused, `drain of ${input.node} refused: ${decision.refuse.map((r) => `${r.pod} ${r.why}`).join('; ')}`);
      const deadline = Date.now() + input.timeoutMs;
      const evicted = new Set<string>();
      const blocked = new Map<string, string>();
      let round = 0;
      return whileHeartbeating(async (signal) => {
        for (;;) {
          signal.throwIfAborted();
          const remaining = new Set((await podsOnNode()).map((p) => p.metadata?.uid));
          const left = decision.evict.filter((p) => remaining.has(p.uid));
          if (left.length === 0) {
            const done = { evicted: [...evicted], skipped: decision.skip.map((s) => `${s.pod} (${s.why})`), ...(decision.leave.length ? { left: decision.leave.map((s) => `${s.pod} (${s.why})`) } : {}) };
            await record(input.audit, {
              cluster: input.cluster,
              node: input.node,
              step: `${input.node}/drain`,
              action: `POST /api/v1/namespaces/<ns>/pods/<pod>/eviction for each pod on ${input.node} but DaemonSet and mirror pods`,
              before: { pods: decision.evict.map((p) => `${p.namespace}/${p.name}`) },
              after: done,
              outcome: 'applied',
              event: { reason: AuditReason.NodeDrained, message: `drained by kubemend: ${done.evicted.length} pod(s) evicted${decision.leave.length ? `; ${decision.leave.length} left (not Ready on this NotReady node: already out of service)` : ''}` },
            });
            return done;
          }
          for (const p of left) {
            if (evicted.has(`${p.namespace}/${p.name}`)) continue; // evicted, waiting for it to go
            try {
              await core.createNamespacedPodEviction({ name: p.name, namespace: p.namespace, body: { apiVersion: 'policy/v1', kind: 'Eviction', metadata: { name: p.name, namespace: p.namespace } } });
              evicted.add(`${p.namespace}/${p.name}`);
              blocked.delete(`${p.namespace}/${p.name}`);
            } catch (err) {
              if (err instanceof ApiException && err.code === 404) continue; // gone meanwhile
              if (err instanceof ApiException && err.code === 429) {
                blocked.set(`${p.namespace}/${p.name}`, apiMessage(err) || 'Too Many Requests');
                continue;
              }
              throw kubeFailure(err, `evicting ${p.namespace}/${p.name}`);
            }
          }
          if (Date.now() > deadline) {
            const why = [...blocked.entries()].map(([pod, m]) => `${pod}: ${m}`);
            const waiting = left.filter((p) => evicted.has(`${p.namespace}/${p.name}`)).map((p) => `${p.namespace}/${p.name}: evicted, still on the node`);
            throw fail(Failure.DrainTimedOut, `drain of ${input.node} did not finish within ${Math.round(input.timeoutMs / 1000)} s: ${[...why, ...waiting].join('; ')}`);
          }
          await sleep(pollDelay(round++, 2000), undefined, { signal }).catch(() => undefined);
        }
      });
    },

    /**
     * Reboots the node unless it already rebooted since `bootIdBefore` (a retry after the
     * reboot happened). The session may drop as the node goes down: that is the reboot.
     */
    async reboot(input: { cluster: string; node: string; bootIdBefore: string; audit: AuditContext }): Promise<{ alreadyRebooted: boolean }> {
      const base = { cluster: input.cluster, node: input.node, step: `${input.node}/reboot`, action: REBOOT_ARGV.join(' '), before: { bootId: input.bootIdBefore } };
      return whileHeartbeating(async (signal) => {
        const now = await bootId(input.cluster, input.node, signal);
        if (now !== input.bootIdBefore) {
          await record(input.audit, { ...base, after: { bootId: now }, outcome: 'already-done', event: { reason: AuditReason.NodeRebooted, message: 'rebooted by kubemend' } });
          return { alreadyRebooted: true };
        }
        try {
          await rc.ssh.withSession(rc.target(input.cluster, input.node), (s) => s.run(REBOOT_ARGV), signal);
        } catch (err) {
          // The session may drop under a command that is taking the node down: that is the
          // reboot. A failure to connect is not: rethrown, retried, the boot id checked again.
          const dropped = err instanceof ApplicationFailure && err.type === Failure.SshTransient && /dropped while running|is gone|did not finish within/.test(err.message);
          if (!dropped) throw err;
        }
        await record(input.audit, { ...base, after: { bootId: 'pending: the node is going down' }, outcome: 'applied', event: { reason: AuditReason.NodeRebooted, message: 'rebooted by kubemend' } });
        return { alreadyRebooted: false };
      });
    },

    /**
     * Waits until the node answers SSH with a boot id other than `bootIdBefore` and its Node
     * is Ready, reporting that boot id. Fails (not retried) after `timeoutMs`.
     */
    async waitForReturn(input: { cluster: string; node: string; bootIdBefore: string; timeoutMs: number }): Promise<{ bootId: string }> {
      const deadline = Date.now() + input.timeoutMs;
      return whileHeartbeating(async (signal) => {
        let seen = 'no SSH answer yet';
        let round = 0;
        for (;;) {
          signal.throwIfAborted();
          try {
            const now = await bootId(input.cluster, input.node, signal);
            if (now === input.bootIdBefore) {
              seen = `still on boot ${now}`;
            } else {
              const n = await readNode(input.cluster, input.node);
              if (n.ready === 'True' && n.bootId === now) return { bootId: now };
              seen = `SSH up on boot ${now}; Node Ready=${n.ready ?? 'never'}, kubelet reports boot ${n.bootId ?? 'none'}`;
            }
          } catch (err) {
            if (signal.aborted) throw err;
            seen = `${(err as Error).message}`.slice(0, 300);
          }
          if (Date.now() > deadline) throw fail(Failure.NodeDidNotReturn, `${input.node} did not come back within ${Math.round(input.timeoutMs / 1000)} s after its reboot (last seen: ${seen})`);
          await sleep(pollDelay(round++, 1000), undefined, { signal }).catch(() => undefined);
        }
      });
    },
  };
}
