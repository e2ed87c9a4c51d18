/**
 * The worker's Prometheus endpoint (`worker.metrics.address`), against the real thing: the
 * `kubemend worker` process as an operator starts it, on the suite's Temporal server, and
 * ipam-gc runs from the CLI on the lab's `stale-cni` node (real sshd, real kube-apiserver,
 * real host-local files). /metrics is scraped over HTTP as Prometheus scrapes it, and what
 * it says is checked against the audit trail and the node.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse } from 'yaml';
import type { AuditRecord } from '../../lib/audit';
import { Metric } from '../../lib/metrics';
import type { IpamGcResult } from '../../workflows/ipam-gc';
import { down, type LabState, LIVE_PODS_PER_NODE, up } from '../lab/lab';
import { labSsh, labTestConfig } from '../helpers/lab';
import { CLI, REPO, runCli, runIdFrom, tempDir, writeConfig } from '../helpers/harness';

const dir = join(tempDir('metrics'), 'lab');
const NET = 'cbr0';
/** stale-cni's node1: a /24 from flannel's subnet.env, every address but the gateway's reserved, LIVE_PODS_PER_NODE of them by live sandboxes. */
const CAPACITY = 253;
const LEAKED = CAPACITY - LIVE_PODS_PER_NODE;
/** How long a scrape may keep missing a sample before the test fails: generous, the export is not instant on a busy machine. */
const SCRAPE_DEADLINE_MS = 60_000;

let state: LabState;
let config: string;
let metricsUrl: string;
let worker: ChildProcess | undefined;
let workerOut = '';

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

/** Starts `kubemend worker` on a config and waits for its "started" log line (or its exit). */
async function startWorkerProcess(cfg: string): Promise<ChildProcess> {
  const p = spawn(process.execPath, [CLI, '--config', cfg, 'worker'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  p.stdout!.on('data', (d) => (workerOut += d));
  p.stderr!.on('data', (d) => (workerOut += d));
  while (!workerOut.includes('kubemend worker started')) {
    if (p.exitCode !== null) throw new Error(`kubemend worker exited with ${p.exitCode}:\n${workerOut}`);
    await sleep(100);
  }
  return p;
}

beforeAll(async () => {
  // Two nodes: the control plane's demo Deployment needs a worker. Runs name node1 (--node).
  state = await up({ dir, nodes: 2, controlPlane: true, scenarios: ['stale-cni'], rebootDowntimeMs: 300 });
  // flanneld's lease back (seed 003's other fault, not ipam-gc's): the listing reads the range, so the capacity, from it.
  labSsh(dir, state.nodes.find((n) => n.name === 'node1')!.port, 'printf "FLANNEL_NETWORK=10.244.0.0/16\\nFLANNEL_SUBNET=10.244.0.1/24\\nFLANNEL_MTU=1450\\nFLANNEL_IPMASQ=true\\n" > /run/flannel/subnet.env');
  const address = `127.0.0.1:${await freePort()}`;
  metricsUrl = `http://${address}/metrics`;
  const doc = parse(readFileSync(labTestConfig(dir, 'metrics'), 'utf8')) as Record<string, unknown>;
  config = writeConfig(dir, { ...doc, worker: { shutdownGraceTime: '2s', metrics: { address } } }, 'kubemend-metrics.yaml');
  worker = await startWorkerProcess(config);
}, 300_000);

afterAll(async () => {
  if (worker && worker.exitCode === null) {
    const exited = new Promise((resolve) => worker!.once('exit', resolve));
    worker.kill('SIGTERM');
    await exited;
  }
  await down(dir);
}, 120_000);

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The Prometheus text format's samples (comments skipped; label values unescaped). */
function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

async function scrape(): Promise<{ status: number; type: string | null; samples: Sample[] }> {
  const r = await fetch(metricsUrl);
  return { status: r.status, type: r.headers.get('content-type'), samples: parseExposition(await r.text()) };
}

const matching = (samples: Sample[], name: string, labels: Record<string, string>) =>
  samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));

/**
 * Scrapes until every wanted series is there with the wanted value, and returns the last
 * scrape; fails only if that never happens within SCRAPE_DEADLINE_MS, showing what was there.
 */
async function scrapeUntil(want: Array<{ name: string; labels: Record<string, string>; value: number }>): Promise<Sample[]> {
  const until = Date.now() + SCRAPE_DEADLINE_MS;
  for (;;) {
    const { samples } = await scrape();
    const ok = want.every((w) => {
      const found = matching(samples, w.name, w.labels);
      return found.length === 1 && found[0].value === w.value;
    });
    if (ok) return samples;
    if (Date.now() > until) {
      const seen = want.map((w) => `${w.name} ${JSON.stringify(w.labels)}: want ${w.value}, have ${JSON.stringify(matching(samples, w.name, w.labels).map((s) => [s.labels, s.value]))}`);
      throw new Error(`after ${SCRAPE_DEADLINE_MS} ms of scraping:\n${seen.join('\n')}\nworker log:\n${workerOut.slice(-4000)}`);
    }
    await sleep(250);
  }
}

const pool = { cluster: 'lab', node: 'node1', network: NET };
const ipamGc = { remediation: 'ipam-gc', cluster: 'lab' };

