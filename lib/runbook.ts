/**
 * The shared runbook's vocabulary (pure: no I/O, imported by workflows and the CLI): the
 * run's and each node's phases, the plan every remediation hands the runbook, and which
 * failures are refusals rather than failed fixes.
 */
import type { Finding } from './findings';
import { Failure } from './failures';
import { fnv1a } from './hash';

export const Phase = {
  Locking: 'Locking',
  Detecting: 'Detecting',
  Planned: 'Planned',
  AwaitingApproval: 'AwaitingApproval',
  Fixing: 'Fixing',
  Verifying: 'Verifying',
  Compensating: 'Compensating',
  Done: 'Done',
} as const;

/** A node's phases that the runbook itself sets; a remediation adds its own between Draining and Verifying. */
export const NodeStep = {
  Planned: 'Planned',
  CheckingBudget: 'CheckingBudget',
  Cordoning: 'Cordoning',
  Draining: 'Draining',
  Rebooting: 'Rebooting',
  WaitingForNode: 'WaitingForNode',
  Verifying: 'Verifying',
  Uncordoning: 'Uncordoning',
  Fixed: 'Fixed',
  Failed: 'Failed',
  NotAttempted: 'NotAttempted',
  Keeper: 'Keeper (left as is)',
  Skipped: 'Skipped',
} as const;

export interface PlannedNode {
  name: string;
  role: 'control-plane' | 'worker';
  /** The exact commands and API calls, in order, as the approver reads them. */
  steps: string[];
  /** The node has no Node object yet (it joins in this run): it can carry no exclusion label to check. */
  unregistered?: boolean;
}

/** What every remediation's `plan` returns; a remediation adds its own fields. */
export interface RunbookPlan {
  /** A digest of the plan's content: an approval names it, so a stale approval is refused. */
  id: string;
  /** In the order they will be fixed, one at a time. */
  nodes: PlannedNode[];
  /**
   * A change to the whole cluster after the nodes (the remediation's `applyCluster`), as the
   * approver reads it; a plan with only this still runs.
   */
  cluster?: string[];
  /** Nodes with a finding that will not be touched, and why (excluded, not selected, ...). */
  skipped: Array<{ name: string; reason: string }>;
  /** Lines the approver reads above the nodes: what was found, what is left alone and why. */
  summary?: string[];
  /**
   * Faulty nodes the remediation will not touch, each with why (e.g. nothing on the node says
   * what the right state is). Any entry fails the run before approval, changing nothing; the
   * refusal is in the audit trail.
   */
  refused?: string[];
}

/** The plan id: a digest of what the approver approves (same content, same id). */
export function planId(content: unknown): string {
  return fnv1a(JSON.stringify(content));
}

/** How the runbook treats each node of a plan; a remediation states it once. */
export interface Disruption {
  /** Budget, cordon and drain before the node's steps, uncordon after. */
  outOfService: boolean;
  /** The runbook reboots the node after its steps and waits for a new boot and Ready. */
  reboots: boolean;
  /** Why the node is or is not taken out of service: shown in the plan. */
  why: string;
}

/**
 * Failures that are a safety rule saying no, not a fix that went wrong: they end the run
 * with exit 3 and do not count towards the circuit breaker.
 */
export const REFUSALS: ReadonlySet<string> = new Set([Failure.LockHeld, Failure.BudgetExhausted, Failure.NodeExcluded, Failure.DrainRefused, 'BreakerOpen']);

/** "Type: message" as a node's status and the audit record show it. */
export function isRefusal(reason: string): boolean {
  const type = /^(\w+):/.exec(reason)?.[1];
  return type !== undefined && REFUSALS.has(type);
}

export interface RunbookResult<P extends RunbookPlan, N> {
  cluster: string;
  remediation: string;
  outcome: 'nothing to do' | 'planned (dry run)' | 'fixed' | 'outside maintenance window';
  planId: string | null;
  plan: P | null;
  approvedBy: string | null;
  /** What detect found, before the plan. */
  findings: Finding[];
  nodes: N[];
  /** Faults still present after the run (on nodes the run was not allowed to touch). */
  remaining: string[];
  /** What a remediation's change to the whole cluster did (after the nodes), if it has one. */
  clusterChange?: Record<string, unknown>;
}
