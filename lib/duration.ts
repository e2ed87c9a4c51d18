/** Durations in config and CLI flags: "500ms", "30s", "10m", "2h", or a bare number of seconds. */
import { z } from 'zod';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/;

export function parseDuration(text: string): number | undefined {
  const m = DURATION.exec(text.trim());
  if (!m) return undefined;
  const ms = Number(m[1]) * UNITS[m[2] ?? 's'];
  return Number.isFinite(ms) ? Math.round(ms) : undefined;
}

/** A zod schema accepting a duration string or number of seconds and yielding milliseconds. */
export function durationMs(opts: { min: number; max: number }) {
  return z.union([z.string(), z.number()]).transform((raw, ctx) => {
    const ms = typeof raw === 'number' ? Math.round(raw * 1000) : parseDuration(raw);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `must be a duration like "30s", "10m" or "500ms", got ${JSON.stringify(raw)}` });
      return z.NEVER;
    }
    if (ms < opts.min || ms > opts.max) {
      ctx.addIssue({ code: 'custom', message: `must be between ${formatDuration(opts.min)} and ${formatDuration(opts.max)}, got ${formatDuration(ms)}` });
      return z.NEVER;
    }
    return ms;
  });
}

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms >= 3_600_000) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms >= 60_000) return `${ms / 60_000}m`;
  if (ms % 1000 === 0 && ms >= 1000) return `${ms / 1000}s`;
  return `${ms}ms`;
}
