/** run, status, list, approve, cancel: starting runs and looking after them. */
import { randomBytes } from 'node:crypto';
import { userInfo } from 'node:os';
import {
  type Client,
  WorkflowFailedError,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  type WorkflowHandle,
} from '@temporalio/client';
import { ActivityFailure, ApplicationFailure, CancelledFailure, TerminatedFailure } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { z } from 'zod';
import { type Config, findCluster, formatZodIssues, selectNodes } from '../lib/config';
import { ExitCode } from '../lib/failures';
import { clusterName, freeText, IFNAME, nodeName } from '../lib/patterns';
import { networkOf } from '../lib/detect/facts';
import { isCalicoMethod, isIpv4Cidr } from '../lib/node-address';
import type { ProbeInput, ProbeReport } from '../lib/probe';
import { parseDuration } from '../lib/duration';
import type { CalicoOrphansInput, NodeAddressInput, DefaultRouteInput, IpamGcInput, IpamGcRestoreInput, MachineIdInput, MachineIdResult, StaleCniInput } from '../lib/remediation-input';
import { lockId } from '../lib/lock-id';
import type { AuditInput } from '../lib/audit';
import { AuditStore } from '../activities/audit-store';
import { type RunStatus, STATUS_QUERY } from '../lib/run-status';
import { APPROVE_UPDATE } from '../lib/remediation-input';
import { SA_CLUSTER, SA_NODE, SA_REMEDIATION } from '../lib/search-attributes';
import { refuseIfBreakerOpen } from './breaker';
import { connectClient } from './connect';
import { CliError, REFUSAL_TYPES } from './errors';
import { pickNodes } from './targets';
import { diagnoseText } from './diagnose';
import type { DiagnoseReport } from '../lib/diagnose';
import { defaultRouteText, ipamGcRestoreText, ipamGcText, machineIdText, planText, probeText, progressFor, staleCniText, calicoOrphansText, nodeAddressText } from './render';
import type { DefaultRouteResult } from '../workflows/default-route';
import type { IpamGcResult } from '../workflows/ipam-gc';
import type { StaleCniResult } from '../workflows/stale-cni';
import type { CalicoOrphansResult } from '../workflows/calico-orphans';
import type { NodeAddressResult } from '../workflows/node-address';
import type { IpamGcRestoreResult } from '../lib/ipam-gc-plan';

export const REMEDIATIONS = ['probe', 'machine-id', 'node-address', 'default-route', 'ipam-gc', 'stale-cni', 'calico-orphans'] as const;
/** The workflow type that runs each remediation. */
const WORKFLOW_TYPE: Record<(typeof REMEDIATIONS)[number], string> = { probe: 'probe', 'machine-id': 'remediateMachineId', 'default-route': 'remediateDefaultRoute', 'ipam-gc': 'remediateIpamGc', 'stale-cni': 'remediateStaleCni', 'calico-orphans': 'remediateCalicoOrphans', 'node-address': 'remediateNodeAddress' };
/** Workflow types of earlier versions, still shown by status and list (workflows/legacy/). */
const LEGACY_TYPES: Record<string, string> = { machineId: 'machine-id' };
/** Workflow types that are not `kubemend run`'s but belong to a remediation (shown by status and list). */
const OTHER_TYPES: Record<string, string> = { restoreIpamQuarantine: 'ipam-gc' };
const TYPE_TO_REMEDIATION: Record<string, string> = { ...LEGACY_TYPES, ...OTHER_TYPES, ...Object.fromEntries(Object.entries(WORKFLOW_TYPE).map(([k, v]) => [v, k])) };

