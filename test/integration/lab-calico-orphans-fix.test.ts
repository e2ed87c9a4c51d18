/**
 * The calico-orphans remediation (seed 004) on the lab: real Temporal, real sshd on each node,
 * a real kube-apiserver with Calico's CRDs and the StatefulSet controller, real kernel veths
 * and network namespaces, and the lab's Calico stand-in (test/lab/calico-cni.ts: calico-ipam's
 * IPAM in the API, the calico plugin's netns, veth and routes) run by the lab's kubelet for
 * seed 004's pods. Per node the seed left: three allocations and cali veths of pods that are
 * gone (each veth's pod end in a leaked netns), two web pods with their real sandboxes, and
 * two Running db pods without a veth: db-<node>-0 owned by a StatefulSet, db-<node>-1 bare.
 * The CLI is run as an SRE runs it; the nodes are looked at over ssh, the API as an admin.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AuditRecord } from '../../lib/audit';
import { calicoVethName } from '../../lib/calico';
import { checkCalicoIpam } from '../../lib/calico-ipam-check';
import type { DiagnoseReport } from '../../lib/diagnose';
import type { RunStatus } from '../../lib/run-status';
import type { CalicoOrphansResult } from '../../workflows/calico-orphans';
import { ipamAssign } from '../lab/calico-cni';
import { isRunning, waitForCalicoPodsRunning, waitForLabPods } from '../lab/pod-kubelet';
import { adminRequest, controlPlaneInfo } from '../lab/control-plane';
import { calicoPods, down, type LabState, up } from '../lab/lab';
import { LAB_KUBELET_POD_LABEL } from '../lab/manifests';
import { labSsh, labTestConfig } from '../helpers/lab';
import { loadTestConfig, recordHistory, runCli, runIdFrom, type RunningWorker, startWorker, tempDir, testClient } from '../helpers/harness';

const dir = join(tempDir('calicofix'), 'lab');
let state: LabState;
let worker: RunningWorker | undefined;
let config: string;
const names = ['node1', 'node2'];
const GROUP = '/apis/crd.projectcalico.org/v1';

beforeAll(async () => {
  state = await up({ dir, nodes: 2, controlPlane: true, scenarios: ['orphan-calico'], rebootDowntimeMs: 300 });
  await waitForCalicoPodsRunning(dir);
  config = labTestConfig(dir, 'calicofix');
  worker = await startWorker(loadTestConfig(config));
}, 300_000);

afterAll(async () => {
  await worker?.stop();
  await down(dir);
});

const port = (name: string) => state.nodes.find((n) => n.name === name)!.port;
const ssh = (name: string, cmd: string) => labSsh(dir, port(name), cmd);

async function api(method: string, path: string, data?: unknown): Promise<{ status: number; body: string }> {
  const p = Number(new URL(controlPlaneInfo(dir)!.server).port);
  return adminRequest(dir, p, method, path, data === undefined ? undefined : { contentType: 'application/json', data });
}
async function list<T>(path: string): Promise<T[]> {
  const r = await api('GET', path);
  expect(r.status).toBe(200);
  return (JSON.parse(r.body) as { items: T[] }).items;
}

interface Block {
  metadata: { name: string; resourceVersion: string };
  spec: { cidr: string; affinity: string; allocations: Array<number | null>; unallocated: number[]; attributes: Array<{ handle_id: string; secondary?: Record<string, string> }> };
}
interface Pod {
  metadata: { name: string; namespace: string; uid: string; deletionTimestamp?: string };
  spec: { nodeName?: string; hostNetwork?: boolean };
  status?: { phase?: string; podIP?: string; podIPs?: Array<{ ip: string }> };
}

/** Every allocation: ip -> handle and the pod its attributes name. */
async function allocations(): Promise<Map<string, { handle: string; pod: string; node: string }>> {
  const out = new Map<string, { handle: string; pod: string; node: string }>();
  for (const b of await list<Block>(`${GROUP}/ipamblocks`)) {
    const [a, bb, c, d] = b.spec.cidr.split('/')[0].split('.').map(Number);
    b.spec.allocations.forEach((idx, ord) => {
      if (idx === null) return;
      const at = b.spec.attributes[idx];
      out.set(`${a}.${bb}.${c}.${d + ord}`, { handle: at.handle_id, pod: `${at.secondary?.namespace}/${at.secondary?.pod}`, node: at.secondary?.node ?? '' });
    });
  }
  return out;
}

