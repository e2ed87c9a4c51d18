/** Starts the real Temporal dev server built by scripts/build-tools.sh (SQLite on disk). */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitForFrontend } from '../../worker/temporal-setup';
import { SEARCH_ATTRIBUTES } from '../../lib/search-attributes';
import { TOOLS_BIN } from '../../worker/paths';
import { DEV_SERVER_TUNING } from '../../cli/server';
import { freePort } from '../lab/sshd';


export function toolPath(name: string): string {
  const p = join(TOOLS_BIN, name);
  if (!existsSync(p)) throw new Error(`${p} is missing: run \`npm run tools\` (scripts/build-tools.sh) first`);
  return p;
}

export interface DevServer {
  address: string;
  process: ChildProcess;
}

export { waitForFrontend };

async function startDevServerOnce(dbFile: string): Promise<DevServer> {
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  let log = '';
  const proc = spawn(
    toolPath('temporal'),
    [
      'server', 'start-dev', '--headless',
      '--db-filename', dbFile,
      '--ip', '127.0.0.1', '--port', String(port),
      '--log-level', 'warn',
      ...DEV_SERVER_TUNING,
      ...SEARCH_ATTRIBUTES.flatMap((a) => ['--search-attribute', `${a.name}=${a.cliType}`]),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  proc.stdout!.on('data', (d) => (log = (log + d).slice(-4000)));
  proc.stderr!.on('data', (d) => (log = (log + d).slice(-4000)));
  await waitForFrontend(address, proc, 60_000, () => log);
  return { address, process: proc };
}

/**
 * Starts the dev server on free ports. Ports are picked before the server binds them, and
 * the server picks some of its own (HTTP API, metrics), so another process can take one
 * in between: "address already in use" is retried with new ports, anything else is not.
 */
export async function startDevServer(dbFile: string): Promise<DevServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startDevServerOnce(dbFile);
    } catch (err) {
      if (attempt >= 3 || !/address already in use/.test((err as Error).message)) throw err;
    }
  }
}

export async function stopProcess(p: ChildProcess, graceMs = 10_000): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  // An unref'd timer: the losing side of the race must not keep the process alive.
  await Promise.race([exited, sleep(graceMs, undefined, { ref: false })]);
  if (p.exitCode === null && p.signalCode === null) {
    p.kill('SIGKILL');
    await exited;
  }
}