const RunArgs = z.object({
  remediation: z.enum(REMEDIATIONS, { error: (i) => `unknown remediation ${JSON.stringify(i.input)}; known: ${REMEDIATIONS.join(', ')}` }),
  cluster: clusterName,
  node: z.array(nodeName).default([]),
  reason: freeText(2000).optional(),
  actor: freeText(200).refine((v) => v.trim().length > 0, 'must not be blank').optional(),
  dryRun: z.boolean().default(false),
  autoApprove: z.boolean().default(false),
  detach: z.boolean().default(false),
  json: z.boolean().default(false),
  includeKeeper: z.boolean().default(false),
  drainTimeout: z.string().optional(),
  rebootTimeout: z.string().optional(),
  routeTimeout: z.string().optional(),
  podTimeout: z.string().optional(),
  grace: z.string().optional(),
  retention: z.string().optional(),
  parallel: z.coerce.number({ error: 'must be a whole number from 1 to 64' }).int('must be a whole number from 1 to 64').min(1, 'must be a whole number from 1 to 64').max(64, 'must be a whole number from 1 to 64').optional(),
  network: z.string().optional(),
  interface: z.string().optional(),
  calicoMethod: z.string().optional(),
  kubeletTimeout: z.string().optional(),
  rolloutTimeout: z.string().optional(),
  deleteEmptydirData: z.boolean().default(false),
  force: z.boolean().default(false),
  full: z.boolean().default(false),
  escalate: z.boolean().default(false),
  joinTimeout: z.string().optional(),
});

const RunId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$/, 'must be a kubemend run ID as printed by `kubemend run` or `kubemend list`');

export function parseArgs<T extends z.ZodType>(schema: T, raw: unknown): z.output<T> {
  const r = schema.safeParse(raw);
  if (!r.success) throw new CliError(`bad arguments:\n${formatZodIssues(r.error).map((l) => `  - ${l.replace(/^node\[(\d+)\]/, '--node #$1').replace(/^(\w+):/, '--$1:')}`).join('\n')}`);
  return r.data;
}

/** --retention: how long an ipam-gc run's quarantine is kept (1h to 8760h); undefined when not given. */
export function retentionMs(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const ms = parseDuration(v);
  if (ms === undefined || ms < 3_600_000 || ms > 365 * 86_400_000) throw new CliError(`--retention: ${JSON.stringify(v)} is not a duration from 1h to 8760h (e.g. 168h for a week)`);
  return ms;
}

/** node-address's own flags, checked before anything starts (the workflow checks them again). */
function nodeAddressFlags(args: { network?: string; interface?: string; calicoMethod?: string }): void {
  if (args.network !== undefined && args.interface !== undefined) throw new CliError('--network and --interface: give one of them, not both');
  if (args.network !== undefined && (!isIpv4Cidr(args.network) || networkOf(args.network) !== args.network)) throw new CliError(`--network: ${JSON.stringify(args.network)} is not an IPv4 network in CIDR form (e.g. 192.168.56.0/24)`);
  if (args.interface !== undefined && !IFNAME.test(args.interface)) throw new CliError(`--interface: ${JSON.stringify(args.interface)} is not a Linux interface name`);
  if (args.calicoMethod !== undefined && !isCalicoMethod(args.calicoMethod)) throw new CliError(`--calico-method: ${JSON.stringify(args.calicoMethod)} is not a Calico IP_AUTODETECTION_METHOD (first-found, can-reach=<ip>, interface=<regex,...>, skip-interface=<regex,...>, cidr=<cidr,...>, kubernetes-internal-ip)`);
}

export function newRunId(remediation: string, cluster: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `${remediation}-${cluster}-${stamp}-${randomBytes(3).toString('hex')}`;
}

export function actorName(flag?: string): string {
  if (flag) return flag;
  try {
    return userInfo().username;
  } catch {
    return `uid-${process.getuid?.() ?? 'unknown'}`;
  }
}

/** Exit code and message for a run that ended without a result. */
export function endedBadly(err: unknown): CliError {
  if (err instanceof WorkflowFailedError) {
    // A failure raised by an activity (e.g. the worker's inventory lacks the node) arrives
    // wrapped; its cause decides the exit code.
    const cause = err.cause instanceof ActivityFailure && err.cause.cause ? err.cause.cause : err.cause;
    if (cause instanceof ApplicationFailure) {
      if (cause.type === 'BadInput') return new CliError(cause.message, ExitCode.BadInput);
      if (cause.type && REFUSAL_TYPES.has(cause.type)) return new CliError(`refused: ${cause.message}`, ExitCode.Refused);
      return new CliError(`run failed: ${cause.type ? `${cause.type}: ` : ''}${cause.message}`, ExitCode.RemediationFailed);
    }
    if (cause instanceof CancelledFailure) return new CliError('run was cancelled', ExitCode.RemediationFailed);
    if (cause instanceof TerminatedFailure) return new CliError('run was terminated', ExitCode.RemediationFailed);
    return new CliError(`run failed: ${cause?.message ?? err.message}`, ExitCode.RemediationFailed);
  }
  throw err;
}

