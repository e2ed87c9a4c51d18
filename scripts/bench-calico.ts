/**
 * `npm run bench:calico -- [nodes] [leaks]`: prints figures, asserts nothing about time. It
 * checks only the end state (no leaked allocation left, no orphan veth, the restarted pods
 * Running with their veths, calicoctl ipam check's checks clean but for the bare pods the run
 * only reports) and exits 1 if that is wrong: a wrong clean-up is no figure.
 *
 * One `orphan-calico` lab (default 50 nodes; kube-apiserver, the StatefulSet controller and the
 * lab's kubelet with its Calico stand-in), a Temporal dev server and a kubemend worker started
 * as `kubemend worker` (its own process, so its RSS is its own). Seed 004's proportions: many
 * more endpoints than pods. Besides the lab's own per node (2 fine pods, 2 without a veth, 3
 * gone with allocation and veth), `leaks` (default 600, the seed's count) more allocations of
 * pods that do not exist, spread over the nodes, written as calico-ipam writes them (a handle
 * each, the block with its resourceVersion). Then one remediateCalicoOrphans run over every
 * node (grace 0, auto-approved, the input's default parallel): wall time, the history's split,
 * the worker's RSS.
 *
 * Needs root and the built tools (npm run setup). Run: npm run bench:calico -- [nodes] [leaks]
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Client, Connection } from '@temporalio/client';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import { mapLimit } from '../lib/async';
import { checkCalicoIpam } from '../lib/calico-ipam-check';
import type { CalicoOrphansInput } from '../lib/remediation-input';
import { SA_CLUSTER, SA_NODE, SA_REMEDIATION } from '../lib/search-attributes';
import type { CalicoOrphansResult } from '../workflows/calico-orphans';
import { stopProcess } from '../test/helpers/temporal-dev';
import { waitForCalicoPodsRunning } from '../test/lab/pod-kubelet';
import { adminRequest, controlPlaneInfo } from '../test/lab/control-plane';
import { down, up } from '../test/lab/lab';
import { LAB_KUBELET_POD_LABEL } from '../test/lab/manifests';
import { historySplit, mib, rssKiB, s, sampleRss, startBenchWorker } from './bench-common';

const TASK_QUEUE = 'bench-calico';
const GROUP = '/apis/crd.projectcalico.org/v1';

interface Block {
  metadata: { name: string; resourceVersion: string };
  spec: { cidr: string; affinity: string; allocations: Array<number | null>; unallocated: number[]; attributes: Array<{ handle_id: string; secondary?: Record<string, string> }> };
}

async function main(): Promise<void> {
  const nodeCount = Number(process.argv[2] ?? 50);
  const leakCount = Number(process.argv[3] ?? 600);
  if (!Number.isInteger(nodeCount) || nodeCount < 1 || !Number.isInteger(leakCount) || leakCount < 0) throw new Error('usage: bench-calico [nodes] [leaks]: whole numbers');
  const tmp = mkdtempSync('/tmp/bench-calico-');
  const dir = join(tmp, 'lab');
  let server: Awaited<ReturnType<typeof startBenchWorker>>['server'] | undefined;
  let worker: ChildProcess | undefined;
  let connection: Connection | undefined;
  let wrong = 0;
  const bad = (what: string) => {
    wrong++;
    console.log(`  END STATE WRONG: ${what}`);
  };
  try {
    console.log(`bench:calico on ${nodeCount} lab node(s), ${leakCount} extra leaked allocations, this machine ${readFileSync('/proc/cpuinfo', 'utf8').match(/^processor\s/gm)?.length ?? '?'} cores`);
    let t = performance.now();
    const state = await up({ dir, nodes: nodeCount, controlPlane: true, scenarios: ['orphan-calico'], rebootDowntimeMs: 300 });
    console.log(`lab up (control plane): ${s(performance.now() - t)}`);
    t = performance.now();
    await waitForCalicoPodsRunning(dir, 600_000);
    console.log(`seed 004's pods Running (the lab's kubelet, Calico stand-in ADDs): ${s(performance.now() - t)}`);
    const port = Number(new URL(controlPlaneInfo(dir)!.server).port);
    const api = (method: string, path: string, data?: unknown) => adminRequest(dir, port, method, path, data === undefined ? undefined : { contentType: 'application/json', data });
    const list = async <T>(path: string): Promise<T[]> => {
      const r = await api('GET', path);
      if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${r.body.slice(0, 200)}`);
      return (JSON.parse(r.body) as { items: T[] }).items;
    };

    // The seed's proportions: leaks allocations of pods that do not exist, round-robin over the nodes' blocks.
    t = performance.now();
    const blocks = await list<Block>(`${GROUP}/ipamblocks`);
    const perNode = new Map<string, number>();
    for (let k = 0; k < leakCount; k++) {
      const node = state.nodes[k % nodeCount].name;
      perNode.set(node, (perNode.get(node) ?? 0) + 1);
    }
    await mapLimit([...perNode], 8, async ([node, count]) => {
      const b = blocks.find((x) => x.spec.affinity === `host:${node}`);
      if (!b) throw new Error(`no block affine to ${node}`);
      const spec = structuredClone(b.spec);
      const handles: string[] = [];
      for (let k = 0; k < count; k++) {
        const ord = spec.unallocated.shift();
        if (ord === undefined) throw new Error(`${node}'s block is full after ${k} leaks`);
        const handle = `k8s-pod-network.${randomBytes(32).toString('hex')}`;
        handles.push(handle);
        spec.attributes.push({ handle_id: handle, secondary: { namespace: 'default', node, pod: `bench-gone-${node}-${k}`, timestamp: '2026-11-25 12:00:00 +0000 UTC' } });
        spec.allocations[ord] = spec.attributes.length - 1;
      }
      for (const h of handles) {
        const r = await api('POST', `${GROUP}/ipamhandles`, { apiVersion: 'crd.projectcalico.org/v1', kind: 'IPAMHandle', metadata: { name: h.toLowerCase() }, spec: { handleID: h, block: { [spec.cidr]: 1 } } });
        if (r.status !== 201) throw new Error(`creating IPAMHandle: ${r.status} ${r.body.slice(0, 200)}`);
      }
      const put = await api('PUT', `${GROUP}/ipamblocks/${b.metadata.name}`, { ...b, spec });
      if (put.status !== 200) throw new Error(`writing ${b.metadata.name}: ${put.status} ${put.body.slice(0, 200)}`);
    });
    const pods = await list<{ spec: { hostNetwork?: boolean; nodeName?: string } }>('/api/v1/pods');
    const allocated = (await list<Block>(`${GROUP}/ipamblocks`)).reduce((a, b) => a + b.spec.allocations.filter((x) => x !== null).length, 0);
    console.log(`leaks written (${leakCount} handles and ${perNode.size} blocks through the API): ${s(performance.now() - t)}; now ${allocated} allocations for ${pods.filter((p) => p.spec.nodeName && !p.spec.hostNetwork).length} pod-network pods`);

    ({ server, worker } = await startBenchWorker(tmp, dir, TASK_QUEUE));
    const workerPid = worker.pid!;
    connection = await Connection.connect({ address: server.address });
    const client = new Client({ connection });

    const all = state.nodes.map((n) => n.name);
    const workflowId = `calico-orphans-bench-${randomBytes(6).toString('hex')}`;
    const input: CalicoOrphansInput = { cluster: 'lab', nodes: all, requestedBy: 'bench-calico', reason: 'npm run bench:calico', graceMs: 0, autoApprove: true, podTimeoutMs: 600_000 };
    const before = rssKiB(workerPid, 'VmRSS');
    const sampler = sampleRss(workerPid);
    let peak = before;
    const t0 = performance.now();
    let result: CalicoOrphansResult;
    try {
      const handle = await client.workflow.start('remediateCalicoOrphans', {
        workflowId,
        taskQueue: TASK_QUEUE,
        args: [input],
        typedSearchAttributes: [
          { key: SA_CLUSTER, value: 'lab' },
          { key: SA_NODE, value: all },
          { key: SA_REMEDIATION, value: 'calico-orphans' },
        ],
        memo: { requestedBy: 'bench-calico', reason: 'npm run bench:calico' },
      });
      result = (await handle.result()) as CalicoOrphansResult;
    } finally {
      peak = sampler.stop();
    }
    const wallMs = performance.now() - t0;
    const split = historySplit(historyToJSON(await client.workflow.getHandle(workflowId).fetchHistory()));
    const released = result.nodes.reduce((a, n) => a + n.released.length, 0);
    const veths = result.nodes.reduce((a, n) => a + n.vethsDeleted.length, 0);
    const restarted = result.nodes.reduce((a, n) => a + n.restarted.length, 0);
    const expectedReleases = leakCount + 3 * nodeCount;
    if (result.outcome !== 'fixed') bad(`outcome ${result.outcome}`);
    if (released !== expectedReleases) bad(`${released} of ${expectedReleases} handles released`);
    if (veths !== 3 * nodeCount) bad(`${veths} of ${3 * nodeCount} orphan veths deleted`);
    console.log(
      `remediateCalicoOrphans over ${nodeCount} nodes: ${s(wallMs)} start to result (${s(wallMs / nodeCount)} a node); ${released} handles released, ${veths} veths deleted, ${restarted} pods restarted; ` +
        `history ${s(split.spanMs)}, ${s(split.inActivitiesMs)} with an activity in flight (${split.activities} activities); worker RSS ${mib(before)} before, peak ${mib(peak)} (sampled every 100 ms)`,
    );

    console.log(`  activities (count, summed time, longest): ${[...split.byType].sort((a, b) => b[1].ms - a[1].ms).map(([k, v]) => `${k} ${v.n}, ${s(v.ms)}, ${s(v.maxMs)}`).join('; ')}`);

    // The end state, by calicoctl ipam check's checks: only the bare pods' allocations are left to a person.
    const check = checkCalicoIpam({
      pools: await list(`${GROUP}/ippools`),
      blocks: await list(`${GROUP}/ipamblocks`),
      handles: await list(`${GROUP}/ipamhandles`),
      affinities: await list(`${GROUP}/blockaffinities`),
      // The pods on Calico's network: the lab's others (coredns, demo/web) are kwok's, with podCIDR addresses no pool has.
      pods: (await list<{ metadata: { labels?: Record<string, string> } }>('/api/v1/pods')).filter((p) => p.metadata.labels?.[LAB_KUBELET_POD_LABEL.key] === LAB_KUBELET_POD_LABEL.value),
      nodes: await list('/api/v1/nodes'),
    } as Parameters<typeof checkCalicoIpam>[0]);
    if (!check.ok) for (const p of check.problems.slice(0, 10)) bad(`ipam check: ${p}`);
    console.log(`  end state: ${wrong ? 'WRONG (above)' : `ipam check clean; every orphan veth gone; ${restarted} restarted pods Running with their veths (verified by the run)`}`);
  } finally {
    await connection?.close().catch(() => undefined);
    if (worker) await stopProcess(worker);
    if (server) await stopProcess(server.process);
    await down(dir).catch((err: unknown) => console.error(`lab down: ${(err as Error).message}`));
    rmSync(tmp, { recursive: true, force: true });
  }
  if (wrong) {
    console.error(`bench:calico: the end state was wrong ${wrong} time(s) (see above)`);
    process.exitCode = 1;
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
