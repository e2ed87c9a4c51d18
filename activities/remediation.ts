/**
 * Activities of the remediations: thin adapters over SSH and the Kubernetes API. Each one
 * checks the node or object first and does nothing it has already done, so Temporal may
 * retry or replay it after a crash without repeating a destructive action. Decisions
 * (what to evict, whether the budget allows a node) are pure functions in lib/.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Context } from '@temporalio/activity';
import { ApiException, PatchStrategy, setHeaderOptions, type V1Node } from '@kubernetes/client-node';
import { ApplicationFailure } from '@temporalio/common';
import { type ClusterNode, clusterHealthy, CORDONED_BY_ANNOTATION, mayDisrupt } from '../lib/budget';
import type { NodeTarget } from '../lib/config';
import { drainDecision, type DrainOptions } from '../lib/drain';
import { Failure } from '../lib/failures';
import { nodeObjectFacts } from '../lib/node-object';
import { identityArgv, type NodeIdentityReading, parseIdentity, parseRegenerate, REBOOT_ARGV, regenerateArgv, UNEXPECTED_STATE_EXIT } from '../lib/node-scripts';
import { apiMessage, type KubeCluster, kubeFailure } from './kube';
import type { SshPort } from './ssh';

export interface RemediationContext {
  ssh: SshPort;
  target(cluster: string, node: string): NodeTarget;
  /** The cluster's API client; refuses (non-retryable) when the config gives it no kubeconfig. */
  kube(cluster: string): KubeCluster;
}

const fail = (type: string, message: string, nonRetryable = true) => ApplicationFailure.create({ type, message, nonRetryable });
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** Heartbeats every second while `fn` runs, so cancellation reaches it and a hang is noticed. */
export async function whileHeartbeating<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ctx = Context.current();
  ctx.heartbeat();
  const timer = setInterval(() => ctx.heartbeat(), 1000);
  try {
    return await fn(ctx.cancellationSignal);
  } finally {
    clearInterval(timer);
  }
}

function toClusterNode(n: V1Node): ClusterNode {
  return { name: n.metadata?.name ?? '', ...nodeObjectFacts(n), cordonedBy: n.metadata?.annotations?.[CORDONED_BY_ANNOTATION] ?? null };
}