async function warnIfNoWorker(client: Client, cfg: Config, err: NodeJS.WritableStream): Promise<void> {
  const r = await client.workflowService.describeTaskQueue({
    namespace: cfg.temporal.namespace,
    taskQueue: { name: cfg.temporal.taskQueue },
    taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
  });
  if (!r.pollers?.length) {
    err.write(`warning: no worker is polling task queue ${cfg.temporal.taskQueue}; the run waits until one starts (kubemend worker)\n`);
  }
}

const noop = () => undefined;

async function follow<T>(handle: WorkflowHandle, quiet: boolean, runId?: string): Promise<T> {
  const result = handle.result() as Promise<T>;
  if (quiet) return result;
  const sink = progressFor(process.stderr);
  let settled = false;
  result.then(noop, noop).finally(() => (settled = true));
  // One query in flight at a time: with no worker to answer, a query blocks server-side.
  let inFlight: Promise<void> | undefined;
  let hinted = false;
  while (!settled) {
    inFlight ??= handle
      .query<RunStatus>(STATUS_QUERY)
      .then((st) => {
        if (st.phase === 'AwaitingApproval' && st.plan && !hinted) {
          hinted = true;
          process.stderr.write(`${planText(st.plan)}\nwaiting for approval: kubemend approve ${runId ?? handle.workflowId} (plan ${st.plan.id})\n`);
        }
        sink.update(st);
      }, noop)
      .finally(() => (inFlight = undefined));
    await Promise.race([result.then(noop, noop), new Promise((r) => setTimeout(r, 300))]);
  }
  try {
    sink.update(await handle.query<RunStatus>(STATUS_QUERY));
  } catch {
    // A closed run answers queries only while a worker can replay it; the result is what matters.
  }
  sink.done();
  return result;
}

