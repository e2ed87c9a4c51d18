import { rmSync } from 'node:fs';
import { type DevServer, stopProcess } from './helpers/temporal-dev';
import { down, runningLabs } from './lab/lab';

export default async function globalTeardown(): Promise<void> {
  // Safety net: no lab a test started (even by mistake) outlives the run.
  const testDir = process.env.KUBEMEND_TEST_DIR;
  if (testDir) for (const lab of runningLabs().filter((d) => d.startsWith(`${testDir}/`))) await down(lab);
  const server = (globalThis as Record<string, unknown>).__kubemendDevServer as DevServer | undefined;
  if (server) await stopProcess(server.process);
  if (process.env.KUBEMEND_TEST_DIR) rmSync(process.env.KUBEMEND_TEST_DIR, { recursive: true, force: true });
}
