/** Activity options every workflow shares: one retry policy, derived from the run's input. */
import type { ActivityOptions } from '@temporalio/workflow';
import { ActivityCancellationType } from '@temporalio/workflow';
import { NON_RETRYABLE_FAILURES } from '../lib/failures';

export interface TimeoutInput {
  activityTimeoutMs: number;
  heartbeatTimeoutMs: number;
  retry: { initialIntervalMs: number; maximumIntervalMs: number; maximumAttempts: number };
}

/**
 * A cancelled run closes only once its activities have stopped (no SSH work outlives it);
 * typed failures that retrying cannot fix are not retried (lib/failures.ts).
 */
export function activityOptions(input: TimeoutInput, startToCloseTimeoutMs = input.activityTimeoutMs): ActivityOptions {
  return {
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    startToCloseTimeout: startToCloseTimeoutMs,
    heartbeatTimeout: input.heartbeatTimeoutMs,
    retry: {
      initialInterval: input.retry.initialIntervalMs,
      maximumInterval: input.retry.maximumIntervalMs,
      maximumAttempts: input.retry.maximumAttempts,
      backoffCoefficient: 2,
      nonRetryableErrorTypes: NON_RETRYABLE_FAILURES,
    },
  };
}