export async function runCommand(cfg: Config, raw: Record<string, unknown>, out: NodeJS.WritableStream): Promise<number> {
  const args = parseArgs(RunArgs, raw);
  const nodes = pickNodes(cfg, args.cluster, args.node);

  const duration = (flag: string, v: string | undefined, fallback: number, maxMs: number) => {
    if (v === undefined) return fallback;
    const ms = parseDuration(v);
    if (ms === undefined || ms < 1000 || ms > maxMs) throw new CliError(`--${flag}: ${JSON.stringify(v)} is not a duration from 1s to ${maxMs / 3_600_000}h (e.g. 90s, 10m)`);
    return ms;
  };
  if (args.remediation === 'probe' && (args.dryRun || args.autoApprove || args.includeKeeper || args.force || args.deleteEmptydirData)) {
    throw new CliError('probe is read-only: --dry-run, --auto-approve, --include-keeper, --force and --delete-emptydir-data do not apply');
  }
  if (args.remediation !== 'machine-id' && args.includeKeeper) throw new CliError('--include-keeper applies to machine-id only');
  if (args.remediation !== 'default-route' && args.routeTimeout !== undefined) throw new CliError('--route-timeout applies to default-route only');
  if (args.remediation !== 'default-route' && args.remediation !== 'stale-cni' && args.remediation !== 'calico-orphans' && args.podTimeout !== undefined) throw new CliError('--pod-timeout applies to default-route, stale-cni and calico-orphans only');
  if (args.remediation !== 'ipam-gc' && args.remediation !== 'calico-orphans' && (args.grace !== undefined || args.parallel !== undefined)) throw new CliError('--grace and --parallel apply to ipam-gc and calico-orphans only');
  if (args.remediation !== 'ipam-gc' && args.retention !== undefined) throw new CliError('--retention applies to ipam-gc only');
  if (args.remediation !== 'node-address' && [args.network, args.interface, args.calicoMethod, args.kubeletTimeout, args.rolloutTimeout].some((v) => v !== undefined)) throw new CliError('--network, --interface, --calico-method, --kubelet-timeout and --rollout-timeout apply to node-address only');
  if (args.remediation === 'node-address') nodeAddressFlags(args);
  if (args.remediation !== 'stale-cni' && (args.full || args.escalate || args.joinTimeout !== undefined)) throw new CliError('--full, --escalate and --join-timeout apply to stale-cni only');
  if (args.full && args.escalate) throw new CliError('--full and --escalate: give one of them (--full runs the full level on every node; --escalate only where the light fix does not verify)');
  const grace = (v: string | undefined) => {
    if (v === undefined) return 15 * 60_000;
    const ms = parseDuration(v);
    // 0 is allowed on demand: the operator knows the node is not starting pods (the plan warns below 60 s).
    if (ms === undefined || ms > 7 * 86_400_000) throw new CliError(`--grace: ${JSON.stringify(v)} is not a duration from 0s to 168h (e.g. 0s, 15m)`);
    return ms;
  };
  const requestedBy = actorName(args.actor);
  const retention = (v: string | undefined) => retentionMs(v) ?? 7 * 86_400_000;
  const own =
    args.remediation === 'machine-id'
      ? { includeKeeper: args.includeKeeper }
      : args.remediation === 'default-route'
        ? { routeTimeoutMs: duration('route-timeout', args.routeTimeout, 120_000, 3_600_000), podTimeoutMs: duration('pod-timeout', args.podTimeout, 300_000, 3_600_000) }
        : args.remediation === 'ipam-gc'
          ? { graceMs: grace(args.grace), retentionMs: retention(args.retention), ...(args.parallel !== undefined ? { parallel: args.parallel } : {}) }
          : args.remediation === 'stale-cni'
            ? { podTimeoutMs: duration('pod-timeout', args.podTimeout, 300_000, 3_600_000), full: args.full, escalate: args.escalate, joinTimeoutMs: duration('join-timeout', args.joinTimeout, 300_000, 3_600_000) }
            : args.remediation === 'calico-orphans'
              ? { graceMs: grace(args.grace), podTimeoutMs: duration('pod-timeout', args.podTimeout, 300_000, 3_600_000), ...(args.parallel !== undefined ? { parallel: args.parallel } : {}) }
              : args.remediation === 'node-address'
                ? {
                    ...(args.network !== undefined ? { network: args.network } : {}),
                    ...(args.interface !== undefined ? { interface: args.interface } : {}),
                    ...(args.calicoMethod !== undefined ? { calicoMethod: args.calicoMethod } : {}),
                    kubeletTimeoutMs: duration('kubelet-timeout', args.kubeletTimeout, 180_000, 1_800_000),
                    rolloutTimeoutMs: duration('rollout-timeout', args.rolloutTimeout, 300_000, 3_600_000),
                  }
                : {};
  const input: ProbeInput | MachineIdInput | DefaultRouteInput | IpamGcInput | StaleCniInput | CalicoOrphansInput | NodeAddressInput =
    args.remediation === 'probe'
      ? { cluster: args.cluster, nodes: args.node, requestedBy, reason: args.reason }
      : {
          cluster: args.cluster,
          nodes: args.node,
          requestedBy,
          reason: args.reason,
          ...own,
          dryRun: args.dryRun,
          autoApprove: args.autoApprove || !cfg.policy.approvalRequired,
          approvalTimeoutMs: cfg.policy.approvalTimeout,
          maxUnavailable: cfg.policy.maxUnavailable,
          drainTimeoutMs: duration('drain-timeout', args.drainTimeout, cfg.policy.drainTimeout, 86_400_000),
          rebootTimeoutMs: duration('reboot-timeout', args.rebootTimeout, 600_000, 3_600_000),
          deleteEmptyDirData: args.deleteEmptydirData,
          force: args.force,
        };

  const { client, connection } = await connectClient(cfg);
  try {
    const workflowId = newRunId(args.remediation, args.cluster);
    if (args.remediation !== 'probe' && !args.dryRun) {
      // The workflow checks the breaker again (checkBreaker); this makes the refusal early and clear.
      await refuseIfBreakerOpen(cfg, args.cluster, {
        record: (error) => recordByCli(cfg, { idempotencyKey: `${workflowId}/refused`, actor: requestedBy, reason: args.reason ?? '', cluster: args.cluster, node: '', remediation: args.remediation, workflowId, runId: '', step: 'refused', action: 'none: not started (circuit breaker open)', before: null, after: null, outcome: 'refused', error }),
      });
      await refuseIfLocked(client, args.cluster, nodes, workflowId, (node, error) =>
        recordByCli(cfg, { idempotencyKey: `${workflowId}/refused`, actor: requestedBy, reason: args.reason ?? '', cluster: args.cluster, node, remediation: args.remediation, workflowId, runId: '', step: 'refused', action: 'none: not started', before: null, after: null, outcome: 'refused', error }),
      );
    }
    const handle = await startRun(client, cfg, { type: WORKFLOW_TYPE[args.remediation], workflowId, input, cluster: args.cluster, nodes, remediation: args.remediation, requestedBy, reason: args.reason });
    await warnIfNoWorker(client, cfg, process.stderr);
    if (args.detach) {
      out.write(args.json ? `${JSON.stringify({ runId: workflowId })}\n` : `${workflowId}\n`);
      return ExitCode.Ok;
    }
    if (args.remediation === 'probe') {
      let report: ProbeReport;
      try {
        report = await follow<ProbeReport>(handle, args.json);
      } catch (err) {
        throw endedBadly(err);
      }
      out.write(args.json ? `${JSON.stringify(report)}\n` : probeText(report));
      const failed = report.nodes.filter((n) => n.error);
      if (failed.length) {
        process.stderr.write(`${failed.length} node(s) could not be probed: ${failed.map((n) => n.name).join(', ')}\n`);
        return ExitCode.RemediationFailed;
      }
      return ExitCode.Ok;
    }
    let result: MachineIdResult | DefaultRouteResult | IpamGcResult | StaleCniResult | CalicoOrphansResult | NodeAddressResult;
    try {
      result = await follow<MachineIdResult | DefaultRouteResult | IpamGcResult | StaleCniResult | CalicoOrphansResult | NodeAddressResult>(handle, args.json, workflowId);
    } catch (err) {
      throw endedBadly(err);
    }
    out.write(
      args.json
        ? `${JSON.stringify(result)}\n`
        : args.remediation === 'default-route'
          ? defaultRouteText(result as DefaultRouteResult)
          : args.remediation === 'ipam-gc'
            ? ipamGcText(result as IpamGcResult, workflowId)
            : args.remediation === 'stale-cni'
              ? staleCniText(result as StaleCniResult)
              : args.remediation === 'calico-orphans'
                ? calicoOrphansText(result as CalicoOrphansResult)
                : args.remediation === 'node-address'
                  ? nodeAddressText(result as NodeAddressResult)
                  : machineIdText(result as MachineIdResult),
    );
    return ExitCode.Ok;
  } finally {
    await connection.close();
  }
}

