/**
 * ipam-gc: seed 003's leaked host-local addresses. A sandbox that went away without a CNI DEL
 * leaves its file in /var/lib/cni/networks/<network>/; enough of them fill the range ("no IP
 * addresses available in range set"), and no new pod on the node gets an address.
 *
 * Its own story, on the shared runbook (workflows/runbook.ts), which does the locks,
 * approval, audit, notifications and the breaker:
 *  - facts: one listing per selected node (its files, sandboxes and ranges in one exec); a
 *    node that cannot be read is skipped and named in the plan, the run goes on;
 *  - detect/plan: per node and network the capacity, the addresses in use, the leaked ones
 *    and the candidates (no live sandbox, older than the grace period) (lib/ipam-gc-plan.ts);
 *  - per node, in service (no cordon, no drain, no reboot): per network, the candidates are
 *    confirmed and moved into /var/lib/kubemend/ipam-quarantine/<run>/<network>/ under
 *    host-local's own lock, against a sandbox listing taken inside it;
 *  - verify: a fresh listing: every released address is free or held by a live sandbox, and
 *    no live sandbox's file changed.
 * Up to `parallel` nodes (default 4) are collected at once: the runbook's lanes, which only
 * a fix that keeps its nodes in service may have.
 *
 * `restoreIpamQuarantine` is `kubemend ipam-gc restore <run>`: it puts a run's quarantined
 * files back, under the same lock, refusing addresses given to a pod since.
 */
