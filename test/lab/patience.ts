/**
 * Deadlines for the lab's waits. Shared by the nodes (lab.ts) and the control plane.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A deadline counted in time actually waited. Each wait is charged at most what it asked
 * for, so time the event loop spent blocked elsewhere (other nodes booting, a slow fork on
 * a loaded machine) does not use it up: a busy machine makes a wait longer, never fail.
 */
export class Patience {
  private waitedMs = 0;
  constructor(readonly budgetMs: number) {}
  get exhausted(): boolean {
    return this.waitedMs >= this.budgetMs;
  }
  sleep(ms: number): Promise<void> {
    return this.charge(sleep(ms), ms);
  }
  /** Awaits `p`, charging the time it took but at most `capMs`. */
  async charge<T>(p: Promise<T>, capMs: number): Promise<T> {
    const t0 = performance.now();
    try {
      return await p;
    } finally {
      this.waitedMs += Math.min(performance.now() - t0, capMs);
    }
  }
}
