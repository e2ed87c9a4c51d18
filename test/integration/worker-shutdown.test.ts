/**
 * An activity in flight when things stop. SIGTERM: the worker process gives it its grace
 * time, cancels it, exits 0, and the run is not lost: another worker finishes it. A run
 * cancelled by the operator ends CANCELLED, and the cancellation reaches the SSH layer.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ProbeReport } from '../../lib/probe';
import type { RunStatus } from '../../lib/run-status';
import { WorkflowFailedError } from '@temporalio/client';
import { SA_CLUSTER, SA_NODE, SA_REMEDIATION } from '../../lib/search-attributes';
import { LocalSshd } from '../lab/sshd';
import { CLI, loadTestConfig, type RunningWorker, startWorker, tempDir, temporalAddress, testClient, uniqueQueue, writeConfig } from '../helpers/harness';

let sshd: LocalSshd;
let blackhole: Server;
const sockets: Socket[] = [];
let worker: ChildProcess | undefined;
let second: RunningWorker | undefined;

beforeAll(async () => {
  sshd = await LocalSshd.start();
  // Accepts TCP and never says a word: an SSH handshake to it hangs until cancelled.
  // It reads (and drops) what arrives, so it sees the client's FIN when the client hangs up.
  blackhole = createServer((s) => {
    sockets.push(s);
    s.resume();
  });
  await new Promise<void>((r) => blackhole.listen(0, '127.0.0.1', r));
});

afterAll(async () => {
  if (worker && worker.exitCode === null) worker.kill('SIGKILL');
  await second?.stop();
  sockets.forEach((s) => s.destroy());
  blackhole?.close();
  await sshd?.stop();
});

test('SIGTERM mid-activity: exit 0 after the grace time, and the run completes on another worker', async () => {
  const dir = tempDir('shutdown');
  const taskQueue = uniqueQueue('shutdown');
  const hangPort = (blackhole.address() as { port: number }).port;
  const kh = join(dir, 'known_hosts');
  writeFileSync(kh, `${sshd.knownHostsLine()}\n${sshd.knownHostsLine().replace(`]:${sshd.port} `, `]:${hangPort} `)}\n`);
  const doc = (port: number) => ({
    temporal: { address: temporalAddress(), taskQueue },
    worker: { shutdownGraceTime: '2s' },
    ssh: { connectTimeout: '120s' },
    clusters: [{ name: 'c', ssh: { user: 'root', privateKeyPath: sshd.clientKeyPath, knownHostsPath: kh }, nodes: [{ name: 'n1', role: 'worker', host: '127.0.0.1', port }] }],
  });
  const hanging = writeConfig(dir, doc(hangPort), 'hanging.yaml');

  let out = '';
  worker = spawn(process.execPath, [CLI, '--config', hanging, 'worker'], { stdio: ['ignore', 'pipe', 'pipe'] });
  worker.stdout!.on('data', (d) => (out += d));
  worker.stderr!.on('data', (d) => (out += d));
  while (!out.includes('kubemend worker started')) {
    if (worker.exitCode !== null) throw new Error(out);
    await sleep(100);
  }

  const { client, close } = await testClient();
  try {
    const handle = await client.workflow.start('probe', {
      workflowId: `probe-c-shutdown-${Date.now()}`,
      taskQueue,
      args: [{ cluster: 'c', requestedBy: 'test', retry: { initialIntervalMs: 100, maximumIntervalMs: 500, maximumAttempts: 10 } }],
      typedSearchAttributes: [{ key: SA_CLUSTER, value: 'c' }, { key: SA_NODE, value: ['n1'] }, { key: SA_REMEDIATION, value: 'probe' }],
    });
    // Wait until the activity is running (connected to the blackhole, waiting for a banner).
    for (let i = 0; ; i++) {
      const st = await handle.query<RunStatus>('status').catch(() => undefined);
      if (st?.nodes.n1?.phase === 'Probing' && sockets.length > 0) break;
      if (i > 200) throw new Error(`activity never started: ${out}`);
      await sleep(100);
    }

    const t0 = Date.now();
    const exited = new Promise<number | null>((r) => worker!.once('exit', (c) => r(c)));
    worker.kill('SIGTERM');
    const code = await Promise.race([exited, sleep(30_000, undefined, { ref: false }).then(() => 'timeout')]);
    const tookMs = Date.now() - t0;
    expect(code).toBe(0);
    expect(tookMs).toBeLessThan(25_000); // bounded by the 2 s grace, not the 120 s connect timeout
    const logs = out.trim().split('\n').map((l) => JSON.parse(l) as { msg: string });
    expect(logs.map((l) => l.msg)).toContain('kubemend worker stopped');
    expect((await handle.describe()).status.name).toBe('RUNNING');

    // Same node, now reachable: a second worker picks the run up and finishes it.
    second = await startWorker(loadTestConfig(writeConfig(dir, doc(sshd.port), 'reachable.yaml')));
    const report = (await handle.result()) as ProbeReport;
    expect(report.nodes).toEqual([expect.objectContaining({ name: 'n1', error: null })]);
  } finally {
    await close();
  }
});

test('cancelling a run mid-probe ends it CANCELLED and closes the hanging SSH connection', async () => {
  const dir = tempDir('cancel');
  const taskQueue = uniqueQueue('cancel');
  const hangPort = (blackhole.address() as { port: number }).port;
  const kh = join(dir, 'known_hosts');
  writeFileSync(kh, `${sshd.knownHostsLine().replace(`]:${sshd.port} `, `]:${hangPort} `)}\n`);
  const cfg = writeConfig(dir, {
    temporal: { address: temporalAddress(), taskQueue },
    ssh: { connectTimeout: '120s' },
    clusters: [{ name: 'c', ssh: { user: 'root', privateKeyPath: sshd.clientKeyPath, knownHostsPath: kh }, nodes: [{ name: 'n1', role: 'worker', host: '127.0.0.1', port: hangPort }] }],
  });
  const w = await startWorker(loadTestConfig(cfg));
  const { client, close } = await testClient();
  try {
    const before = sockets.length;
    const handle = await client.workflow.start('probe', {
      workflowId: `probe-c-cancel-${Date.now()}`,
      taskQueue,
      args: [{ cluster: 'c', requestedBy: 'test', heartbeatTimeoutMs: 2000 }],
      typedSearchAttributes: [{ key: SA_CLUSTER, value: 'c' }, { key: SA_NODE, value: ['n1'] }, { key: SA_REMEDIATION, value: 'probe' }],
    });
    while (sockets.length === before) await sleep(50);
    const sock = sockets[sockets.length - 1];
    const closed = new Promise<number>((r) => sock.once('close', () => r(Date.now())));
    const t0 = Date.now();
    await handle.cancel();
    await expect(handle.result()).rejects.toThrow(WorkflowFailedError);
    expect((await handle.describe()).status.name).toBe('CANCELLED');
    const closedAt = await Promise.race([closed, sleep(20_000, undefined, { ref: false }).then(() => -1)]);
    expect(closedAt).toBeGreaterThan(0); // the activity saw the cancellation and dropped the connection
    expect(closedAt - t0).toBeLessThan(15_000);
  } finally {
    await close();
    await w.stop();
  }
});