/** Starts a run with kubemend's search attributes and who asked for it in its memo; says so on stderr. */
export async function startRun(
  client: Client,
  cfg: Config,
  r: { type: string; workflowId: string; input: unknown; cluster: string; nodes: string[]; remediation: string; requestedBy: string; reason?: string },
): Promise<WorkflowHandle> {
  const handle = await client.workflow.start(r.type, {
    workflowId: r.workflowId,
    taskQueue: cfg.temporal.taskQueue,
    args: [r.input],
    typedSearchAttributes: [
      { key: SA_CLUSTER, value: r.cluster },
      { key: SA_NODE, value: r.nodes },
      { key: SA_REMEDIATION, value: r.remediation },
    ],
    memo: { requestedBy: r.requestedBy, reason: r.reason ?? '' },
  });
  process.stderr.write(`started ${r.workflowId}\n`);
  return handle;
}

/** A refusal before any run exists is recorded by the CLI itself (it has the store's config too), as are schedule changes. */
export async function recordByCli(cfg: Config, input: AuditInput): Promise<void> {
  try {
    const store = await AuditStore.open(cfg.audit);
    try {
      await store.append(input);
    } finally {
      await store.close();
    }
  } catch (err) {
    process.stderr.write(`warning: ${input.step} could not be recorded in the audit trail: ${(err as Error).message}\n`);
  }
}

/**
 * A remediation on a node another run holds is refused before it starts (exit 3), naming
 * the holder. The workflow's own lock is the guard; this only makes the refusal early and clear.
 */
async function refuseIfLocked(client: Client, cluster: string, nodes: string[], wouldBe: string, record: (node: string, error: string) => Promise<void>): Promise<void> {
  for (const node of nodes) {
    try {
      const d = await client.workflow.getHandle(lockId(cluster, node)).describe();
      if (d.status.name === 'RUNNING') {
        const message = `node ${node} is being remediated by run ${d.parentExecution?.workflowId ?? '(unknown)'}`;
        await record(node, message);
        throw new CliError(`refused (run ${wouldBe} not started): ${message}; wait for it or cancel it`, ExitCode.Refused);
      }
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) continue;
      throw err;
    }
  }
}

