/**
 * The ipam-gc remediation (seed 003's leaked host-local addresses) on the lab: real Temporal,
 * the node's real sshd, a real kube-apiserver (the runbook lists the Nodes), and the real
 * host-local plugin (v1.10.0) through the lab's CNI ADD. node1 is `stale-cni`'s: its cbr0
 * range is full of files, three of them held by sandboxes the runtime still has. The CLI is
 * run as an SRE runs it; the node is looked at over ssh as an SRE looks at it.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import { parse } from 'yaml';
import type { AuditRecord } from '../../lib/audit';
import type { IpamGcRestoreResult } from '../../lib/ipam-gc-plan';
import type { IpamGcResult } from '../../workflows/ipam-gc';
import { CniPluginError, podAdd, podDel } from '../lab/cni';
import { down, type LabState, LIVE_PODS_PER_NODE, up } from '../lab/lab';
import { describeError, runThroughCrashes } from '../helpers/crash-run';
import { labSsh, labTestConfig } from '../helpers/lab';
import { loadTestConfig, recordHistory, runCli, runIdFrom, type RunningWorker, startWorker, tempDir, testClient, uniqueQueue, writeConfig } from '../helpers/harness';

const dir = join(tempDir('ipamgcrun'), 'lab');
const NET = '/var/lib/cni/networks/cbr0';
const QUARANTINE = '/var/lib/kubemend/ipam-quarantine';
const RANGE_FULL = 'failed to allocate for range 0: no IP addresses available in range set: 10.244.0.1-10.244.0.254';
const LEAKED = 253 - LIVE_PODS_PER_NODE;
let state: LabState;
let worker: RunningWorker | undefined;
let config: string;

beforeAll(async () => {
  // Two nodes: the control plane's demo Deployment needs a worker. Runs name node1 (--node).
  state = await up({ dir, nodes: 2, controlPlane: true, scenarios: ['stale-cni'], rebootDowntimeMs: 300 });
  // flanneld back with the node's lease and cni0 without its old one (seed 003's other fixes,
  // not ipam-gc's): what stays in the way of a new pod is the full range.
  ssh('printf "FLANNEL_NETWORK=10.244.0.0/16\\nFLANNEL_SUBNET=10.244.0.1/24\\nFLANNEL_MTU=1450\\nFLANNEL_IPMASQ=true\\n" > /run/flannel/subnet.env && ip link del cni0');
  config = labTestConfig(dir, 'ipamgc');
  worker = await startWorker(loadTestConfig(config));
}, 300_000);

afterAll(async () => {
  await worker?.stop();
  await down(dir);
});

function ssh(cmd: string): string {
  return labSsh(dir, state.nodes.find((n) => n.name === 'node1')!.port, cmd);
}

/** Every entry of a directory: name -> "mtime mode inode type base64(content)" (fixed scripts, paths of our own). */
function snapshot(path: string): Map<string, string> {
  const out = ssh(`cd ${path} 2>/dev/null || exit 0; for f in * .[!.]*; do [ -e "$f" ] || continue; printf "%s\\t%s %s\\n" "$f" "$(stat -c "%Y %a %i %F" -- "$f")" "$(base64 -w0 -- "$f")"; done`);
  return new Map(out.split('\n').filter(Boolean).map((l) => l.split('\t') as [string, string]));
}
/** The same without the inode: what a move into the quarantine and back keeps. */
const bytes = (entry: string | undefined) => entry?.split(' ').filter((_, k) => k !== 2).join(' ');
/** A snapshot entry's content (its last field: stat's type, "regular file", has a space). */
const content = (entry: string) => Buffer.from(entry.slice(entry.lastIndexOf(' ') + 1), 'base64').toString();
const liveIds = () => ssh('crictl pods -q').trim().split('\n');

async function addFails(name: string): Promise<string> {
  const err = await podAdd(dir, 'node1', { namespace: 'default', name }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CniPluginError);
  return (err as CniPluginError).msg;
}

