/**
 * Failure types carried by ApplicationFailure.type. The retry policy is derived from this
 * table in one place: a type is retried only if it is marked transient.
 */
export const Failure = {
  /** The node's SSH host key is not the one in known_hosts (or is revoked). */
  HostKeyMismatch: 'HostKeyMismatch',
  /** known_hosts has no entry for the node: kubemend never trusts on first use. */
  HostKeyUnknown: 'HostKeyUnknown',
  /** The server refused our credentials. Retrying will not change that. */
  SshAuthFailed: 'SshAuthFailed',
  /** A local credential or known_hosts file cannot be read. */
  CredentialUnavailable: 'CredentialUnavailable',
  /** The workflow input names a cluster or node the worker's config does not have. */
  BadInput: 'BadInput',
  /** The probe script printed nothing of its own (a forced command ran instead). */
  ProbeNoOutput: 'ProbeNoOutput',
  /** A remote command exited non-zero where success was required. */
  CommandFailed: 'CommandFailed',
  /** Connect refused/timeout, connection reset, command timed out or dropped. */
  SshTransient: 'SshTransient',
  /** The Kubernetes API refused the worker's identity (401/403): RBAC or credentials, not luck. */
  KubeForbidden: 'KubeForbidden',
  /** The Kubernetes API rejected the request itself (4xx other than 401/403/409/429). */
  KubeRejected: 'KubeRejected',
  /** The Kubernetes API was unreachable, overloaded (429), conflicting (409) or failing (5xx). */
  KubeApiTransient: 'KubeApiTransient',
  /** Another run holds a node this run targets (the per-node lock). */
  LockHeld: 'LockHeld',
  /** The cluster disruption budget has no room, or the node is the last Ready control plane. */
  BudgetExhausted: 'BudgetExhausted',
  /** The node is labelled kubemend.io/exclude=true. */
  NodeExcluded: 'NodeExcluded',
  /** Nobody approved the plan before the approval timeout. */
  ApprovalTimedOut: 'ApprovalTimedOut',
  /** The drain would delete what kubectl drain refuses to without options (bare pods, emptyDir). */
  DrainRefused: 'DrainRefused',
  /** Evictions stayed blocked (a PodDisruptionBudget) or pods stayed until the drain timeout. */
  DrainTimedOut: 'DrainTimedOut',
  /** A rebooted node did not come back (SSH with a new boot id, Node Ready) in time. */
  NodeDidNotReturn: 'NodeDidNotReturn',
  /** The node is not in a state the step expects (e.g. its machine-id changed under us). */
  NodeStateUnexpected: 'NodeStateUnexpected',
  /** After the fix, the ids or weave MAC are still not unique. */
  VerificationFailed: 'VerificationFailed',
  /** host-local's lock on a network directory stayed busy (another allocation held it): retried. */
  HostLocalLockBusy: 'HostLocalLockBusy',
  /** The cluster's circuit breaker is open (too many failed runs): refused until `kubemend breaker reset`. */
  BreakerOpen: 'BreakerOpen',
} as const;
export type FailureType = (typeof Failure)[keyof typeof Failure];

const TRANSIENT: ReadonlySet<string> = new Set([Failure.SshTransient, Failure.KubeApiTransient, Failure.HostLocalLockBusy]);

/** Failures that mean a safety rule refused the run (CLI exit 3); they never count as failed runs. */
export const REFUSAL_FAILURES: readonly string[] = [Failure.LockHeld, Failure.BudgetExhausted, Failure.NodeExcluded, Failure.DrainRefused, Failure.BreakerOpen];

export const NON_RETRYABLE_FAILURES: string[] = Object.values(Failure).filter((t) => !TRANSIENT.has(t));

/** CLI exit codes, documented in the README and in `kubemend --help`. */
export const ExitCode = {
  Ok: 0,
  RemediationFailed: 1,
  BadInput: 2,
  Refused: 3,
  /** `kubemend diagnose` found at least one seed's failure (and read every node). */
  FindingsFound: 4,
} as const;
