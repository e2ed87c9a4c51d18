/**
 * The audit side of every remediation: one record per step in the trail (activities/
 * audit-store.ts), and the same story on the Node: an Event and, at the end of a node's
 * fix, the kubemend.io/last-remediation annotation.
 */
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { Context } from '@temporalio/activity';
import { ApiException, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { Outcome } from '../lib/audit';
import type { AuditContext } from '../lib/remediation-input';
import type { AuditPort } from './audit-store';
import { whileHeartbeating } from './heartbeat';
import type { KubeCluster } from './kube';

/** On the Node: the last kubemend run that changed it, its outcome and when. */
export const LAST_RUN_ANNOTATION = 'kubemend.io/last-remediation';

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

export interface AuditStep {
  cluster: string;
  node: string;
  /** Unique within the run: the record's idempotency key is the run's ID and this. */
  step: string;
  action: string;
  before?: unknown;
  after?: unknown;
  outcome: Outcome;
  error?: string;
  /** A Kubernetes Event on the Node with this reason (an AuditReason) and message. */
  event?: { reason: string; message: string; warning?: boolean };
  /** Sets kubemend.io/last-remediation on the Node. */
  annotate?: boolean;
}

export type Recorder = (ctx: AuditContext, s: AuditStep) => Promise<void>;

/**
 * One audit record per step (a retry finds its key and writes nothing), and the same
 * story on the Node. The API side is best effort: the record is the trail; a failed Event
 * is noted in the record's error.
 */
export function createRecorder(deps: { audit: AuditPort; kubeIfAny(cluster: string): KubeCluster | undefined }): Recorder {
  return async function record(ctx, s) {
    const info = Context.current().info;
    const workflowId = info.workflowExecution?.workflowId ?? 'unknown';
    const temporalRunId = info.workflowExecution?.runId ?? 'unknown';
    // Activity retries share the run ID, so a retry writes nothing; a reset run's steps are new.
    const key = `${workflowId}/${temporalRunId}/${s.step}`;
    const problems: string[] = [];
    const k = s.event || s.annotate ? deps.kubeIfAny(s.cluster) : undefined;
    if (k && s.event) {
      const now = new Date();
      const name = `${s.node}.kubemend-${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;
      try {
        await k.core.createNamespacedEvent({
          namespace: 'default',
          body: {
            metadata: { name, namespace: 'default' },
            involvedObject: { apiVersion: 'v1', kind: 'Node', name: s.node, uid: s.node },
            reason: s.event.reason,
            message: `${s.event.message} (run ${workflowId}, by ${ctx.actor}${ctx.reason ? `: ${ctx.reason}` : ''})`.slice(0, 1000),
            type: s.event.warning ? 'Warning' : 'Normal',
            source: { component: 'kubemend' },
            reportingComponent: 'kubemend',
            reportingInstance: hostname(),
            firstTimestamp: now,
            lastTimestamp: now,
            count: 1,
          },
        });
      } catch (err) {
        if (!(err instanceof ApiException && err.code === 409)) problems.push(`event not created: ${(err as Error).message.slice(0, 200)}`);
      }
    }
    if (k && s.annotate) {
      try {
        await k.core.patchNode({ name: s.node, body: { metadata: { annotations: { [LAST_RUN_ANNOTATION]: `${ctx.remediation} ${workflowId} ${s.outcome} ${new Date().toISOString()}` } } } }, mergePatch);
      } catch (err) {
        problems.push(`annotation not set: ${(err as Error).message.slice(0, 200)}`);
      }
    }
    await deps.audit.append({
      idempotencyKey: key,
      actor: ctx.actor,
      reason: ctx.reason,
      cluster: s.cluster,
      node: s.node,
      remediation: ctx.remediation,
      workflowId,
      runId: temporalRunId,
      step: s.step,
      action: s.action,
      before: s.before ?? null,
      after: s.after ?? null,
      outcome: s.outcome,
      error: [s.error ?? '', ...problems].filter(Boolean).join('; '),
    });
  };
}

export function createAuditActivities(record: Recorder) {
  return {
    /**
     * A record the workflow decides on: the plan, a dry run, a refusal, an approval, a
     * failure and what its undo did, the end of a node's fix (which also sets the Node's
     * last-run annotation). Read-only otherwise.
     */
    async recordAudit(input: { audit: AuditContext } & AuditStep): Promise<void> {
      const { audit, ...step } = input;
      await whileHeartbeating(() => record(audit, step));
    },
  };
}
