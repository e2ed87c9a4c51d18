/**
 * The shared runbook: everything a remediation does that is not its own story, written once.
 *
 *   lock the nodes -> detect -> plan -> [dry run stops here] -> approve (an Update naming the
 *   plan) -> per node, one at a time (or a few at once for a fix that keeps nodes in
 *   service): budget, cordon, budget again, drain, the remediation's own steps, reboot and
 *   wait (if it reboots), its verify, uncordon -> verify the cluster.
 *
 * A remediation (workflows/<name>.ts) supplies only its parts: how to gather facts, a pure
 * `detect` and `plan` (lib/), its per-node steps with their undos, its verification, and
 * whether a node is taken out of service and rebooted (Remediation below). The runbook does
 * the rest: locks, approval, budget, drain, uncordon, the compensation stack in a
 * non-cancellable scope, audit records, the status query, notifications and the circuit
 * breaker.
 *
 * Safety: each target node is locked for the run's lifetime (workflows/lock.ts); each
 * completed step pushes its undo, and on failure or cancel the undos run newest first in a
 * non-cancellable scope before the original error is rethrown. A node that fails stops the
 * run: the nodes after it are not attempted (those already going in other lanes finish).
 */
import {
  type ActivityInterfaceFor,
  ApplicationFailure,
  CancellationScope,
  condition,
  defineQuery,
  defineUpdate,
  isCancellation,
  patched,
  proxyActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { z } from 'zod';
import type { Activities } from '../activities';
import { AuditReason } from '../lib/audit-reasons';
import { Failure } from '../lib/failures';
import type { Finding } from '../lib/findings';
import { Approval, APPROVE_UPDATE, type AuditContext, RunbookInput } from '../lib/remediation-input';
import { type Disruption, isRefusal, NodeStep, Phase, type PlannedNode, type RunbookPlan, type RunbookResult } from '../lib/runbook';
import { type NodeStatus, type RunStatus, STATUS_QUERY } from '../lib/run-status';
import { windowOpen, windowText } from '../lib/schedule';
import type { ClusterNode } from '../lib/budget';
import { activityOptions } from './activity-options';
import { lockNodes } from './lock';
import { failureOutcome, recordRun, resultOutcome } from './metrics';

export const runStatusQuery = defineQuery<RunStatus>(STATUS_QUERY);
export const approvePlanUpdate = defineUpdate<{ approvedBy: string }, [Approval]>(APPROVE_UPDATE);

export type Acts = ActivityInterfaceFor<Activities>;
type Parsed = z.output<typeof RunbookInput>;

/** What a remediation's parts see of the run. */
export interface RunContext<In extends Parsed> {
  input: In;
  cluster: string;
  /** The run's workflow ID: the cordon mark, the audit key, the lock holder. */
  runId: string;
  audit: AuditContext;
  acts: Acts;
  /** Activities that wait as long as the run's drain and reboot timeouts allow. */
  longActs: Acts;
  /** The nodes this run may touch (its --node selection, or every node). */
  selected: string[];
  /** Every node of the cluster in the worker's config. */
  everyNode: string[];
  /** The cluster's Node objects as read at detection: roles and the exclusion label. */
  apiNodes: ClusterNode[];
}

/** What a remediation's per-node parts see, besides the run. */
export interface NodeContext<In extends Parsed> extends RunContext<In> {
  node: string;
  /** The run ID made safe for file names on the node (backups). */
  runTag: string;
  /** The node's boot id when its own steps began (after the drain); '' if the runbook did not read it. */
  bootIdBefore: string;
  /** Shows a phase of this node in `kubemend status`. */
  step(phase: string, detail?: string): void;
  /** Registers the undo of a step that just completed; undos run newest first on failure. */
  pushUndo(what: string, run: () => Promise<string>): void;
  /** Steps found already done on a retry (shown in the result). */
  resumed: string[];
  /**
   * From now on the node stays cordoned if the run fails: its uncordon undo is dropped (for a
   * step after which a Ready-looking node is not one to put back in service, e.g. kubeadm reset).
   */
  keepCordoned(): void;
}

/** What a remediation's change to the whole cluster sees (after every node). */
export interface ClusterContext<In extends Parsed> extends RunContext<In> {
  /** Shows the cluster step in `kubemend status`. */
  step(phase: string, detail?: string): void;
  /** Registers the undo of a step that just completed; undos run newest first on failure. */
  pushUndo(what: string, run: () => Promise<string>): void;
}

export interface Verified<N> {
  /** The node's entry in the run's result. */
  result: N;
  /** Shown as the node's Fixed phase. */
  detail: string;
  /** The `<node>/fixed` audit record: what was verified, before and after. */
  record: { action: string; before: unknown; after: unknown };
}

/**
 * A remediation's own parts. `detect` and `plan` are pure (lib/); the rest call activities.
 * Everything else is the runbook's.
 */
export interface Remediation<In extends Parsed, F, P extends RunbookPlan, A, N extends { name: string }> {
  /** As `kubemend run <name>` and the audit trail name it. */
  name: string;
  disruption: Disruption;
  /** Reads what detect and plan need (read-only). */
  gather(run: RunContext<In>): Promise<F>;
  detect(facts: F, run: RunContext<In>): Finding[];
  /** Nodes to fix, in order, with their exact steps; excluded and unselected nodes go to `skipped`. */
  plan(facts: F, findings: Finding[], run: RunContext<In>): P;
  /** The plan as the run's result carries it (default: the plan itself); a result must stay under Temporal's 2 MB. */
  planForResult?(plan: P): P;
  /** Status lines for nodes of the plan that are shown but not fixed (e.g. a group's keeper). */
  planStatus?(plan: P): Record<string, NodeStatus>;
  /**
   * How many nodes may be fixed at once (default 1). Only a remediation that keeps nodes in
   * service (no cordon, drain or reboot) gets more than one: the disruption budget counts
   * one node at a time.
   */
  lanes?(input: In): number;
  /** The node's own steps, after the drain and before any reboot. Pushes an undo per step or says why there is none. */
  apply(node: P['nodes'][number], ctx: NodeContext<In>): Promise<A>;
  /**
   * A change made once for the whole cluster, after every node is fixed (a DaemonSet's
   * setting, say), with its own undos: on failure they run newest first, as a node's do, and
   * the run fails. What it returns is the result's `clusterChange`.
   */
  applyCluster?(plan: P, ctx: ClusterContext<In>): Promise<Record<string, unknown>>;
  /** Fault-specific verification of the node (not just "Ready"); throws VerificationFailed. */
  verifyNode(node: P['nodes'][number], applied: A, ctx: NodeContext<In> & { bootIdAfter: string | null }): Promise<Verified<N>>;
  /** The faults the facts show, as lines for the result (pure: a dry run reads nothing more). */
  remaining(facts: F): string[];
  /** After every node: faults left anywhere (`remaining`), and those on nodes this run fixed (`failing`, which fails the run). */
  verifyCluster(run: RunContext<In>, plan: P, facts: F): Promise<{ remaining: string[]; failing: string[] }>;
}

/** Runs recorded before node lanes existed replay one node at a time. */
const PATCH_NODE_LANES = 'runbook-node-lanes';

export type FixedByRunbook<N> = N & { uncordoned: boolean; resumed: string[] };

/** Validates a workflow input again (a run can be started by any client), failing with BadInput. */
export function parseInput<S extends z.ZodType>(schema: S, raw: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw ApplicationFailure.create({ type: Failure.BadInput, message: `invalid ${what} input: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, nonRetryable: true });
  return parsed.data;
}

export async function runRemediation<In extends Parsed, F, P extends RunbookPlan, A, N extends { name: string }>(r: Remediation<In, F, P, A, N>, input: In): Promise<RunbookResult<P, FixedByRunbook<N>>> {
  const runId = workflowInfo().workflowId;
  const cluster = input.cluster;
  const audit: AuditContext = { actor: input.requestedBy, reason: input.reason ?? '', remediation: r.name };
  const status: RunStatus = { remediation: r.name, cluster, phase: Phase.Locking, nodes: {} };
  setHandler(runStatusQuery, () => status);

  const acts = proxyActivities<Activities>(activityOptions(input));
  const longActs = proxyActivities<Activities>(activityOptions(input, Math.max(input.drainTimeoutMs, input.rebootTimeoutMs) + 60_000));
  // A notification is best effort: one activity attempt of at most 30 s, within which it
  // makes its own bounded attempts; it never throws for delivery.
  const notifyActs = proxyActivities<Activities>({ ...activityOptions(input, 30_000), retry: { maximumAttempts: 1 } });
  const record = (s: Omit<Parameters<Acts['recordAudit']>[0], 'audit' | 'cluster'>) => acts.recordAudit({ audit, cluster, ...s });
  const notify = async (event: 'awaiting-approval' | 'fixed' | 'failed' | 'compensated', summary: string, extra: { approveCommand?: string; planId?: string } = {}) => {
    try {
      await notifyActs.notify({ cluster, remediation: r.name, runId, event, summary, nodes: Object.keys(status.nodes), ...extra });
    } catch {
      // Never fails the run: the activity logs what went wrong.
    }
  };

  const { selected, all: everyNode } = await acts.resolveRun({ cluster, nodes: input.nodes });
  const run: RunContext<In> = { input, cluster, runId, audit, acts, longActs, selected, everyNode, apiNodes: [] };

  // 0. A run with a maintenance window (a scheduled one) changes nothing outside it.
  if (input.window) {
    const w = windowOpen(input.window, new Date());
    if (!w.open) {
      status.phase = Phase.Done;
      await record({ node: '', step: 'window', action: `none: outside the maintenance window (${windowText(input.window)}) at ${w.local}`, before: { window: input.window }, outcome: 'skipped' });
      recordRun(r.name, cluster, resultOutcome('outside maintenance window'));
      return { cluster, remediation: r.name, outcome: 'outside maintenance window', planId: null, plan: null, approvedBy: null, findings: [], nodes: [], remaining: [] };
    }
  }

  try {
    // 1. The breaker, then the locks (a dry run touches nothing and locks nothing).
    if (!input.dryRun) {
      try {
        await acts.checkBreaker({ cluster });
      } catch (err) {
        await record({ node: '', step: 'refused', action: 'none', outcome: 'refused', error: describe(err) });
        throw err;
      }
      await lockNodes(cluster, runId, selected, (node, message) => record({ node, step: 'refused', action: 'none', outcome: 'refused', error: message }));
    }

    // 2. Detect, from facts read once.
    status.phase = Phase.Detecting;
    run.apiNodes = await acts.listClusterNodes({ cluster });
    const facts = await r.gather(run);
    const findings = r.detect(facts, run);

    // 3. Plan.
    const plan = r.plan(facts, findings, run);
    status.plan = plan;
    status.phase = Phase.Planned;
    Object.assign(status.nodes, r.planStatus?.(plan) ?? {});
    for (const s of plan.skipped) status.nodes[s.name] = { phase: NodeStep.Skipped, detail: s.reason };
    for (const n of plan.nodes) status.nodes[n.name] = { phase: NodeStep.Planned };
    if (plan.refused?.length) {
      const message = `${plan.refused.join('; ')}. Nothing was changed${plan.nodes.length ? `; to fix the other nodes, run with --node ${plan.nodes.map((n) => n.name).join(' --node ')}` : ''}`;
      await record({ node: '', step: 'refused', action: 'none', before: { findings }, outcome: 'refused', error: `${Failure.NodeStateUnexpected}: ${message}` });
      throw ApplicationFailure.create({ type: Failure.NodeStateUnexpected, message, nonRetryable: true });
    }
    const result: RunbookResult<P, FixedByRunbook<N>> = { cluster, remediation: r.name, outcome: 'nothing to do', planId: plan.id, plan: r.planForResult ? r.planForResult(plan) : plan, approvedBy: null, findings, nodes: [], remaining: [] };
    await record({
      node: '',
      step: 'plan',
      action: input.dryRun ? 'plan only (--dry-run): nothing is changed' : `plan ${plan.id}`,
      before: { findings },
      after: { planId: plan.id, fix: plan.nodes.map((n) => n.name), ...(plan.cluster?.length ? { cluster: plan.cluster } : {}), skipped: plan.skipped, disruption: r.disruption },
      outcome: input.dryRun ? 'dry-run' : plan.nodes.length || plan.cluster?.length ? 'planned' : 'skipped',
    });
    const nothing = plan.nodes.length === 0 && !plan.cluster?.length;
    if (nothing || input.dryRun) {
      status.phase = Phase.Done;
      result.remaining = r.remaining(facts);
      const ended = nothing ? result : { ...result, outcome: 'planned (dry run)' as const };
      recordRun(r.name, cluster, resultOutcome(ended.outcome));
      return ended;
    }

    // 4. Approve: a sick cluster is refused first, so nobody approves what cannot run.
    if (r.disruption.outOfService) {
      try {
        await acts.checkClusterHealth({ cluster, maxUnavailable: input.maxUnavailable, targets: plan.nodes.map((n) => n.name) });
      } catch (err) {
        await record({ node: '', step: 'refused', action: 'none', outcome: 'refused', error: describe(err) });
        throw err;
      }
    }
    const approval = await approve(plan);
    result.approvedBy = approval.approvedBy;
    await record({ node: '', step: 'approval', action: `approve plan ${plan.id}`, after: { approvedBy: approval.approvedBy, comment: approval.comment }, outcome: 'approved' });

    // 5. Fix: one node at a time, or up to the remediation's lanes for a fix that keeps
    // nodes in service; the first failure stops the run.
    status.phase = Phase.Fixing;
    const runTag = runId.replace(/[^A-Za-z0-9-]/g, '-');
    const lanes = r.disruption.outOfService ? 1 : Math.max(1, r.lanes?.(input) ?? 1);
    if (lanes > 1 && patched(PATCH_NODE_LANES)) {
      result.nodes.push(...(await fixInLanes(plan.nodes, lanes, runTag)));
    } else {
      for (const [i, planned] of plan.nodes.entries()) {
        try {
          result.nodes.push(await fixNode(planned, runTag));
        } catch (err) {
          for (const later of plan.nodes.slice(i + 1)) status.nodes[later.name] = { phase: NodeStep.NotAttempted, detail: `${planned.name} failed first` };
          throw err;
        }
      }
    }

    // 6. The remediation's change to the whole cluster, if it has one.
    if (r.applyCluster) result.clusterChange = await fixCluster(plan, r.applyCluster);

    // 7. Verify the whole cluster.
    status.phase = Phase.Verifying;
    const verdict = await r.verifyCluster(run, plan, facts);
    result.remaining = verdict.remaining;
    if (verdict.failing.length) throw ApplicationFailure.create({ type: Failure.VerificationFailed, message: `after the fix: ${verdict.failing.join('; ')}`, nonRetryable: true });
    status.phase = Phase.Done;
    await notify('fixed', `${r.name} on ${cluster}: fixed ${result.nodes.map((n) => n.name).join(', ')}${result.remaining.length ? `; still present: ${result.remaining.join('; ')}` : ''}`);
    recordRun(r.name, cluster, resultOutcome('fixed'));
    return { ...result, outcome: 'fixed' };
  } catch (err) {
    recordRun(r.name, cluster, failureOutcome(err, describe(err)));
    await CancellationScope.nonCancellable(() => afterFailure(err));
    throw err;
  }

  async function approve(plan: P): Promise<{ approvedBy: string; comment: string }> {
    const s = input.scheduledBy;
    let approval: { approvedBy: string; comment: string } | undefined = s
      ? { approvedBy: `${s.createdBy} (by creating schedule ${s.scheduleId} at ${s.createdAt})`, comment: input.window ? `inside the maintenance window ${windowText(input.window)}` : '' }
      : input.autoApprove
        ? { approvedBy: `${input.requestedBy} (--auto-approve)`, comment: '' }
        : undefined;
    setHandler(
      approvePlanUpdate,
      (a) => {
        const ok = Approval.parse(a);
        approval = { approvedBy: ok.approver, comment: ok.comment ?? '' };
        return { approvedBy: ok.approver };
      },
      {
        validator: (a) => {
          const v = Approval.safeParse(a);
          if (!v.success) throw new Error(`malformed approval: ${v.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
          if (status.phase !== Phase.AwaitingApproval || approval) throw new Error(`the run is not waiting for approval (phase ${status.phase})`);
          if (v.data.planId !== plan.id) throw new Error(`stale approval: it names plan ${v.data.planId}, the run's plan is ${plan.id}`);
        },
      },
    );
    if (!approval) {
      status.phase = Phase.AwaitingApproval;
      await notify('awaiting-approval', `${r.name} on ${cluster} waits for approval of plan ${plan.id}: ${plan.nodes.map((n) => n.name).join(', ')}`, { approveCommand: `kubemend approve ${runId} --plan ${plan.id}`, planId: plan.id });
      if (!(await condition(() => approval !== undefined, input.approvalTimeoutMs))) {
        throw ApplicationFailure.create({ type: Failure.ApprovalTimedOut, message: `nobody approved plan ${plan.id} within ${Math.round(input.approvalTimeoutMs / 1000)} s; nothing was changed`, nonRetryable: true });
      }
    }
    return approval!;
  }

  /**
   * Up to `lanes` nodes at once, each as fixNode does it alone (its undos are its own). After
   * the first failure no further node starts; the nodes already going finish (or undo), and
   * the run fails with the first failure. Results are in plan order.
   */
  async function fixInLanes(nodes: PlannedNode[], lanes: number, runTag: string): Promise<Array<FixedByRunbook<N>>> {
    const done: Array<FixedByRunbook<N> | undefined> = new Array(nodes.length);
    let first: { node: string; err: unknown } | undefined;
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(lanes, nodes.length) }, async () => {
        while (next < nodes.length && !first) {
          const i = next++;
          try {
            done[i] = await fixNode(nodes[i], runTag);
          } catch (err) {
            first ??= { node: nodes[i].name, err };
          }
        }
      }),
    );
    if (first) {
      for (const later of nodes.slice(next)) status.nodes[later.name] = { phase: NodeStep.NotAttempted, detail: `${first.node} failed first` };
      throw first.err;
    }
    return done as Array<FixedByRunbook<N>>;
  }

  /** The cluster-wide change, with its own compensation stack (as fixNode's, for one step of the whole cluster). */
  async function fixCluster(plan: P, apply: NonNullable<typeof r.applyCluster>): Promise<Record<string, unknown>> {
    const undo: Array<{ what: string; run: () => Promise<string> }> = [];
    const step = (phase: string, detail?: string) => (status.clusterStep = { phase, ...(detail ? { detail } : {}) });
    try {
      const out = await apply(plan, { ...run, step, pushUndo: (what, fn) => undo.push({ what, run: fn }) });
      step(NodeStep.Fixed);
      return out;
    } catch (err) {
      const reason = describe(err);
      status.phase = Phase.Compensating;
      const undone = await runUndos(undo);
      status.compensations = [...(status.compensations ?? []), ...undone];
      step(NodeStep.Failed, `${reason}${undone.length ? ` | undo: ${undone.join('; ')}` : ''}`);
      await CancellationScope.nonCancellable(async () => {
        try {
          await record({ node: '', step: 'cluster/failed', action: 'none', after: { undo: undone }, outcome: 'failed', error: reason });
        } catch (e) {
          status.compensations = [...undone, `audit record of the failure: FAILED (${describe(e)})`];
        }
      });
      throw err;
    }
  }

  async function fixNode(planned: PlannedNode, runTag: string): Promise<FixedByRunbook<N>> {
    const node = planned.name;
    const step = (phase: string, detail?: string) => (status.nodes[node] = { phase, ...(detail ? { detail } : {}) });
    const undo: Array<{ what: string; run: () => Promise<string> }> = [];
    const dropUncordon = () => {
      const i = undo.findIndex((u) => u.what === `uncordon ${node}`);
      if (i >= 0) undo.splice(i, 1);
    };
    const ctx: NodeContext<In> = { ...run, node, runTag, bootIdBefore: '', step, pushUndo: (what, fn) => undo.push({ what, run: fn }), resumed: [], keepCordoned: dropUncordon };
    const { outOfService, reboots } = r.disruption;
    try {
      let wasCordoned = true;
      if (outOfService) {
        // Budget, cordon, budget again, in one activity. Its undo is registered first: it
        // uncordons only a cordon this run made, so it is safe whatever the activity got to.
        ctx.pushUndo(`uncordon ${node}`, async () => (await acts.uncordon({ cluster, node, runId, onlyIfReady: true, audit, step: 'undo-uncordon' })).reason);
        step(NodeStep.Cordoning);
        wasCordoned = (await acts.takeOutOfService({ cluster, node, runId, maxUnavailable: input.maxUnavailable, audit })).wasCordoned;
        // Cordoned by someone else before this run: never kubemend's to uncordon.
        if (wasCordoned) undo.splice(undo.findIndex((u) => u.what === `uncordon ${node}`), 1);
        step(NodeStep.Draining);
        await longActs.drain({ cluster, node, timeoutMs: input.drainTimeoutMs, deleteEmptyDirData: input.deleteEmptyDirData, force: input.force, audit });
      } else if (!planned.unregistered) {
        await acts.checkExcluded({ cluster, node });
      }
      if (reboots) {
        ctx.bootIdBefore = (await acts.readBootId({ cluster, node })).bootId;
        // From here the node may be half changed or down: its undo uncordons only a node that
        // is back on a new boot (with the change in effect).
        const uncordonUndo = undo.find((u) => u.what === `uncordon ${node}`);
        if (uncordonUndo) uncordonUndo.run = async () => (await acts.uncordon({ cluster, node, runId, onlyIfReady: true, rebootedFrom: ctx.bootIdBefore, audit, step: 'undo-uncordon' })).reason;
      }
      const applied = await r.apply(planned, ctx);
      let bootIdAfter: string | null = null;
      if (reboots) {
        step(NodeStep.Rebooting);
        const rebooted = await acts.reboot({ cluster, node, bootIdBefore: ctx.bootIdBefore, audit });
        if (rebooted.alreadyRebooted) ctx.resumed.push('reboot');
        step(NodeStep.WaitingForNode);
        bootIdAfter = (await longActs.waitForReturn({ cluster, node, bootIdBefore: ctx.bootIdBefore, timeoutMs: input.rebootTimeoutMs })).bootId;
      }
      step(NodeStep.Verifying);
      const verified = await r.verifyNode(planned, applied, { ...ctx, bootIdAfter });
      let uncordoned = false;
      if (outOfService && !wasCordoned) {
        step(NodeStep.Uncordoning);
        uncordoned = (await acts.uncordon({ cluster, node, runId, onlyIfReady: false, audit, step: 'uncordon' })).uncordoned;
        dropUncordon();
      }
      await record({ node, step: `${node}/fixed`, ...verified.record, outcome: 'applied', annotate: true });
      step(NodeStep.Fixed, verified.detail);
      return { ...verified.result, uncordoned, resumed: ctx.resumed };
    } catch (err) {
      const reason = describe(err);
      step(NodeStep.Failed, reason);
      status.phase = Phase.Compensating;
      const undone = await runUndos(undo);
      status.compensations = undone;
      step(NodeStep.Failed, `${reason}${undone.length ? ` | undo: ${undone.join('; ')}` : ''}`);
      const refused = isRefusal(reason);
      await CancellationScope.nonCancellable(async () => {
        try {
          await record({ node, step: `${node}/failed`, action: 'none', after: { undo: undone }, outcome: refused ? 'refused' : 'failed', error: reason, annotate: !refused, event: { reason: refused ? AuditReason.Refused : AuditReason.Compensated, message: `${reason}${undone.length ? `; undo: ${undone.join('; ')}` : ''}`, warning: true } });
        } catch (e) {
          status.compensations = [...undone, `audit record of the failure: FAILED (${describe(e)})`];
        }
      });
      throw err;
    }
  }

  /**
   * After the run failed: a failure of the fix itself (not a refusal, not a cancel, not an
   * approval that never came) counts towards the cluster's circuit breaker; every failure
   * but a cancel is notified, and so is an undo that ran.
   */
  async function afterFailure(err: unknown): Promise<void> {
    if (isCancellation(err)) {
      if (status.compensations?.length) await notify('compensated', `${r.name} on ${cluster} was cancelled; undo: ${status.compensations.join('; ')}`);
      return;
    }
    const reason = describe(err);
    const fixing = status.phase === Phase.Fixing || status.phase === Phase.Compensating || status.phase === Phase.Verifying;
    if (fixing && !isRefusal(reason)) {
      try {
        const b = await acts.recordRunFailure({ cluster, remediation: r.name, error: reason, audit });
        if (b.tripped) status.compensations = [...(status.compensations ?? []), `circuit breaker tripped: ${b.failures} failed runs; new runs on ${cluster} are refused until kubemend breaker reset --cluster ${cluster}`];
      } catch (e) {
        status.compensations = [...(status.compensations ?? []), `recording the failure for the circuit breaker: FAILED (${describe(e)})`];
      }
    }
    if (status.compensations?.length) await notify('compensated', `${r.name} on ${cluster}: undo after failure: ${status.compensations.join('; ')}`);
    await notify('failed', `${r.name} on ${cluster} ${isRefusal(reason) ? 'was refused by a safety rule' : 'failed'}: ${reason}`);
  }
}

/**
 * Runs a compensation stack newest first, even while the run is being cancelled; each undo's
 * error is recorded in its line, and the original error is what the run fails with.
 */
async function runUndos(undo: Array<{ what: string; run: () => Promise<string> }>): Promise<string[]> {
  const undone: string[] = [];
  await CancellationScope.nonCancellable(async () => {
    for (const u of [...undo].reverse()) {
      try {
        undone.push(`${u.what}: ${await u.run()}`);
      } catch (e) {
        undone.push(`${u.what}: FAILED (${describe(e)})`);
      }
    }
  });
  return undone;
}

export function describe(err: unknown): string {
  if (isCancellation(err)) return 'cancelled';
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof ApplicationFailure) return `${cause.type ?? 'Error'}: ${cause.message}`;
  if (err instanceof ApplicationFailure) return `${err.type ?? 'Error'}: ${err.message}`;
  return (err as Error).message ?? String(err);
}
