/**
 * Prints figures, asserts nothing: the kubemend worker process's resident memory when idle
 * and after a batch of probe runs, and probe latency end to end (client start to result),
 * against the real dev server and a local sshd. Run: npm run build && node dist/scripts/bench-worker.js [runs]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../worker/paths';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Connection } from '@temporalio/client';
import { stringify } from 'yaml';
import { SA_CLUSTER, SA_NODE, SA_REMEDIATION } from '../lib/search-attributes';
import { startDevServer, stopProcess } from '../test/helpers/temporal-dev';
import { prebuiltBundle } from '../worker/bundle';
import { LocalSshd } from '../test/lab/sshd';

const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 30);
  const dir = mkdtempSync(join(tmpdir(), 'kubemend-bench-'));
  const server = await startDevServer(join(dir, 'temporal.db'));
  const sshd = await LocalSshd.start();
  const config = join(dir, 'kubemend.yaml');
  writeFileSync(config, stringify({
    temporal: { address: server.address, taskQueue: 'bench' },
    clusters: [{ name: 'bench', ssh: { privateKeyPath: sshd.clientKeyPath, knownHostsPath: sshd.knownHostsPath }, nodes: [{ name: 'node1', role: 'worker', host: sshd.host, port: sshd.port }] }],
  }));
  let worker: ChildProcess | undefined;
  try {
    const started = Date.now();
    worker = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'kubemend'), '--config', config, 'worker'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    worker.stdout!.on('data', (d) => (out += d));
    while (!out.includes('kubemend worker started')) {
      if (worker.exitCode !== null) throw new Error(`worker exited: ${out}`);
      await sleep(50);
    }
    console.log(`worker start to polling: ${Date.now() - started} ms (${prebuiltBundle() ? 'prebuilt bundle' : 'bundling workflows/ at start'})`);
    await sleep(10_000);
    console.log(`worker RSS idle (10 s after start): ${rssMiB(worker.pid!).toFixed(1)} MiB`);

    const connection = await Connection.connect({ address: server.address });
    const client = new Client({ connection });
    const latencies: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t = Date.now();
      await client.workflow.execute('probe', {
        workflowId: `bench-${i}-${t}`,
        taskQueue: 'bench',
        args: [{ cluster: 'bench', requestedBy: 'bench' }],
        typedSearchAttributes: [{ key: SA_CLUSTER, value: 'bench' }, { key: SA_NODE, value: ['node1'] }, { key: SA_REMEDIATION, value: 'probe' }],
      });
      latencies.push(Date.now() - t);
    }
    await connection.close();
    console.log(`probe of 1 node, ${runs} sequential runs: p50 ${pct(latencies, 50)} ms, p95 ${pct(latencies, 95)} ms, max ${Math.max(...latencies)} ms`);
    console.log(`worker RSS after ${runs} runs: ${rssMiB(worker.pid!).toFixed(1)} MiB`);
  } finally {
    if (worker) await stopProcess(worker);
    await sshd.stop();
    await stopProcess(server.process);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
