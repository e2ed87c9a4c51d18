/**
 * The lab's foundation: real namespaced nodes with their own sshd, probed by kubemend
 * through the real CLI and worker, and a host that is left exactly as it was.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ProbeReport } from '../../lib/probe';
import { REPO_ROOT } from '../../worker/paths';
import { setTimeout as sleep } from 'node:timers/promises';
import { weavePeerMac } from '../../lib/weave';
import { down, labProcesses, type LabNode, Patience, type LabState, readState, up } from '../lab/lab';
import { hostSnapshot } from '../helpers/host';
import { labSsh, labSshArgs, labTestConfig } from '../helpers/lab';
import { loadTestConfig, runCli, type RunningWorker, startWorker, tempDir } from '../helpers/harness';

const dir = join(tempDir('lab'), 'lab');
let before: ReturnType<typeof hostSnapshot>;
let state: LabState;
let worker: RunningWorker;
let config: string;

beforeAll(async () => {
  before = hostSnapshot();
  state = await up({ dir, nodes: 3 });
  config = labTestConfig(dir, 'lab');
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
    expect(n.links.map((l) => l.ifname).sort()).toEqual(['cni0', 'enp0s3', 'enp0s8', 'flannel.1', 'lo', 'weave']);
    expect(n.links.find((l) => l.ifname === 'weave')?.address).toBe(weavePeerMac(`${lab.machineId}\n`));
    expect(n.defaultRoute).toMatchObject({ dst: 'default', gateway: '10.0.2.2', dev: 'enp0s3' });
  }
  expect(new Set(report.nodes.map((n) => n.machineId)).size).toBe(3);
  expect(new Set(report.nodes.map((n) => n.bootId)).size).toBe(3);
});

const sshArgs = (port: number, cmd: string) => labSshArgs(dir, port, cmd);
const sshTo = (port: number) => (cmd: string) => labSsh(dir, port, cmd);

/** The host's root shell files as they were before the lab came up. */
const hostRootFiles = () => ['.bashrc', '.profile'].map((f) => (existsSync(join('/root', f)) ? readFileSync(join('/root', f), 'utf8') : null));
const hostRootBefore = hostRootFiles();

test("each node has its own /root, as a fresh install leaves it; the host's /root is untouched", () => {
  const n = state.nodes[1];
  const ssh = sshTo(n.port);
  expect(ssh('echo "$HOME"; ls -A /root').split('\n').filter(Boolean)).toEqual(['/root', '.bashrc', '.profile']);
  const fresh = ['/usr/share/base-files/dot.bashrc', '/etc/skel/.bashrc'].find((p) => existsSync(p))!;
  expect(ssh('cat /root/.bashrc')).toBe(readFileSync(fresh, 'utf8'));
  ssh('echo on-the-node > /root/kubemend-lab-home');
  expect(existsSync('/root/kubemend-lab-home')).toBe(false);
  expect(readFileSync(join(dir, 'nodes', 'node2', 'root', 'kubemend-lab-home'), 'utf8')).toBe('on-the-node\n');
  expect(sshTo(state.nodes[2].port)('ls -A /root').split('\n').filter(Boolean)).toEqual(['.bashrc', '.profile']);
  expect(hostRootFiles()).toEqual(hostRootBefore);
  expect(hostSnapshot()).toEqual(before);
});

