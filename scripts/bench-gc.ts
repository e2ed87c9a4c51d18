/**
 * `npm run bench:gc -- [nodes]`: prints figures, asserts nothing about time. It checks only
 * the end state (every leaked file gone or quarantined, every live file as it was) and exits
 * 1 if that is wrong: a wrong clean-up is no figure.
 *
 * One lab (kube-apiserver and kwok included: the runbook lists the Nodes), a Temporal dev
 * server and a kubemend worker started as `kubemend worker` (its own process, so its RSS is
 * its own).
 *
 * Part 1, node1: 10 live host-local files (real CNI ADDs, network cbr0) and 254 leaked ones,
 * written as bench-ipam-gc-scripts.ts writes them ("<id>\r\neth0", ids no runtime has, an
 * hour old) into a second network directory, bench0: the node's /24 holds 253 addresses, so
 * 254 leaked and 10 live do not fit in cbr0. Each round the leaked files are written afresh,
 * then cleaned (a) by seed 003's shell loop, run over SSH in every network directory as its
 * author ran it in cbr0, with `crictl pods` for `docker ps -a`, and (b) by kubemend's
 * remediateIpamGc (grace 0, auto-approved), timed from the start to the result; the split
 * (time with an activity in flight against the run's own span) comes from the run's history.
 * Before the rounds, the seed's line exactly as written is run once to show what it does on
 * today's host-local files.
 *
 * Part 2: every node of the lab (default 50) with 254 leaked files and 2 live ones (node1
 * keeps its 10): one kubemend run over all of them; wall time and the worker's RSS. With
 * the ipam-gc input's `parallel` (the runbook's lanes), once with its default and once with 1.
 *
 * Needs root and the built tools (npm run setup). Run: npm run bench:gc -- [nodes]
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Client, Connection } from '@temporalio/client';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import { SshConnector } from '../activities/ssh';
import { mapLimit } from '../lib/async';
import type { NodeTarget } from '../lib/config';
import { QUARANTINE_DIR, runTagOf } from '../lib/ipam-gc-plan';
import { IpamGcInput } from '../lib/remediation-input';
import { SA_CLUSTER, SA_NODE, SA_REMEDIATION } from '../lib/search-attributes';
import type { IpamGcResult } from '../workflows/ipam-gc';
import { stopProcess } from '../test/helpers/temporal-dev';
import { podAdd } from '../test/lab/cni';
import { down, up } from '../test/lab/lab';
import { historySplit, mib, rssKiB, s, sampleRss, startBenchWorker } from './bench-common';

const LIVE_NODE1 = 10;
const LIVE_OTHERS = 2;
const LEAKED = 254;
const ROUNDS = 3;
const TASK_QUEUE = 'bench-gc';

/**
 * seed 003's line (../shared/seeds/003_*.txt), run in /var/lib/cni/networks/cbr0 by its author:
 *   for hash in $(tail -n +1 * | grep '^[A-Za-z0-9]*$' | cut -c 1-8); do if [ -z $(docker ps -a | grep $hash | awk '{print $1}') ]; then grep -irl $hash ./; fi; done | xargs rm
 * `docker ps -a` listed dockershim's pause containers, whose ids are the sandbox ids host-local
 * files hold; under CRI the sandboxes are `crictl pods` (`crictl ps -a` lists containers, and a
 * sandbox without one, as the lab's ADDs make, would be taken for leaked). Its first column,
 * POD ID, is the id's first 13 characters, as docker's CONTAINER ID was the first 12.
 */
const SEED_LINE_AS_WRITTEN = `for hash in $(tail -n +1 * | grep '^[A-Za-z0-9]*$' | cut -c 1-8); do if [ -z $(crictl pods | grep $hash | awk '{print $1}') ]; then grep -irl $hash ./; fi; done | xargs rm`;
/**
 * The same loop for today's files: host-local now writes "<id>\r\n<ifname>", so `tail -n +1 *`
 * gives the line "<id>\r" (no match: \r) and the line "eth0" (a match: every file's "hash" is
 * eth0, no sandbox has it, and `grep -irl eth0` names every file, live ones included). Taking
 * each file's first line without its \r is the only change; one `crictl pods` per file and
 * one `grep -irl` over the directory per leaked file stay as the seed has them.
 */
