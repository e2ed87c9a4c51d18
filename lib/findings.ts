/**
 * What a detector reports: one finding per fault and node. Every remediation's `detect` and
 * `kubemend diagnose` speak this one shape; diagnose's JSON carries it as it is, so its
 * fields are a stable contract (only ever added, never renamed).
 */

/** The seeds kubemend knows (../shared/seeds): the incident write-ups its fixes come from. */
export type Seed = '000' | '001' | '002' | '003' | '004';

export interface Finding {
  seed: Seed;
  /** The remediation that fixes it (`kubemend run <remediation>`), e.g. "machine-id". */
  remediation: string;
  /** The node it is on; '' for a cluster-wide finding. */
  node: string;
  /**
   * The failure in the words an SRE would search for, as the real component prints them,
   * e.g. "local and remote peer names collision".
   */
  signature: string;
  /** What was seen, one fact a line (file contents, addresses, names), never a guess. */
  evidence: string[];
  /** Whether this build has an automatic fix; false prints "no automatic fix yet". */
  fixable: boolean;
  /**
   * The nodes the fix must be run on together, where that is more than this one (seed 000:
   * the whole group sharing an id, so the plan can keep one and fix the others).
   */
  fixNodes?: string[];
}

/** The exact command that fixes a finding, or the words saying there is none yet. */
export function fixCommand(f: Finding, cluster: string): string {
  if (!f.fixable) return `no automatic fix yet (kubemend run ${f.remediation} is not built)`;
  const nodes = f.fixNodes ?? (f.node ? [f.node] : []);
  return `kubemend run ${f.remediation} --cluster ${cluster}${nodes.map((n) => ` --node ${n}`).join('')}`;
}
