/**
 * FROZEN: the `machineId` workflow type as it was before the shared runbook
 * (workflows/runbook.ts). The CLI starts `remediateMachineId` now; this type stays
 * registered, unchanged, only so that runs started before the change finish on a new worker
 * and their histories (test/histories/machine-id-*.json) replay. Remove it once no such run
 * can be open (the namespace's retention period after the upgrade). Do not edit: any change
 * to its commands breaks those runs.
 *
 * machine-id: seed 000. Nodes cloned from one image share /etc/machine-id (and the dbus
 * copy), so Weave Net gives them the same peer name and MAC and refuses their connections.
 *
 * Detect (every node's ids and weave MAC) -> plan (keep one per group, fix the rest) ->
 * [dry run stops here] -> approve (an Update naming the plan) -> per node, one at a time:
 * budget check, cordon, drain, regenerate the id, reboot, wait for the node, verify,
 * uncordon -> verify the whole cluster.
 *
 * Safety: each target node is locked for the run's lifetime (a child workflow per node
 * whose ID is the lock: a second start of a running ID fails, and the server ends the
 * child when the run closes, however it closes); each completed step pushes its undo, and on failure or cancel the
 * undos run in a non-cancellable scope before the original error is rethrown.
 */
import {
  ApplicationFailure,
  CancellationScope,
  condition,
  defineQuery,
  defineUpdate,
  isCancellation,
  ParentClosePolicy,
  proxyActivities,
  setHandler,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { Activities } from '../../activities';
import { nodeLock } from '../lock';
import { mapLimit } from '../../lib/async';
import { Failure } from '../../lib/failures';
import { type MachineIdPlan, type NodeIdentity, planMachineIdFix, remainingCollisions } from '../../lib/machine-id';
import { Approval, APPROVE_UPDATE, type AuditContext, type FixedNode, MachineIdInput, type MachineIdResult } from '../../lib/remediation-input';
import { type RunStatus, STATUS_QUERY } from '../../lib/run-status';
import { AuditReason } from '../../lib/audit-reasons';
import { lockId } from '../../lib/lock-id';
import { activityOptions } from '../activity-options';
import { NodeStep as RunbookNodeStep, Phase } from '../../lib/runbook';

const machineIdStatusQuery = defineQuery<RunStatus>(STATUS_QUERY);
const approveUpdate = defineUpdate<{ approvedBy: string }, [Approval]>(APPROVE_UPDATE);

// The same values as the runbook's (status text is not part of history); its one own phase:
const NodeStep = { ...RunbookNodeStep, RegeneratingId: 'RegeneratingId' } as const;

export async function machineId(rawInput: MachineIdInput): Promise<MachineIdResult> {
  const parsed = MachineIdInput.safeParse(rawInput);
  if (!parsed.success) throw ApplicationFailure.create({ type: Failure.BadInput, message: `invalid machine-id input: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, nonRetryable: true });
  const input = parsed.data;
  const runId = workflowInfo().workflowId;
  const audit: AuditContext = { actor: input.requestedBy, reason: input.reason ?? '', remediation: 'machine-id' };
  const status: RunStatus = { remediation: 'machine-id', cluster: input.cluster, phase: Phase.Locking, nodes: {} };
  setHandler(machineIdStatusQuery, () => status);

  const acts = proxyActivities<Activities>(activityOptions(input));
  // Drains and reboot waits run as long as their own timeouts allow.
  const longActs = proxyActivities<Activities>(activityOptions(input, Math.max(input.drainTimeoutMs, input.rebootTimeoutMs) + 60_000));

  const selected = (await acts.resolveTargets({ cluster: input.cluster, nodes: input.nodes })).nodes;
  const everyNode = (await acts.resolveTargets({ cluster: input.cluster, nodes: [] })).nodes;

  // 1. Lock the nodes this run may touch (a dry run touches nothing and locks nothing).
  if (!input.dryRun) {
    for (const node of [...selected].sort()) {
      try {
        await startChild(nodeLock, {
          workflowId: lockId(input.cluster, node),
          args: [{ runId, cluster: input.cluster, node }],
          parentClosePolicy: ParentClosePolicy.TERMINATE,
        });
      } catch (err) {
        if (err instanceof WorkflowExecutionAlreadyStartedError) {
          const message = `node ${node} is being remediated by another run (its lock ${lockId(input.cluster, node)} is held)`;
          await acts.recordAudit({ audit, cluster: input.cluster, node, step: 'refused', action: 'none', outcome: 'refused', error: message });
          throw ApplicationFailure.create({ type: Failure.LockHeld, message, nonRetryable: true });
        }
        throw err;
      }
    }
  }

  // 2. Detect: every node's identity, and the Nodes' labels (exclusion) and roles.
  status.phase = Phase.Detecting;
  const readings = await mapLimit(everyNode, 8, (node) => acts.readIdentity({ cluster: input.cluster, node }));
  const apiNodes = await acts.listClusterNodes({ cluster: input.cluster });
  const identities: NodeIdentity[] = everyNode.map((name, i) => ({
    name,
    role: apiNodes.find((n) => n.name === name)?.controlPlane ? 'control-plane' : 'worker',
    machineId: readings[i].machineId,
    dbusMachineId: readings[i].dbusMachineId,
    weaveMac: readings[i].weaveMac,
  }));

  // 3. Plan.
  const plan = planMachineIdFix(identities, { includeKeeper: input.includeKeeper, selected, excluded: apiNodes.filter((n) => n.excluded).map((n) => n.name) });
  status.plan = plan;
  status.phase = Phase.Planned;
  for (const k of plan.keepers) status.nodes[k] = { phase: NodeStep.Keeper };
  for (const s of plan.skipped) status.nodes[s.name] = { phase: NodeStep.Skipped, detail: s.reason };
  for (const n of plan.nodes) status.nodes[n.name] = { phase: NodeStep.Planned };
  const result: MachineIdResult = { cluster: input.cluster, outcome: 'nothing to do', planId: plan.id, plan, approvedBy: null, nodes: [], remaining: remainingCollisions(identities) };
  await acts.recordAudit({
    audit,
    cluster: input.cluster,
    node: '',
    step: 'plan',
    action: input.dryRun ? 'plan only (--dry-run): nothing is changed' : `plan ${plan.id}`,
    before: { groups: plan.groups },
    after: { planId: plan.id, fix: plan.nodes.map((n) => n.name), keep: plan.keepers, skipped: plan.skipped },
    outcome: input.dryRun ? 'dry-run' : plan.nodes.length ? 'planned' : 'skipped',
  });
  if (plan.nodes.length === 0) {
    status.phase = Phase.Done;
    return result;
  }
  if (input.dryRun) {
    status.phase = Phase.Done;
    return { ...result, outcome: 'planned (dry run)' };
  }

  // 4. Approve.
  try {
    await acts.checkClusterHealth({ cluster: input.cluster, maxUnavailable: input.maxUnavailable });
  } catch (err) {
    await acts.recordAudit({ audit, cluster: input.cluster, node: '', step: 'refused', action: 'none', outcome: 'refused', error: describe(err) });
    throw err;
  }
  let approval: { approvedBy: string; comment: string } | undefined = input.autoApprove ? { approvedBy: `${input.requestedBy} (--auto-approve)`, comment: '' } : undefined;
  setHandler(
    approveUpdate,
    (a) => {
      const ok = Approval.parse(a);
      approval = { approvedBy: ok.approver, comment: ok.comment ?? '' };
      return { approvedBy: ok.approver };
    },
    {
      validator: (a) => {
        const r = Approval.safeParse(a);
        if (!r.success) throw new Error(`malformed approval: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
        if (status.phase !== Phase.AwaitingApproval || approval) throw new Error(`the run is not waiting for approval (phase ${status.phase})`);
        if (r.data.planId !== plan.id) throw new Error(`stale approval: it names plan ${r.data.planId}, the run's plan is ${plan.id}`);
      },
    },
  );
  if (!approval) {
    status.phase = Phase.AwaitingApproval;
    if (!(await condition(() => approval !== undefined, input.approvalTimeoutMs))) {
      throw ApplicationFailure.create({ type: Failure.ApprovalTimedOut, message: `nobody approved plan ${plan.id} within ${Math.round(input.approvalTimeoutMs / 1000)} s; nothing was changed`, nonRetryable: true });
    }
  }
  result.approvedBy = approval!.approvedBy;
  await acts.recordAudit({ audit, cluster: input.cluster, node: '', step: 'approval', action: `approve plan ${plan.id}`, after: { approvedBy: approval!.approvedBy, comment: approval!.comment }, outcome: 'approved' });

  // 5. Fix, one node at a time.
  status.phase = Phase.Fixing;
  const runTag = runId.replace(/[^A-Za-z0-9-]/g, '-');
  for (const planned of plan.nodes) {
    result.nodes.push(await fixNode(planned, runTag));
  }

  // 6. Verify the whole cluster.
  status.phase = Phase.Verifying;
  const after = await mapLimit(everyNode, 8, (node) => acts.readIdentity({ cluster: input.cluster, node }));
  const finalIds = identities.map((n, i) => ({ ...n, machineId: after[i].machineId, dbusMachineId: after[i].dbusMachineId, weaveMac: after[i].weaveMac }));
  result.remaining = remainingCollisions(finalIds);
  const fixedNames = new Set(plan.nodes.map((n) => n.name));
  const stillBad = result.remaining.filter((line) => [...fixedNames].some((f) => line.split(' share ')[0].split(', ').includes(f)));
  if (stillBad.length) throw ApplicationFailure.create({ type: Failure.VerificationFailed, message: `after the fix: ${stillBad.join('; ')}`, nonRetryable: true });
  status.phase = Phase.Done;
  return { ...result, outcome: 'fixed' };

  async function fixNode(planned: MachineIdPlan['nodes'][number], tag: string): Promise<FixedNode> {
    const node = planned.name;
    const step = (phase: string, detail?: string) => (status.nodes[node] = { phase, ...(detail ? { detail } : {}) });
    const undo: Array<{ what: string; run: () => Promise<string> }> = [];
    const resumed: string[] = [];
    try {
      // Checked before anything is touched (a node grouped only by its weave MAC has no id to replace).
      if (!planned.machineId) throw ApplicationFailure.create({ type: Failure.NodeStateUnexpected, message: `${node} had no readable machine-id when planned`, nonRetryable: true });
      step(NodeStep.CheckingBudget);
      await acts.checkBudget({ cluster: input.cluster, node, maxUnavailable: input.maxUnavailable });
      step(NodeStep.Cordoning);
      const { wasCordoned } = await acts.cordon({ cluster: input.cluster, node, runId, audit });
      if (!wasCordoned) {
        undo.push({ what: `uncordon ${node}`, run: async () => (await acts.uncordon({ cluster: input.cluster, node, runId, onlyIfReady: true, audit, step: 'undo-uncordon' })).reason });
      }
      // Again, now that this node is cordoned: two runs that passed the first check at the
      // same moment on different nodes each see the other's cordon here, and stop.
      step(NodeStep.CheckingBudget);
      await acts.checkBudget({ cluster: input.cluster, node, maxUnavailable: input.maxUnavailable });
      step(NodeStep.Draining);
      await longActs.drain({ cluster: input.cluster, node, timeoutMs: input.drainTimeoutMs, deleteEmptyDirData: input.deleteEmptyDirData, force: input.force, audit });
      const before = await acts.readIdentity({ cluster: input.cluster, node });
      // From here the node's id may be half replaced or the node down: its undo uncordons only
      // a node that is back on a new boot (with the new id in effect).
      const uncordonUndo = undo.find((u) => u.what === `uncordon ${node}`);
      if (uncordonUndo) uncordonUndo.run = async () => (await acts.uncordon({ cluster: input.cluster, node, runId, onlyIfReady: true, rebootedFrom: before.bootId, audit, step: 'undo-uncordon' })).reason;
      step(NodeStep.RegeneratingId);
      const regen = await acts.regenerateMachineId({ cluster: input.cluster, node, runTag: tag, oldId: planned.machineId, audit });
      if (regen.already) resumed.push('machine-id');
      // No undo: restoring the cloned id would bring the collision back. The old ids stay in
      // /var/lib/kubemend/machine-id on the node.
      step(NodeStep.Rebooting);
      const rebooted = await acts.reboot({ cluster: input.cluster, node, bootIdBefore: before.bootId, audit });
      if (rebooted.alreadyRebooted) resumed.push('reboot');
      step(NodeStep.WaitingForNode);
      const back = await longActs.waitForReturn({ cluster: input.cluster, node, bootIdBefore: before.bootId, timeoutMs: input.rebootTimeoutMs });
      step(NodeStep.Verifying);
      const others = await mapLimit(
        everyNode.filter((n) => n !== node),
        8,
        async (n) => ({ name: n, id: await acts.readIdentity({ cluster: input.cluster, node: n }) }),
      );
      const mine = await acts.readIdentity({ cluster: input.cluster, node });
      const clash = [
        ...others.filter((o) => mine.machineId && (o.id.machineId === mine.machineId || o.id.dbusMachineId === mine.machineId)).map((o) => `machine-id shared with ${o.name}`),
        ...others.filter((o) => mine.weaveMac && o.id.weaveMac === mine.weaveMac).map((o) => `weave MAC shared with ${o.name}`),
        ...(mine.machineId !== regen.newId ? [`machine-id is ${mine.machineId}, expected ${regen.newId}`] : []),
        ...(mine.dbusMachineId !== mine.machineId ? ['/var/lib/dbus/machine-id differs from /etc/machine-id'] : []),
        ...(mine.collisions ? [`weave still reports ${mine.collisions} peer-name collision(s)`] : []),
      ];
      if (clash.length) throw ApplicationFailure.create({ type: Failure.VerificationFailed, message: `${node} after its fix: ${clash.join('; ')}`, nonRetryable: true });
      let uncordoned = false;
      if (!wasCordoned) {
        step(NodeStep.Uncordoning);
        uncordoned = (await acts.uncordon({ cluster: input.cluster, node, runId, onlyIfReady: false, audit, step: 'uncordon' })).uncordoned;
        undo.pop();
      }
      await acts.recordAudit({
        audit,
        cluster: input.cluster,
        node,
        step: `${node}/fixed`,
        action: 'verified: machine-id and weave MAC unique cluster-wide, no weave collision',
        before: { machineId: planned.machineId, weaveMac: planned.weaveMac, bootId: before.bootId },
        after: { machineId: regen.newId, weaveMac: mine.weaveMac, bootId: back.bootId },
        outcome: 'applied',
        annotate: true,
      });
      step(NodeStep.Fixed, `${planned.machineId} -> ${regen.newId}`);
      return { name: node, oldMachineId: planned.machineId, newMachineId: regen.newId, oldWeaveMac: planned.weaveMac, newWeaveMac: mine.weaveMac, bootIdBefore: before.bootId, bootIdAfter: back.bootId, uncordoned, resumed };
    } catch (err) {
      const reason = describe(err);
      step(NodeStep.Failed, reason);
      status.phase = Phase.Compensating;
      const undone: string[] = [];
      // Undos run even when the run is being cancelled, newest first; their errors are
      // recorded, and the original error is what the run fails with.
      await CancellationScope.nonCancellable(async () => {
        for (const u of undo.reverse()) {
          try {
            undone.push(`${u.what}: ${await u.run()}`);
          } catch (e) {
            undone.push(`${u.what}: FAILED (${describe(e)})`);
          }
        }
      });
      status.compensations = undone;
      step(NodeStep.Failed, `${reason}${undone.length ? ` | undo: ${undone.join('; ')}` : ''}`);
      const refused = /^(BudgetExhausted|NodeExcluded|LockHeld):/.test(reason);
      await CancellationScope.nonCancellable(async () => {
        try {
          await acts.recordAudit({ audit, cluster: input.cluster, node, step: `${node}/failed`, action: 'none', after: { undo: undone }, outcome: refused ? 'refused' : 'failed', error: reason, annotate: !refused, event: { reason: refused ? AuditReason.Refused : AuditReason.Compensated, message: `${reason}${undone.length ? `; undo: ${undone.join('; ')}` : ''}`, warning: true } });
        } catch (e) {
          status.compensations = [...undone, `audit record of the failure: FAILED (${describe(e)})`];
        }
      });
      throw err;
    }
  }
}

function describe(err: unknown): string {
  if (isCancellation(err)) return 'cancelled';
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof ApplicationFailure) return `${cause.type ?? 'Error'}: ${cause.message}`;
  if (err instanceof ApplicationFailure) return `${err.type ?? 'Error'}: ${err.message}`;
  return (err as Error).message ?? String(err);
}
