/**
 * The read-only `probe` remediation: input schema and the report, whose JSON shape is a
 * stable contract for scripts (fields are only ever added, never renamed).
 */
import { z } from 'zod';
import type { IpLink, IpRoute } from './node-facts';
import type { NodeObjectFacts } from './node-object';
import { clusterName, freeText, nodeName } from './patterns';

/** Retry and concurrency knobs are inputs so tests against a real server run in seconds. */
export const RetryInput = z
  .object({
    initialIntervalMs: z.number().int().min(10).max(600_000).default(1000),
    maximumIntervalMs: z.number().int().min(10).max(3_600_000).default(30_000),
    maximumAttempts: z.number().int().min(1).max(100).default(5),
  })
  .strict();

export const ProbeInput = z
  .object({
    cluster: clusterName,
    nodes: z.array(nodeName).max(1000).default([]),
    requestedBy: freeText(200),
    reason: freeText(2000).optional(),
    concurrency: z.number().int().min(1).max(64).default(8),
    activityTimeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000),
    /** The activity heartbeats while it waits on SSH; a run's cancellation reaches it through these. */
    heartbeatTimeoutMs: z.number().int().min(1000).max(600_000).default(30_000),
    retry: RetryInput.default({ initialIntervalMs: 1000, maximumIntervalMs: 30_000, maximumAttempts: 5 }),
  })
  .strict();
export type ProbeInput = z.input<typeof ProbeInput>;

export interface ProbeNodeFacts {
  name: string;
  machineId: string | null;
  dbusMachineId: string | null;
  bootId: string | null;
  links: IpLink[];
  defaultRoute: IpRoute | null;
  /** Odd node state worth a look that did not stop the probe (e.g. an empty machine-id). */
  problems: string[];
}

export interface ProbeNodeReport extends ProbeNodeFacts {
  /** Why this node could not be probed ("HostKeyMismatch: ..."), or null. */
  error: string | null;
  /** The node's Node object as the API shows it; null if there is none or the API was not read. */
  kubernetes?: NodeObjectFacts | null;
}

export interface ProbeReport {
  cluster: string;
  /**
   * Whether the Node objects were read: "read", "not configured" (the cluster has no
   * kubeconfig in the worker's config), or the error that stopped it. Absent in runs made
   * before kubemend read the API.
   */
  api?: string;
  nodes: ProbeNodeReport[];
}

export function failedNode(name: string, error: string): ProbeNodeReport {
  return { name, machineId: null, dbusMachineId: null, bootId: null, links: [], defaultRoute: null, problems: [], error };
}