import { ApplicationFailure, isCancellation, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities';
import { mapLimit } from '../lib/async';
import { Failure } from '../lib/failures';
import {
  detectLeaks,
  type IpamGcFacts,
  type IpamGcFixed,
  type IpamGcNode,
  type IpamGcPlan,
  type IpamGcRestoreResult,
  leakLines,
  type NetworkRelease,
  NO_DRAIN_WHY,
  planIpamGc,
  networkOutcome,
  planForResult,
  problemsAfterPurge,
  problemsAfterRelease,
  type QuarantinePurge,
  QUARANTINE_DIR,
  runTagOf,
} from '../lib/ipam-gc-plan';
import { type AuditContext, IpamGcInput, IpamGcRestoreInput } from '../lib/remediation-input';
import type { RunbookResult } from '../lib/runbook';
import { decideNode, type NodeIpamListing } from '../lib/ipam-gc';
import { activityOptions } from './activity-options';
import { lockNodes } from './lock';
import { recordIpamListing, recordIpamReleased } from './metrics';
import { describe, type FixedByRunbook, type NodeContext, parseInput, type Remediation, type RunContext, runRemediation } from './runbook';

type Input = ReturnType<typeof IpamGcInput.parse>;
type Facts = IpamGcFacts & { graceS: number };

const ReleasingLeakedIps = 'ReleasingLeakedIps';
const PurgingQuarantine = 'PurgingQuarantine';

/** How many nodes are listed at once. */
const READ_CONCURRENCY = 8;

const graceOf = (input: Input) => Math.floor(input.graceMs / 1000);

/** A node's listing as the pool gauges show it (per network: capacity, in use, leaked, candidates at this run's grace). */
const recordListing = (cluster: string, node: string, listing: NodeIpamListing, graceS: number) => recordIpamListing(cluster, node, decideNode(listing, { graceS }).networks);

/** The listings of the given nodes; one that cannot be read (after the activity's retries) is reported, not fatal. */
async function listNodes(run: RunContext<Input>, nodes: readonly string[]): Promise<Facts> {
  const listed = await mapLimit(nodes, READ_CONCURRENCY, async (node) => {
    try {
      const listing = await run.acts.listHostLocal({ cluster: run.cluster, node });
      recordListing(run.cluster, node, listing, graceOf(run.input));
      return { node, listing };
    } catch (err) {
      if (isCancellation(err)) throw err;
      return { node, error: describe(err) };
    }
  });
  return { graceS: graceOf(run.input), nodes: listed };
}

/** What a node's steps did: the release per network, and the retention purge if the plan had one. */
interface Applied {
  releases: NetworkRelease[];
  purged?: QuarantinePurge;
}

export const ipamGcRemediation: Remediation<Input, Facts, IpamGcPlan, Applied, IpamGcFixed> = {
  name: 'ipam-gc',
  disruption: { outOfService: false, reboots: false, why: NO_DRAIN_WHY },
  lanes: (input) => input.parallel,
  planForResult,

  gather: (run) => listNodes(run, run.selected),

  detect: (facts) => detectLeaks(facts, facts.graceS),

  plan: (facts, _findings, run) =>
    planIpamGc(facts, {
      graceS: facts.graceS,
      selected: run.selected,
      excluded: run.apiNodes.filter((n) => n.excluded).map((n) => n.name),
      controlPlane: run.apiNodes.filter((n) => n.controlPlane).map((n) => n.name),
      runTag: runTagOf(run.runId),
      parallel: run.input.parallel,
      retentionS: Math.floor(run.input.retentionMs / 1000),
    }),

  async apply(planned: IpamGcNode, ctx: NodeContext<Input>) {
    const out: NetworkRelease[] = [];
    for (const [network, candidates] of Object.entries(planned.candidates)) {
      ctx.step(ReleasingLeakedIps, `${network}: ${candidates.length} candidate(s)`);
      // No undo: putting the files back would fill the range again (the fault). They stay in
      // the quarantine; `kubemend ipam-gc restore <run>` puts them back when an operator asks.
      const r = await ctx.longActs.releaseLeakedIps({ cluster: ctx.cluster, node: ctx.node, network, runTag: ctx.runTag, now: planned.now, candidates, audit: ctx.audit });
      if (r.already.length) ctx.resumed.push(`release ${network}`);
      recordIpamReleased(ctx.cluster, ctx.node, network, r.released.length + r.already.length);
      out.push(r);
    }
    let purged: QuarantinePurge | undefined;
    if (planned.purge?.length) {
      ctx.step(PurgingQuarantine, `${planned.purge.length} run(s) past the retention`);
      // No undo: these files were leaked reservations, kept for the retention so an operator could put them back.
      purged = await ctx.acts.purgeQuarantine({ cluster: ctx.cluster, node: ctx.node, retentionS: Math.floor(ctx.input.retentionMs / 1000), runs: planned.purge, audit: ctx.audit });
      if (purged.gone.length) ctx.resumed.push('purge');
    }
    return { releases: out, purged };
  },

  async verifyNode(planned, { releases, purged }, ctx) {
    const after = await ctx.acts.listHostLocal({ cluster: ctx.cluster, node: ctx.node });
    recordListing(ctx.cluster, ctx.node, after, graceOf(ctx.input));
    const problems = [...problemsAfterRelease(planned, releases, after), ...(purged ? problemsAfterPurge(purged, after) : [])];
    if (problems.length) throw ApplicationFailure.create({ type: Failure.VerificationFailed, message: `${ctx.node} after the release: ${problems.join('; ')}`, nonRetryable: true });
    const releasedCount = releases.reduce((a, r) => a + r.released.length + r.already.length, 0);
    const quarantine = `${QUARANTINE_DIR}/${ctx.runTag}`;
    return {
      result: { name: ctx.node, releasedCount, quarantine, networks: releases.map(networkOutcome), ...(purged ? { purged } : {}) },
      detail: `${releasedCount} leaked address(es) released into ${quarantine}${purged?.purged.length ? `; ${purged.purged.length} earlier quarantine(s) deleted past the retention` : ''}`,
      record: {
        action: `verified: the ${releasedCount} released address(es) are free or held by a live sandbox; the ${planned.live.length} live sandbox file(s) are as they were`,
        before: { networks: planned.networks },
        after: { releasedCount, perNetwork: releases.map((r) => ({ network: r.network, released: r.released.length + r.already.length, kept: r.kept.length, gone: r.gone.length })), quarantine, ...(purged ? { purged } : {}) },
      },
    };
  },

  remaining: (facts) => leakLines(facts, facts.graceS),

  // Each fixed node was verified by its own fresh listing; the nodes the run did not touch
  // are as the facts show them.
  async verifyCluster(_run, plan, facts) {
    const fixed = new Set(plan.nodes.map((n) => n.name));
    const untouched = new Set(facts.nodes.map((n) => n.node).filter((n) => !fixed.has(n)));
    return { remaining: leakLines(facts, facts.graceS, untouched), failing: [] };
  },
};

export type IpamGcResult = RunbookResult<IpamGcPlan, FixedByRunbook<IpamGcFixed>>;

/** The ipam-gc remediation's workflow type. */
export async function remediateIpamGc(rawInput: IpamGcInput): Promise<IpamGcResult> {
  return runRemediation(ipamGcRemediation, parseInput(IpamGcInput, rawInput, 'ipam-gc'));
}

/**
 * `kubemend ipam-gc restore <run>`: on each node, under its node lock, every network the run
 * quarantined files of is put back (host-local's lock, addresses in use again refused). The
 * operator's command is the approval; each network's restore writes its audit record. A node
 * that cannot be reached is reported and the others go on.
 */
export async function restoreIpamQuarantine(rawInput: IpamGcRestoreInput): Promise<IpamGcRestoreResult> {
  const input = parseInput(IpamGcRestoreInput, rawInput, 'ipam-gc restore');
  const runId = workflowInfo().workflowId;
  const audit: AuditContext = { actor: input.requestedBy, reason: input.reason ?? '', remediation: 'ipam-gc' };
  const acts = proxyActivities<Activities>(activityOptions(input));
  const { selected } = await acts.resolveRun({ cluster: input.cluster, nodes: input.nodes });
  const record = (s: Omit<Parameters<typeof acts.recordAudit>[0], 'audit' | 'cluster'>) => acts.recordAudit({ audit, cluster: input.cluster, ...s });
  await lockNodes(input.cluster, runId, selected, (node, message) => record({ node, step: 'refused', action: 'none', outcome: 'refused', error: message }));
  const runTag = runTagOf(input.gcRunId);
  await record({ node: '', step: 'restore', action: `restore the quarantine of ${input.gcRunId} (${QUARANTINE_DIR}/${runTag}) on ${selected.join(', ')}`, outcome: 'approved', after: { requestedBy: input.requestedBy } });
  const nodes: IpamGcRestoreResult['nodes'] = [];
  for (const node of selected) {
    try {
      const networks = await acts.listQuarantine({ cluster: input.cluster, node, runTag });
      const done = [];
      for (const n of networks) done.push(await acts.restoreQuarantine({ cluster: input.cluster, node, network: n.network, runTag, audit }));
      nodes.push({ name: node, networks: done });
    } catch (err) {
      if (isCancellation(err)) throw err;
      nodes.push({ name: node, error: describe(err) });
    }
  }
  return { cluster: input.cluster, gcRunId: input.gcRunId, nodes };
}
