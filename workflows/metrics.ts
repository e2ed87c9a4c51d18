/**
 * kubemend's own metrics, emitted from workflow code through the Temporal SDK's workflow
 * metric meter. The worker's runtime exports them on its Prometheus endpoint
 * (`worker.metrics.address` in the config; worker/worker.ts), next to the SDK's own
 * `temporal_*` metrics. The SDK adds the tags namespace, taskQueue and workflowType.
 *
 * Deterministic: a metric call adds no command to the history, and the SDK drops it while a
 * workflow replays, so a run's metrics are emitted once per worker that executes its new
 * events (a worker that takes a run over after a crash emits what happens from then on).
 * Durations are workflow time (the start of the run to the workflow task that ends it), in
 * seconds. Names are exactly these: the runtime's prefix (`temporal_`) is for the SDK's own
 * metrics, not for custom ones.
 */
import { isCancellation, metricMeter, workflowInfo } from '@temporalio/workflow';
import type { NetworkSummary } from '../lib/ipam-gc';
import { Metric, type RunOutcome } from '../lib/metrics';
import { isRefusal } from '../lib/runbook';

export { resultOutcome, type RunOutcome } from '../lib/metrics';

/**
 * A run that ended with an error: cancelled, refused by a safety rule (lib/runbook.ts
 * isRefusal, as its exit code 3), or failed. `reason` is the error as the runbook describes it ("Type: message").
 */
export function failureOutcome(err: unknown, reason: string): RunOutcome {
  if (isCancellation(err)) return 'cancelled';
  return isRefusal(reason) ? 'refused' : 'failed';
}

// Created at each use: a workflow's meter works only inside a workflow's context, not when the
// bundle loads; a metric object is a plain description, the worker keeps the real ones.
const runs = () => metricMeter.createCounter(Metric.Runs, undefined, 'kubemend runs that ended, by remediation, cluster and outcome');
const runDuration = () => metricMeter.createHistogram(Metric.RunDuration, 'float', 's', 'kubemend runs from start to end (workflow time), by remediation, cluster and outcome');
const released = () => metricMeter.createCounter(Metric.IpamReleased, undefined, 'ipam-gc: leaked host-local addresses moved into the quarantine, by cluster, node and network');
const gauge = (name: string, help: string) => metricMeter.createGauge(name, 'int', undefined, help);
const candidates = () => gauge(Metric.IpamCandidates, 'ipam-gc: candidates in the last listing (no live sandbox, older than the grace period), by cluster, node and network');
const leaked = () => gauge(Metric.IpamLeaked, 'ipam-gc: files of no live sandbox in the last listing (candidates and younger ones), by cluster, node and network');
const capacity = () => gauge(Metric.IpamCapacity, "ipam-gc: addresses host-local may give out in the network's range, as of the last listing");
const inUse = () => gauge(Metric.IpamInUse, 'ipam-gc: addresses reserved (one file each) in the last listing');

/** One run ended: counts it and records its duration since the run started. */
export function recordRun(remediation: string, cluster: string, outcome: RunOutcome): void {
  const tags = { remediation, cluster, outcome };
  runs().add(1, tags);
  runDuration().record(Math.max(0, (Date.now() - workflowInfo().runStartTime.getTime()) / 1000), tags);
}

/** One node's listing: per network, its candidates, leaked files, capacity (when known) and addresses in use. */
export function recordIpamListing(cluster: string, node: string, networks: readonly NetworkSummary[]): void {
  for (const s of networks) {
    const tags = { cluster, node, network: s.network };
    candidates().set(s.candidates, tags);
    leaked().set(s.leaked, tags);
    inUse().set(s.inUse, tags);
    if (s.capacity !== null) capacity().set(s.capacity, tags);
  }
}

/** Addresses released on one node's network (moved into the quarantine by this run, including those an earlier attempt of the same step moved). */
export function recordIpamReleased(cluster: string, node: string, network: string, count: number): void {
  if (count > 0) released().add(count, { cluster, node, network });
}