export function createRemediationActivities(rc: RemediationContext) {
  async function api<T>(what: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      throw kubeFailure(err, what);
    }
  }
  const listNodes = async (cluster: string) => (await api(`listing the Nodes of ${cluster}`, () => rc.kube(cluster).core.listNode({}))).items.map(toClusterNode);
  const readNode = async (cluster: string, node: string) => toClusterNode(await api(`reading Node ${node}`, () => rc.kube(cluster).core.readNode({ name: node })));

  async function identity(cluster: string, node: string, signal?: AbortSignal): Promise<NodeIdentityReading> {
    const marker = randomBytes(16).toString('hex');
    const r = await rc.ssh.withSession(rc.target(cluster, node), (s) => s.run(identityArgv(marker)), signal);
    const parsed = parseIdentity(r.stdout, marker);
    if ('error' in parsed) throw fail(Failure.ProbeNoOutput, `${node}: ${parsed.error}`);
    return parsed;
  }

  /**
   * Cordons the node and marks it as this run's. Idempotent: a node this run already
   * cordoned reports wasCordoned false again; a node cordoned by someone else is left as
   * it is and reported wasCordoned true (so the run never uncordons it).
   */
  async function cordonOnce(input: { cluster: string; node: string; runId: string }): Promise<{ wasCordoned: boolean }> {
    const n = await readNode(input.cluster, input.node);
    if (n.cordonedBy === input.runId) return { wasCordoned: false };
    if (n.unschedulable) return { wasCordoned: true };
    await api(`cordoning ${input.node}`, () =>
      rc.kube(input.cluster).core.patchNode({ name: input.node, body: { metadata: { annotations: { [CORDONED_BY_ANNOTATION]: input.runId } }, spec: { unschedulable: true } } }, mergePatch),
    );
    return { wasCordoned: false };
  }

  /**
   * Uncordons a node this run cordoned. With onlyIfReady (the undo after a failure), a node
   * that is not Ready stays cordoned and the reason is returned.
   */
  async function uncordonOnce(input: { cluster: string; node: string; runId: string; onlyIfReady: boolean; rebootedFrom?: string }): Promise<{ uncordoned: boolean; reason: string }> {
    const n = await readNode(input.cluster, input.node);
    if (n.cordonedBy !== input.runId) return { uncordoned: false, reason: n.cordonedBy ? `cordoned by another run (${n.cordonedBy})` : n.unschedulable ? 'cordoned by someone else' : 'not cordoned' };
    if (input.onlyIfReady && n.ready !== 'True') return { uncordoned: false, reason: `left cordoned: the Node is not Ready (Ready=${n.ready ?? 'never'}${n.readyReason ? `, ${n.readyReason}` : ''})` };
    // After a reboot, a Ready condition can be stale for the node monitor's grace period:
    // the node must answer SSH on a new boot, and its kubelet must report that boot.
    if (input.rebootedFrom) {
      let bootId: string;
      try {
        bootId = (await identity(input.cluster, input.node)).bootId;
      } catch (err) {
        return { uncordoned: false, reason: `left cordoned: the node does not answer since its reboot (${(err as Error).message.slice(0, 200)})` };
      }
      if (bootId === input.rebootedFrom) return { uncordoned: false, reason: 'left cordoned: the node has not rebooted as planned' };
      if (n.bootId !== bootId) return { uncordoned: false, reason: `left cordoned: its kubelet has not reported the new boot (${bootId}) yet` };
    }
    await api(`uncordoning ${input.node}`, () =>
      rc.kube(input.cluster).core.patchNode({ name: input.node, body: { metadata: { annotations: { [CORDONED_BY_ANNOTATION]: null } }, spec: { unschedulable: null } } }, mergePatch),
    );
    return { uncordoned: true, reason: 'uncordoned' };
  }

  return {
    /** Ids, boot id, weave MAC and weave's collision count of one node (read-only). */
    async readIdentity(input: { cluster: string; node: string }): Promise<NodeIdentityReading> {
      return whileHeartbeating((signal) => identity(input.cluster, input.node, signal));
    },

    /** The cluster's Nodes as the budget sees them (read-only). */
    async listClusterNodes(input: { cluster: string }): Promise<ClusterNode[]> {
      return whileHeartbeating(() => listNodes(input.cluster));
    },

    /** Refuses to start on a cluster whose NotReady nodes already use the budget. */
    async checkClusterHealth(input: { cluster: string; maxUnavailable: number }): Promise<void> {
      const verdict = clusterHealthy(await whileHeartbeating(() => listNodes(input.cluster)), input.maxUnavailable);
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

    /** Cordons the node for this run (see cordonOnce). */
    async cordon(input: { cluster: string; node: string; runId: string }): Promise<{ wasCordoned: boolean }> {
      return whileHeartbeating(() => cordonOnce(input));
    },

    /** Uncordons a node this run cordoned (see uncordonOnce). */
    async uncordon(input: { cluster: string; node: string; runId: string; onlyIfReady: boolean; rebootedFrom?: string }): Promise<{ uncordoned: boolean; reason: string }> {
      return whileHeartbeating(() => uncordonOnce(input));
    },

    /**
     * Drains through the Eviction API, so PodDisruptionBudgets hold: evictions answered 429
     * are retried every 2 s until the drain timeout, then the run fails with what blocked.
     * Done when no evicted pod (by UID) is left on the node. Idempotent by construction.
     */
    async drain(input: { cluster: string; node: string; timeoutMs: number } & DrainOptions): Promise<{ evicted: string[]; skipped: string[] }> {
      const core = rc.kube(input.cluster).core;
      const podsOnNode = async () => (await api(`listing pods on ${input.node}`, () => core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${input.node}` }))).items;
      const decision = drainDecision(await podsOnNode(), input);
      if (decision.refuse.length) throw fail(Failure.DrainRefused, `drain of ${input.node} refused: ${decision.refuse.map((r) => `${r.pod} ${r.why}`).join('; ')}`);
      const deadline = Date.now() + input.timeoutMs;
      const evicted = new Set<string>();
      const blocked = new Map<string, string>();
      return whileHeartbeating(async (signal) => {
        for (;;) {
          signal.throwIfAborted();
          const remaining = new Set((await podsOnNode()).map((p) => p.metadata?.uid));
          const left = decision.evict.filter((p) => remaining.has(p.uid));
          if (left.length === 0) return { evicted: [...evicted], skipped: decision.skip.map((s) => `${s.pod} (${s.why})`) };
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
          await sleep(2000, undefined, { signal }).catch(() => undefined);
        }
      });
    },

    /**
     * Regenerates the node's machine-id once per run (see REGENERATE_SCRIPT): old id backed
     * up, both files removed, systemd-machine-id-setup, dbus copy made to agree.
     */
    async regenerateMachineId(input: { cluster: string; node: string; runTag: string; oldId: string }): Promise<{ newId: string; already: boolean }> {
      return whileHeartbeating(async (signal) => {
        const r = await rc.ssh.withSession(rc.target(input.cluster, input.node), (s) => s.run(regenerateArgv(input.runTag, input.oldId), { check: false }), signal);
        if (r.exitCode === UNEXPECTED_STATE_EXIT) throw fail(Failure.NodeStateUnexpected, `${input.node}: ${r.stderr.trim()}`);
        const parsed = r.exitCode === 0 ? parseRegenerate(r.stdout) : undefined;
        if (!parsed) throw fail(Failure.CommandFailed, `regenerating the machine-id on ${input.node} failed (exit ${r.exitCode}): ${r.stderr.trim().slice(0, 500)}`);
        return parsed;
      });
    },

    /**
     * Reboots the node unless it already rebooted since `bootIdBefore` (a retry after the
     * reboot happened). The session may drop as the node goes down: that is the reboot.
     */
    async reboot(input: { cluster: string; node: string; bootIdBefore: string }): Promise<{ alreadyRebooted: boolean }> {
      return whileHeartbeating(async (signal) => {
        const now = await identity(input.cluster, input.node, signal);
        if (now.bootId !== input.bootIdBefore) return { alreadyRebooted: true };
        try {
          await rc.ssh.withSession(rc.target(input.cluster, input.node), (s) => s.run(REBOOT_ARGV), signal);
        } catch (err) {
          if (!(err instanceof ApplicationFailure && err.type === Failure.SshTransient)) throw err;
        }
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
        for (;;) {
          signal.throwIfAborted();
          try {
            const now = await identity(input.cluster, input.node, signal);
            if (now.bootId === input.bootIdBefore) {
              seen = `still on boot ${now.bootId}`;
            } else {
              const n = await readNode(input.cluster, input.node);
              if (n.ready === 'True' && n.bootId === now.bootId) return { bootId: now.bootId };
              seen = `SSH up on boot ${now.bootId}; Node Ready=${n.ready ?? 'never'}, kubelet reports boot ${n.bootId ?? 'none'}`;
            }
          } catch (err) {
            if (signal.aborted) throw err;
            seen = `${(err as Error).message}`.slice(0, 300);
          }
          if (Date.now() > deadline) throw fail(Failure.NodeDidNotReturn, `${input.node} did not come back within ${Math.round(input.timeoutMs / 1000)} s after its reboot (last seen: ${seen})`);
          await sleep(1000, undefined, { signal }).catch(() => undefined);
        }
      });
    },
  };
}
