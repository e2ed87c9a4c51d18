/**
 * `kubemend run probe` end to end: the real CLI process, a real worker, the suite's real
 * Temporal server, and real sshd processes on loopback with per-suite host keys.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { temporal } from '@temporalio/proto';
import { SA_CLUSTER, SA_NODE, SA_REMEDIATION } from '../../lib/search-attributes';
import type { ProbeReport } from '../../lib/probe';
import { freePort, keygen, LocalSshd } from '../lab/sshd';
import { toolPath } from '../helpers/temporal-dev';
import { loadTestConfig, recordHistory, runCli, runIdFrom, type RunningWorker, startWorker, tempDir, temporalAddress, testClient, uniqueQueue, writeConfig } from '../helpers/harness';

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

let good: LocalSshd;
let other: LocalSshd;
let forced: LocalSshd;
let worker: RunningWorker;
let dir: string;
let config: string;
const taskQueue = uniqueQueue('probe');

/**
 * KUBEMEND_RECORD_HISTORIES=1 saves a run's history for the replay test, exported by
 * Temporal's own CLI in the standard JSON form.
 */

async function history(runId: string): Promise<HistoryEvent[]> {
  const { client, close } = await testClient();
  try {
    return (await client.workflow.getHandle(runId).fetchHistory()).events ?? [];
  } finally {
    await close();
  }
}

function activityAttempts(events: HistoryEvent[]): Array<{ type: string; attempt: number; maxAttempts: number }> {
  const scheduled = new Map<string, { type: string; max: number }>();
  const out: Array<{ type: string; attempt: number; maxAttempts: number }> = [];
  for (const e of events) {
    const s = e.activityTaskScheduledEventAttributes;
    if (s) scheduled.set(String(e.eventId), { type: s.activityType?.name ?? '', max: s.retryPolicy?.maximumAttempts ?? 0 });
    const st = e.activityTaskStartedEventAttributes;
    if (st) {
      const sch = scheduled.get(String(st.scheduledEventId))!;
      out.push({ type: sch.type, attempt: st.attempt ?? 0, maxAttempts: sch.max });
    }
  }
  return out;
}

beforeAll(async () => {
  dir = tempDir('probe');
  good = await LocalSshd.start();
  other = await LocalSshd.start();
  // Every session runs this instead of what the client asked for, as some hardened hosts do.
  forced = await LocalSshd.start({ extraConfig: ['ForceCommand /bin/true'] });
  // node2's recorded key is node1's: node2's real key must then be refused as a mismatch.
  const wrongKnownHosts = join(dir, 'wrong_known_hosts');
  writeFileSync(wrongKnownHosts, `${good.knownHostsLine().replace(`]:${good.port} `, `]:${other.port} `)}\n`);
  const emptyKnownHosts = join(dir, 'empty_known_hosts');
  writeFileSync(emptyKnownHosts, '# nobody\n');
  const strangerKey = join(dir, 'stranger_key');
  keygen(strangerKey);
  const closedPort = await freePort();
  const closedKnownHosts = join(dir, 'closed_known_hosts');
  writeFileSync(closedKnownHosts, `${good.knownHostsLine().replace(`]:${good.port} `, `]:${closedPort} `)}\n`);
  config = writeConfig(dir, {
    temporal: { address: temporalAddress(), taskQueue },
    ssh: { connectTimeout: '3s', commandTimeout: '10s' },
    clusters: [
      {
        name: 'local',
        ssh: { user: 'root', privateKeyPath: good.clientKeyPath, knownHostsPath: good.knownHostsPath },
        nodes: [
          { name: 'node1', role: 'control-plane', host: '127.0.0.1', port: good.port },
          { name: 'node2', role: 'worker', host: '127.0.0.1', port: other.port, knownHostsPath: wrongKnownHosts, privateKeyPath: other.clientKeyPath },
          { name: 'node3', role: 'worker', host: '127.0.0.1', port: good.port, knownHostsPath: emptyKnownHosts },
          { name: 'node4', role: 'worker', host: '127.0.0.1', port: good.port, privateKeyPath: strangerKey },
          { name: 'node5', role: 'worker', host: '127.0.0.1', port: closedPort, knownHostsPath: closedKnownHosts },
          { name: 'node6', role: 'worker', host: '127.0.0.1', port: forced.port, knownHostsPath: forced.knownHostsPath, privateKeyPath: forced.clientKeyPath },
        ],
      },
    ],
  });
  worker = await startWorker(loadTestConfig(config));
});

