/**
 * `kubemend server`: the embedded default. Runs the Temporal CLI's dev server (built from
 * source by `npm run tools`) with its SQLite database on disk, kubemend's search
 * attributes registered, and the Web UI on its own port.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { type Config, ConfigSchema } from '../lib/config';
import { ExitCode } from '../lib/failures';
import { SEARCH_ATTRIBUTES } from '../lib/search-attributes';
import { TOOLS_BIN } from '../worker/paths';
import { CliError } from './errors';

export function temporalBinary(env: NodeJS.ProcessEnv = process.env): string {
  return env.KUBEMEND_TEMPORAL_BIN ?? join(TOOLS_BIN, 'temporal');
}

/**
 * Eager activities: an activity the workflow schedules is handed straight back to the worker
 * that asked for it, saving a round trip through the task queue for each of a run's many
 * short steps (measured: 10 to 40 ms each here). The test suite's server uses it too.
 */
export const DEV_SERVER_TUNING = ['--dynamic-config-value', 'system.enableActivityEagerExecution=true'] as const;

/** What the dev server needs of the config. */
export type ServerConfig = Pick<Config, 'temporal' | 'server'>;

/**
 * The defaults, as `temporal server start-dev` has its own: with no config file at all,
 * `kubemend server` starts on 127.0.0.1:7233 with its database in ./.kubemend/.
 */
export function serverDefaults(cwd = process.cwd()): ServerConfig {
  const server = ConfigSchema.shape.server.parse(undefined);
  return { temporal: ConfigSchema.shape.temporal.parse(undefined), server: { ...server, dbFile: resolve(cwd, server.dbFile) } };
}

export function devServerArgs(cfg: ServerConfig): string[] {
  const [host, port] = splitHostPort(cfg.temporal.address);
  return [
    'server', 'start-dev',
    '--db-filename', cfg.server.dbFile,
    '--ip', host,
    '--port', port,
    '--ui-port', String(cfg.server.uiPort),
    '--namespace', cfg.temporal.namespace,
    '--log-level', 'warn',
    ...DEV_SERVER_TUNING,
    ...SEARCH_ATTRIBUTES.flatMap((a) => ['--search-attribute', `${a.name}=${a.cliType}`]),
  ];
}

function splitHostPort(address: string): [string, string] {
  const i = address.lastIndexOf(':');
  return [address.slice(0, i).replace(/^\[|\]$/g, ''), address.slice(i + 1)];
}

export async function serverCommand(cfg: ServerConfig): Promise<number> {
  const bin = temporalBinary();
  if (!existsSync(bin)) throw new CliError(`Temporal CLI not found at ${bin}: build it with \`npm run tools\` (or set KUBEMEND_TEMPORAL_BIN)`);
  mkdirSync(dirname(cfg.server.dbFile), { recursive: true });
  const args = devServerArgs(cfg);
  process.stderr.write(`kubemend server: Temporal on ${cfg.temporal.address}, Web UI on http://127.0.0.1:${cfg.server.uiPort}, data in ${cfg.server.dbFile}\n`);
  const child = spawn(bin, args, { stdio: 'inherit' });
  let stopping = false;
  const forward = (sig: NodeJS.Signals) => {
    stopping = true;
    child.kill(sig);
  };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  return new Promise((done) => {
    // Stopped by the signal we forwarded: a clean stop. Killed by anything else, or exiting
    // non-zero: the server failed (1), whatever its own exit code was.
    child.on('exit', (code, signal) => done(signal ? (stopping ? ExitCode.Ok : ExitCode.RemediationFailed) : code === 0 ? ExitCode.Ok : ExitCode.RemediationFailed));
    child.on('error', (err) => {
      process.stderr.write(`kubemend server: ${err.message}\n`);
      done(ExitCode.RemediationFailed);
    });
  });
}
