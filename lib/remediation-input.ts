/**
 * Inputs of the remediations that change nodes. The CLI fills the policy values from the
 * worker's config and the flags; the workflow validates again (a run can be started by
 * other clients too). No secret is ever part of an input: the worker holds credentials.
 */
import { z } from 'zod';
import { clusterName, freeText, interfaceName, nodeName } from './patterns';
import type { MachineIdPlan } from './machine-id';
import { RetryInput } from './probe';
import type { Finding } from './findings';
import { MaintenanceWindow, ScheduledBy } from './schedule';

/**
 * What every remediation on the shared runbook takes (workflows/runbook.ts): the target,
 * who asks and why, the approval and the policy. A remediation extends it with its own flags.
 */
export const RunbookInput = z
  .object({
    cluster: clusterName,
    /** Nodes the run may touch; empty means every node in the worker's config. */
    nodes: z.array(nodeName).max(1000).default([]),
    requestedBy: freeText(200),
    reason: freeText(2000).optional(),
    dryRun: z.boolean().default(false),
    autoApprove: z.boolean().default(false),
    approvalTimeoutMs: z.number().int().min(1000).max(7 * 86_400_000).default(3_600_000),
    maxUnavailable: z.number().int().min(1).max(100).default(1),
    drainTimeoutMs: z.number().int().min(1000).max(86_400_000).default(600_000),
    /** How long a rebooted node has to answer SSH with a new boot id and be Ready again. */
    rebootTimeoutMs: z.number().int().min(1000).max(3_600_000).default(600_000),
    deleteEmptyDirData: z.boolean().default(false),
    force: z.boolean().default(false),
    activityTimeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000),
    heartbeatTimeoutMs: z.number().int().min(1000).max(600_000).default(30_000),
    retry: RetryInput.default({ initialIntervalMs: 1000, maximumIntervalMs: 30_000, maximumAttempts: 5 }),
    /** A run a schedule started: its creation is the approval (lib/schedule.ts). */
    scheduledBy: ScheduledBy.optional(),
    /** Outside this window the run records so and changes nothing. */
    window: MaintenanceWindow.optional(),
  })
  .strict();
export type RunbookInput = z.input<typeof RunbookInput>;

/** machine-id (seed 000): the runbook's input and whether the keeper of each group is fixed too. */
export const MachineIdInput = RunbookInput.extend({ includeKeeper: z.boolean().default(false) }).strict();
export type MachineIdInput = z.input<typeof MachineIdInput>;

/** default-route (seed 002): how long to wait for the route after re-applying the configuration, and for the CNI pod after its restart. */
export const DefaultRouteInput = RunbookInput.extend({
  routeTimeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000),
  podTimeoutMs: z.number().int().min(1000).max(3_600_000).default(300_000),
}).strict();
export type DefaultRouteInput = z.input<typeof DefaultRouteInput>;

/**
 * stale-cni (seed 003): how long to wait for flannel's new pod and subnet.env after the stale
 * devices are deleted; the full level (kubeadm reset and re-join) for every planned node
 * (`full`), or only for a node whose light fix did not verify (`escalate`, which the plan
 * states and the approval names); how long a re-joined node has to be Ready.
 */
export const StaleCniInput = RunbookInput.extend({
  podTimeoutMs: z.number().int().min(1000).max(3_600_000).default(300_000),
  full: z.boolean().default(false),
  escalate: z.boolean().default(false),
  joinTimeoutMs: z.number().int().min(1000).max(3_600_000).default(300_000),
})
  .strict()
  .refine((v) => !(v.full && v.escalate), { message: 'full and escalate exclude each other: full already runs the full level on every node', path: ['escalate'] });
export type StaleCniInput = z.input<typeof StaleCniInput>;

/**
 * ipam-gc (seed 003): how long a host-local file must have existed before it can be a
 * candidate (default 15 min, as Calico's leak grace period; 0 allowed on demand).
 */
export const IpamGcInput = RunbookInput.extend({
  graceMs: z.number().int().min(0).max(7 * 86_400_000).default(15 * 60_000),
  /** Nodes collected at once (the node stays in service, so the disruption budget does not apply). */
  parallel: z.number().int().min(1).max(64).default(4),
  /** How long a run's quarantine is kept after its last change; a later run deletes older ones. */
  retentionMs: z.number().int().min(3_600_000).max(365 * 86_400_000).default(7 * 86_400_000),
}).strict();
export type IpamGcInput = z.input<typeof IpamGcInput>;

/**
 * calico-orphans (seed 004): the grace a leaked allocation whose node still exists waits after
 * detection (default 15 min, Calico's own leak grace period; 0 allowed on demand), nodes
 * worked at once (in service), and how long a restarted pod's successor may take.
 */