async function auditOf(runId: string): Promise<AuditRecord[]> {
  const r = await runCli(['--config', config, 'audit', 'show', runId, '--json']);
  expect(r.stderr).toBe('');
  return JSON.parse(r.stdout) as AuditRecord[];
}

let before: Map<string, string>;
let liveFiles: string[];
let gcRun: string;

test("before: a real CNI ADD on node1 fails with host-local's 'no IP addresses available in range set'", async () => {
  expect(await addFails('before')).toBe(RANGE_FULL);
  before = snapshot(NET);
  const ids = liveIds();
  expect(ids).toHaveLength(LIVE_PODS_PER_NODE);
  liveFiles = [...before.keys()].filter((f) => ids.some((id) => content(before.get(f)!).startsWith(id)));
  expect(liveFiles).toHaveLength(LIVE_PODS_PER_NODE);
});

test('with the default grace (15 min) the files the lab wrote minutes ago are leaked but too young: nothing to do, nothing changed', async () => {
  const r = await runCli(['--config', config, 'run', 'ipam-gc', '--cluster', 'lab', '--node', 'node1', '--dry-run', '--json']);
  expect(r.code).toBe(0);
  const result = JSON.parse(r.stdout) as IpamGcResult;
  expect(result.outcome).toBe('nothing to do');
  expect(result.plan!.pools).toEqual([expect.objectContaining({ node: 'node1', network: 'cbr0', capacity: 253, inUse: 253, live: LIVE_PODS_PER_NODE, leaked: LEAKED, candidates: 0, tooYoung: LEAKED })]);
  expect(snapshot(NET)).toEqual(before);
});

test('a node that cannot be reached is skipped and named in the plan; the run goes on with the others', async () => {
  // A config with one more node, on a loopback port nothing listens on.
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  const doc = parse(readFileSync(config, 'utf8')) as { clusters: Array<{ nodes: unknown[]; ssh: { knownHostsPath: string } }>; temporal: { taskQueue: string } };
  doc.clusters[0].nodes.push({ name: 'ghost', role: 'worker', host: '127.0.0.1', port });
  // Its host key is known (node1's), so what fails is the connection itself, as for a node that is down.
  const known = readFileSync(doc.clusters[0].ssh.knownHostsPath, 'utf8');
  const node1Key = known.split('\n').find((l) => l.startsWith(`[127.0.0.1]:${state.nodes[0].port} `))!.split(' ').slice(1).join(' ');
  doc.clusters[0].ssh.knownHostsPath = join(dir, 'known_hosts_ghost');
  writeFileSync(doc.clusters[0].ssh.knownHostsPath, `${known.trimEnd()}\n[127.0.0.1]:${port} ${node1Key}\n`);
  doc.temporal.taskQueue = uniqueQueue('ipamgc-ghost');
  const ghostConfig = writeConfig(dir, doc, 'kubemend-ghost.yaml');
  const ghostWorker = await startWorker(loadTestConfig(ghostConfig));
  try {
    const r = await runCli(['--config', ghostConfig, 'run', 'ipam-gc', '--cluster', 'lab', '--node', 'node1', '--node', 'ghost', '--dry-run', '--grace', '0s', '--json'], {}, 240_000);
    expect(r.stderr).not.toMatch(/run failed/);
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout) as IpamGcResult;
    expect(result.outcome).toBe('planned (dry run)');
    expect(result.plan!.nodes.map((n) => n.name)).toEqual(['node1']);
    expect(result.plan!.skipped).toEqual([{ name: 'ghost', reason: expect.stringMatching(/^unreachable: .*ECONNREFUSED/) }]);
  } finally {
    await ghostWorker.stop();
  }
  expect(snapshot(NET)).toEqual(before);
}, 300_000);

