/**
 * The main job on the embedded default, end to end (seed 000): a 3-node lab cloned from one
 * image, with its Kubernetes control plane; the Temporal dev server (SQLite on disk); a
 * kubemend worker; the probe finding the shared machine-id; the machine-id remediation with
 * live progress, approved as an SRE would approve it; the result and the run's record; then
 * everything is stopped (or left up with --keep). Every kubemend step runs as a separate
 * process through bin/kubemend, as an operator runs it. State lives in .kubemend/demo/.
 *
 * `--scenario stale-cni` (seed 003) instead: a 3-node lab after `kubeadm reset` and re-join,
 * with the real flanneld and CNI plugins; diagnose; ipam-gc frees the leaked host-local
 * addresses; stale-cni's light level on node2 and its full level (kubeadm reset, re-join) on
 * node3, each approved; where the time went; diagnose again.
 *
 * Needs root (the lab makes network and mount namespaces). Exit codes as kubemend's.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection, Client } from '@temporalio/client';
import { parse, stringify } from 'yaml';
import { REPO_ROOT } from '../worker/paths';
import { waitForFrontend } from '../worker/temporal-setup';
import { stopProcess } from '../test/helpers/temporal-dev';
import { freePort } from '../test/lab/sshd';
import { down, up } from '../test/lab/lab';
import type { RunStatus } from '../lib/run-status';

const root = REPO_ROOT;
const dir = join(root, '.kubemend', 'demo');
const labDir = join(dir, 'lab');
const kubemend = join(root, 'bin', 'kubemend');
const keep = process.argv.includes('--keep');
const scenarioAt = process.argv.indexOf('--scenario');
const scenario = scenarioAt >= 0 ? process.argv[scenarioAt + 1] : 'machine-id';
const staleCni = scenario === 'stale-cni';

const say = (s: string) => console.error(`\n\x1b[1mdemo:\x1b[0m ${s}`);

function start(name: string, args: string[]): ChildProcess {
  const log = openSync(join(dir, `${name}.log`), 'w');
  return spawn(process.execPath, [kubemend, ...args], { stdio: ['ignore', log, log] });
}

/** Runs `kubemend <args>` in the foreground, its output on this terminal; resolves with the exit code. */
function cli(config: string, args: string[]): Promise<number> {
  console.error(`$ kubemend ${args.join(' ')}`);
  const p = spawn(process.execPath, [kubemend, '--config', config, ...args], { stdio: 'inherit' });
  return new Promise((resolve) => p.on('exit', (c) => resolve(c ?? 1)));
}

async function waitForPoller(client: Client, worker: ChildProcess): Promise<void> {
  const until = Date.now() + 60_000;
  while (Date.now() < until) {
    if (worker.exitCode !== null) throw new Error(`kubemend worker exited (${worker.exitCode}); see ${join(dir, 'worker.log')}`);
    const r = await client.workflowService.describeTaskQueue({ namespace: 'default', taskQueue: { name: 'kubemend' }, taskQueueType: 1 });
    if (r.pollers?.length) return;
    await sleep(200);
  }
  throw new Error('the worker did not start polling within 60 s');
}

/**
 * Where the run's wall time went, from its history: waits inherent to the fix (drain,
 * reboot and return, approval) and the rest, kubemend's own overhead.
 */
