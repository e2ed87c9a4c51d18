/**
 * probe: read-only. Collects machine ids, boot id, links and the default route from every
 * target node over SSH, then the same nodes' Node objects from the Kubernetes API, and
 * returns a typed report with the two views side by side. A node that cannot be probed
 * gets an `error` in the report; the others are still probed. An API that cannot be read
 * is reported, not fatal.
 */
import { ActivityFailure, ApplicationFailure, defineQuery, isCancellation, patched, proxyActivities, setHandler } from '@temporalio/workflow';
import type { Activities } from '../activities';
import { mapLimit } from '../lib/async';
import { sharedIdentityGroups } from '../lib/machine-id';
import { crossCheck } from '../lib/node-object';
import { failedNode, ProbeInput, type ProbeNodeReport, type ProbeReport } from '../lib/probe';
import { type RunStatus, STATUS_QUERY } from '../lib/run-status';
import { activityOptions } from './activity-options';

export const statusQuery = defineQuery<RunStatus>(STATUS_QUERY);

export const ProbePhase = {
  Resolving: 'Resolving',
  Probing: 'Probing',
  ReadingApi: 'ReadingApi',
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

  const acts = proxyActivities<Activities>(activityOptions(input));

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

  // Seed 000 from SSH facts alone: nodes sharing a machine-id or a weave MAC.
  for (const g of sharedIdentityGroups(reports.filter((r) => !r.error).map((r) => ({ name: r.name, role: 'worker' as const, machineId: r.machineId, dbusMachineId: r.dbusMachineId, weaveMac: r.links.find((l) => l.ifname === 'weave')?.address ?? null })))) {
    for (const r of reports) {
      if (g.nodes.includes(r.name)) r.problems.push(`shares ${g.shared.join(' and ')} with ${g.nodes.filter((n) => n !== r.name).join(', ')} (seed 000, cloned machine-id: kubemend run machine-id fixes it)`);
    }
  }

  // Runs recorded before the probe read the API replay without this step.
  if (!patched('probe-reads-node-objects')) {
    status.phase = ProbePhase.Done;
    return { cluster: input.cluster, nodes: reports };
  }
  status.phase = ProbePhase.ReadingApi;
  let api: string;
  let withApi: ProbeNodeReport[] = reports;
  try {
    const objects = await acts.readNodeObjects({ cluster: input.cluster, nodes });
    api = objects.configured ? 'read' : 'not configured';
    if (objects.configured) {
      withApi = reports.map((r) => {
        const mine = objects.nodes[r.name] ?? null;
        const others = nodes.filter((n) => n !== r.name).map((n) => ({ name: n, api: objects.nodes[n] ?? null }));
        return { ...r, kubernetes: mine, problems: [...r.problems, ...crossCheck(r, mine, others)] };
      });
    }
  } catch (err) {
    api = describeFailure(err);
  }
  status.phase = ProbePhase.Done;
  return { cluster: input.cluster, api, nodes: withApi };
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