test('the worker serves /metrics over HTTP in the Prometheus text format, with the SDK\'s own metrics and no kubemend run yet', async () => {
  expect(workerOut).toContain(`"metrics":"${metricsUrl}"`);
  const r = await scrape();
  expect(r.status).toBe(200);
  expect(r.type).toMatch(/^text\/plain/);
  expect(r.samples.some((s) => s.name.startsWith('temporal_'))).toBe(true);
  expect(r.samples.filter((s) => s.name.startsWith('kubemend_'))).toEqual([]);
});

test('a dry run (--grace 0s): one run with outcome dry_run, and the pool gauges of the listing; nothing released', async () => {
  const r = await runCli(['--config', config, 'run', 'ipam-gc', '--cluster', 'lab', '--node', 'node1', '--dry-run', '--grace', '0s', '--json'], {}, 240_000);
  expect(r.stderr).not.toMatch(/run failed/);
  expect(r.code).toBe(0);
  const result = JSON.parse(r.stdout) as IpamGcResult;
  expect(result.outcome).toBe('planned (dry run)');
  expect(result.plan!.pools).toEqual([expect.objectContaining({ node: 'node1', network: NET, capacity: CAPACITY, inUse: CAPACITY, leaked: LEAKED, candidates: LEAKED })]);

  const samples = await scrapeUntil([
    { name: Metric.Runs, labels: { ...ipamGc, outcome: 'dry_run' }, value: 1 },
    { name: Metric.IpamCapacity, labels: pool, value: CAPACITY },
    { name: Metric.IpamInUse, labels: pool, value: CAPACITY },
    { name: Metric.IpamLeaked, labels: pool, value: LEAKED },
    { name: Metric.IpamCandidates, labels: pool, value: LEAKED },
  ]);
  expect(matching(samples, `${Metric.RunDuration}_count`, { ...ipamGc, outcome: 'dry_run' }).map((s) => s.value)).toEqual([1]);
  expect(matching(samples, Metric.IpamReleased, {})).toEqual([]);
  expect(matching(samples, Metric.Runs, { outcome: 'fixed' })).toEqual([]);
  // The SDK's tags on a workflow's metrics.
  expect(matching(samples, Metric.Runs, ipamGc)[0].labels).toMatchObject({ workflowType: 'remediateIpamGc', namespace: 'default' });
}, 300_000);

test('the approved run (--grace 0s --auto-approve): the released counter equals the addresses the audit trail lists; one fixed run; the gauges show the listing after the release', async () => {
  const r = await runCli(['--config', config, 'run', 'ipam-gc', '--cluster', 'lab', '--node', 'node1', '--auto-approve', '--grace', '0s', '--json'], {}, 300_000);
  expect(r.stderr).not.toMatch(/run failed/);
  expect(r.code).toBe(0);
  const runId = runIdFrom(r.stderr);
  expect((JSON.parse(r.stdout) as IpamGcResult).outcome).toBe('fixed');

  const a = await runCli(['--config', config, 'audit', 'show', runId, '--json']);
  expect(a.stderr).toBe('');
  const release = (JSON.parse(a.stdout) as AuditRecord[]).filter((x) => x.step === `node1/release/${NET}`);
  expect(release.map((x) => x.outcome)).toEqual(['applied']);
  const audited = (release[0].after as { released: Array<{ ip: string }> }).released.length;
  expect(audited).toBe(LEAKED);

  const samples = await scrapeUntil([
    { name: Metric.IpamReleased, labels: pool, value: audited },
    { name: Metric.Runs, labels: { ...ipamGc, outcome: 'fixed' }, value: 1 },
    { name: Metric.IpamCapacity, labels: pool, value: CAPACITY },
    { name: Metric.IpamInUse, labels: pool, value: LIVE_PODS_PER_NODE },
    { name: Metric.IpamLeaked, labels: pool, value: 0 },
    { name: Metric.IpamCandidates, labels: pool, value: 0 },
  ]);
  // As an SRE counts them on the node: the files left in the network's directory are the live ones.
  const files = labSsh(dir, state.nodes.find((n) => n.name === 'node1')!.port, `ls /var/lib/cni/networks/${NET}`).split('\n').filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
  expect(files).toHaveLength(LIVE_PODS_PER_NODE);
  expect(matching(samples, `${Metric.RunDuration}_count`, { ...ipamGc, outcome: 'fixed' }).map((s) => s.value)).toEqual([1]);
  // The dry run's count is as it was: each run is counted once, under its own outcome.
  expect(matching(samples, Metric.Runs, { ...ipamGc, outcome: 'dry_run' }).map((s) => s.value)).toEqual([1]);
  // Only node1's network was released into: no other series of the counter.
  expect(matching(samples, Metric.IpamReleased, {}).map((s) => s.labels)).toEqual([expect.objectContaining(pool)]);
}, 300_000);

test('an address the worker cannot bind is a config error (exit 2) naming worker.metrics.address; nothing else is started', async () => {
  const taken: Server = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  try {
    const address = `127.0.0.1:${(taken.address() as AddressInfo).port}`;
    const doc = parse(readFileSync(config, 'utf8')) as Record<string, unknown>;
    const busy = writeConfig(dir, { ...doc, worker: { metrics: { address } } }, 'kubemend-busy.yaml');
    const r = await runCli(['--config', busy, 'worker'], {}, 60_000);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`worker.metrics.address: cannot serve /metrics on ${address}: `);
    expect(r.stderr).toMatch(/Address already in use/);
    expect(r.stdout).not.toContain('kubemend worker started');
  } finally {
    taken.close();
  }
});