async function wallTime(client: Client, runId: string, approvalMs: number): Promise<string> {
  const history = await client.workflow.getHandle(runId).fetchHistory();
  const events = history.events ?? [];
  const ms = (t: unknown) => {
    const ts = t as { seconds?: { toNumber(): number } | number; nanos?: number };
    const s = typeof ts.seconds === 'number' ? ts.seconds : (ts.seconds?.toNumber() ?? 0);
    return s * 1000 + Math.floor((ts.nanos ?? 0) / 1e6);
  };
  const scheduled = new Map<string, { type: string; at: number }>();
  const spent: Record<string, number> = {};
  for (const e of events) {
    const id = String(e.eventId);
    if (e.activityTaskScheduledEventAttributes) scheduled.set(id, { type: e.activityTaskScheduledEventAttributes.activityType?.name ?? '?', at: ms(e.eventTime) });
    const done = e.activityTaskCompletedEventAttributes;
    if (done) {
      const s = scheduled.get(String(done.scheduledEventId));
      if (s) spent[s.type] = (spent[s.type] ?? 0) + ms(e.eventTime) - s.at;
    }
  }
  const total = ms(events[events.length - 1].eventTime) - ms(events[0].eventTime);
  const drain = spent.drain ?? 0;
  const reboot = (spent.reboot ?? 0) + (spent.waitForReturn ?? 0);
  const reset = (spent.backupBeforeReset ?? 0) + (spent.kubeadmReset ?? 0);
  const join = spent.joinNode ?? 0;
  const waits = (spent.waitForNodeNotReady ?? 0) + (spent.waitForRejoinedNode ?? 0) + (spent.waitForCniPods ?? 0);
  // The wait for a person, as the run saw it: from the last step before the wait (the plan's
  // notification) to the accepted approval. The demo's own clock is the fallback.
  const accepted = events.findIndex((e) => e.workflowExecutionUpdateAcceptedEventAttributes);
  if (accepted > 0) {
    const before = events.slice(0, accepted).reverse().find((e) => e.activityTaskCompletedEventAttributes);
    if (before) approvalMs = ms(events[accepted].eventTime) - ms(before.eventTime);
  }
  const own = total - drain - reboot - reset - join - waits - approvalMs;
  const f = (x: number) => `${(x / 1000).toFixed(1)} s`;
  const parts = [
    `drains ${f(drain)}`,
    ...(reboot ? [`reboots until back and Ready ${f(reboot)}`] : []),
    ...(reset ? [`backup and kubeadm reset ${f(reset)}`] : []),
    ...(join ? [`kubeadm join (token, TLS bootstrap) ${f(join)}`] : []),
    ...(waits ? [`waits for the Node (NotReady after a reset, Ready after the join) and flannel ${f(waits)}`] : []),
    `waiting for approval ${f(approvalMs)}`,
  ];
  return `run took ${f(total)}: ${parts.join(', ')}, kubemend's own work ${f(own)} (SSH reads, API calls, verification, Temporal round trips)`;
}

/** Starts `kubemend run <args>` in the foreground, approves its plan as an SRE would once it is shown, and waits for it. */
async function approvedRun(config: string, client: Client, args: string[]): Promise<{ code: number; runId: string; approvalMs: number }> {
  console.error(`$ kubemend ${args.join(' ')}`);
  const run = spawn(process.execPath, [kubemend, '--config', config, ...args], { stdio: ['ignore', 'inherit', 'pipe'] });
  let startedId = '';
  run.stderr.on('data', (d: Buffer) => {
    process.stderr.write(d);
    startedId ||= /started (\S+)/.exec(d.toString())?.[1] ?? '';
  });
  const runExit = new Promise<number>((resolve) => run.on('exit', (c) => resolve(c ?? 1)));
  let approvalMs = 0;
  for (let i = 0; i < 600; i++) {
    await sleep(200);
    if (!startedId) continue;
    const st = await client.workflow.getHandle(startedId).query<RunStatus>('status').catch(() => undefined);
    if (st?.phase === 'AwaitingApproval') {
      const waitStart = Date.now();
      await sleep(1500); // the plan stays on screen a moment
      say(`approving plan ${st.plan?.id} (an SRE would read it first)`);
      await cli(config, ['approve', startedId, '--actor', 'demo-sre', '--comment', 'plan reviewed']);
      approvalMs = Date.now() - waitStart;
      break;
    }
    if (run.exitCode !== null) break;
  }
  return { code: await runExit, runId: startedId, approvalMs };
}

