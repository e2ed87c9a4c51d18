/**
 * Once per `npm test`: a real Temporal dev server (SQLite file in a temp dir) with
 * kubemend's search attributes, and one bundle of workflows/ that every test worker reuses.
 * Test files read both from the environment.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import { startDevServer } from './helpers/temporal-dev';

export default async function globalSetup(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'kubemend-test-'));
  const server = await startDevServer(join(dir, 'temporal.db'));
  const { code } = await bundleWorkflowCode({ workflowsPath: require.resolve('../workflows'), logger: quietLogger });
  const bundle = join(dir, 'workflow-bundle.js');
  writeFileSync(bundle, code);
  process.env.KUBEMEND_TEST_DIR = dir;
  process.env.KUBEMEND_TEST_TEMPORAL = server.address;
  process.env.KUBEMEND_TEST_BUNDLE = bundle;
  (globalThis as Record<string, unknown>).__kubemendDevServer = server;
}

const noop = () => undefined;
const quietLogger = { trace: noop, debug: noop, info: noop, warn: console.warn, error: console.error, log: noop };