test('--dry-run --grace 0s prints the figures per network and every candidate, warns about the grace, and changes nothing', async () => {
  const r = await runCli(['--config', config, 'run', 'ipam-gc', '--cluster', 'lab', '--node', 'node1', '--dry-run', '--grace', '0s']);
  expect(r.stderr).not.toMatch(/run failed/);
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^ipam-gc on cluster lab: planned \(dry run\)\n/);
  expect(r.stdout).toMatch(new RegExp(`\\n  node1 +cbr0 +253 +253 +${LEAKED} +${LEAKED}\\n`));
  expect(r.stdout).toContain(`  candidates on node1 cbr0 (${LEAKED}):\n`);
  const listed = r.stdout.split('\n').filter((l) => /^ {4}10\.244\.0\.\d+ +container [0-9a-f]{12} {2}age \d+ s$/.test(l));
  expect(listed).toHaveLength(LEAKED);
  for (const f of liveFiles) expect(listed.some((l) => l.trim().startsWith(`${f} `))).toBe(false);
  expect(r.stdout).toContain('WARNING: a grace period under 60 s');
  expect(r.stdout).toContain('No cordon or drain: a released file is the reservation of a sandbox that is gone');
  expect(snapshot(NET)).toEqual(before);
  const runId = runIdFrom(r.stderr);
  expect((await auditOf(runId)).map((x) => [x.step, x.outcome])).toEqual([['plan', 'dry-run']]);
  expect(ssh(`ls ${QUARANTINE} 2>/dev/null || true`).trim()).toBe('');
  recordHistory(runId, 'remediate-ipam-gc-dry-run.json');
});

test('the approved run (--grace 0s) releases every leaked file into the quarantine; a real ADD then succeeds; live files byte-identical; the audit lists every address', async () => {
  const r = await runCli(['--config', config, 'run', 'ipam-gc', '--cluster', 'lab', '--node', 'node1', '--auto-approve', '--grace', '0s', '--json', '--reason', 'INC-003 pods stuck ContainerCreating on node1'], {}, 300_000);
  expect(r.stderr).not.toMatch(/run failed/);
  expect(r.code).toBe(0);
  gcRun = runIdFrom(r.stderr);
  const result = JSON.parse(r.stdout) as IpamGcResult;
  expect(result.outcome).toBe('fixed');
  const [n1] = result.nodes;
  expect(n1).toMatchObject({ name: 'node1', releasedCount: LEAKED, quarantine: `${QUARANTINE}/${gcRun}`, resumed: [] });
  expect(n1.networks.map((x) => [x.network, x.releasedCount, x.alreadyCount, x.keptCount, x.goneCount])).toEqual([['cbr0', LEAKED, 0, 0, 0]]);

  // As an SRE checks it over ssh: the live files, lock and last_reserved_ip as they were (inode too), the rest in the quarantine as it was.
  const after = snapshot(NET);
  expect([...after.keys()].sort()).toEqual([...liveFiles, 'last_reserved_ip.0', 'lock'].sort());
  for (const name of after.keys()) expect([name, after.get(name)]).toEqual([name, before.get(name)]);
  const quarantined = snapshot(`${QUARANTINE}/${gcRun}/cbr0`);
  expect(quarantined.size).toBe(LEAKED);
  for (const [ip, entry] of quarantined) expect([ip, bytes(entry)]).toEqual([ip, bytes(before.get(ip))]);
  const added = await podAdd(dir, 'node1', { namespace: 'default', name: 'after-gc' });
  expect(added.address).toMatch(/^10\.244\.0\.\d+\/24$/);
  await podDel(dir, 'node1', { namespace: 'default', name: 'after-gc' });

  const trail = await auditOf(gcRun);
  expect(trail.map((x) => [x.step, x.outcome])).toEqual([
    ['plan', 'planned'],
    ['approval', 'approved'],
    ['node1/release/cbr0', 'applied'],
    ['node1/fixed', 'applied'],
  ]);
  const rel = trail[2].after as { releasedCount: number; released: Array<{ ip: string; containerId: string; ageS: number }> };
  expect(rel.releasedCount).toBe(LEAKED);
  expect(rel.released).toHaveLength(LEAKED);
  expect(new Set(rel.released.map((x) => x.ip))).toEqual(new Set(quarantined.keys()));
  for (const x of rel.released) {
    // The container id is the file's first line, as host-local wrote it.
    expect(content(before.get(x.ip)!)).toBe(`${x.containerId}\r\neth0`);
    expect(x.ageS).toBeGreaterThanOrEqual(0);
  }
  expect(trail[2].actor).toBeTruthy();
  expect(trail[2].reason).toBe('INC-003 pods stuck ContainerCreating on node1');
  recordHistory(gcRun, 'remediate-ipam-gc-fixed.json');
}, 300_000);