/** Seed 003: the light level on node2, the full level on node3. */
async function staleCniStory(config: string, client: Client): Promise<number> {
  say("what is wrong: kubemend diagnose (exit 4): cni0 on every node still carries the lease from before kubeadm reset, and host-local's range is full of leaked addresses");
  await cli(config, ['diagnose', '--cluster', 'lab', '--reason', 'demo: pods stuck in ContainerCreating on node2 and node3']);
  say('first the leaked addresses: kubemend run ipam-gc releases host-local files whose sandbox is gone (node2 and node3; node1, the control plane, is left for an SRE)');
  const gc = await cli(config, ['run', 'ipam-gc', '--cluster', 'lab', '--node', 'node2', '--node', 'node3', '--grace', '0s', '--auto-approve', '--reason', 'demo: no IP addresses available in network: cbr0']);
  if (gc !== 0) return gc;
  say('the light level on node2: cordon, drain, delete the stale cni0, check a new sandbox gets an address from the podCIDR, uncordon');
  const light = await approvedRun(config, client, ['run', 'stale-cni', '--cluster', 'lab', '--node', 'node2', '--reason', 'demo: cni0 already has an IP address different from 10.244.1.1/24']);
  if (light.runId) say(`node2 (light level): ${await wallTime(client, light.runId, light.approvalMs)}`);
  if (light.code !== 0) return light.code;
  say('the full level on node3 (--full): back up, kubeadm reset -f, delete cni0, re-join with a 15-minute token that never leaves the activity, wait for the Node and flannel, verify');
  const full = await approvedRun(config, client, ['run', 'stale-cni', '--cluster', 'lab', '--node', 'node3', '--full', '--join-timeout', '4m', '--reason', 'demo: reset and re-join node3']);
  if (full.runId) {
    say(`node3 (full level): ${await wallTime(client, full.runId, full.approvalMs)}`);
    say("the full level's record: kubeadm reset's own output is in its audit record; the join's shows the command with the token redacted");
    await cli(config, ['audit', 'show', full.runId]);
  }
  if (full.code !== 0) return full.code;
  say('and diagnose again: only node1, the control plane, which kubemend leaves to an SRE (the plan gives the procedure)');
  await cli(config, ['diagnose', '--cluster', 'lab', '--reason', 'demo: verify']);
  return 0;
}

