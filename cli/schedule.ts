/**
 * `kubemend schedule create|list|describe|pause|unpause|trigger|delete`: remediations on a
 * Temporal Schedule. Overlap policy SKIP: a run never starts while the schedule's last one is
 * still going (a trigger too: the SDK's default for a trigger would allow overlap). Creating
 * a schedule is the approval of its runs (lib/schedule.ts); every change to a schedule is in
 * the audit trail with who made it.
 */
import { type Client, ScheduleAlreadyRunning, type ScheduleDescription, ScheduleNotFoundError, ScheduleOverlapPolicy } from '@temporalio/client';
import { z } from 'zod';
import type { Config } from '../lib/config';
import { formatDuration, parseDuration } from '../lib/duration';
import { ExitCode } from '../lib/failures';
import { clusterName, freeText, nodeName } from '../lib/patterns';
import { CalicoOrphansInput, IpamGcInput } from '../lib/remediation-input';
import { MaintenanceWindow, parseDays, SCHEDULABLE, type Schedulable, SCHEDULE_ID, scheduleId, windowText } from '../lib/schedule';
import { SA_CLUSTER, SA_NODE, SA_REMEDIATION } from '../lib/search-attributes';
import { connectClient } from './connect';
import { CliError } from './errors';
import { actorName, parseArgs, recordByCli, retentionMs } from './runs';
import { pickNodes } from './targets';

/** The workflow type each schedulable remediation starts. */
const WORKFLOW_TYPE: Record<Schedulable, string> = { 'ipam-gc': 'remediateIpamGc', 'calico-orphans': 'remediateCalicoOrphans' };
/** Runs missed while the server was down are not made up later than this (the next one comes). */
const CATCHUP_WINDOW_MS = 60_000;
const MIN_EVERY_MS = 60_000;
const MAX_EVERY_MS = 7 * 86_400_000;

const actor = freeText(200).refine((v) => v.trim().length > 0, 'must not be blank').optional();

const CreateArgs = z.object({
  remediation: z.enum(SCHEDULABLE, { error: (i) => `${JSON.stringify(i.input)} cannot run on a schedule; schedulable: ${SCHEDULABLE.join(', ')}` }),
  cluster: clusterName,
  every: z.string(),
  name: z.string().regex(/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/, 'must be a short lowercase name (a-z, 0-9, -)').optional(),
  node: z.array(nodeName).default([]),
  grace: z.string().optional(),
  parallel: z.coerce.number().int().min(1).max(64).optional(),
  retention: z.string().optional(),
  windowDays: z.string().optional(),
  windowStart: z.string().optional(),
  windowEnd: z.string().optional(),
  timeZone: z.string().optional(),
  reason: freeText(2000).optional(),
  actor,
  paused: z.boolean().default(false),
  json: z.boolean().default(false),
});

const Id = z.string().regex(SCHEDULE_ID, 'must be a kubemend schedule ID as `kubemend schedule list` prints it (kubemend-<remediation>-<cluster>[-<name>])');

/** The maintenance window from the flags, or undefined when none is given. Defaults as kured's: every day, all day, UTC. */
export function windowFromFlags(f: { windowDays?: string; windowStart?: string; windowEnd?: string; timeZone?: string }): MaintenanceWindow | undefined {
  if (f.windowDays === undefined && f.windowStart === undefined && f.windowEnd === undefined && f.timeZone === undefined) return undefined;
  let days: MaintenanceWindow['days'];
  try {
    days = f.windowDays === undefined ? ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] : parseDays(f.windowDays);
  } catch (err) {
    throw new CliError(`--window-days: ${(err as Error).message}`);
  }
  const w = { days, start: f.windowStart ?? '00:00', end: f.windowEnd ?? f.windowStart ?? '00:00', timeZone: f.timeZone ?? 'UTC' };
  const parsed = MaintenanceWindow.safeParse(w);
  if (!parsed.success) {
    const flag: Record<string, string> = { start: '--window-start', end: '--window-end', timeZone: '--time-zone', days: '--window-days' };
    throw new CliError(parsed.error.issues.map((i) => `${flag[String(i.path[0])] ?? String(i.path[0])}: ${JSON.stringify((w as Record<string, unknown>)[String(i.path[0])])} ${i.message}`).join('; '));
  }
  return parsed.data;
}