const SEED_LOOP = `for hash in $(awk 'FNR == 1' * | tr -d '\\r' | grep '^[A-Za-z0-9]*$' | cut -c 1-8); do if [ -z $(crictl pods | grep $hash | awk '{print $1}') ]; then grep -irl $hash ./; fi; done | xargs rm`;
/** The loop in every network directory, each as the seed's author ran it in cbr0 (cd there first). */
const inEveryNetwork = (loop: string) => `for d in /var/lib/cni/networks/*/; do (cd "$d" && ${loop}); done`;

/** Writes LEAKED leaked files afresh into bench0 (one exec, ids as arguments), as bench-ipam-gc-scripts does. */
const WRITE_LEAKS =
  'd=/var/lib/cni/networks/bench0; rm -rf $d && mkdir -p $d && : > $d/lock && k=2; for id; do printf "%s\\r\\neth0" "$id" > $d/10.245.$((k / 256)).$((k % 256)); k=$((k + 1)); done; printf 10.245.1.0 > $d/last_reserved_ip.0; touch -d "1 hour ago" $d/10.245.*';

/**
 * A node's end state: reservation files left in bench0, those in the quarantine directory $1
 * (if given), and each live file in cbr0 (name, mtime, sha256).
 */
const END_STATE = [
  'n=/var/lib/cni/networks',
  'echo "left $(ls -A $n/bench0 2>/dev/null | grep -c "^10\\.")"',
  'q=0; if [ -n "$1" ] && [ -d "$1/bench0" ]; then q=$(ls -A "$1/bench0" | grep -c "^10\\."); fi; echo "quarantined $q"',
  'cd $n/cbr0 && for f in 10.*; do [ -f "$f" ] && printf "live %s %s %s\\n" "$f" "$(stat -c %Y -- "$f")" "$(sha256sum < "$f" | cut -c 1-64)"; done; true',
].join('\n');

const BACKUP_CBR0 = 'rm -rf /root/bench-gc-cbr0 && cp -a /var/lib/cni/networks/cbr0 /root/bench-gc-cbr0';
const RESTORE_CBR0 = 'rm -rf /var/lib/cni/networks/cbr0 && cp -a /root/bench-gc-cbr0 /var/lib/cni/networks/cbr0';

