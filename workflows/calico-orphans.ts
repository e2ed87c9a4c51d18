/**
 * calico-orphans: seed 004. After a kubelet upgrade restarted every pod, Calico held IPAM
 * allocations for pods that were gone, nodes had cali veths no pod owned, and one Running pod
 * had no veth at all and could reach nothing.
 *
 * Its own story, on the shared runbook (workflows/runbook.ts), which does the locks,
 * approval, audit, notifications and the breaker:
 *  - facts: Calico's IPAM, pools, Nodes and pods from the API in one read, and per selected
 *    node its cali veths, named netns and sandboxes (a node that cannot be read is named in the
 *    plan and only its IPAM is judged);
 *  - detect/plan (lib/calico-orphans.ts): leaked allocations by Calico's own rules, released
 *    all or none per handle; orphan veths; Running pods without a veth (restarted if a
 *    controller owns them, reported if bare);
 *  - per node, in service (no cordon, no drain, no reboot: each action touches only the
 *    orphaned object): wait out the grace after detection for leaks whose node still exists,
 *    release each handle (each allocation judged again first; the block written with its
 *    resourceVersion), delete the orphan veths (each checked again), evict the pods without a
 *    veth and wait for their successors Running with their veths;
 *  - verify: a fresh read: the released addresses and handles are gone, the deleted veths too.
 * Up to `parallel` nodes at once (the runbook's lanes).
 *
 * Undo: none of the steps has one. A released allocation cannot be given back safely once its
 * address is re-used, so each release records the block and handle as they were; a deleted
 * veth carried no traffic; an evicted pod is recreated by its controller.
 */
import { isCancellation, sleep } from '@temporalio/workflow';
import { mapLimit } from '../lib/async';
import { ApplicationFailure } from '@temporalio/workflow';
import {
  type CalicoApiFacts,
  calicoOrphanLines,
  type CalicoOrphansFacts,
  type CalicoOrphansFixed,
  type CalicoOrphansNode,
  type CalicoOrphansPlan,
  detectCalicoOrphans,
  type NodeRead,
  planCalicoOrphans,
  problemsAfter,
} from '../lib/calico-orphans';
import { Failure } from '../lib/failures';
import { CalicoOrphansInput } from '../lib/remediation-input';
import type { RunbookResult } from '../lib/runbook';
import { describe, type FixedByRunbook, type NodeContext, parseInput, type Remediation, type RunContext, runRemediation } from './runbook';

type Input = ReturnType<typeof CalicoOrphansInput.parse>;

const Step = { WaitingOutGrace: 'WaitingOutGrace', ReleasingIpam: 'ReleasingIpam', DeletingVeths: 'DeletingVeths', RestartingPods: 'RestartingPods', WaitingForPods: 'WaitingForPods' } as const;

/** How many nodes are read at once. */
const READ_CONCURRENCY = 8;

async function readNodes(run: RunContext<Input>, nodes: readonly string[], api: CalicoApiFacts): Promise<NodeRead[]> {
  return mapLimit(nodes, READ_CONCURRENCY, async (node) => {
    try {
      // The runtime is read only where a cali veth is not one of these pods'.
      const knownVeths = api.pods.filter((p) => p.node === node).map((p) => p.veth);
      return await run.acts.readCalicoNode({ cluster: run.cluster, node, knownVeths });
    } catch (err) {
      if (isCancellation(err)) throw err;
      return { node, error: describe(err) };
    }
  });
}

async function gather(run: RunContext<Input>): Promise<CalicoOrphansFacts> {
  const detectedAtMs = Date.now();
  const api = await run.acts.readCalicoState({ cluster: run.cluster });
  return { detectedAtMs, graceMs: run.input.graceMs, api, nodes: await readNodes(run, run.selected, api) };
}

/** What a node's steps did: its result but for the name and the bare pods the plan reported. */
type Applied = Omit<CalicoOrphansFixed, 'name' | 'reported'>;

