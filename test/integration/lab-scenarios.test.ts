/**
 * Scenarios reproduce the seeds' failure states on lab nodes, as an operator sees them:
 * through kubemend's probe and over ssh. Two scenarios composed on one lab.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { ProbeReport } from '../../lib/probe';
import { weavePeerMac } from '../../lib/weave';
import { REPO_ROOT } from '../../worker/paths';
import { down, type LabState, requestReboot, up } from '../lab/lab';
import { hostSnapshot } from '../helpers/host';
import { labSsh, labTestConfig } from '../helpers/lab';
import { loadTestConfig, runCli, type RunningWorker, startWorker, tempDir } from '../helpers/harness';

const dir = join(tempDir('scenarios'), 'lab');
let state: LabState;
let worker: RunningWorker;
let config: string;

let hostBefore: ReturnType<typeof hostSnapshot>;

beforeAll(async () => {
  hostBefore = hostSnapshot();
  state = await up({ dir, nodes: 3, scenarios: ['cloned-machine-id', 'no-default-route'], rebootDowntimeMs: 300 });
  config = labTestConfig(dir, 'scen');
  worker = await startWorker(loadTestConfig(config));
});

afterAll(async () => {
  await worker?.stop();
  await down(dir);
  expect(hostSnapshot()).toEqual(hostBefore); // the host after the scenario, its reboots, and down
});

async function probe(): Promise<ProbeReport> {
  const r = await runCli(['--config', config, 'run', 'probe', '--cluster', 'lab', '--json']);
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as ProbeReport;
}

const ssh = (port: number, cmd: string) => labSsh(dir, port, cmd);

test('cloned-machine-id (seed 000): one machine-id in both files on every node, so one weave MAC', async () => {
  const report = await probe();
  const ids = new Set(report.nodes.flatMap((n) => [n.machineId, n.dbusMachineId]));
  expect(ids.size).toBe(1);
  const [id] = [...ids];
  expect(id).toMatch(/^[0-9a-f]{32}$/);
  const macs = report.nodes.map((n) => n.links.find((l) => l.ifname === 'weave')?.address);
  expect(new Set(macs)).toEqual(new Set([weavePeerMac(`${id}\n`)]));
  // Everything else about the nodes is their own.
  expect(new Set(report.nodes.map((n) => n.bootId)).size).toBe(3);
  // The probe names the problem and the fix.
  for (const n of report.nodes) expect(n.problems).toContainEqual(expect.stringMatching(/^shares machine-id [0-9a-f]{32} and weave MAC ([0-9a-f]{2}:){5}[0-9a-f]{2} with node\d, node\d \(seed 000, cloned machine-id: kubemend run machine-id fixes it\)$/));
});

test("weave sees seed 000's collision; after regenerating one node's id and rebooting it, that node connects", async () => {
  const n2 = state.nodes[1];
  const before = ssh(n2.port, 'weave status connections').trim().split('\n');
  expect(before).toHaveLength(2);
  for (const line of before) expect(line).toMatch(/^-> 10\.213\.0\.1[13]:6783\s+failed\s+local and remote peer names collision, retry: /);
  ssh(n2.port, 'rm /etc/machine-id /var/lib/dbus/machine-id && systemd-machine-id-setup >/dev/null 2>&1 && cp /etc/machine-id /var/lib/dbus/machine-id');
  await requestReboot(dir, 'node2');
  const after = ssh(n2.port, 'weave status connections').trim().split('\n');
  for (const line of after) expect(line).toMatch(/^-> 10\.213\.0\.1[13]:6783\s+established fastdp ([0-9a-f]{2}:){5}[0-9a-f]{2}\(node[13]\) mtu=1376$/);
  expect(ssh(state.nodes[0].port, 'weave status connections')).toMatch(/10\.213\.0\.13:6783\s+failed\s+local and remote peer names collision/); // node1 and node3 still clash
  expect(ssh(state.nodes[0].port, 'weave status connections')).toMatch(/10\.213\.0\.12:6783\s+established/);
});

test('no-default-route (seed 002): the control-plane node boots with its uplink down and no default route', async () => {
  const report = await probe();
  const cp = report.nodes.find((n) => n.name === 'node1')!;
  expect(cp.defaultRoute).toBeNull();
  expect(cp.links.find((l) => l.ifname === 'enp0s3')?.operstate).toBe('DOWN');
  for (const n of report.nodes.filter((x) => x.name !== 'node1')) expect(n.defaultRoute).toMatchObject({ gateway: '10.0.2.2', dev: 'enp0s3' });
  expect(ssh(state.nodes[0].port, 'ip route show default')).toBe('');
  // "flannel would fail": without a default route flanneld never wrote its lease.
  expect(ssh(state.nodes[0].port, 'test -e /run/flannel/subnet.env || echo missing; ip -br link show flannel.1 2>&1 | head -c 40')).toMatch(/^missing\nDevice "flannel.1" does not exist/);
  expect(ssh(state.nodes[1].port, 'grep FLANNEL_SUBNET /run/flannel/subnet.env').trim()).toBe('FLANNEL_SUBNET=10.244.1.1/24');
});

test("the seed's fix, `netplan apply`, brings the route back, and the next reboot loses it again", async () => {
  const cp = state.nodes[0];
  expect(ssh(cp.port, 'netplan apply; ip -j route show default')).toContain('"gateway":"10.0.2.2"');
  await requestReboot(dir, 'node1');
  expect(ssh(cp.port, 'ip route show default')).toBe('');
  await requestReboot(dir, 'node2');
  expect(ssh(state.nodes[1].port, 'ip route show default')).toContain('default via 10.0.2.2 dev enp0s3');
});

test('scenario names are checked: an unknown one is exit 2 and nothing is created', async () => {
  const lab = join(REPO_ROOT, 'dist', 'test', 'lab', 'main.js');
  for (const [arg, msg] of [
    ['bogus', /unknown "bogus"; known: cloned-machine-id, nat-advertise/],
    ['cloned-machine-id,no-such-thing', /unknown "no-such-thing"/],
  ] as const) {
    const other = join(tempDir('scenbad'), 'lab');
    try {
      const r = spawnSync(process.execPath, [lab, 'up', '--nodes', '1', '--scenario', arg], { encoding: 'utf8', env: { ...process.env, KUBEMEND_LAB_DIR: other } });
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(msg);
      expect(existsSync(other)).toBe(false);
    } finally {
      await down(other); // if `up` wrongly succeeded, leave nothing running
    }
  }
});
