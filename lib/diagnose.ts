/**
 * `kubemend diagnose`: input schema and report. The report's JSON is a stable contract for
 * scripts: fields are only ever added, never renamed.
 */
import { z } from 'zod';
import type { Finding } from './findings';
import { ProbeInput } from './probe';

/**
 * The same fields as the probe's: both are read-only reads of every node. `nodes` names the
 * nodes to report on (default: all); every node is read either way, because the cross-node
 * checks need them all.
 */
export const DiagnoseInput = ProbeInput;
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