test('a node is a real machine to an operator: hostname, its own 10.0.2.15, file writes stay on the node', () => {
  const n = state.nodes[1];
  const ssh = sshTo(n.port);
  expect(ssh('hostname').trim()).toBe('node2');
  // Its own PID namespace: PID 1 is the node's holder, and host processes are out of reach.
  expect(ssh('ps -o args= -p 1').trim()).toBe(`kmlab-node ${dir} node2 infinity`);
  expect(spawnSync('ssh', sshArgs(n.port, `kill -0 ${process.pid}`), { encoding: 'utf8' }).stderr).toMatch(/No such process/);
  expect(ssh('ip -j addr show enp0s3')).toContain('"local":"10.0.2.15"');
  // A healthy flannel node: its lease on flannel.1 and cni0, and subnet.env to match.
  expect(ssh('ip -j addr show cni0')).toContain('"local":"10.244.1.1","prefixlen":24');
  expect(ssh('ip -j addr show flannel.1')).toContain('"local":"10.244.1.0","prefixlen":32');
  expect(ssh('cat /run/flannel/subnet.env')).toBe('FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
  ssh('rm /etc/machine-id /var/lib/dbus/machine-id && systemd-machine-id-setup >/dev/null 2>&1');
  const fresh = ssh('cat /etc/machine-id').trim();
  expect(fresh).toMatch(/^[0-9a-f]{32}$/);
  expect(fresh).not.toBe(n.machineId);
  expect(readFileSync('/etc/machine-id', 'utf8')).toBe(before.machineId);
  expect(existsSync('/var/lib/dbus/machine-id')).toBe(before.dbusMachineId !== null);
  expect(hostSnapshot()).toEqual(before);
});

test('`reboot` on a node drops the session; it comes back with a new boot id, its files, and a weave MAC from its new machine-id (seed 000 by hand)', async () => {
  const n = state.nodes[1];
  const ssh = sshTo(n.port);
  // The previous test regenerated node2's machine-id; weave keeps the old bridge until reboot.
  const newId = ssh('cat /etc/machine-id');
  expect(newId.trim()).not.toBe(n.machineId);
  expect(ssh('cat /sys/class/net/weave/address').trim()).toBe(weavePeerMac(`${n.machineId}\n`));
  const bootBefore = ssh('cat /proc/sys/kernel/random/boot_id').trim();
  ssh('echo kept > /etc/kubemend-lab-marker; touch /run/kubemend-lab-ephemeral');

  const r = spawnSync('ssh', sshArgs(n.port, 'reboot; sleep 10; echo STILL-HERE'), { encoding: 'utf8', timeout: 30_000 });
  expect(r.status).toBe(255); // the connection went away under the session
  expect(r.stdout).not.toContain('STILL-HERE');

  let back: LabNode | undefined;
  for (let i = 0; i < 200 && !back; i++) {
    const now = readState(dir)!.nodes[1];
    if (now.boots === 2) back = now;
    else await sleep(50);
  }
  expect(back).toBeDefined();
  expect(ssh('cat /proc/sys/kernel/random/boot_id').trim()).not.toBe(bootBefore);
  expect(ssh('cat /etc/kubemend-lab-marker').trim()).toBe('kept');
  expect(ssh('cat /root/kubemend-lab-home').trim()).toBe('on-the-node'); // its home survives too
  expect(spawnSync('ssh', sshArgs(n.port, 'test -e /run/kubemend-lab-ephemeral')).status).toBe(1);
  expect(ssh('ip -j route show default')).toContain('"gateway":"10.0.2.2"');
  expect(ssh('cat /sys/class/net/weave/address').trim()).toBe(weavePeerMac(newId));
  expect(hostSnapshot()).toEqual(before);
});

test('lab reboot <node> from the host waits until the node is back; an unknown node is exit 2', () => {
  const lab = join(REPO_ROOT, 'dist', 'test', 'lab', 'main.js');
  const env = { ...process.env, KUBEMEND_LAB_DIR: dir };
  const ok = spawnSync(process.execPath, [lab, 'reboot', 'node3'], { encoding: 'utf8', env });
  expect(ok.status).toBe(0);
  expect(ok.stdout).toMatch(/^node3 rebooted in [\d.]+ s \(boot 2, boot id [0-9a-f-]{36}\)/);
  expect(sshTo(state.nodes[2].port)('hostname').trim()).toBe('node3');
  const bad = spawnSync(process.execPath, [lab, 'reboot', 'node9'], { encoding: 'utf8', env });
  expect(bad.status).toBe(2);
  expect(bad.stderr).toContain('no lab node "node9"');
});

test('down removes every process and file, and can run twice', async () => {
  const stopped = await down(dir);
  expect(stopped.killed).toBeGreaterThanOrEqual(2 + 3 * 3); // hub, daemon, and per node: holder, sshd, forwarder
  expect(labProcesses(dir)).toEqual([]);
  expect(existsSync(dir)).toBe(false);
  expect(hostSnapshot()).toEqual(before);
  expect(hostRootFiles()).toEqual(hostRootBefore);
  expect(await down(dir)).toEqual({ killed: 0 });
});

test('down cleans up after a crash: no state file, daemon killed, processes found from /proc alone', async () => {
  const crashed = join(tempDir('crash'), 'lab');
  await up({ dir: crashed, nodes: 2 });
  // As if `up` had been killed before writing its state, and the daemon had died.
  rmSync(join(crashed, 'state.json'));
  for (const p of labProcesses(crashed).filter((x) => x.argv0.startsWith('kmlab-daemon'))) process.kill(p.pid, 'SIGKILL');
  expect(labProcesses(crashed).length).toBeGreaterThanOrEqual(1 + 2 * 2); // hub, holders, forwarders
  const { killed } = await down(crashed);
  expect(killed).toBeGreaterThanOrEqual(1 + 2 * 3); // hub, and per node: holder, sshd, forwarder
  expect(labProcesses(crashed)).toEqual([]);
  expect(existsSync(crashed)).toBe(false);
  expect(hostSnapshot()).toEqual(before);
});

test("the lab's deadlines count time waited, not time the event loop spent blocked", async () => {
  const patience = new Patience(100);
  // The loop is blocked for longer than the whole budget while a 10 ms wait is pending.
  setImmediate(() => {
    const until = Date.now() + 300;
    while (Date.now() < until) {
      // as a burst of synchronous work elsewhere in the process
    }
  });
  await patience.sleep(10);
  expect(patience.exhausted).toBe(false);
  for (let i = 0; i < 10; i++) await patience.sleep(10);
  expect(patience.exhausted).toBe(true);
});

describe('the lab command', () => {
  const lab = join(REPO_ROOT, 'dist', 'test', 'lab', 'main.js');
  test('refuses to run without root, exit 2', () => {
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, lab, 'up', '--nodes', '1'], { encoding: 'utf8', env: { ...process.env, KUBEMEND_LAB_DIR: '/tmp/kubemend-lab-nonroot' } });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('lab: the lab needs root');
  });
  test.each([['/'], ['/root'], [REPO_ROOT], ['/tmp/with space/lab'], ['/tmp/a,b']])('refuses %s as a lab directory, exit 2, nothing touched', (labDir) => {
    const r = spawnSync(process.execPath, [lab, 'down'], { encoding: 'utf8', env: { ...process.env, KUBEMEND_LAB_DIR: labDir } });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/lab directory|refusing/);
  });
  test('a non-empty directory that is not a lab is neither used nor deleted', () => {
    const other = tempDir('notalab');
    writeFileSync(join(other, 'precious'), 'keep me');
    for (const cmd of [['down'], ['up', '--nodes', '1']]) {
      const r = spawnSync(process.execPath, [lab, ...cmd], { encoding: 'utf8', env: { ...process.env, KUBEMEND_LAB_DIR: other } });
      expect(r.status).toBe(2);
      expect(r.stderr).toContain('is not empty and is not a lab directory');
    }
    expect(readFileSync(join(other, 'precious'), 'utf8')).toBe('keep me');
  });
  test.each([['0'], ['201'], ['three']])('--nodes %s is bad input, exit 2, nothing created', (n) => {
    const labDir = join(tempDir('labbad'), 'lab');
    const r = spawnSync(process.execPath, [lab, 'up', '--nodes', n], { encoding: 'utf8', env: { ...process.env, KUBEMEND_LAB_DIR: labDir } });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--nodes must be an integer from 1 to 200/);
    expect(existsSync(labDir)).toBe(false);
  });
});