test('kubemend ipam-gc restore <run> puts every file back byte for byte, audited; the range is full again', async () => {
  const r = await runCli(['--config', config, 'ipam-gc', 'restore', gcRun, '--json', '--reason', 'undo INC-003 test'], {}, 300_000);
  expect(r.stderr).not.toMatch(/failed/);
  expect(r.code).toBe(0);
  const result = JSON.parse(r.stdout) as IpamGcRestoreResult;
  expect(result.nodes).toEqual([{ name: 'node1', networks: [expect.objectContaining({ network: 'cbr0', refused: [], missing: 0 })] }]);
  const n1 = result.nodes[0] as Extract<IpamGcRestoreResult['nodes'][number], { networks: unknown }>;
  expect(n1.networks[0].restored).toHaveLength(LEAKED);
  const now = snapshot(NET);
  expect([...now.keys()].sort()).toEqual([...before.keys()].sort());
  // All but last_reserved_ip.0, which the ADD after the release moved on, as host-local does.
  for (const [name, entry] of before) if (name !== 'last_reserved_ip.0') expect([name, bytes(now.get(name))]).toEqual([name, bytes(entry)]);
  expect(ssh(`ls -A ${QUARANTINE}`).trim()).toBe(''); // the run's quarantine directory went with its last file
  expect(await addFails('restored')).toBe(RANGE_FULL);
  const restoreRun = runIdFrom(r.stderr);
  const trail = await auditOf(restoreRun);
  expect(trail.map((x) => [x.step, x.outcome])).toEqual([
    ['restore', 'approved'],
    ['node1/restore/cbr0', 'applied'],
  ]);
  expect((trail[1].after as { restoredCount: number }).restoredCount).toBe(LEAKED);
  recordHistory(restoreRun, 'restore-ipam-quarantine.json');
  // Again: nothing is left to restore.
  const again = await runCli(['--config', config, 'ipam-gc', 'restore', gcRun, '--json'], {}, 120_000);
  expect(again.code).toBe(0);
  expect((JSON.parse(again.stdout) as IpamGcRestoreResult).nodes).toEqual([{ name: 'node1', networks: [] }]);
}, 400_000);

test('the worker SIGKILLed after each kind of step: the run still releases every leaked file, and none twice', async () => {
  await worker!.stop(); // only the crashing worker polls from here on
  worker = undefined;
  const cfg = loadTestConfig(config);
  const { client, close } = await testClient();
  const crashLog = join(dir, 'crash-ipam-gc.log');
  try {
    const workflowId = `ipam-gc-lab-crash-${randomBytes(3).toString('hex')}`;
    const handle = await client.workflow.start('remediateIpamGc', {
      workflowId,
      taskQueue: cfg.temporal.taskQueue,
      args: [{ cluster: 'lab', nodes: ['node1'], requestedBy: 'crash test', autoApprove: true, graceMs: 0, heartbeatTimeoutMs: 3000, activityTimeoutMs: 60_000, retry: { initialIntervalMs: 500, maximumIntervalMs: 2000, maximumAttempts: 20 } }],
    });
    const { result, error, restarts, crashedAfter } = await runThroughCrashes<IpamGcResult>(handle, config, crashLog);
    expect(describeError(error)).toBeUndefined();
    expect(result!.outcome).toBe('fixed');
    expect(crashedAfter).toEqual(expect.arrayContaining(['resolveRun', 'checkBreaker', 'listClusterNodes', 'listHostLocal', 'checkExcluded', 'releaseLeakedIps', 'recordAudit']));
    expect(restarts).toBe(crashedAfter.length);
    // The release's retry found every file in this run's quarantine: nothing moved twice.
    const [n1] = result!.nodes;
    expect(n1.resumed).toEqual(['release cbr0']);
    expect(n1.networks.map((x) => [x.releasedCount, x.alreadyCount, x.keptCount, x.goneCount])).toEqual([[LEAKED, LEAKED, 0, 0]]);
    expect(n1.releasedCount).toBe(LEAKED);
    const trail = await auditOf(workflowId);
    expect(trail.map((x) => [x.step, x.outcome])).toEqual([
      ['plan', 'planned'],
      ['approval', 'approved'],
      ['node1/release/cbr0', 'applied'],
      ['node1/fixed', 'applied'],
    ]);
    const rel = trail[2].after as { releasedCount: number; released: Array<{ ip: string }> };
    expect(rel.releasedCount).toBe(LEAKED);
    expect(new Set(rel.released.map((x) => x.ip)).size).toBe(LEAKED);
    const quarantined = snapshot(`${QUARANTINE}/${workflowId}/cbr0`);
    expect(new Set(quarantined.keys())).toEqual(new Set(rel.released.map((x) => x.ip)));
    for (const [ip, entry] of quarantined) expect([ip, bytes(entry)]).toEqual([ip, bytes(before.get(ip))]);
    const after = snapshot(NET);
    for (const name of [...liveFiles, 'lock']) expect([name, bytes(after.get(name))]).toEqual([name, bytes(before.get(name))]);
    expect(after.size).toBe(LIVE_PODS_PER_NODE + 2);
  } finally {
    await close();
  }
}, 600_000);

