/** The one polling loop of the activities that wait for a node or the API to reach a state. */
import { setTimeout as sleep } from 'node:timers/promises';
import { ApplicationFailure } from '@temporalio/common';
import { Failure } from '../lib/failures';
import { whileHeartbeating } from './heartbeat';
import { pollDelay } from './node-lifecycle';

export type Poll<T> = { ok: T } | { seen: string };

/**
 * Polls `attempt` (heartbeating) until it returns `ok`, backing off to 1 s between tries.
 * After the deadline the last thing seen goes into a VerificationFailed. A try that throws
 * a retryable error counts as seen; a non-retryable failure ends the wait at once.
 */
export function pollUntil<T>(timeoutMs: number, timedOut: (seen: string) => string, attempt: (signal: AbortSignal) => Promise<Poll<T>>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  return whileHeartbeating(async (signal) => {
    let seen = 'nothing read yet';
    for (let round = 0; ; round++) {
      signal.throwIfAborted();
      try {
        const got = await attempt(signal);
        if ('ok' in got) return got.ok;
        seen = got.seen;
      } catch (err) {
        if (signal.aborted || (err instanceof ApplicationFailure && err.nonRetryable)) throw err;
        seen = (err as Error).message.slice(0, 300);
      }
      if (Date.now() > deadline) throw ApplicationFailure.create({ type: Failure.VerificationFailed, message: timedOut(seen), nonRetryable: true });
      await sleep(pollDelay(round, 1000), undefined, { signal }).catch(() => undefined);
    }
  });
}