export async function scheduleCreateCommand(cfg: Config, raw: Record<string, unknown>, out: NodeJS.WritableStream): Promise<number> {
  const args = parseArgs(CreateArgs, raw);
  const nodes = pickNodes(cfg, args.cluster, args.node);
  const every = parseDuration(args.every);
  if (every === undefined || every < MIN_EVERY_MS || every > MAX_EVERY_MS) throw new CliError(`--every: ${JSON.stringify(args.every)} is not a duration from 1m to 168h (e.g. 15m, 1h)`);
  const graceMs = args.grace === undefined ? undefined : parseDuration(args.grace);
  // A schedule runs unattended: no grace period of 0 (a sandbox whose ADD has just returned could lose its address).
  if (args.grace !== undefined && (graceMs === undefined || graceMs < 60_000 || graceMs > 7 * 86_400_000)) throw new CliError(`--grace: ${JSON.stringify(args.grace)} is not a duration from 1m to 168h for a schedule (0s is for an on-demand run on a node that is not starting pods)`);
  const window = windowFromFlags(args);
  const id = scheduleId(args.remediation, args.cluster, args.name);
  const createdBy = actorName(args.actor);
  const createdAt = new Date().toISOString();
  // Every run's input is fixed here and validated as the workflow will validate it.
  if (args.remediation !== 'ipam-gc' && args.retention !== undefined) throw new CliError('--retention applies to ipam-gc only');
  const schema = args.remediation === 'ipam-gc' ? IpamGcInput : CalicoOrphansInput;
  const input = schema.safeParse({
    cluster: args.cluster,
    nodes: args.node.length ? nodes : [],
    requestedBy: `${createdBy} (schedule ${id})`.slice(0, 200),
    reason: args.reason ?? `scheduled ${args.remediation} every ${formatDuration(every)}`,
    scheduledBy: { scheduleId: id, createdBy, createdAt },
    ...(window ? { window } : {}),
    ...(graceMs !== undefined ? { graceMs } : {}),
    ...(args.parallel !== undefined ? { parallel: args.parallel } : {}),
    ...(args.retention !== undefined ? { retentionMs: retentionMs(args.retention) } : {}),
    approvalTimeoutMs: cfg.policy.approvalTimeout,
    maxUnavailable: cfg.policy.maxUnavailable,
    drainTimeoutMs: cfg.policy.drainTimeout,
  });
  if (!input.success) throw new CliError(`the schedule's run input is invalid: ${input.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);

  const { client, connection } = await connectClient(cfg);
  try {
    try {
      await client.schedule.create({
        scheduleId: id,
        spec: { intervals: [{ every }] },
        action: {
          type: 'startWorkflow',
          workflowType: WORKFLOW_TYPE[args.remediation],
          workflowId: id,
          taskQueue: cfg.temporal.taskQueue,
          args: [input.data],
          typedSearchAttributes: [
            { key: SA_CLUSTER, value: args.cluster },
            { key: SA_NODE, value: nodes },
            { key: SA_REMEDIATION, value: args.remediation },
          ],
          memo: { requestedBy: input.data.requestedBy, reason: input.data.reason ?? '' },
        },
        policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: CATCHUP_WINDOW_MS, pauseOnFailure: false },
        memo: { kubemend: true, remediation: args.remediation, cluster: args.cluster, every: formatDuration(every), createdBy, createdAt, reason: args.reason ?? '', window: window ? windowText(window) : '' },
        state: { paused: args.paused, note: args.paused ? `created paused by ${createdBy}` : `created by ${createdBy}` },
      });
    } catch (err) {
      if (err instanceof ScheduleAlreadyRunning) throw new CliError(`schedule ${id} already exists (kubemend schedule describe ${id}); delete it first or give this one a --name`);
      throw err;
    }
    await recordByCli(cfg, {
      idempotencyKey: `${id}/create/${createdAt}`,
      actor: createdBy,
      reason: args.reason ?? '',
      cluster: args.cluster,
      node: '',
      remediation: args.remediation,
      workflowId: id,
      runId: '',
      step: 'schedule-create',
      action: `create schedule ${id}: ${args.remediation} every ${formatDuration(every)}, overlap SKIP${window ? `, window ${windowText(window)}` : ''}${args.paused ? ', paused' : ''}`,
      before: null,
      after: { nodes: input.data.nodes, graceMs: input.data.graceMs, parallel: input.data.parallel, ...('retentionMs' in input.data ? { retentionMs: input.data.retentionMs } : {}), window: window ?? null },
      outcome: 'approved',
      error: '',
    });
    out.write(args.json ? `${JSON.stringify({ scheduleId: id })}\n` : `created schedule ${id}: ${args.remediation} on ${args.cluster} every ${formatDuration(every)}${window ? ` inside ${windowText(window)}` : ''}${args.paused ? ' (paused)' : ''}; its runs are approved by this creation (${createdBy})\n`);
    return ExitCode.Ok;
  } finally {
    await connection.close();
  }
}

async function withSchedule<T>(cfg: Config, rawId: string, fn: (client: Client, id: string, d: ScheduleDescription) => Promise<T>): Promise<T> {
  const id = parseArgs(Id, rawId);
  const { client, connection } = await connectClient(cfg);
  try {
    let d: ScheduleDescription;
    try {
      d = await client.schedule.getHandle(id).describe();
    } catch (err) {
      if (err instanceof ScheduleNotFoundError) throw new CliError(`no schedule ${JSON.stringify(id)} in namespace ${cfg.temporal.namespace} (kubemend schedule list)`);
      throw err;
    }
    return await fn(client, id, d);
  } finally {
    await connection.close();
  }
}

function memoOf(d: { memo?: Record<string, unknown> }): Record<string, string> {
  return Object.fromEntries(Object.entries(d.memo ?? {}).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]));
}

/** What `describe` shows and `--json` prints. */
export function scheduleView(d: ScheduleDescription): Record<string, unknown> {
  const m = memoOf(d);
  return {
    scheduleId: d.scheduleId,
    remediation: m.remediation ?? null,
    cluster: m.cluster ?? null,
    every: m.every ?? null,
    window: m.window || null,
    createdBy: m.createdBy ?? null,
    createdAt: m.createdAt ?? null,
    paused: d.state.paused,
    note: d.state.note ?? '',
    overlap: d.policies.overlap,
    nextRuns: d.info.nextActionTimes.map((t) => t.toISOString()),
    running: d.info.runningActions.map((a) => a.workflow.workflowId),
    recentRuns: d.info.recentActions.map((a) => ({ runId: a.action.workflow.workflowId, scheduledAt: a.scheduledAt.toISOString(), startedAt: a.takenAt.toISOString() })),
    runsStarted: d.info.numActionsTaken,
    skippedOverlap: d.info.numActionsSkippedOverlap,
    missedCatchupWindow: d.info.numActionsMissedCatchupWindow,
  };
}

export async function scheduleDescribeCommand(cfg: Config, id: string, opts: { json?: boolean }, out: NodeJS.WritableStream): Promise<number> {
  return withSchedule(cfg, id, async (_c, _id, d) => {
    const v = scheduleView(d);
    if (opts.json) {
      out.write(`${JSON.stringify(v)}\n`);
      return ExitCode.Ok;
    }
    const lines = [
      `${v.scheduleId}`,
      `  remediation  ${v.remediation} on ${v.cluster}, every ${v.every}${v.window ? `, inside ${v.window}` : ''}`,
      `  created      by ${v.createdBy} at ${v.createdAt} (the approval of its runs)`,
      `  state        ${v.paused ? 'PAUSED' : 'active'}${v.note ? ` (${v.note})` : ''}; overlap ${v.overlap}`,
      `  runs         ${v.runsStarted} started, ${v.skippedOverlap} skipped (one was still going), ${v.missedCatchupWindow} missed (server down)`,
      `  running      ${(v.running as string[]).join(', ') || 'none'}`,
      `  next         ${(v.nextRuns as string[]).slice(0, 3).join(', ') || 'none (paused)'}`,
      ...(v.recentRuns as Array<{ runId: string; startedAt: string }>).map((r) => `  ran          ${r.startedAt} ${r.runId}`),
    ];
    out.write(`${lines.join('\n')}\n`);
    return ExitCode.Ok;
  });
}

export async function scheduleListCommand(cfg: Config, raw: { cluster?: string; json?: boolean }, out: NodeJS.WritableStream): Promise<number> {
  const args = parseArgs(z.object({ cluster: clusterName.optional(), json: z.boolean().default(false) }), raw);
  const { client, connection } = await connectClient(cfg);
  try {
    const rows: Array<Record<string, unknown>> = [];
    for await (const s of client.schedule.list()) {
      if (!SCHEDULE_ID.test(s.scheduleId)) continue;
      const m = memoOf(s);
      if (m.kubemend !== 'true' || (args.cluster && m.cluster !== args.cluster)) continue;
      rows.push({ scheduleId: s.scheduleId, remediation: m.remediation, cluster: m.cluster, every: m.every, window: m.window || null, paused: s.state.paused, next: s.info.nextActionTimes[0]?.toISOString() ?? null, lastRun: s.info.recentActions.at(-1)?.action.workflow.workflowId ?? null });
    }
    rows.sort((a, b) => String(a.scheduleId).localeCompare(String(b.scheduleId)));
    if (args.json) out.write(`${JSON.stringify(rows)}\n`);
    else if (rows.length === 0) out.write('no schedules\n');
    else {
      out.write(`${'SCHEDULE'.padEnd(40)} ${'EVERY'.padEnd(8)} ${'STATE'.padEnd(7)} ${'NEXT'.padEnd(25)} WINDOW\n`);
      for (const r of rows) out.write(`${String(r.scheduleId).padEnd(40)} ${String(r.every).padEnd(8)} ${(r.paused ? 'paused' : 'active').padEnd(7)} ${String(r.next ?? '-').padEnd(25)} ${r.window ?? '-'}\n`);
    }
    return ExitCode.Ok;
  } finally {
    await connection.close();
  }
}

const ChangeArgs = z.object({ note: freeText(500).optional(), reason: freeText(2000).optional(), actor });

/** pause, unpause, trigger, delete: each recorded in the audit trail with who did it. */
export async function scheduleChangeCommand(cfg: Config, what: 'pause' | 'unpause' | 'trigger' | 'delete', rawId: string, raw: Record<string, unknown>, out: NodeJS.WritableStream): Promise<number> {
  const a = parseArgs(ChangeArgs, raw);
  const who = actorName(a.actor);
  return withSchedule(cfg, rawId, async (client, id, d) => {
    const h = client.schedule.getHandle(id);
    const m = memoOf(d);
    const note = `${what}d by ${who}${a.note ? `: ${a.note}` : ''}`.replace('triggerd', 'triggered');
    let said: string;
    if (what === 'pause') {
      if (d.state.paused) throw new CliError(`schedule ${id} is already paused (${d.state.note ?? ''})`);
      await h.pause(note);
      said = `paused ${id}: no run starts until kubemend schedule unpause ${id}; a run already going finishes`;
    } else if (what === 'unpause') {
      if (!d.state.paused) throw new CliError(`schedule ${id} is not paused`);
      await h.unpause(note);
      said = `unpaused ${id}`;
    } else if (what === 'trigger') {
      // SKIP, as the schedule's own policy: the SDK's default for a trigger is ALLOW_ALL.
      await h.trigger(ScheduleOverlapPolicy.SKIP);
      said = d.info.runningActions.length
        ? `trigger of ${id} requested, but run ${d.info.runningActions[0].workflow.workflowId} is still going: overlap policy SKIP skips it (kubemend schedule describe ${id})`
        : `triggered ${id}: a run starts now (kubemend schedule describe ${id} names it)`;
    } else {
      await h.delete();
      said = `deleted ${id}${d.info.runningActions.length ? `; run ${d.info.runningActions[0].workflow.workflowId} already going is not stopped (kubemend cancel to stop it)` : ''}`;
    }
    await recordByCli(cfg, {
      idempotencyKey: `${id}/${what}/${new Date().toISOString()}`,
      actor: who,
      reason: a.reason ?? a.note ?? '',
      cluster: m.cluster ?? '',
      node: '',
      remediation: m.remediation ?? '',
      workflowId: id,
      runId: '',
      step: `schedule-${what}`,
      action: `${what} schedule ${id}${what === 'trigger' ? ' (overlap SKIP)' : ''}`,
      before: { paused: d.state.paused, note: d.state.note ?? '' },
      after: null,
      outcome: 'applied',
      error: '',
    });
    out.write(`${said}\n`);
    return ExitCode.Ok;
  });
}
