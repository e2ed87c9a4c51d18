/** What integration tests share: the suite's Temporal server, config files, the CLI, an in-process worker. */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, type Worker } from '@temporalio/worker';
import { stringify } from 'yaml';
import type { Config } from '../../lib/config';
import { createWorker } from '../../worker/worker';
import { AuditStore } from '../../activities/audit-store';
import { loadConfigFile } from '../../worker/config-file';
import { REPO_ROOT } from '../../worker/paths';
import { toolPath } from './temporal-dev';

export const REPO = REPO_ROOT;
export const CLI = join(REPO, 'bin', 'kubemend');

export function temporalAddress(): string {
  const a = process.env.KUBEMEND_TEST_TEMPORAL;
  if (!a) throw new Error('KUBEMEND_TEST_TEMPORAL is not set: run through jest (global-setup starts Temporal)');
  return a;
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(process.env.KUBEMEND_TEST_DIR ?? '/tmp', `${prefix}-`));
}

export const uniqueQueue = (name: string) => `test-${name}-${randomBytes(4).toString('hex')}`;

/** Writes a config document to dir/kubemend.yaml and returns its path. */
export function writeConfig(dir: string, doc: unknown, name = 'kubemend.yaml'): string {
  const path = join(dir, name);
  writeFileSync(path, typeof doc === 'string' ? doc : stringify(doc));
  return path;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`kubemend ${args.join(' ')} did not finish within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

export interface RunningWorker {
  worker: Worker;
  stop(): Promise<void>;
}

/** A real kubemend worker in this process, on the suite's server, with the prebuilt bundle. */
export async function startWorker(cfg: Config): Promise<RunningWorker> {
  quietRuntime();
  const connection = await NativeConnection.connect({ address: cfg.temporal.address });
  const audit = await AuditStore.open(cfg.audit);
  const worker = await createWorker(cfg, {
    audit,
    connection,
    workflowBundle: { codePath: process.env.KUBEMEND_TEST_BUNDLE! },
    shutdownGraceTimeMs: 2000,
  });
  const running = worker.run();
  return {
    worker,
    async stop() {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running;
      await connection.close();
      await audit.close();
    },
  };
}

let runtimeInstalled = false;
/** The SDK logs every worker state change at INFO; tests want warnings only. */
function quietRuntime(): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  try {
    Runtime.install({ logger: new DefaultLogger('WARN') });
  } catch {
    // Already installed by an earlier test file in this process: keep that one.
  }
}

export async function testClient(): Promise<{ client: Client; close: () => Promise<void> }> {
  const connection = await Connection.connect({ address: temporalAddress() });
  return { client: new Client({ connection }), close: () => connection.close() };
}

export function loadTestConfig(path: string): Config {
  return loadConfigFile(path);
}

/** The run ID `kubemend run` prints on stderr ("started <id>"). */
export const runIdFrom = (stderr: string) => /started (\S+)/.exec(stderr)?.[1] ?? '';

/**
 * With KUBEMEND_RECORD_HISTORIES=1, saves a run's history into test/histories/ for the replay
 * test (re-record only after an intended, versioned workflow change).
 */
export function recordHistory(runId: string, file: string): void {
  if (!process.env.KUBEMEND_RECORD_HISTORIES) return;
  const json = execFileSync(toolPath('temporal'), ['workflow', 'show', '--address', temporalAddress(), '--workflow-id', runId, '--output', 'json'], { encoding: 'utf8' });
  writeFileSync(join(REPO, 'test', 'histories', file), json);
}
