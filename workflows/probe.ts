/**
 * probe: read-only. Collects machine ids, boot id, links and the default route from every
 * target node over SSH and returns a typed report. A node that cannot be probed gets an
 * `error` in the report; the others are still probed.
 */
import { ActivityCancellationType, ActivityFailure, ApplicationFailure, defineQuery, isCancellation, proxyActivities, setHandler } from '@temporalio/workflow';
import type { Activities } from '../activities';
import { mapLimit } from '../lib/async';
import { NON_RETRYABLE_FAILURES } from '../lib/failures';
import { failedNode, ProbeInput, type ProbeReport } from '../lib/probe';
import { type RunStatus, STATUS_QUERY } from '../lib/run-status';

export const statusQuery = defineQuery<RunStatus>(STATUS_QUERY);

export const ProbePhase = {
  Resolving: 'Resolving',
  Probing: 'Probing',
  Done: 'Done',
} as const;

export const NodePhase = { Pending: 'Pending', Probing: 'Probing', Probed: 'Probed', Failed: 'Failed' } as const;

export async function probe(rawInput: ProbeInput): Promise<ProbeReport> {
  const parsed = ProbeInput.safeParse(rawInput);
  if (!parsed.success) {
    throw ApplicationFailure.create({ type: 'BadInput', message: `invalid probe input: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, nonRetryable: true });
  }
  const input = parsed.data;
  const status: RunStatus = { remediation: 'probe', cluster: input.cluster, phase: ProbePhase.Resolving, nodes: {} };
  setHandler(statusQuery, () => status);

  const acts = proxyActivities<Activities>({
    // A cancelled run closes only once its activities have stopped: no SSH work outlives it.
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    startToCloseTimeout: input.activityTimeoutMs,
    heartbeatTimeout: input.heartbeatTimeoutMs,
    retry: {
      initialInterval: input.retry.initialIntervalMs,
      maximumInterval: input.retry.maximumIntervalMs,
      maximumAttempts: input.retry.maximumAttempts,
      backoffCoefficient: 2,
      nonRetryableErrorTypes: NON_RETRYABLE_FAILURES,
    },
  });

  const { nodes } = await acts.resolveTargets({ cluster: input.cluster, nodes: input.nodes });
  for (const n of nodes) status.nodes[n] = { phase: NodePhase.Pending };
  status.phase = ProbePhase.Probing;

  const reports = await mapLimit(nodes, input.concurrency, async (node) => {
    status.nodes[node] = { phase: NodePhase.Probing };
    try {
      const facts = await acts.probeNode({ cluster: input.cluster, node });
      status.nodes[node] = { phase: NodePhase.Probed };
      return { ...facts, error: null };
    } catch (err) {
      const reason = describeFailure(err);
      status.nodes[node] = { phase: NodePhase.Failed, detail: reason };
      return failedNode(node, reason);
    }
  });

  status.phase = ProbePhase.Done;
  return { cluster: input.cluster, nodes: reports };
}

/**
 * "HostKeyMismatch: ..." from an activity failure. A cancellation of the run propagates (the
 * run ends CANCELLED, not COMPLETED with failed nodes); other errors propagate (they are bugs).
 */
function describeFailure(err: unknown): string {
  if (isCancellation(err)) throw err;
  if (err instanceof ActivityFailure && err.cause instanceof ApplicationFailure) {
    return `${err.cause.type ?? 'Error'}: ${err.cause.message}`;
  }
  if (err instanceof ActivityFailure) return `${err.cause?.name ?? 'Error'}: ${err.cause?.message ?? err.message}`;
  throw err;
}