interface EndState {
  left: number;
  quarantined: number;
  live: string[];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const nodeCount = Number(process.argv[2] ?? 50);
  if (!Number.isInteger(nodeCount) || nodeCount < 1) throw new Error(`usage: bench-gc [nodes]: nodes must be a whole number from 1, got ${process.argv[2]}`);
  // The lead is adding `parallel` (the runbook's lanes) to the ipam-gc input: used when the schema has it.
  const parallelField = (IpamGcInput.shape as Record<string, { parse(v: unknown): unknown } | undefined>).parallel;
  const tmp = mkdtempSync('/tmp/bench-gc-');
  const dir = join(tmp, 'lab');
  const ssh = new SshConnector({ connectTimeoutMs: 10_000, commandTimeoutMs: 600_000 });
  let server: Awaited<ReturnType<typeof startBenchWorker>>['server'] | undefined;
  let worker: ChildProcess | undefined;
  let connection: Connection | undefined;
  let wrong = 0;
  const bad = (what: string) => {
    wrong++;
    console.log(`  END STATE WRONG: ${what}`);
  };
  try {
    console.log(`bench:gc on ${nodeCount} lab node(s), this machine ${readFileSync('/proc/cpuinfo', 'utf8').match(/^processor\s/gm)?.length ?? '?'} cores`);
    let t = performance.now();
    const state = await up({ dir, nodes: nodeCount, controlPlane: true, rebootDowntimeMs: 300 });
    console.log(`lab up (control plane, kwok): ${s(performance.now() - t)}`);
    const targets: NodeTarget[] = state.nodes.map((n) => ({ cluster: 'lab', name: n.name, role: 'worker', host: '127.0.0.1', port: n.port, user: 'root', privateKeyPath: join(dir, 'id_ed25519'), knownHostsPath: join(dir, 'known_hosts') }));
    const node1 = targets[0];
    const run = async (target: NodeTarget, argv: string[]) => ssh.withSession(target, (x) => x.run(argv, { check: false }));
    const sh = async (target: NodeTarget, script: string, ...args: string[]) => {
      const r = await run(target, ['sh', '-c', script, 'bench-gc', ...args]);
      if (r.exitCode !== 0) throw new Error(`${target.name}: ${script.slice(0, 60)}...: exit ${r.exitCode}: ${r.stderr}`);
      return r.stdout;
    };
    const writeLeaks = (target: NodeTarget) => sh(target, WRITE_LEAKS, ...Array.from({ length: LEAKED }, () => randomBytes(32).toString('hex')));
    const endState = async (target: NodeTarget, quarantine = ''): Promise<EndState> => {
      const out = (await sh(target, END_STATE, quarantine)).split('\n');
      const num = (k: string) => Number(out.find((l) => l.startsWith(`${k} `))?.split(' ')[1] ?? NaN);
      return { left: num('left'), quarantined: num('quarantined'), live: out.filter((l) => l.startsWith('live ')) };
    };
    /** The live files as they were, and the leaked ones gone (and, for kubemend, all quarantined). */
    const checkNode = (target: NodeTarget, e: EndState, liveBefore: string[], quarantined: boolean): string | undefined => {
      const problems: string[] = [];
      if (e.left !== 0) problems.push(`${e.left} leaked file(s) left in bench0`);
      if (quarantined && e.quarantined !== LEAKED) problems.push(`${e.quarantined} of ${LEAKED} in the quarantine`);
      const kept = liveBefore.filter((l) => e.live.includes(l)).length;
      if (kept !== liveBefore.length || e.live.length !== liveBefore.length) problems.push(`live files: ${kept} of ${liveBefore.length} as they were, ${e.live.length} present`);
      return problems.length ? `${target.name}: ${problems.join('; ')}` : undefined;
    };

    // The live sandboxes: real CNI ADDs (host-local in cbr0), recorded where `crictl pods` lists them.
    t = performance.now();
    for (let k = 0; k < LIVE_NODE1; k++) await podAdd(dir, 'node1', { namespace: 'default', name: `live-${k}` });
    await mapLimit(state.nodes.slice(1), 4, async (n) => {
      for (let k = 0; k < LIVE_OTHERS; k++) await podAdd(dir, n.name, { namespace: 'default', name: `live-${k}` });
    });
    const liveBefore = await mapLimit(targets, 8, async (x) => (await endState(x)).live);
    console.log(`live sandboxes by real CNI ADD: ${LIVE_NODE1} on node1, ${LIVE_OTHERS} on each other node: ${s(performance.now() - t)}`);
    await sh(node1, BACKUP_CBR0);

    // Temporal and the worker.
    t = performance.now();
    ({ server, worker } = await startBenchWorker(tmp, dir, TASK_QUEUE));
    const workerPid = worker.pid!;
    console.log(`dev server and worker (kubemend worker, its own process, pid ${workerPid}) polling after ${s(performance.now() - t)}, RSS ${mib(rssKiB(workerPid, 'VmRSS'))}`);
    connection = await Connection.connect({ address: server.address });
    const client = new Client({ connection });

    /** One remediateIpamGc run (grace 0, auto-approved): wall time start to result, the history's split, the worker's peak RSS meanwhile. */
    const kubemend = async (nodes: string[], parallel?: number) => {
      const workflowId = `ipam-gc-bench-${randomBytes(6).toString('hex')}`;
      const input: IpamGcInput & { parallel?: number } = { cluster: 'lab', nodes, requestedBy: 'bench-gc', reason: 'npm run bench:gc', graceMs: 0, autoApprove: true, ...(parallel === undefined ? {} : { parallel }) };
      const sampler = sampleRss(workerPid);
      let peak = 0;
      const t0 = performance.now();
      let result: IpamGcResult;
      try {
        const handle = await client.workflow.start('remediateIpamGc', {
          workflowId,
          taskQueue: TASK_QUEUE,
          args: [input],
          typedSearchAttributes: [
            { key: SA_CLUSTER, value: 'lab' },
            { key: SA_NODE, value: nodes },
            { key: SA_REMEDIATION, value: 'ipam-gc' },
          ],
          memo: { requestedBy: 'bench-gc', reason: 'npm run bench:gc' },
        });
        result = (await handle.result()) as IpamGcResult;
      } finally {
        peak = sampler.stop();
      }
      const wallMs = performance.now() - t0;
      const split = historySplit(historyToJSON(await client.workflow.getHandle(workflowId).fetchHistory()));
      return { workflowId, quarantine: `${QUARANTINE_DIR}/${runTagOf(workflowId)}`, result, wallMs, split, peakRssKiB: peak };
    };
    const released = (r: IpamGcResult) => r.nodes.reduce((a, n) => a + ((n as { releasedCount?: number }).releasedCount ?? 0), 0);

    // ---- Part 1: one node, 254 leaked (bench0) and 10 live (cbr0).
    console.log(`\npart 1: node1, ${LEAKED} leaked host-local files (bench0) and ${LIVE_NODE1} live ones (cbr0, real CNI ADD), grace 0; the seed's loop vs. kubemend`);
    {
      await writeLeaks(node1);
      const t0 = performance.now();
      const r = await run(node1, ['sh', '-c', inEveryNetwork(SEED_LINE_AS_WRITTEN)]);
      const ms = performance.now() - t0;
      const e = await endState(node1);
      const liveLost = liveBefore[0].filter((l) => !e.live.includes(l)).length;
      console.log(`  the seed's line exactly as written (crictl pods for docker ps -a): ${s(ms)}; it removed ${LEAKED - e.left} of ${LEAKED} leaked and ${liveLost} of ${LIVE_NODE1} LIVE files (${r.stderr.split('\n').filter(Boolean).length} lines of rm errors).`);
      console.log(`    Today's host-local files hold "<id>\\r\\n<ifname>": every file's "hash" is "eth0" and \`grep -irl eth0\` names every file. Not a baseline; the rounds below take each file's first line.`);
      await sh(node1, RESTORE_CBR0);
      const back = await endState(node1);
      if (back.live.join('\n') !== liveBefore[0].join('\n')) throw new Error('node1: cbr0 not restored as it was');
    }
    {
      // What one runtime listing costs here: the lab's crictl is a shell script reading a file (a real crictl is a Go binary asking containerd over gRPC).
      const calls = 50;
      const t0 = performance.now();
      await sh(node1, 'i=0; while [ $i -lt 50 ]; do crictl pods > /dev/null; i=$((i + 1)); done');
      console.log(`  one \`crictl pods\` on the node (the lab's stand-in, a shell script): ${((performance.now() - t0) / calls).toFixed(1)} ms (mean of ${calls} in one exec)`);
    }
    const rows: Array<{ round: number; seedMs: number; kubemendMs: number; spanMs: number; inActivitiesMs: number; activities: number }> = [];
    for (let round = 1; round <= ROUNDS; round++) {
      await writeLeaks(node1);
      const t0 = performance.now();
      const seed = await run(node1, ['sh', '-c', inEveryNetwork(SEED_LOOP)]);
      const seedMs = performance.now() - t0;
      const seedProblem = checkNode(node1, await endState(node1), liveBefore[0], false);
      if (seedProblem) bad(`seed loop, round ${round}: ${seedProblem} (its stderr: ${seed.stderr.slice(0, 500)})`);

      await writeLeaks(node1);
      const k = await kubemend(['node1']);
      const kProblem = checkNode(node1, await endState(node1, k.quarantine), liveBefore[0], true);
      if (k.result.outcome !== 'fixed' || released(k.result) !== LEAKED) bad(`kubemend, round ${round}: outcome ${k.result.outcome}, ${released(k.result)} released`);
      if (kProblem) bad(`kubemend, round ${round}: ${kProblem}`);
      rows.push({ round, seedMs, kubemendMs: k.wallMs, spanMs: k.split.spanMs, inActivitiesMs: k.split.inActivitiesMs, activities: k.split.activities });
      const types = [...k.split.byType].sort((a, b) => b[1].ms - a[1].ms).map(([x, v]) => `${x} ${s(v.ms)}`).join(', ');
      console.log(
        `  round ${round}: seed loop ${s(seedMs)} (${LEAKED + LIVE_NODE1} crictl pods, ${LEAKED} grep -irl); kubemend ${s(k.wallMs)} start to result ` +
          `(history: ${s(k.split.spanMs)}, ${s(k.split.inActivitiesMs)} with one of its ${k.split.activities} activities in flight: ${types}); ratio ${(seedMs / k.wallMs).toFixed(1)}x`,
      );
    }
    const seedMed = median(rows.map((x) => x.seedMs));
    const kMed = median(rows.map((x) => x.kubemendMs));
    console.log(`  median of ${ROUNDS}: seed loop ${s(seedMed)}, kubemend ${s(kMed)} (in activities ${s(median(rows.map((x) => x.inActivitiesMs)))} of ${s(median(rows.map((x) => x.spanMs)))}); seed / kubemend = ${(seedMed / kMed).toFixed(1)}x`);
    console.log(`  end state, every round: ${wrong ? `WRONG (${wrong} problem(s) above)` : `seed loop removed all ${LEAKED} leaked files, kubemend quarantined all ${LEAKED}; the ${LIVE_NODE1} live files byte for byte and mtime as they were`}`);

    // ---- Part 2: every node, 254 leaked each; one run.
    console.log(`\npart 2: ${nodeCount} node(s), ${LEAKED} leaked files each (bench0), ${LIVE_OTHERS} live each (node1: ${LIVE_NODE1}); one kubemend run over all of them`);
    const variants: Array<{ label: string; parallel?: number }> = parallelField ? [{ label: `parallel default (${String(parallelField.parse(undefined))})` }, { label: 'parallel 1', parallel: 1 }] : [{ label: 'the runbook one node at a time (no `parallel` in the ipam-gc input)' }];
    if (!parallelField) console.log('  the ipam-gc input has no `parallel` yet: the default run only');
    const all = state.nodes.map((n) => n.name);
    for (const v of variants) {
      t = performance.now();
      await mapLimit(targets, 8, writeLeaks);
      const writeMs = performance.now() - t;
      const before = rssKiB(workerPid, 'VmRSS');
      const k = await kubemend(all, v.parallel);
      const ends = await mapLimit(targets, 8, (x) => endState(x, k.quarantine));
      const problems = ends.map((e, i) => checkNode(targets[i], e, liveBefore[i], true)).filter((p): p is string => p !== undefined);
      if (k.result.outcome !== 'fixed' || released(k.result) !== LEAKED * nodeCount) bad(`${v.label}: outcome ${k.result.outcome}, ${released(k.result)} of ${LEAKED * nodeCount} released`);
      for (const p of problems) bad(`${v.label}: ${p}`);
      console.log(
        `  ${v.label}: ${s(k.wallMs)} start to result for ${LEAKED * nodeCount} files on ${nodeCount} nodes (${s(k.wallMs / nodeCount)} a node); ` +
          `history ${s(k.split.spanMs)}, ${s(k.split.inActivitiesMs)} with an activity in flight (${k.split.activities} activities); ` +
          `worker RSS ${mib(before)} before, peak ${mib(k.peakRssKiB)} during (sampled every 100 ms); leaks written in ${s(writeMs)}`,
      );
      console.log(`    end state: ${problems.length || k.result.outcome !== 'fixed' ? 'WRONG (above)' : `all ${LEAKED * nodeCount} leaked files quarantined, every node's live files as they were`}`);
    }
    console.log(`worker VmHWM (its peak RSS since it started, by the kernel): ${mib(rssKiB(workerPid, 'VmHWM'))}`);
  } finally {
    await connection?.close().catch(() => undefined);
    if (worker) await stopProcess(worker);
    if (server) await stopProcess(server.process);
    ssh.close();
    await down(dir).catch((err: unknown) => console.error(`lab down: ${(err as Error).message}`));
    rmSync(tmp, { recursive: true, force: true });
  }
  if (wrong) {
    console.error(`bench:gc: the end state was wrong ${wrong} time(s) (see above)`);
    process.exitCode = 1;
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
