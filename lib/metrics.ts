/**
 * kubemend's metric names, their buckets and the outcome tag of a run (pure: shared by the
 * workflows that emit them, the worker that exports them and the tests that scrape them).
 * Emission is in workflows/metrics.ts; the endpoint is the Temporal runtime's Prometheus
 * exporter, configured by `worker.metrics.address` (worker/worker.ts).
 */
import type { RunbookResult } from './runbook';

export const Metric = {
  /** Counter; tags remediation, cluster, outcome. */
  Runs: 'kubemend_runs',
  /** Histogram (s); tags remediation, cluster, outcome. */
  RunDuration: 'kubemend_run_duration_seconds',
  /** Counter; tags cluster, node, network. */
  IpamReleased: 'kubemend_ipam_released',
  /** Gauges of a node's last listing; tags cluster, node, network. */
  IpamCandidates: 'kubemend_ipam_candidates',
  IpamLeaked: 'kubemend_ipam_leaked',
  IpamCapacity: 'kubemend_ipam_pool_capacity',
  IpamInUse: 'kubemend_ipam_pool_in_use',
} as const;

/** Bucket bounds of the run duration (s): a dry run takes seconds, an approved run can wait up to its approval timeout (1 h by default). */
export const RUN_DURATION_BUCKETS_S = [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200];

/** How a run ended, as the `outcome` tag says it (a result outcome not listed here becomes its words joined by '_'). */
export type RunOutcome = 'fixed' | 'nothing_to_do' | 'dry_run' | 'failed' | 'refused' | 'cancelled' | (string & {});

const OF_RESULT: Record<string, RunOutcome> = {
  fixed: 'fixed',
  'nothing to do': 'nothing_to_do',
  'planned (dry run)': 'dry_run',
};

/** The outcome tag of a run that returned a result (RunbookResult's outcome). */
export function resultOutcome(outcome: RunbookResult<never, never>['outcome']): RunOutcome {
  return OF_RESULT[outcome] ?? outcome.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_|_$/g, '');
}
