/** What `kubemend status` shows: the run's phase and each node's phase, served by a workflow query. */
export interface NodeStatus {
  phase: string;
  detail?: string;
}

export interface RunStatus {
  remediation: string;
  cluster: string;
  phase: string;
  nodes: Record<string, NodeStatus>;
}

export const STATUS_QUERY = 'status';