afterAll(async () => {
  await worker?.stop();
  await good?.stop();
  await other?.stop();
  await forced?.stop();
});

test('probe returns the node facts over SSH as the stable JSON contract', async () => {
  const r = await runCli(['--config', config, 'run', 'probe', '--cluster', 'local', '--node', 'node1', '--json', '--reason', 'INC-1']);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  expect(r.code).toBe(0);
  const report = JSON.parse(r.stdout) as ProbeReport;
  expect(Object.keys(report)).toEqual(['cluster', 'api', 'nodes']);
  expect(report.cluster).toBe('local');
  expect(report.api).toBe('not configured'); // this cluster has no kubeconfig: SSH facts only
  expect(report.nodes).toHaveLength(1);
  const n = report.nodes[0];
  for (const key of ['name', 'machineId', 'dbusMachineId', 'bootId', 'links', 'defaultRoute', 'error']) expect(n).toHaveProperty(key);
  // The sshd runs on this machine, so the node's files are this machine's files.
  expect(n.name).toBe('node1');
  expect(n.error).toBeNull();
  expect(n.machineId).toBe(readFileSync('/etc/machine-id', 'utf8').trim());
  expect(n.dbusMachineId).toBe(readFileSync('/var/lib/dbus/machine-id', 'utf8').trim());
  expect(n.bootId).toBe(readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
  const localLinks = JSON.parse(execFileSync('ip', ['-j', 'link'], { encoding: 'utf8' })) as Array<{ ifname: string; address?: string }>;
  expect(n.links.map((l) => [l.ifname, l.address])).toEqual(localLinks.map((l) => [l.ifname, l.address]));
  const localDefault = JSON.parse(execFileSync('ip', ['-j', 'route', 'show', 'default'], { encoding: 'utf8' }) || '[]') as Array<{ dev: string }>;
  expect(n.defaultRoute?.dev ?? null).toBe(localDefault[0]?.dev ?? null);

  const runId = runIdFrom(r.stderr);
  expect(runId).toMatch(/^probe-local-\d{8}T\d{6}Z-[0-9a-f]{6}$/);
  recordHistory(runId, 'probe-one-node-reads-api.json'); // probe-one-node.json: a run from before the API step, kept for replay

  // Search attributes make the run findable by node, with Temporal's own CLI too.
  const listed = JSON.parse(
    execFileSync(toolPath('temporal'), ['workflow', 'list', '--address', temporalAddress(), '--query', `KubemendNode = 'node1' AND KubemendCluster = 'local'`, '--output', 'json'], { encoding: 'utf8' }) || '[]',
  ) as Array<{ execution: { workflowId: string } }>;
  expect(listed.map((w) => w.execution.workflowId)).toContain(runId);

  const list = await runCli(['--config', config, 'list', '--node', 'node1', '--json']);
  expect(list.code).toBe(0);
  expect((JSON.parse(list.stdout) as Array<{ runId: string }>).map((x) => x.runId)).toContain(runId);
  const otherNode = await runCli(['--config', config, 'list', '--node', 'node4', '--json']);
  expect((JSON.parse(otherNode.stdout) as Array<{ runId: string }>).map((x) => x.runId)).not.toContain(runId);

  const status = await runCli(['--config', config, 'status', runId, '--json']);
  expect(status.code).toBe(0);
  const st = JSON.parse(status.stdout);
  expect(st).toMatchObject({ runId, remediation: 'probe', status: 'COMPLETED', cluster: 'local', nodes: ['node1'] });
  expect(st.result.nodes[0].machineId).toBe(n.machineId);
  expect(st.progress).toMatchObject({ phase: 'Done', nodes: { node1: { phase: 'Probed' } } });
  const human = await runCli(['--config', config, 'status', runId]);
  expect(human.stdout).toContain(`machine-id       ${n.machineId}`);
});

test('a wrong host key is refused, and the refusal is not retried', async () => {
  const r = await runCli(['--config', config, 'run', 'probe', '--cluster', 'local', '--node', 'node1', '--node', 'node2', '--json']);
  expect(r.code).toBe(1);
  const report = JSON.parse(r.stdout) as ProbeReport;
  const node2 = report.nodes.find((x) => x.name === 'node2')!;
  expect(node2.error).toMatch(/^HostKeyMismatch: host key of node2 \(\[127\.0\.0\.1\]:\d+\) does not match .*wrong_known_hosts \(lines 1\); refusing to connect/);
  expect(node2.machineId).toBeNull();
  expect(report.nodes.find((x) => x.name === 'node1')!.error).toBeNull(); // one bad node does not stop the others
  expect(r.stderr).toContain('1 node(s) could not be probed: node2');

  const runId = runIdFrom(r.stderr);
  recordHistory(runId, 'probe-host-key-mismatch.json');
  const attempts = activityAttempts(await history(runId)).filter((a) => a.type === 'probeNode');
  // Two probeNode activities (node1, node2), each started once, though the policy allows 5.
  expect(attempts).toEqual([
    { type: 'probeNode', attempt: 1, maxAttempts: 5 },
    { type: 'probeNode', attempt: 1, maxAttempts: 5 },
  ]);
});

test('a host missing from known_hosts is refused (no trust on first use)', async () => {
  const r = await runCli(['--config', config, 'run', 'probe', '--cluster', 'local', '--node', 'node3', '--json']);
  expect(r.code).toBe(1);
  const report = JSON.parse(r.stdout) as ProbeReport;
  expect(report.nodes[0].error).toMatch(/^HostKeyUnknown: node3 \(\[127\.0\.0\.1\]:\d+\) has no entry in .*empty_known_hosts/);
});

test('a key the server does not accept fails as SshAuthFailed, once', async () => {
  const r = await runCli(['--config', config, 'run', 'probe', '--cluster', 'local', '--node', 'node4', '--json']);
  expect(r.code).toBe(1);
  expect((JSON.parse(r.stdout) as ProbeReport).nodes[0].error).toMatch(/^SshAuthFailed: SSH authentication to root@\[127\.0\.0\.1\]:\d+ \(node4\) failed/);
  const attempts = activityAttempts(await history(runIdFrom(r.stderr))).filter((a) => a.type === 'probeNode');
  expect(attempts.map((a) => a.attempt)).toEqual([1]);
});

test('an unreachable node is a transient failure, retried with backoff up to the limit', async () => {
  const { client, close } = await testClient();
  try {
    const handle = await client.workflow.start('probe', {
      workflowId: `probe-local-retry-${Date.now()}`,
      taskQueue,
      args: [{ cluster: 'local', nodes: ['node5'], requestedBy: 'test', retry: { initialIntervalMs: 100, maximumIntervalMs: 200, maximumAttempts: 3 } }],
      typedSearchAttributes: [
        { key: SA_CLUSTER, value: 'local' },
        { key: SA_NODE, value: ['node5'] },
        { key: SA_REMEDIATION, value: 'probe' },
      ],
    });
    const report = (await handle.result()) as ProbeReport;
    expect(report.nodes[0].error).toMatch(/^SshTransient: cannot connect to root@\[127\.0\.0\.1\]:\d+ \(node5\): ECONNREFUSED/);
    const attempts = activityAttempts((await handle.fetchHistory()).events ?? []).filter((a) => a.type === 'probeNode');
    // A failed attempt that is retried is not written to history; the last one carries its number.
    expect(attempts).toEqual([{ type: 'probeNode', attempt: 3, maxAttempts: 3 }]);
  } finally {
    await close();
  }
});

test('a forced command that ran instead of the probe is an error, never an empty success', async () => {
  const r = await runCli(['--config', config, 'run', 'probe', '--cluster', 'local', '--node', 'node6', '--json']);
  expect(r.code).toBe(1);
  expect((JSON.parse(r.stdout) as ProbeReport).nodes[0].error).toMatch(/^ProbeNoOutput: the probe script did not run on node6 \(exit 0, output ""\); is a forced command configured/);
});

test("a node the CLI's config has but the worker's lacks is bad input (exit 2), decided by the worker", async () => {
  const cliOnly = writeConfig(dir, readFileSync(config, 'utf8').replace("- name: node6", "- name: ghost\n        role: worker\n        host: 127.0.0.1\n      - name: node6"), 'cli-only.yaml');
  const r = await runCli(['--config', cliOnly, 'run', 'probe', '--cluster', 'local', '--node', 'ghost']);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain('kubemend: cluster local has no node "ghost" (it has: node1, node2, node3, node4, node5, node6)');
});

describe('bad input: exit 2, a message naming what is wrong, nothing started', () => {
  async function runsOnQueue(): Promise<number> {
    const { client, close } = await testClient();
    try {
      return (await client.workflow.count(`TaskQueue = '${taskQueue}'`)).count;
    } finally {
      await close();
    }
  }

  test.each([
    [['run', 'probe', '--cluster', 'nope'], /--cluster: no cluster "nope" in the config \(it has: local\)/],
    [['run', 'probe', '--cluster', 'local', '--node', 'n1; rm -rf /'], /--node #0: must be a Kubernetes node name .*"n1; rm -rf \/"/],
    [['run', 'probe', '--cluster', 'local', '--node', 'node9'], /--node: cluster local has no node "node9"/],
    [['run', 'probe', '--cluster', '$(reboot)'], /--cluster: must be a lowercase DNS-1123 label/],
    [['run', 'reboot-everything', '--cluster', 'local'], /unknown remediation "reboot-everything"/],
    [['run', 'probe'], /required option '--cluster <name>' not specified/],
    [['status', 'x;y'], /must be a kubemend run ID/],
    [['status', 'probe-local-does-not-exist'], /no run "probe-local-does-not-exist"/],
  ])('kubemend %j', async (args, message) => {
    const before = await runsOnQueue();
    const r = await runCli(['--config', config, ...(args as string[])]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message as RegExp);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(await runsOnQueue()).toBe(before);
  });

  test('a config with a hostile node name exits 2 naming the field', async () => {
    const bad = writeConfig(dir, readFileSync(config, 'utf8').replace('name: node3', 'name: "$(reboot)"'), 'bad.yaml');
    const before = await runsOnQueue();
    const r = await runCli(['--config', bad, 'run', 'probe', '--cluster', 'local']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('clusters[0].nodes[2].name: must be a Kubernetes node name (lowercase DNS-1123 subdomain), got "$(reboot)"');
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(await runsOnQueue()).toBe(before);
  });

  test('a missing or unparsable config file exits 2', async () => {
    const missing = await runCli(['--config', join(dir, 'nope.yaml'), 'list']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/nope\.yaml: invalid config:\n {2}- cannot read config file: ENOENT/);
    const broken = await runCli(['--config', writeConfig(dir, 'clusters: [\n', 'broken.yaml'), 'list']);
    expect(broken.code).toBe(2);
    expect(broken.stderr).toMatch(/not valid YAML/);
    const none = await runCli(['list'], { KUBEMEND_CONFIG: '' });
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/no config file: pass --config FILE or set KUBEMEND_CONFIG/);
  });

  test('approve and cancel on a finished probe are refused as bad input', async () => {
    const r = await runCli(['--config', config, 'run', 'probe', '--cluster', 'local', '--node', 'node1', '--detach']);
    expect(r.code).toBe(0);
    const runId = r.stdout.trim();
    const { client, close } = await testClient();
    await client.workflow.getHandle(runId).result();
    await close();
    const approve = await runCli(['--config', config, 'approve', runId]);
    expect(approve.code).toBe(2);
    expect(approve.stderr).toMatch(new RegExp(`run ${runId} (has nothing to approve|is not waiting for approval)`));
    const cancel = await runCli(['--config', config, 'cancel', runId]);
    expect(cancel.code).toBe(2);
    expect(cancel.stderr).toContain(`run ${runId} is COMPLETED, not running: nothing to cancel`);
  });
});