/** The node's cali veths: name -> ifindex. */
function veths(name: string): Record<string, number> {
  const links = JSON.parse(ssh(name, 'ip -j link show type veth')) as Array<{ ifname: string; ifindex: number }>;
  return Object.fromEntries(links.filter((l) => l.ifname.startsWith('cali')).map((l) => [l.ifname, l.ifindex]));
}

const podsOn = async (node: string) => (await list<Pod>(`/api/v1/pods?fieldSelector=spec.nodeName%3D${node}`)).filter((p) => !p.spec.hostNetwork);

/** What a run could change: IPAM, veths, the pods on each node (name, uid, IP). */
async function clusterState() {
  const nodes = await Promise.all(names.map(async (n) => ({ veths: veths(n), pods: (await podsOn(n)).map((p) => `${p.metadata.name} ${p.metadata.uid} ${p.status?.podIP ?? '-'}`).sort() })));
  return { allocations: [...(await allocations()).entries()].sort(), handles: (await list<{ spec: { handleID: string } }>(`${GROUP}/ipamhandles`)).map((h) => h.spec.handleID).sort(), nodes };
}

async function auditOf(runId: string): Promise<AuditRecord[]> {
  const r = await runCli(['--config', config, 'audit', 'show', runId, '--json']);
  expect(r.stderr).toBe('');
  return JSON.parse(r.stdout) as AuditRecord[];
}

async function statusOf(runId: string): Promise<RunStatus | null> {
  const r = await runCli(['--config', config, 'status', runId, '--json']);
  return r.code === 0 ? (JSON.parse(r.stdout) as { progress: RunStatus | null }).progress : null;
}

test('diagnose names all three kinds of orphan on every node, with the fix command', async () => {
  const r = await runCli(['--config', config, 'diagnose', '--cluster', 'lab', '--json']);
  const report = JSON.parse(r.stdout) as DiagnoseReport;
  for (const node of names) {
    const [f] = report.findings.filter((x) => x.seed === '004' && x.node === node);
    expect(f).toMatchObject({ remediation: 'calico-orphans', fixable: true, signature: '? (169.254.1.1) at <incomplete> on eth0' });
    const seed = calicoPods(node);
    for (const gone of seed.vethOnly) {
      expect(f.evidence).toContainEqual(expect.stringMatching(new RegExp(`^IPAM \\S+ \\(block \\S+, handle k8s-pod-network\\.[0-9a-f]{64}\\) is allocated to default/${gone}, which does not exist$`)));
      expect(f.evidence).toContain(`${calicoVethName('default', gone)} matches no pod on ${node}`);
    }
    for (const db of seed.withoutVeth) expect(f.evidence).toContainEqual(expect.stringMatching(new RegExp(`^default/${db} is Running on ${node} but has no cali[0-9a-f]{11}$`)));
  }
  const text = await runCli(['--config', config, 'diagnose', '--cluster', 'lab']);
  expect(text.stdout).toContain('  fix: kubemend run calico-orphans --cluster lab --node node2\n');
}, 120_000);

