/**
 * diagnose: read-only and lock-free. Reads every node of the cluster once (one SSH exec
 * each) and the API once, runs every seed's detector over those facts (lib/detect, pure),
 * and returns the findings for the nodes asked about. A node that cannot be read gets an
 * `error`; the others are still diagnosed. An API that cannot be read is reported, and the
 * detectors work from the SSH facts alone.
 */
import { ActivityFailure, ApplicationFailure, defineQuery, isCancellation, proxyActivities, setHandler } from '@temporalio/workflow';
import type { Activities } from '../activities';
import { mapLimit } from '../lib/async';
import { detectAll } from '../lib/detect/index';
import { DiagnoseInput, type DiagnoseReport } from '../lib/diagnose';
import type { DiagnoseApiFacts } from '../lib/diagnose-api';
import type { DiagnoseNodeFacts } from '../lib/diagnose-script';
import { type RunStatus, STATUS_QUERY } from '../lib/run-status';
import { activityOptions } from './activity-options';
import { parseInput } from './runbook';

export const diagnoseStatusQuery = defineQuery<RunStatus>(STATUS_QUERY);

export const DiagnosePhase = { Resolving: 'Resolving', ReadingNodes: 'ReadingNodes', ReadingApi: 'ReadingApi', Detecting: 'Detecting', Done: 'Done' } as const;
const NodePhase = { Pending: 'Pending', Reading: 'Reading', Read: 'Read', Failed: 'Failed' } as const;

export async function diagnose(rawInput: DiagnoseInput): Promise<DiagnoseReport> {
  const input = parseInput(DiagnoseInput, rawInput, 'diagnose');
  const status: RunStatus = { remediation: 'diagnose', cluster: input.cluster, phase: DiagnosePhase.Resolving, nodes: {} };
  setHandler(diagnoseStatusQuery, () => status);
  const acts = proxyActivities<Activities>(activityOptions(input));

  const { nodes: selected } = await acts.resolveTargets({ cluster: input.cluster, nodes: input.nodes });
  const { nodes: all } = await acts.resolveTargets({ cluster: input.cluster, nodes: [] });
  for (const n of all) status.nodes[n] = { phase: NodePhase.Pending };

  status.phase = DiagnosePhase.ReadingNodes;
  const read = await mapLimit(all, input.concurrency, async (node): Promise<{ node: string; facts?: DiagnoseNodeFacts; error?: string }> => {
    status.nodes[node] = { phase: NodePhase.Reading };
    try {
      const facts = await acts.gatherNodeFacts({ cluster: input.cluster, node });
      status.nodes[node] = { phase: NodePhase.Read };
      return { node, facts };
    } catch (err) {
      const error = describeFailure(err);
      status.nodes[node] = { phase: NodePhase.Failed, detail: error };
      return { node, error };
    }
  });

  status.phase = DiagnosePhase.ReadingApi;
  let api: string;
  let apiFacts: DiagnoseApiFacts | null = null;
  try {
    const r = await acts.readClusterFacts({ cluster: input.cluster });
    api = r.configured ? 'read' : 'not configured';
    apiFacts = r.facts;
  } catch (err) {
    api = describeFailure(err);
  }

  status.phase = DiagnosePhase.Detecting;
  const findings = detectAll({ cluster: input.cluster, configured: all, nodes: read.flatMap((r) => (r.facts ? [r.facts] : [])), api: apiFacts });
  const wanted = new Set(selected);
  status.phase = DiagnosePhase.Done;
  return {
    cluster: input.cluster,
    api,
    nodes: read.filter((r) => wanted.has(r.node)).map((r) => ({ name: r.node, error: r.error ?? null, problems: r.facts?.problems ?? [] })),
    findings: findings.filter((f) => f.node === '' || wanted.has(f.node)),
  };
}

/** "SshTransient: ..." from an activity failure; a cancellation and anything else propagate. */
function describeFailure(err: unknown): string {
  if (isCancellation(err)) throw err;
  if (err instanceof ActivityFailure && err.cause instanceof ApplicationFailure) return `${err.cause.type ?? 'Error'}: ${err.cause.message}`;
  if (err instanceof ActivityFailure) return `${err.cause?.name ?? 'Error'}: ${err.cause?.message ?? err.message}`;
  throw err;
}