async function withRun<T>(cfg: Config, runId: string, fn: (h: WorkflowHandle, client: Client) => Promise<T>): Promise<T> {
  const id = parseArgs(RunId, runId);
  const { client, connection } = await connectClient(cfg);
  try {
    return await fn(client.workflow.getHandle(id), client);
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) throw new CliError(`no run ${JSON.stringify(id)} in namespace ${cfg.temporal.namespace}`);
    throw err;
  } finally {
    await connection.close();
  }
}

export async function statusCommand(cfg: Config, runId: string, opts: { json?: boolean }, out: NodeJS.WritableStream): Promise<number> {
  return withRun(cfg, runId, async (h) => {
    const d = await h.describe();
    const view: Record<string, unknown> = {
      runId: d.workflowId,
      remediation: TYPE_TO_REMEDIATION[d.type] ?? d.type,
      status: d.status.name,
      cluster: d.typedSearchAttributes.get(SA_CLUSTER) ?? null,
      nodes: d.typedSearchAttributes.get(SA_NODE) ?? [],
      startTime: d.startTime.toISOString(),
      closeTime: d.closeTime?.toISOString() ?? null,
      progress: null,
      result: null,
      failure: null,
    };
    try {
      view.progress = await h.query<RunStatus>(STATUS_QUERY);
    } catch {
      // Closed long ago or no worker to answer: the status line and result still tell the story.
    }
    if (d.status.name === 'COMPLETED') view.result = await h.result();
    if (d.status.name === 'FAILED') {
      try {
        await h.result();
      } catch (err) {
        view.failure = ((err as Error).cause as Error | undefined)?.message ?? (err as Error).message;
      }
    }
    if (opts.json) {
      out.write(`${JSON.stringify(view)}\n`);
      return ExitCode.Ok;
    }
    out.write(`${view.runId}\n  remediation  ${view.remediation}\n  cluster      ${view.cluster}\n  nodes        ${(view.nodes as string[]).join(', ')}\n  status       ${view.status}\n  started      ${view.startTime}\n`);
    if (view.closeTime) out.write(`  closed       ${view.closeTime}\n`);
    const p = view.progress as RunStatus | null;
    if (p) {
      out.write(`  phase        ${p.phase}\n`);
      for (const [n, st] of Object.entries(p.nodes)) out.write(`    ${n.padEnd(24)} ${st.phase}${st.detail ? `  ${st.detail}` : ''}\n`);
      if (p.clusterStep) out.write(`    ${'(cluster)'.padEnd(24)} ${p.clusterStep.phase}${p.clusterStep.detail ? `  ${p.clusterStep.detail}` : ''}\n`);
    }
    if (p?.compensations?.length) out.write(`  undo         ${p.compensations.join('\n               ')}\n`);
    if (view.failure) out.write(`  failure      ${view.failure}\n`);
    if (p?.plan && !view.result) out.write(`\n${planText(p.plan)}`);
    if (view.result && d.type === 'probe') out.write(`\n${probeText(view.result as ProbeReport)}`);
    if (view.result && d.type === 'diagnose') out.write(`\n${diagnoseText(view.result as DiagnoseReport)}`);
    if (view.result && TYPE_TO_REMEDIATION[d.type] === 'machine-id') out.write(`\n${machineIdText(view.result as MachineIdResult)}`);
    if (view.result && TYPE_TO_REMEDIATION[d.type] === 'default-route') out.write(`\n${defaultRouteText(view.result as DefaultRouteResult)}`);
    if (view.result && d.type === WORKFLOW_TYPE['node-address']) out.write(`\n${nodeAddressText(view.result as NodeAddressResult)}`);
    if (view.result && d.type === WORKFLOW_TYPE['ipam-gc']) out.write(`\n${ipamGcText(view.result as IpamGcResult, d.workflowId)}`);
    if (view.result && d.type === WORKFLOW_TYPE['stale-cni']) out.write(`\n${staleCniText(view.result as StaleCniResult)}`);
    if (view.result && d.type === WORKFLOW_TYPE['calico-orphans']) out.write(`\n${calicoOrphansText(view.result as CalicoOrphansResult)}`);
    if (view.result && d.type === 'restoreIpamQuarantine') out.write(`\n${ipamGcRestoreText(view.result as IpamGcRestoreResult)}`);
    return ExitCode.Ok;
  });
}

