/**
 * Drives a run through test/helpers/crash-worker.ts: starts a crashing worker, and each time
 * it SIGKILLs itself (after the first completion of an activity type) starts another, until
 * the run closes. Returns the run's result or error, how many times the worker died, and
 * the activity types it died after, in order.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import { REPO_ROOT } from '../../worker/paths';

const CRASH_WORKER = join(REPO_ROOT, 'dist', 'test', 'helpers', 'crash-worker.js');

export interface CrashedRun<T> {
  result?: T;
  error?: Error;
  restarts: number;
  crashedAfter: string[];
}

export async function runThroughCrashes<T>(handle: WorkflowHandle, config: string, crashLog: string, maxRestarts = 40): Promise<CrashedRun<T>> {
  const closed = handle.result().then(
    (result) => ({ result: result as T, error: undefined }),
    (error: Error) => ({ result: undefined, error }),
  );
  let restarts = 0;
  for (;;) {
    const child = spawn(process.execPath, [CRASH_WORKER, config, crashLog], { stdio: ['ignore', 'ignore', 'inherit'] });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    const first = await Promise.race([closed.then(() => 'closed' as const), exited.then(() => 'exited' as const)]);
    if (first === 'closed') {
      child.kill('SIGTERM');
      await exited;
      break;
    }
    restarts++;
    if (restarts > maxRestarts) throw new Error(`the worker crashed more than ${maxRestarts} times`);
  }
  const crashedAfter = existsSync(crashLog) ? readFileSync(crashLog, 'utf8').split('\n').filter(Boolean) : [];
  return { ...(await closed), restarts, crashedAfter };
}

/** An error and its causes' messages on one line, for an assertion that shows why a run failed. */
export function describeError(error: Error | undefined): string | undefined {
  if (!error) return undefined;
  const parts: string[] = [];
  for (let e: unknown = error; e instanceof Error; e = (e as { cause?: unknown }).cause) parts.push(e.message);
  return parts.join(': ');
}