test('--dry-run prints the plan (three handles, three veths, the StatefulSet pod restarted, the bare pod reported) and changes nothing', async () => {
  const before = await clusterState();
  const r = await runCli(['--config', config, 'run', 'calico-orphans', '--cluster', 'lab', '--dry-run', '--json']);
  expect(r.code).toBe(0);
  const result = JSON.parse(r.stdout) as CalicoOrphansResult;
  expect(result.outcome).toBe('planned (dry run)');
  expect(result.plan!.nodes.map((n) => [n.name, n.role])).toEqual([['node1', 'control-plane'], ['node2', 'worker']]);
  for (const n of result.plan!.nodes) {
    const seed = calicoPods(n.name);
    expect(n.releases.map((x) => x.allocations[0].pod).sort()).toEqual(seed.vethOnly.map((p) => `default/${p}`).sort());
    expect(n.releases.every((x) => !x.confirmed)).toBe(true);
    expect(n.veths.map((v) => v.name).sort()).toEqual(seed.vethOnly.map((p) => calicoVethName('default', p)).sort());
    expect(n.veths.every((v) => /no live sandbox's$/.test(v.why))).toBe(true);
    expect(n.restarts.map((p) => [p.name, p.controller.kind])).toEqual([[`db-${n.name}-0`, 'StatefulSet']]);
    expect(n.reported).toEqual([`default/db-${n.name}-1 has no ${calicoVethName('default', `db-${n.name}-1`)} and no controller to recreate it: delete and recreate it yourself (kubemend does not delete bare pods)`]);
    expect(n.undecided).toEqual([]);
  }
  expect(await clusterState()).toEqual(before);
  expect((await auditOf(runIdFrom(r.stderr))).map((x) => [x.step, x.outcome])).toEqual([['plan', 'dry-run']]);
  recordHistory(runIdFrom(r.stderr), 'remediate-calico-orphans-dry-run.json');
}, 120_000);

test('an approved run fixes both nodes: every allocation belongs to a pod, no cali veth lacks one, the broken StatefulSet pod is recreated with its veth, the fine pods keep their IPs and veths, and the IPAM passes the ipam check', async () => {
  const before = await clusterState();
  const webBefore = Object.fromEntries(names.map((n) => [n, calicoPods(n).withVeth.map((p) => [p, veths(n)[calicoVethName('default', p)]])]));
  const dbUid = Object.fromEntries(await Promise.all(names.map(async (n) => [n, (await podsOn(n)).find((p) => p.metadata.name === `db-${n}-0`)!.metadata.uid])));
  const t0 = Date.now();
  const r = await runCli(['--config', config, 'run', 'calico-orphans', '--cluster', 'lab', '--grace', '0s', '--auto-approve', '--json', '--pod-timeout', '150s', '--reason', 'INC-004 pods on node2 cannot reach 169.254.1.1'], {}, 600_000);
  const wallMs = Date.now() - t0;
  expect(r.stderr).not.toMatch(/run failed/);
  expect(r.code).toBe(0);
  process.stdout.write(`calico-orphans approved run on 2 nodes: ${(wallMs / 1000).toFixed(1)} s wall (CLI start to result)\n`);
  const result = JSON.parse(r.stdout) as CalicoOrphansResult;
  const runId = runIdFrom(r.stderr);
  expect(result.outcome).toBe('fixed');
  for (const n of result.nodes) {
    expect(n.released).toHaveLength(3);
    expect(n.vethsDeleted).toHaveLength(3);
    expect(n.restarted).toEqual([`default/db-${n.name}-0`]);
    expect(n.newPods).toEqual([expect.stringMatching(new RegExp(`^default/db-${n.name}-0 \\(${n.name}, 192\\.168\\.\\d+\\.\\d+\\)$`))]);
    expect(n.resumed).toEqual([]);
  }

  // Every allocation belongs to an existing pod on its node, with that pod's IP.
  const pods = await list<Pod>('/api/v1/pods');
  const byName = new Map(pods.map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, p]));
  const allocs = await allocations();
  for (const [ip, a] of allocs) {
    const p = byName.get(a.pod);
    expect([ip, p?.spec.nodeName, p?.status?.podIP]).toEqual([ip, a.node, ip]);
  }
  for (const n of names) {
    // No cali veth lacks a pod on its node.
    const mine = (await podsOn(n)).map((p) => calicoVethName(p.metadata.namespace, p.metadata.name));
    expect(Object.keys(veths(n)).filter((v) => !mine.includes(v))).toEqual([]);
    // The broken pod was recreated (new uid), Running, with its veth.
    const db0 = (await podsOn(n)).find((p) => p.metadata.name === `db-${n}-0`)!;
    expect(db0.metadata.uid).not.toBe(dbUid[n]);
    expect(db0.status?.phase).toBe('Running');
    expect(veths(n)[calicoVethName('default', `db-${n}-0`)]).toBeGreaterThan(0);
    // The pods that were fine keep their IPs and veths (the same links).
    expect(calicoPods(n).withVeth.map((p) => [p, veths(n)[calicoVethName('default', p)]])).toEqual(webBefore[n]);
    // The bare pod is only reported: still there, still without its veth.
    expect((await podsOn(n)).some((p) => p.metadata.name === `db-${n}-1`)).toBe(true);
    expect(veths(n)[calicoVethName('default', `db-${n}-1`)]).toBeUndefined();
  }
  const keep = (s: string[]) => s.filter((x) => !/^db-node\d-0 /.test(x));
  const after = await clusterState();
  for (const k of [0, 1]) expect(keep(after.nodes[k].pods)).toEqual(keep(before.nodes[k].pods));

  // calicoctl ipam check's checks over the CRDs after the run: no leak, nothing missing. Over
  // the pods on Calico's network: the lab's other pods (coredns, demo/web) are kwok's, with
  // addresses from the node's podCIDR that no Calico pool has.
  const calicoNetworked = pods.filter((p) => (p as { metadata: { labels?: Record<string, string> } }).metadata.labels?.[LAB_KUBELET_POD_LABEL.key] === LAB_KUBELET_POD_LABEL.value);
  expect(calicoNetworked.length).toBeGreaterThanOrEqual(8);
  const nodes = await list<{ metadata: { name: string; annotations?: Record<string, string> } }>('/api/v1/nodes');
  const check = checkCalicoIpam({
    pools: await list(`${GROUP}/ippools`),
    blocks: await list(`${GROUP}/ipamblocks`),
    handles: await list(`${GROUP}/ipamhandles`),
    affinities: await list(`${GROUP}/blockaffinities`),
    pods: calicoNetworked,
    nodes,
  } as Parameters<typeof checkCalicoIpam>[0]);
  expect(check.problems).toEqual([]);

  // The trail: each step once, in order per node; the release records the block and handle as they were.
  const trail = await auditOf(runId);
  for (const n of names) {
    const steps = trail.filter((x) => x.node === n).map((x) => `${x.step.replace(/k8s-pod-network\.[0-9a-f]{64}/, 'H').replace(/cali[0-9a-f]{11}/, 'V')} ${x.outcome}`);
    expect(steps).toEqual([...Array(3).fill(`${n}/release/H applied`), ...Array(3).fill(`${n}/delete-veth/V applied`), `${n}/evict/default/db-${n}-0 applied`, `${n}/fixed applied`]);
  }
  const release = trail.find((x) => x.step.startsWith('node2/release/'))!;
  expect(JSON.stringify(release.before)).toContain('"resourceVersion"');
  expect(JSON.stringify(release.before)).toContain('"handleID"');
  expect(trail.filter((x) => x.node === '').map((x) => [x.step, x.outcome])).toEqual([['plan', 'planned'], ['approval', 'approved']]);
  recordHistory(runId, 'remediate-calico-orphans-fixed.json');

  // Nothing is left to do.
  const again = await runCli(['--config', config, 'run', 'calico-orphans', '--cluster', 'lab', '--grace', '0s', '--dry-run', '--json']);
  const second = JSON.parse(again.stdout) as CalicoOrphansResult;
  expect(second.plan!.nodes).toEqual([]);
}, 600_000);

