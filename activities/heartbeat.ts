/** The one heartbeat loop every long-running activity shares. */
import { Context } from '@temporalio/activity';

/** Heartbeats every second while `fn` runs, so cancellation reaches it and a hang is noticed. */
export async function whileHeartbeating<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ctx = Context.current();
  ctx.heartbeat();
  const timer = setInterval(() => ctx.heartbeat(), 1000);
  try {
    return await fn(ctx.cancellationSignal);
  } finally {
    clearInterval(timer);
  }
}
