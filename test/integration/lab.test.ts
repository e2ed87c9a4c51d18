/**
 * The lab's foundation: real namespaced nodes with their own sshd, probed by kubemend
 * through the real CLI and worker, and a host that is left exactly as it was.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import type { ProbeReport } from '../../lib/probe';
import { REPO_ROOT } from '../../worker/paths';
import { down, labProcesses, type LabState, up } from '../lab/lab';
import { loadTestConfig, runCli, type RunningWorker, startWorker, tempDir, temporalAddress, uniqueQueue, writeConfig } from '../helpers/harness';

/** What an operator would compare on the host: identity, links, routes, mounts. */
function hostSnapshot() {
  const read = (p: string) => (existsSync(p) ? readFileSync(p, 'utf8') : null);
  const json = (args: string[]) => JSON.parse(execFileSync('ip', ['-j', ...args], { encoding: 'utf8' }) || '[]');
  return {
    machineId: read('/etc/machine-id'),
    dbusMachineId: read('/var/lib/dbus/machine-id'),
    bootId: read('/proc/sys/kernel/random/boot_id'),
    hostname: execFileSync('hostname', { encoding: 'utf8' }),
    links: (json(['link']) as Array<Record<string, unknown>>).map((l) => [l.ifname, l.address, l.operstate, l.mtu]),
    addrs: (json(['addr']) as Array<{ ifname: string; addr_info: Array<{ local: string }> }>).map((a) => [a.ifname, a.addr_info.map((i) => i.local)]),
    routes: json(['route']),
    routes6: json(['-6', 'route']),
    mounts: readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ').slice(4, 5).join('')).sort(),
    netns: execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }),
  };
}

const dir = join(tempDir('lab'), 'lab');
let before: ReturnType<typeof hostSnapshot>;
let state: LabState;
let worker: RunningWorker;
let config: string;

beforeAll(async () => {
  before = hostSnapshot();
  state = await up({ dir, nodes: 3 });
  // The config `up` wrote, pointed at the suite's Temporal server and a task queue of its own.
  const generated = parse(readFileSync(join(dir, 'kubemend.yaml'), 'utf8')) as Record<string, unknown>;
  config = writeConfig(dir, { ...generated, temporal: { address: temporalAddress(), taskQueue: uniqueQueue('lab') } }, 'kubemend-test.yaml');
  worker = await startWorker(loadTestConfig(config));
});

afterAll(async () => {
  await worker?.stop();
  await down(dir);
});

test('the host is untouched while the lab is up', () => {
  expect(hostSnapshot()).toEqual(before);
});

test('kubemend probes every lab node as its own machine', async () => {
  const r = await runCli(['--config', config, 'run', 'probe', '--cluster', 'lab', '--json']);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  expect(r.code).toBe(0);
  const report = JSON.parse(r.stdout) as ProbeReport;
  expect(report.nodes.map((n) => n.name)).toEqual(['node1', 'node2', 'node3']);
  for (const n of report.nodes) {
    const lab = state.nodes.find((x) => x.name === n.name)!;
    expect(n.error).toBeNull();
    expect(n.problems).toEqual([]);
    expect(n.machineId).toBe(lab.machineId);
    expect(n.dbusMachineId).toBe(lab.machineId);
    expect(n.machineId).not.toBe(before.machineId?.trim());
    expect(n.bootId).not.toBe(before.bootId?.trim());
    expect(n.links.map((l) => l.ifname).sort()).toEqual(['enp0s3', 'enp0s8', 'lo']);
    expect(n.defaultRoute).toMatchObject({ dst: 'default', gateway: '10.0.2.2', dev: 'enp0s3' });
  }
  expect(new Set(report.nodes.map((n) => n.machineId)).size).toBe(3);
  expect(new Set(report.nodes.map((n) => n.bootId)).size).toBe(3);
});

test('a node is a real machine to an operator: hostname, its own 10.0.2.15, file writes stay on the node', () => {
  const n = state.nodes[1];
  const ssh = (cmd: string) =>
    execFileSync('ssh', ['-i', join(dir, 'id_ed25519'), '-o', `UserKnownHostsFile=${join(dir, 'known_hosts')}`, '-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes', '-p', String(n.port), 'root@127.0.0.1', cmd], { encoding: 'utf8' });
  expect(ssh('hostname').trim()).toBe('node2');
  expect(ssh('ip -j addr show enp0s3')).toContain('"local":"10.0.2.15"');
  ssh('rm /etc/machine-id /var/lib/dbus/machine-id && systemd-machine-id-setup >/dev/null 2>&1');
  const fresh = ssh('cat /etc/machine-id').trim();
  expect(fresh).toMatch(/^[0-9a-f]{32}$/);
  expect(fresh).not.toBe(n.machineId);
  expect(readFileSync('/etc/machine-id', 'utf8')).toBe(before.machineId);
  expect(existsSync('/var/lib/dbus/machine-id')).toBe(before.dbusMachineId !== null);
  expect(hostSnapshot()).toEqual(before);
});

test('down removes every process and file, and can run twice', async () => {
  const stopped = await down(dir);
  expect(stopped.killed).toBeGreaterThanOrEqual(1 + 3 * 3); // hub, and per node: holder, sshd, forwarder
  expect(labProcesses(dir)).toEqual([]);
  expect(existsSync(dir)).toBe(false);
  expect(hostSnapshot()).toEqual(before);
  expect(await down(dir)).toEqual({ killed: 0 });
});

describe('the lab command', () => {
  const lab = join(REPO_ROOT, 'dist', 'test', 'lab', 'main.js');
  test('refuses to run without root, exit 2', () => {
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, lab, 'up', '--nodes', '1'], { encoding: 'utf8', env: { ...process.env, KUBEMEND_LAB_DIR: '/tmp/kubemend-lab-nonroot' } });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('lab: the lab needs root');
  });
  test.each([['0'], ['201'], ['three']])('--nodes %s is bad input, exit 2, nothing created', (n) => {
    const labDir = join(tempDir('labbad'), 'lab');
    const r = spawnSync(process.execPath, [lab, 'up', '--nodes', n], { encoding: 'utf8', env: { ...process.env, KUBEMEND_LAB_DIR: labDir } });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--nodes must be an integer from 1 to 200/);
    expect(existsSync(labDir)).toBe(false);
  });
});
