/** The facts of the remediations whose detector is diagnose's own: every named node read over SSH, then the API. */
import { ApplicationFailure } from '@temporalio/workflow';
import { mapLimit } from '../lib/async';
import type { DiagnoseFacts } from '../lib/detect/facts';
import { Failure } from '../lib/failures';
import type { RunContext } from './runbook';

/** How many nodes are read at once. */
const READ_CONCURRENCY = 16;

/** Reads `nodes` and the cluster's API; a cluster without a kubeconfig fails with `needsApi`'s reason. */
export async function gatherDiagnoseFacts(run: Pick<RunContext<never>, 'acts' | 'cluster' | 'everyNode'>, nodes: readonly string[], remediation: string, needsApi: string): Promise<DiagnoseFacts> {
  const read = await mapLimit(nodes, READ_CONCURRENCY, (node) => run.acts.gatherNodeFacts({ cluster: run.cluster, node }));
  const api = await run.acts.readClusterFacts({ cluster: run.cluster });
  if (!api.configured) throw ApplicationFailure.create({ type: Failure.BadInput, message: `cluster ${run.cluster} has no kubeconfig in the worker's config: ${remediation} needs the API (${needsApi})`, nonRetryable: true });
  return { cluster: run.cluster, configured: run.everyNode, nodes: read, api: api.facts };
}