async function main(): Promise<number> {
  if (scenario !== 'machine-id' && scenario !== 'stale-cni') {
    console.error(`demo: --scenario: ${JSON.stringify(scenario ?? '')} is not a demo scenario (machine-id, the default, or stale-cni)`);
    return 2;
  }
  if (process.getuid?.() !== 0) {
    console.error('demo: needs root: the lab creates network and mount namespaces (run it as root or with sudo)');
    return 2;
  }
  mkdirSync(dir, { recursive: true });
  const [port, uiPort] = [await freePort(), await freePort()];
  const procs: ChildProcess[] = [];
  let connection: Connection | undefined;
  try {
    say(staleCni ? "bringing up a 3-node lab after kubeadm reset and re-join (seed 003), with its Kubernetes control plane, the real flanneld and CNI plugins" : 'bringing up a 3-node lab cloned from one image (seed 000), with its Kubernetes control plane');
    const t0 = Date.now();
    const lab = staleCni
      ? await up({ dir: labDir, nodes: 3, scenarios: ['stale-cni'], controlPlane: true, realFlannel: true, rebootDowntimeMs: 1000 })
      : await up({ dir: labDir, nodes: 3, scenarios: ['cloned-machine-id'], controlPlane: true, rebootDowntimeMs: 1000 });
    console.error(`lab up in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${lab.nodes.map((n) => `${n.name} (${n.role}, ssh 127.0.0.1:${n.port})`).join(', ')}`);

    const config = join(dir, 'kubemend.yaml');
    const labConfig = parse(readFileSync(join(labDir, 'kubemend.yaml'), 'utf8')) as Record<string, unknown>;
    writeFileSync(
      config,
      `# Written by npm run demo: the lab's cluster, the embedded Temporal dev server.\n${stringify({
        temporal: { address: `127.0.0.1:${port}`, namespace: 'default', taskQueue: 'kubemend' },
        server: { dbFile: 'temporal.db', uiPort },
        policy: { maxUnavailable: 1, approvalRequired: true, approvalTimeout: '10m', drainTimeout: '2m' },
        audit: { store: 'sqlite', path: 'audit.db' },
        clusters: labConfig.clusters,
      })}`,
    );

    say(`starting the Temporal dev server on 127.0.0.1:${port} (Web UI http://127.0.0.1:${uiPort}) and a kubemend worker (logs in ${dir})`);
    const server = start('server', ['--config', config, 'server']);
    procs.push(server);
    await waitForFrontend(`127.0.0.1:${port}`, server, 60_000, () => `see ${join(dir, 'server.log')}`);
    const worker = start('worker', ['--config', config, 'worker']);
    procs.unshift(worker);
    connection = await Connection.connect({ address: `127.0.0.1:${port}` });
    const client = new Client({ connection });
    await waitForPoller(client, worker);

    if (staleCni) {
      const code = await staleCniStory(config, client);
      if (keep) {
        say(`left running (--keep): Web UI http://127.0.0.1:${uiPort}, config ${config}, kubectl --kubeconfig ${join(labDir, 'admin.kubeconfig')} get nodes; stop with Ctrl-C`);
        await new Promise((resolve) => process.once('SIGINT', resolve));
      }
      return code;
    }

    say('what is wrong: kubemend diagnose reads every node once and the API once, and names each seed\'s failure (exit 4: it found something)');
    await cli(config, ['diagnose', '--cluster', 'lab', '--reason', 'demo: pods stuck in ContainerCreating']);

    say('the probe shows the raw facts: each node over SSH and its Node object from the API');
    await cli(config, ['run', 'probe', '--cluster', 'lab', '--reason', 'demo: pods stuck in ContainerCreating']);

    say('the fix: kubemend run machine-id (it plans, waits for approval, then fixes one node at a time)');
    const { code, runId: startedId, approvalMs } = await approvedRun(config, client, ['run', 'machine-id', '--cluster', 'lab', '--reason', 'demo: weave peer-name collision (seed 000)']);
    if (startedId) {
      say(await wallTime(client, startedId, approvalMs));
      say('the run\'s record (kubemend status; kubemend list shows every run):');
      await cli(config, ['status', startedId]);
      say('the audit trail: every step, with before and after, hash-chained');
      await cli(config, ['audit', 'list']);
      await cli(config, ['audit', 'verify']);
      say(`and on the Node: kubectl --kubeconfig ${join(labDir, 'admin.kubeconfig')} describe node node2 (Events)`);
      await new Promise<void>((resolve) => {
        const k = spawn(join(root, '.tools', 'bin', 'kubectl'), ['--kubeconfig', join(labDir, 'admin.kubeconfig'), 'get', 'events', '-n', 'default', '--field-selector', 'involvedObject.name=node2', '-o', 'custom-columns=REASON:.reason,MESSAGE:.message'], { stdio: 'inherit' });
        k.on('exit', () => resolve());
        k.on('error', () => resolve());
      });
      say('and the probe again: machine-ids and weave MACs unique, Nodes Ready');
      await cli(config, ['run', 'probe', '--cluster', 'lab', '--reason', 'demo: verify']);
      say('and diagnose again: nothing found (exit 0)');
      const clean = await cli(config, ['diagnose', '--cluster', 'lab', '--reason', 'demo: verify']);
      if (clean !== 0 && code === 0) return clean;
    }
    if (keep) {
      say(`left running (--keep): Web UI http://127.0.0.1:${uiPort}, config ${config}, kubectl --kubeconfig ${join(labDir, 'admin.kubeconfig')} get nodes; stop with Ctrl-C`);
      await new Promise((resolve) => process.once('SIGINT', resolve));
    }
    return code;
  } finally {
    say('stopping the worker, the Temporal server and the lab');
    await connection?.close();
    for (const p of procs) await stopProcess(p, 15_000);
    await down(labDir);
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`demo: ${(err as Error).message}`);
    process.exit(1);
  },
);