const ListArgs = z.object({
  cluster: clusterName.optional(),
  node: nodeName.optional(),
  remediation: z.enum(REMEDIATIONS).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(20),
  json: z.boolean().default(false),
});

/** A visibility query from validated values only: the patterns admit no quote characters. */
export function listQuery(f: { cluster?: string; node?: string; remediation?: string }): string {
  const parts = [f.remediation ? `${SA_REMEDIATION.name} = '${f.remediation}'` : `${SA_REMEDIATION.name} IN (${REMEDIATIONS.map((r) => `'${r}'`).join(', ')})`];
  if (f.cluster) parts.push(`${SA_CLUSTER.name} = '${f.cluster}'`);
  if (f.node) parts.push(`${SA_NODE.name} = '${f.node}'`);
  return parts.join(' AND ');
}

export async function listCommand(cfg: Config, raw: Record<string, unknown>, out: NodeJS.WritableStream): Promise<number> {
  const args = parseArgs(ListArgs, raw);
  const { client, connection } = await connectClient(cfg);
  try {
    const rows: Array<Record<string, unknown>> = [];
    for await (const w of client.workflow.list({ query: listQuery(args), pageSize: Math.min(args.limit, 100) })) {
      rows.push({
        runId: w.workflowId,
        remediation: TYPE_TO_REMEDIATION[w.type] ?? w.type,
        cluster: w.typedSearchAttributes.get(SA_CLUSTER) ?? null,
        nodes: w.typedSearchAttributes.get(SA_NODE) ?? [],
        status: w.status.name,
        startTime: w.startTime.toISOString(),
        closeTime: w.closeTime?.toISOString() ?? null,
      });
      if (rows.length >= args.limit) break;
    }
    if (args.json) {
      out.write(`${JSON.stringify(rows)}\n`);
    } else if (rows.length === 0) {
      out.write('no runs\n');
    } else {
      out.write(`${'RUN'.padEnd(48)} ${'STATUS'.padEnd(11)} ${'STARTED'.padEnd(24)} NODES\n`);
      for (const r of rows) out.write(`${String(r.runId).padEnd(48)} ${String(r.status).padEnd(11)} ${String(r.startTime).padEnd(24)} ${(r.nodes as string[]).join(',')}\n`);
    }
    return ExitCode.Ok;
  } finally {
    await connection.close();
  }
}

export async function approveCommand(cfg: Config, runId: string, raw: { actor?: string; comment?: string; plan?: string }, out: NodeJS.WritableStream): Promise<number> {
  const a = parseArgs(z.object({ actor: freeText(200).refine((v) => v.trim().length > 0, 'must not be blank').optional(), comment: freeText(2000).optional(), plan: z.string().regex(/^[0-9a-f]{16}$/, 'must be the 16-hex-digit plan id `kubemend status` shows').optional() }), raw);
  return withRun(cfg, runId, async (h) => {
    let planId = a.plan;
    if (!planId) {
      let st: RunStatus | undefined;
      try {
        st = await h.query<RunStatus>(STATUS_QUERY);
      } catch (err) {
        throw new CliError(`run ${runId} does not answer (${(err as Error).message}); is it running and a worker up?`, ExitCode.RemediationFailed);
      }
      if (!st.plan) throw new CliError(`run ${runId} has nothing to approve (it is a ${st.remediation} run in phase ${st.phase})`);
      planId = st.plan.id;
    }
    try {
      await h.executeUpdate(APPROVE_UPDATE, { args: [{ planId, approver: actorName(a.actor), comment: a.comment ?? '' }] });
    } catch (err) {
      if (err instanceof WorkflowUpdateFailedError) {
        const msg = err.cause?.message ?? err.message;
        if (/handler|unknown update|not registered/i.test(msg)) throw new CliError(`run ${runId} has nothing to approve (${msg})`);
        throw new CliError(`approval rejected: ${msg}`, ExitCode.Refused);
      }
      const msg = (err as Error).message ?? '';
      if (/already completed|not found/i.test(msg)) throw new CliError(`run ${runId} is not waiting for approval: ${msg}`);
      throw err;
    }
    out.write(`approved ${runId} (plan ${planId})\n`);
    return ExitCode.Ok;
  });
}

