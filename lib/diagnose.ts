/**
 * `kubemend diagnose`: input schema and report. The report's JSON is a stable contract for
 * scripts: fields are only ever added, never renamed.
 */
import { z } from 'zod';
import type { Finding } from './findings';
import { clusterName, freeText, nodeName } from './patterns';
import { RetryInput } from './probe';

export const DiagnoseInput = z
  .object({
    cluster: clusterName,
    /** Nodes to report on (default: all). Every node is read either way: cross-node checks need them all. */
    nodes: z.array(nodeName).max(1000).default([]),
    requestedBy: freeText(200),
    reason: freeText(2000).optional(),
    concurrency: z.number().int().min(1).max(64).default(8),
    activityTimeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000),
    heartbeatTimeoutMs: z.number().int().min(1000).max(600_000).default(30_000),
    retry: RetryInput.default({ initialIntervalMs: 1000, maximumIntervalMs: 30_000, maximumAttempts: 5 }),
  })
  .strict();
export type DiagnoseInput = z.input<typeof DiagnoseInput>;

export interface DiagnoseNodeReport {
  name: string;
  /** Why the node could not be read ("SshTransient: ..."), or null. */
  error: string | null;
  /** Parts of the node that could not be read (a section's error), which the detectors skipped. */
  problems: string[];
}

export interface DiagnoseReport {
  cluster: string;
  /** "read", "not configured" (no kubeconfig: SSH facts only), or the error that stopped the API read. */
  api: string;
  /** The reported nodes (--node, or all), in config order. */
  nodes: DiagnoseNodeReport[];
  /** By seed, then node. Empty when healthy. */
  findings: Finding[];
}