export const CalicoOrphansInput = RunbookInput.extend({
  graceMs: z.number().int().min(0).max(7 * 86_400_000).default(15 * 60_000),
  parallel: z.number().int().min(1).max(64).default(4),
  podTimeoutMs: z.number().int().min(1000).max(3_600_000).default(300_000),
}).strict();
export type CalicoOrphansInput = z.input<typeof CalicoOrphansInput>;

/**
 * node-address (seed 001): the nodes' own network (found when neither is given), Calico's
 * autodetection method if the operator chooses it, and how long a restarted kubelet and
 * calico-node's rollout may take.
 */
export const NodeAddressInput = RunbookInput.extend({
  network: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, 'must be an IPv4 network in CIDR form (a.b.c.0/24)').optional(),
  interface: interfaceName.optional(),
  calicoMethod: z.string().min(1).max(300).optional(),
  kubeletTimeoutMs: z.number().int().min(1000).max(1_800_000).default(180_000),
  rolloutTimeoutMs: z.number().int().min(1000).max(3_600_000).default(300_000),
})
  .strict()
  .refine((v) => v.network === undefined || v.interface === undefined, { message: 'give --network or --interface, not both', path: ['interface'] });
export type NodeAddressInput = z.input<typeof NodeAddressInput>;

/** `kubemend ipam-gc restore <run>`: put what an ipam-gc run quarantined back. */
export const IpamGcRestoreInput = z
  .object({
    cluster: clusterName,
    /** The ipam-gc run whose quarantine is restored (its workflow ID). */
    gcRunId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$/),
    /** Nodes to restore on; empty means every node in the worker's config. */
    nodes: z.array(nodeName).max(1000).default([]),
    requestedBy: freeText(200),
    reason: freeText(2000).optional(),
    activityTimeoutMs: z.number().int().min(1000).max(3_600_000).default(300_000),
    heartbeatTimeoutMs: z.number().int().min(1000).max(600_000).default(30_000),
    retry: RetryInput.default({ initialIntervalMs: 1000, maximumIntervalMs: 30_000, maximumAttempts: 5 }),
  })
  .strict();
export type IpamGcRestoreInput = z.input<typeof IpamGcRestoreInput>;

/** A node default-route fixed, as the run's result shows it. */
export interface DefaultRouteFixed {
  name: string;
  manager: string;
  /** The command that re-applied the node's configuration. */
  command: string;
  interfaces: string[];
  defaultRoute: { dev: string; gateway: string };
  gatewayPingMs: number | null;
  restartedPods: string[];
  newPods: string[];
  flannelSubnet: string | null;
  probeIp: string | null;
  /** Why the fault will come back at the next reboot (a finding: nothing was changed for it). */
  willRecur: string[];
}

/** A node node-address fixed, as the run's result shows it. */
export interface NodeAddressFixed {
  name: string;
  /** Joined by this run (it had never joined), rather than its kubelet's flag changed. */
  joined: boolean;
  /** The file whose line gives --node-ip now (kubeadm-flags.env after a join). */
  file: string | null;
  lineBefore: string | null;
  /** The line the run wrote (null after a join: kubeadm wrote it). */
  lineAfter: string | null;
  internalIpsBefore: string[];
  internalIps: string[];
  written: 'written' | 'already';
}

/** `kubemend approve`: names the plan it approves, so an approval of a plan that changed is refused. */
export const Approval = z
  .object({
    planId: z.string().regex(/^[0-9a-f]{16}$/, 'must be the 16-hex-digit plan id that `kubemend status` shows'),
    approver: freeText(200).refine((s) => s.trim().length > 0, 'must not be empty'),
    comment: freeText(2000).default(''),
  })
  .strict();
export type Approval = z.input<typeof Approval>;

export const APPROVE_UPDATE = 'approve';

/** Who asked for a run and why: what every audit record of the run carries. */
export interface AuditContext {
  actor: string;
  reason: string;
  remediation: string;
}

export interface FixedNode {
  name: string;
  oldMachineId: string | null;
  newMachineId: string;
  oldWeaveMac: string | null;
  newWeaveMac: string | null;
  bootIdBefore: string;
  bootIdAfter: string;
  uncordoned: boolean;
  /** Steps found already done on a retry or replay (e.g. "machine-id", "reboot"). */
  resumed: string[];
}

export interface MachineIdResult {
  cluster: string;
  /** Set by runs on the shared runbook (absent in runs of the frozen v1 workflow). */
  remediation?: string;
  /** What detect found before the plan (runbook runs only). */
  findings?: Finding[];
  outcome: 'nothing to do' | 'planned (dry run)' | 'fixed' | 'outside maintenance window';
  planId: string | null;
  plan: MachineIdPlan | null;
  approvedBy: string | null;
  nodes: FixedNode[];
  /** Identities still shared after the run (nodes the run was not allowed to touch). */
  remaining: string[];
}