export async function cancelCommand(cfg: Config, runId: string, out: NodeJS.WritableStream): Promise<number> {
  return withRun(cfg, runId, async (h) => {
    const d = await h.describe();
    if (d.status.name !== 'RUNNING') throw new CliError(`run ${runId} is ${d.status.name}, not running: nothing to cancel`);
    await h.cancel();
    out.write(`cancellation requested for ${runId}; its compensations run before it stops (kubemend status ${runId})\n`);
    return ExitCode.Ok;
  });
}


const RestoreArgs = z.object({
  run: RunId,
  cluster: clusterName.optional(),
  node: z.array(nodeName).default([]),
  reason: freeText(2000).optional(),
  actor: freeText(200).refine((v) => v.trim().length > 0, 'must not be blank').optional(),
  json: z.boolean().default(false),
});

/**
 * `kubemend ipam-gc restore <run>`: puts the files an ipam-gc run quarantined back, on the
 * run's nodes (or --node), through the restoreIpamQuarantine workflow (node locks, audit).
 * The cluster and nodes come from the run itself; --cluster is needed only once Temporal has
 * forgotten the run.
 */
export async function ipamGcRestoreCommand(cfg: Config, raw: Record<string, unknown>, out: NodeJS.WritableStream): Promise<number> {
  const args = parseArgs(RestoreArgs, raw);
  const { client, connection } = await connectClient(cfg);
  try {
    let cluster = args.cluster;
    let nodes = args.node;
    try {
      const d = await client.workflow.getHandle(args.run).describe();
      if (d.type !== WORKFLOW_TYPE['ipam-gc']) throw new CliError(`run ${args.run} is a ${TYPE_TO_REMEDIATION[d.type] ?? d.type} run, not ipam-gc: it quarantined nothing`);
      const ranOn = d.typedSearchAttributes.get(SA_CLUSTER);
      if (cluster && ranOn && cluster !== ranOn) throw new CliError(`--cluster ${cluster}: run ${args.run} ran on cluster ${ranOn}`);
      cluster ??= ranOn;
      if (nodes.length === 0) nodes = d.typedSearchAttributes.get(SA_NODE) ?? [];
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError)) throw err;
      if (!cluster) throw new CliError(`no run ${JSON.stringify(args.run)} in namespace ${cfg.temporal.namespace}; name its cluster with --cluster to restore from the nodes' quarantine anyway`);
    }
    if (!cluster) throw new CliError(`run ${args.run} has no cluster search attribute; name it with --cluster`);
    const c = findCluster(cfg, cluster);
    if (!c) throw new CliError(`--cluster: no cluster ${JSON.stringify(cluster)} in the config (it has: ${cfg.clusters.map((x) => x.name).join(', ')})`);
    const picked = selectNodes(c, nodes);
    if ('error' in picked) throw new CliError(`--node: ${picked.error}`);
    const requestedBy = actorName(args.actor);
    const workflowId = newRunId('ipam-gc-restore', cluster);
    const input: IpamGcRestoreInput = { cluster, gcRunId: args.run, nodes: picked.nodes, requestedBy, reason: args.reason };
    const handle = await startRun(client, cfg, { type: 'restoreIpamQuarantine', workflowId, input, cluster, nodes: picked.nodes, remediation: 'ipam-gc', requestedBy, reason: args.reason });
    await warnIfNoWorker(client, cfg, process.stderr);
    let result: IpamGcRestoreResult;
    try {
      result = (await handle.result()) as IpamGcRestoreResult;
    } catch (err) {
      throw endedBadly(err);
    }
    out.write(args.json ? `${JSON.stringify(result)}\n` : ipamGcRestoreText(result));
    const failed = result.nodes.filter((n) => 'error' in n);
    if (failed.length) {
      process.stderr.write(`${failed.length} node(s) could not be restored: ${failed.map((n) => n.name).join(', ')}\n`);
      return ExitCode.RemediationFailed;
    }
    return ExitCode.Ok;
  } finally {
    await connection.close();
  }
}
