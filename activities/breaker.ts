/**
 * The circuit breaker's activities. Its state lives in the audit trail only ('run/failed',
 * 'breaker/tripped' and 'breaker/reset' records, on either store), and the decision is the
 * pure `breakerState` in lib/breaker.ts: the workflow's check, the CLI's early refusal and
 * `kubemend breaker status` all read the same records the same way.
 */
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { BREAKER_STEP, type BreakerPolicy, type BreakerState, breakerMessage, breakerState, countsAsFailure, trippedBy } from '../lib/breaker';
import { type Config, findCluster } from '../lib/config';
import { formatDuration } from '../lib/duration';
import { Failure } from '../lib/failures';
import type { AuditPort } from './audit-store';

export interface BreakerDeps {
  config: Config;
  audit: AuditPort;
}

/** The records the decision needs: a cluster's failures and resets (a trail keeps few of them). */
const BREAKER_READ_LIMIT = 10_000;

export function breakerPolicy(cfg: Config): BreakerPolicy {
  return { maxFailures: cfg.policy.maxFailures, failureWindowMs: cfg.policy.failureWindow };
}

/** A cluster's breaker, read from the trail. */
export async function readBreaker(audit: Pick<AuditPort, 'list'>, cluster: string, policy: BreakerPolicy, now = new Date()): Promise<BreakerState> {
  const records = await audit.list({ cluster, steps: [BREAKER_STEP.failed, BREAKER_STEP.reset], limit: BREAKER_READ_LIMIT });
  return breakerState(records, policy, now);
}

export interface RecordRunFailureInput {
  cluster: string;
  remediation: string;
  error: string;
  audit: { actor: string; reason: string; remediation: string };
  /**
   * The ApplicationFailure type that ended the run, or 'Cancelled'. A refusal (LockHeld,
   * BudgetExhausted, NodeExcluded, DrainRefused, BreakerOpen) or a cancellation does not count:
   * nothing is recorded and `counted` is false.
   */
  failureType?: string;
}

export function createBreakerActivities(deps: BreakerDeps) {
  const policy = breakerPolicy(deps.config);

  function knownCluster(cluster: string): void {
    if (!findCluster(deps.config, cluster)) {
      throw ApplicationFailure.create({ type: Failure.BadInput, message: `the worker's config has no cluster ${JSON.stringify(cluster)}`, nonRetryable: true });
    }
  }

  function runOf(): { workflowId: string; runId: string } {
    const info = Context.current().info;
    return { workflowId: info.workflowExecution?.workflowId ?? 'unknown', runId: info.workflowExecution?.runId ?? 'unknown' };
  }

  return {
    /**
     * Refuses a run (non-retryable BreakerOpen, a refusal: exit 3) while the cluster's breaker
     * is open. A trail that cannot be read fails the activity (retried), so the run waits
     * rather than starts: the check fails closed.
     */
    async checkBreaker(input: { cluster: string }): Promise<void> {
      knownCluster(input.cluster);
      const s = await readBreaker(deps.audit, input.cluster, policy);
      if (s.open) {
        throw ApplicationFailure.create({ type: Failure.BreakerOpen, message: breakerMessage(input.cluster, s), nonRetryable: true });
      }
    },

    /**
     * Records that this run failed ('run/failed', node '', once per workflow run however often
     * the activity is retried) and, when this failure trips the breaker, a 'breaker/tripped'
     * record. Returns the failures within the window ending now and whether this one tripped it.
     */
    async recordRunFailure(input: RecordRunFailureInput): Promise<{ failures: number; tripped: boolean; counted: boolean }> {
      knownCluster(input.cluster);
      if (!countsAsFailure(input.failureType)) {
        const s = await readBreaker(deps.audit, input.cluster, policy);
        return { failures: s.recentFailures.length, tripped: false, counted: false };
      }
      const { workflowId, runId } = runOf();
      const common = {
        actor: input.audit.actor,
        reason: input.audit.reason,
        cluster: input.cluster,
        node: '',
        remediation: input.remediation,
        workflowId,
        runId,
      };
      const { seq } = await deps.audit.append({
        ...common,
        idempotencyKey: `${workflowId}/${runId}/${BREAKER_STEP.failed}`,
        step: BREAKER_STEP.failed,
        action: `none: the run failed${input.failureType ? ` (${input.failureType})` : ''}`,
        before: null,
        after: null,
        outcome: 'failed',
        error: input.error.slice(0, 4000),
      });
      const now = new Date();
      const records = await deps.audit.list({ cluster: input.cluster, steps: [BREAKER_STEP.failed, BREAKER_STEP.reset], limit: BREAKER_READ_LIMIT });
      const state = breakerState(records, policy, now);
      const tripped = trippedBy(records, seq, policy, now);
      if (tripped) {
        await deps.audit.append({
          ...common,
          idempotencyKey: `${workflowId}/${runId}/${BREAKER_STEP.tripped}`,
          step: BREAKER_STEP.tripped,
          action: `breaker tripped: new runs on cluster ${input.cluster} are refused until \`kubemend breaker reset --cluster ${input.cluster}\``,
          before: { open: false },
          after: {
            open: true,
            failedRuns: state.trippedBy.map((f) => f.runId),
            maxFailures: policy.maxFailures,
            failureWindow: formatDuration(policy.failureWindowMs),
          },
          outcome: 'applied',
          error: '',
        });
      }
      return { failures: state.recentFailures.length, tripped, counted: true };
    },
  };
}
