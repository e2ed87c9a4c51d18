import { rmSync } from 'node:fs';
import { type DevServer, stopProcess } from './helpers/temporal-dev';

export default async function globalTeardown(): Promise<void> {
  const server = (globalThis as Record<string, unknown>).__kubemendDevServer as DevServer | undefined;
  if (server) await stopProcess(server.process);
  if (process.env.KUBEMEND_TEST_DIR) rmSync(process.env.KUBEMEND_TEST_DIR, { recursive: true, force: true });
}
