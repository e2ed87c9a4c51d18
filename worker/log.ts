/** Structured JSON log lines, one object per line, for the worker and the Temporal SDK alike. */
import { DefaultLogger, type LogLevel, type LogMetadata } from '@temporalio/worker';

export function jsonLine(level: string, message: string, meta?: LogMetadata, time = new Date()): string {
  return `${JSON.stringify({ time: time.toISOString(), level, msg: message, ...meta })}\n`;
}

export function jsonLogger(out: NodeJS.WritableStream = process.stdout, level: LogLevel = 'INFO'): DefaultLogger {
  return new DefaultLogger(level, (entry) => {
    out.write(jsonLine(entry.level, entry.message, entry.meta, new Date(Number(entry.timestampNanos / 1_000_000n))));
  });
}
