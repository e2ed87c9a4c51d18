/**
 * The embedded default, end to end: the Temporal dev server (SQLite on disk), a kubemend
 * worker, and `kubemend run probe` against a local node, which is a private sshd on
 * loopback with its own host key. Everything runs as separate processes through
 * bin/kubemend, as an operator would run them, and stops again at the end.
 * State lives in .kubemend/demo/ (git-ignored).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../worker/paths';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection } from '@temporalio/client';
import { freePort, LocalSshd } from '../test/lab/sshd';
import { waitForFrontend } from '../worker/temporal-setup';
import { stopProcess } from '../test/helpers/temporal-dev';

const root = REPO_ROOT;
const dir = join(root, '.kubemend', 'demo');
const kubemend = join(root, 'bin', 'kubemend');

function start(name: string, args: string[]): ChildProcess {
  const log = openSync(join(dir, `${name}.log`), 'w');
  return spawn(process.execPath, [kubemend, ...args], { stdio: ['ignore', log, log] });
}

/** The worker bundles workflow code at start (a second or two); run the probe once it polls. */
async function waitForPoller(address: string, worker: ChildProcess): Promise<void> {
  const c = await Connection.connect({ address });
  try {
    const until = Date.now() + 60_000;
    while (Date.now() < until) {
      if (worker.exitCode !== null) throw new Error(`kubemend worker exited (${worker.exitCode}); see ${join(dir, 'worker.log')}`);
      const r = await c.workflowService.describeTaskQueue({ namespace: 'default', taskQueue: { name: 'kubemend' }, taskQueueType: 1 });
      if (r.pollers?.length) return;
      await sleep(200);
    }
    throw new Error('the worker did not start polling within 60 s');
  } finally {
    await c.close();
  }
}

async function main(): Promise<number> {
  mkdirSync(dir, { recursive: true });
  const sshd = await LocalSshd.start({ dir: join(dir, 'node1') });
  const [port, uiPort] = [await freePort(), await freePort()];
  const config = join(dir, 'kubemend.yaml');
  writeFileSync(
    config,
    `# Written by npm run demo: one cluster whose only node is a private sshd on loopback.
temporal:
  address: 127.0.0.1:${port}
  namespace: default
  taskQueue: kubemend
server:
  dbFile: temporal.db
  uiPort: ${uiPort}
clusters:
  - name: local
    ssh:
      user: root
      privateKeyPath: ${sshd.clientKeyPath}
      knownHostsPath: ${sshd.knownHostsPath}
    nodes:
      - name: node1
        role: control-plane
        host: ${sshd.host}
        port: ${sshd.port}
`,
  );
  const procs: ChildProcess[] = [];
  try {
    console.error(`demo: starting Temporal dev server on 127.0.0.1:${port} (Web UI http://127.0.0.1:${uiPort})`);
    const server = start('server', ['--config', config, 'server']);
    procs.push(server);
    await waitForFrontend(`127.0.0.1:${port}`, server, 60_000, () => `see ${join(dir, 'server.log')}`);
    console.error('demo: starting kubemend worker (JSON logs in .kubemend/demo/worker.log)');
    const worker = start('worker', ['--config', config, 'worker']);
    procs.unshift(worker);
    await waitForPoller(`127.0.0.1:${port}`, worker);
    console.error(`demo: kubemend --config ${config} run probe --cluster local\n`);
    const probe = spawn(process.execPath, [kubemend, '--config', config, 'run', 'probe', '--cluster', 'local', '--reason', 'demo'], { stdio: 'inherit' });
    const workerDied = new Promise<never>((_, reject) =>
      worker.once('exit', (c) => reject(new Error(`kubemend worker exited (${c}); see ${join(dir, 'worker.log')}`))),
    );
    const code = await Promise.race([new Promise<number>((r) => probe.on('exit', (c) => r(c ?? 1))), workerDied]).finally(() => probe.kill());
    console.error(`\ndemo: probe exited ${code}. Same run as JSON: kubemend --config ${config} list --json`);
    return code;
  } finally {
    for (const p of procs) await stopProcess(p, 15_000);
    await sshd.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`demo: ${(err as Error).message}`);
    process.exit(1);
  },
);