export const calicoOrphansRemediation: Remediation<Input, CalicoOrphansFacts, CalicoOrphansPlan, Applied, CalicoOrphansFixed> = {
  name: 'calico-orphans',
  disruption: { outOfService: false, reboots: false, why: 'in service: each step touches only an orphaned object (an allocation no pod has, a veth no sandbox has, a pod that has no veth and is recreated by its controller); no cordon, drain or reboot' },
  lanes: (input) => input.parallel,

  gather,

  detect: (facts, run) => detectCalicoOrphans(facts, new Set(run.selected)),

  plan: (facts, _findings, run) =>
    planCalicoOrphans(facts, {
      selected: run.selected,
      excluded: run.apiNodes.filter((n) => n.excluded).map((n) => n.name),
      controlPlane: run.apiNodes.filter((n) => n.controlPlane).map((n) => n.name),
    }),

  async apply(planned: CalicoOrphansNode, ctx: NodeContext<Input>) {
    const base = { cluster: ctx.cluster, node: ctx.node, audit: ctx.audit };
    const out: Applied = { released: [], keptAtRelease: [], vethsDeleted: [], vethsKept: [], restarted: [], newPods: [] };
    if (planned.releases.length) {
      // The grace counts from detection: a leak whose node still exists is released no earlier.
      const wait = planned.releaseNotBeforeMs - Date.now();
      if (wait > 0 && planned.releases.some((r) => !r.confirmed)) {
        ctx.step(Step.WaitingOutGrace, `until ${new Date(planned.releaseNotBeforeMs).toISOString()}`);
        await sleep(wait);
      }
      for (const release of planned.releases) {
        ctx.step(Step.ReleasingIpam, `${release.handleID} (${release.allocations.map((a) => a.ip).join(', ')})`);
        // No undo: the block and handle as they were are in the audit record.
        const r = await ctx.acts.releaseCalicoHandle({ ...base, release });
        if (r.outcome === 'kept') out.keptAtRelease.push(`${r.handleID}: ${r.why}`);
        else out.released.push(r.handleID);
        if (r.outcome === 'already-done' && r.reused.length === 0) ctx.resumed.push(`release ${r.handleID}`);
        if (r.reused.length) out.keptAtRelease.push(...r.reused.map((x) => `${r.handleID}: ${x}`));
      }
    }
    if (planned.veths.length) {
      ctx.step(Step.DeletingVeths, planned.veths.map((v) => v.name).join(', '));
      // No undo: its peer was in no live sandbox, it carried no traffic.
      const r = await ctx.acts.deleteOrphanVeths({ ...base, veths: planned.veths });
      out.vethsDeleted.push(...r.deleted, ...r.gone);
      out.vethsKept.push(...r.kept);
      if (r.gone.length) ctx.resumed.push(...r.gone.map((v) => `delete ${v}`));
    }
    if (planned.restarts.length) {
      ctx.step(Step.RestartingPods, planned.restarts.map((p) => `${p.namespace}/${p.name}`).join(', '));
      // No undo: the controller recreates the pod, which is the point.
      const r = await ctx.acts.evictPodsWithoutVeth({ ...base, pods: planned.restarts });
      if (r.already.length) ctx.resumed.push(...r.already.map((p) => `evict ${p}`));
      out.restarted.push(...r.evicted, ...r.already);
      const restarted = planned.restarts.filter((p) => out.restarted.includes(`${p.namespace}/${p.name}`));
      if (restarted.length) {
        ctx.step(Step.WaitingForPods);
        out.newPods = (await ctx.longActs.waitForPodSuccessors({ cluster: ctx.cluster, node: ctx.node, pods: restarted, timeoutMs: ctx.input.podTimeoutMs })).pods;
      }
    }
    return out;
  },

  async verifyNode(planned, applied, ctx) {
    const api = await ctx.acts.readCalicoState({ cluster: ctx.cluster });
    const node = await ctx.acts.readCalicoNode({ cluster: ctx.cluster, node: ctx.node, vethsOnly: true });
    const after: CalicoOrphansFacts = { detectedAtMs: Date.now(), graceMs: ctx.input.graceMs, api, nodes: [node] };
    const problems = problemsAfter(planned, applied, after);
    if (problems.length) throw ApplicationFailure.create({ type: Failure.VerificationFailed, message: `${ctx.node} after its fix: ${problems.join('; ')}`, nonRetryable: true });
    return {
      result: { name: ctx.node, released: applied.released, keptAtRelease: applied.keptAtRelease, vethsDeleted: applied.vethsDeleted, vethsKept: applied.vethsKept, restarted: applied.restarted, newPods: applied.newPods, reported: planned.reported },
      detail: `${applied.released.length} handle(s) released, ${applied.vethsDeleted.length} veth(s) deleted, ${applied.restarted.length} pod(s) restarted${applied.keptAtRelease.length + applied.vethsKept.length ? `, ${applied.keptAtRelease.length + applied.vethsKept.length} kept on a fresh check` : ''}`,
      record: {
        action: `verified: the released allocations and handles and the deleted veths are gone; ${applied.newPods.length} restarted pod(s) Running with their veths`,
        before: { releases: planned.releases.map((r) => r.handleID), veths: planned.veths.map((v) => v.name), restarts: planned.restarts.map((p) => `${p.namespace}/${p.name}`) },
        after: applied,
      },
    };
  },

  remaining: (facts) => calicoOrphanLines(facts, new Set(facts.nodes.map((n) => n.node))),

  // Each fixed node was verified by its own fresh read; what is left anywhere is read afresh
  // (a pod reported, a veth left undecided, a node the run did not select).
  async verifyCluster(run) {
    const fresh = await gather(run);
    return { remaining: calicoOrphanLines(fresh, new Set(run.selected)), failing: [] };
  },
};

export type CalicoOrphansResult = RunbookResult<CalicoOrphansPlan, FixedByRunbook<CalicoOrphansFixed>>;

/** The calico-orphans remediation's workflow type. */
export async function remediateCalicoOrphans(rawInput: CalicoOrphansInput): Promise<CalicoOrphansResult> {
  return runRemediation(calicoOrphansRemediation, parseInput(CalicoOrphansInput, rawInput, 'calico-orphans'));
}