test('a concurrent change between detection and release is kept: an address Calico gave again, and a new allocation in the same block; the other leak is released', async () => {
  // Two new leaks on node2, as calico-ipam leaves them when a sandbox goes without a CNI DEL.
  const sandbox = (k: number) => `${'c'.repeat(63)}${k}`;
  const leakA = await ipamAssign(dir, 'node2', { namespace: 'default', name: 'gone-late-a' }, sandbox(1));
  const leakB = await ipamAssign(dir, 'node2', { namespace: 'default', name: 'gone-late-b' }, sandbox(2));
  const r = await runCli(['--config', config, 'run', 'calico-orphans', '--cluster', 'lab', '--node', 'node2', '--grace', '0s', '--detach']);
  expect(r.code).toBe(0);
  const runId = r.stdout.trim();
  let st: RunStatus | null = null;
  for (let i = 0; i < 300 && st?.phase !== 'AwaitingApproval'; i++) {
    await sleep(200);
    st = await statusOf(runId);
  }
  expect(st?.phase).toBe('AwaitingApproval');
  const planned = (st!.plan as unknown as CalicoOrphansResult['plan'])!.nodes[0];
  expect(planned.releases.map((x) => x.handleID).sort()).toEqual([leakA.handle, leakB.handle].sort());

  // Now, after detection: Calico released leak A and gave its address to a new pod's sandbox,
  // and another new pod got a new address in the same block. Written as calico-ipam writes.
  const [block] = (await list<Block>(`${GROUP}/ipamblocks`)).filter((b) => b.spec.cidr === leakA.cidr);
  const ordA = Number(leakA.ip.split('.')[3]) - Number(block.spec.cidr.split('/')[0].split('.')[3]);
  const reuse = `k8s-pod-network.${'d'.repeat(64)}`;
  const spec = structuredClone(block.spec);
  spec.attributes.push({ handle_id: reuse, secondary: { namespace: 'default', node: 'node2', pod: 'late-pod', timestamp: '2026-11-26 06:00:00 +0000 UTC' } });
  spec.allocations[ordA] = spec.attributes.length - 1;
  const put = await api('PUT', `${GROUP}/ipamblocks/${block.metadata.name}`, { ...block, spec });
  expect(put.status).toBe(200);
  const del = await api('DELETE', `${GROUP}/ipamhandles/${leakA.handle.toLowerCase()}`);
  expect(del.status).toBe(200);
  const fresh = await ipamAssign(dir, 'node2', { namespace: 'default', name: 'late-pod-2' }, sandbox(3));

  const ok = await runCli(['--config', config, 'approve', runId, '--plan', st!.plan!.id]);
  expect(ok.code).toBe(0);
  const { client, close } = await testClient();
  try {
    const result = (await client.workflow.getHandle(runId).result()) as CalicoOrphansResult;
    expect(result.outcome).toBe('fixed');
    expect(result.nodes[0].keptAtRelease).toEqual([`${leakA.handle}: ${block.metadata.name}#${ordA} (now ${reuse})`]);
  } finally {
    await close();
  }
  const allocs = await allocations();
  expect(allocs.get(leakA.ip)?.handle).toBe(reuse); // Calico's re-use is kept
  expect(allocs.get(fresh.ip)?.handle).toBe(fresh.handle); // the new allocation is kept
  expect(allocs.has(leakB.ip)).toBe(false); // the other leak is released
  const trail = await auditOf(runId);
  const a = trail.find((x) => x.step === `node2/release/${leakA.handle}`)!;
  expect(a.outcome).toBe('already-done');
  expect(JSON.stringify(a.after)).toContain(`now ${reuse}`);
  expect(trail.find((x) => x.step === `node2/release/${leakB.handle}`)?.outcome).toBe('applied');
  // The hand-made allocations go, so the lab is as the run left it.
  await waitForLabPods(dir, 'seed pods still Running', (ps) => ps.filter((p) => p.spec.nodeName === 'node2' && /^web-/.test(p.metadata.name)).every(isRunning));
}, 300_000);
