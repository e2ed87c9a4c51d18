/**
 * The lock on one node: a workflow that lives exactly as long as the run that started it.
 * Its ID is the lock (lib/lock-id.ts): a second start of a running ID fails, and the server
 * ends the child when its parent run closes, however it closes.
 */
import { ApplicationFailure, condition, ParentClosePolicy, startChild } from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { lockId } from '../lib/lock-id';
import { Failure } from '../lib/failures';

export async function nodeLock(_holder: { runId: string; cluster: string; node: string }): Promise<void> {
  await condition(() => false);
}

/**
 * Takes the lock of every node, all at once (a held lock fails its start at once, so two runs
 * never wait on each other). On a held lock `refused` is called (to record the refusal) and
 * the run fails with LockHeld; the locks it did take go with the run when it closes.
 */
export async function lockNodes(cluster: string, runId: string, nodes: readonly string[], refused: (node: string, message: string) => Promise<void>): Promise<void> {
  const sorted = [...nodes].sort();
  const results = await Promise.allSettled(
    sorted.map((node) =>
      startChild(nodeLock, {
        workflowId: lockId(cluster, node),
        args: [{ runId, cluster, node }],
        parentClosePolicy: ParentClosePolicy.TERMINATE,
      }),
    ),
  );
  const held = sorted.filter((_, i) => results[i].status === 'rejected' && (results[i] as PromiseRejectedResult).reason instanceof WorkflowExecutionAlreadyStartedError);
  if (held.length) {
    const node = held[0];
    const message = `node ${node} is being remediated by another run (its lock ${lockId(cluster, node)} is held)`;
    await refused(node, message);
    throw ApplicationFailure.create({ type: Failure.LockHeld, message, nonRetryable: true });
  }
  const other = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (other) throw other.reason;
}
