/** What `kubemend status` shows: the run's phase and each node's phase, served by a workflow query. */
import type { RunbookPlan } from './runbook';

export interface NodeStatus {
  phase: string;
  detail?: string;
}

export interface RunStatus {
  remediation: string;
  cluster: string;
  phase: string;
  nodes: Record<string, NodeStatus>;
  /** The plan a remediation waits for approval of (its id is what `kubemend approve` names). */
  plan?: RunbookPlan;
  /** The step a remediation's change to the whole cluster is at (after the nodes), if it has one. */
  clusterStep?: NodeStatus;
  /** What the undo steps did after a failure or cancel. */
  compensations?: string[];
}

export const STATUS_QUERY = 'status';
