/**
 * What the lab benches (bench-gc.ts, bench-calico.ts) share: a Temporal dev server with a
 * kubemend worker started as `kubemend worker` over a lab's config (its own process, so its
 * RSS is its own), the worker's RSS, and where a run's time went by its history.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse, stringify } from 'yaml';
import { startDevServer } from '../test/helpers/temporal-dev';
import { REPO_ROOT } from '../worker/paths';

export const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
export const rssKiB = (pid: number, field: 'VmRSS' | 'VmHWM') => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
export const mib = (kib: number) => `${(kib / 1024).toFixed(0)} MiB`;

/** Samples a process's RSS every 100 ms until `stop`, which returns the peak seen. */
export function sampleRss(pid: number): { stop(): number } {
  let peak = rssKiB(pid, 'VmRSS');
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, rssKiB(pid, 'VmRSS'));
    } catch {
      // the process is gone: the run fails and says so
    }
  }, 100);
  return {
    stop() {
      clearInterval(timer);
      return peak;
    },
  };
}

/**
 * A dev server (its database in `tmp`) and a `kubemend worker` process on `taskQueue` with the
 * lab's clusters; resolves once the worker says it started. The caller stops both.
 */
export async function startBenchWorker(tmp: string, labDir: string, taskQueue: string): Promise<{ server: Awaited<ReturnType<typeof startDevServer>>; worker: ChildProcess }> {
  const server = await startDevServer(join(tmp, 'temporal.db'));
  const config = join(tmp, 'kubemend.yaml');
  const labConfig = parse(readFileSync(join(labDir, 'kubemend.yaml'), 'utf8')) as { clusters: unknown };
  writeFileSync(config, stringify({ temporal: { address: server.address, taskQueue }, audit: { store: 'sqlite', path: join(tmp, 'audit.db') }, clusters: labConfig.clusters }));
  const worker = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'kubemend'), '--config', config, 'worker'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const keep = (d: Buffer) => (log = (log + d.toString()).slice(-8000));
  worker.stdout!.on('data', keep);
  worker.stderr!.on('data', keep);
  while (!log.includes('kubemend worker started')) {
    if (worker.exitCode !== null) throw Object.assign(new Error(`the worker exited (${worker.exitCode}): ${log}`), { server, worker });
    await sleep(50);
  }
  return { server, worker };
}

/** From a run's history: its span (first to last event), the time at least one activity was in flight, and per activity type its count, summed and longest time. */
export function historySplit(json: string): { spanMs: number; inActivitiesMs: number; activities: number; byType: Map<string, { n: number; ms: number; maxMs: number }> } {
  interface Event {
    eventId: string;
    eventTime: string;
    activityTaskScheduledEventAttributes?: { activityType: { name: string } };
    activityTaskCompletedEventAttributes?: { scheduledEventId: string };
  }
  const events = (JSON.parse(json) as { events: Event[] }).events;
  const at = (e: Event) => Date.parse(e.eventTime);
  const scheduled = new Map<string, { type: string; at: number }>();
  const byType = new Map<string, { n: number; ms: number; maxMs: number }>();
  const spans: Array<[number, number]> = [];
  for (const e of events) {
    if (e.activityTaskScheduledEventAttributes) scheduled.set(String(e.eventId), { type: e.activityTaskScheduledEventAttributes.activityType.name, at: at(e) });
    const done = e.activityTaskCompletedEventAttributes;
    const sc = done && scheduled.get(String(done.scheduledEventId));
    if (sc) {
      const ms = at(e) - sc.at;
      const x = byType.get(sc.type) ?? { n: 0, ms: 0, maxMs: 0 };
      byType.set(sc.type, { n: x.n + 1, ms: x.ms + ms, maxMs: Math.max(x.maxMs, ms) });
      spans.push([sc.at, at(e)]);
    }
  }
  spans.sort((a, b) => a[0] - b[0]);
  let inActivitiesMs = 0;
  let end = -Infinity;
  for (const [a, b] of spans) {
    if (b <= end) continue;
    inActivitiesMs += b - Math.max(a, end);
    end = b;
  }
  return { spanMs: at(events[events.length - 1]) - at(events[0]), inActivitiesMs, activities: spans.length, byType };
}