test('two nodes at once (--parallel 2): both are collected, and their steps start together, not one node after the other', async () => {
  worker ??= await startWorker(loadTestConfig(config));
  const node2 = (cmd: string) => labSsh(dir, state.nodes.find((n) => n.name === 'node2')!.port, cmd);
  // Five leaked files on each node, of sandboxes no runtime has (noclobber: a live file is never overwritten).
  const leak = (run: (cmd: string) => string) =>
    run(`set -C; mkdir -p ${NET} && : >> ${NET}/lock && for k in 240 241 242 243 244; do printf "%s\\r\\neth0" "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')" > ${NET}/10.244.0.$k; done`);
  leak(ssh);
  leak(node2);
  const r = await runCli(['--config', config, 'run', 'ipam-gc', '--cluster', 'lab', '--node', 'node1', '--node', 'node2', '--grace', '0s', '--parallel', '2', '--auto-approve', '--json'], {}, 300_000);
  expect(r.stderr).not.toMatch(/run failed/);
  expect(r.code).toBe(0);
  const result = JSON.parse(r.stdout) as IpamGcResult;
  expect(result.outcome).toBe('fixed');
  expect(result.plan!.summary).toContain('Up to 2 node(s) at once; after a node fails, no other node starts.');
  // node2 also holds the scenario's own leaked files (its range is not full): each node releases what its plan named.
  const candidates = (node: string) => result.plan!.pools.filter((p) => p.node === node).reduce((a, p) => a + p.candidates, 0);
  expect(candidates('node1')).toBe(5);
  expect(candidates('node2')).toBeGreaterThanOrEqual(5);
  expect(result.nodes.map((n) => [n.name, n.releasedCount])).toEqual([
    ['node1', 5],
    ['node2', candidates('node2')],
  ]);
  // From the run's history: both nodes' first step (the exclusion check) was scheduled before either finished.
  const { client, close } = await testClient();
  try {
    const events = (await client.workflow.getHandle(runIdFrom(r.stderr)).fetchHistory()).events ?? [];
    const scheduled = new Map<string, number>();
    let firstDone = Infinity;
    for (const [i, e] of events.entries()) {
      const s = e.activityTaskScheduledEventAttributes;
      if (s?.activityType?.name === 'checkExcluded') scheduled.set(String(e.eventId), i);
      const done = e.activityTaskCompletedEventAttributes;
      if (done && scheduled.has(String(done.scheduledEventId))) firstDone = Math.min(firstDone, i);
    }
    expect(scheduled.size).toBe(2);
    expect(Math.max(...scheduled.values())).toBeLessThan(firstDone);
  } finally {
    await close();
  }
}, 400_000);
