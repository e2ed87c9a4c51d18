/**
 * The real flanneld (v0.28.10, .tools/bin/flanneld) in lab nodes, against the lab's real
 * kube-apiserver with a per-node identity bound to flannel's ClusterRole. A healthy node:
 * flanneld writes subnet.env from the Node's podCIDR and creates the vxlan device flannel.1.
 * Seed 002 (no-default-route): flanneld exits with its own message; after `netplan apply`
 * and a restart it runs. The messages asserted are the ones flanneld printed, read from its
 * log. Nothing is left on the host, and `down` leaves no process.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, TOOLS_BIN } from '../../worker/paths';
import { controlPlaneInfo } from '../lab/control-plane';
import { FLANNELD, flanneldPid, flanneldLog, flanneldPreviousLogPath, flannelProcesses, flannelUser, readSubnetEnv, removeLabFlannelState, startFlanneld, stopFlanneld, waitForSubnetEnv } from '../lab/flannel';
import { down, labProcesses, type LabState, requestReboot, up } from '../lab/lab';
import { hostSnapshot } from '../helpers/host';
import { labSsh } from '../helpers/lab';
import { tempDir } from '../helpers/harness';

const dir = join(tempDir('flannel'), 'lab');
let state: LabState;
let hostBefore: ReturnType<typeof hostSnapshot>;
const iptablesSave = () => execFileSync('iptables-save', { encoding: 'utf8' }).split('\n').filter((l) => !l.startsWith('#'));
let iptablesBefore: string[];

beforeAll(async () => {
  expect(existsSync(FLANNELD)).toBe(true);
  hostBefore = hostSnapshot();
  iptablesBefore = iptablesSave();
  // node1, the control plane, has its uplink down at every boot (seed 002); node2 is healthy.
  state = await up({ dir, nodes: 2, scenarios: ['no-default-route'], controlPlane: true, rebootDowntimeMs: 300 });
}, 180_000);

afterAll(async () => {
  await down(dir);
});

const node = (name: string) => state.nodes.find((n) => n.name === name)!;
const ssh = (name: string, cmd: string) => labSsh(dir, node(name).port, cmd);
const kubectl = (kubeconfig: string, ...args: string[]) => {
  const r = spawnSync(join(TOOLS_BIN, 'kubectl'), ['--kubeconfig', kubeconfig, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout.trim(), stderr: r.stderr.trim() };
};
const admin = (...args: string[]) => kubectl(controlPlaneInfo(dir)!.adminKubeconfig, ...args);
const flannelKubeconfig = (name: string) => join(dir, 'nodes', name, 'flannel', 'kubeconfig');
const podCidr = (name: string) => admin('get', 'node', name, '-o', 'jsonpath={.spec.podCIDR}').stdout;
const annotations = (name: string) => JSON.parse(admin('get', 'node', name, '-o', 'jsonpath={.metadata.annotations}').stdout || '{}') as Record<string, string>;

/** flannel.1 as the node's kernel has it, or undefined. */
function flannel1(name: string): { kind: string; id: number; port: number; address: string; mtu: number; addrs: string[] } | undefined {
  const out = ssh(name, 'ip -j -d addr show flannel.1 2>/dev/null || true').trim();
  if (!out) return undefined;
  const l = JSON.parse(out)[0];
  return {
    kind: l.linkinfo?.info_kind,
    id: l.linkinfo?.info_data?.id,
    port: l.linkinfo?.info_data?.port,
    address: l.address,
    mtu: l.mtu,
    addrs: (l.addr_info as Array<{ family: string; local: string; prefixlen: number }>).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
  };
}

/** What flanneld must have written for a node whose podCIDR is `cidr` (a.b.c.0/24). */
function expectSubnetEnvFor(env: Record<string, string> | undefined, cidr: string): void {
  expect(env).toEqual({ FLANNEL_NETWORK: '10.244.0.0/16', FLANNEL_SUBNET: cidr.replace(/\.0\/24$/, '.1/24'), FLANNEL_MTU: '1450', FLANNEL_IPMASQ: 'true' });
}

describe('a healthy node', () => {
  test("flanneld writes subnet.env from the Node's podCIDR and creates the vxlan device flannel.1, and announces its VTEP on the Node", async () => {
    // What the lab itself writes at boot goes first, so that what follows is flanneld's work.
    await removeLabFlannelState(dir, 'node2');
    expect(flannel1('node2')).toBeUndefined();
    expect(readSubnetEnv(dir, 'node2')).toBeUndefined();
    const cidr = podCidr('node2');
    expect(cidr).toBe('10.244.1.0/24');

    const run = await startFlanneld(dir, 'node2');
    const env = await waitForSubnetEnv(dir, 'node2', run);
    expectSubnetEnvFor(env, cidr);
    // The node sees the same file at /run/flannel/subnet.env.
    expect(ssh('node2', 'cat /run/flannel/subnet.env')).toBe(readFileSync(join(dir, 'nodes', 'node2', 'run-flannel', 'subnet.env'), 'utf8'));

    const dev = flannel1('node2');
    expect(dev).toMatchObject({ kind: 'vxlan', id: 1, port: 8472, mtu: 1450, addrs: ['10.244.1.0/32'] });
    // flanneld's annotations: its VTEP is this flannel.1's MAC; its public IP the default route's interface's (no --iface).
    const a = annotations('node2');
    expect(JSON.parse(a['flannel.alpha.coreos.com/backend-data'])).toEqual({ VNI: 1, VtepMAC: dev!.address });
    expect(a['flannel.alpha.coreos.com/backend-type']).toBe('vxlan');
    expect(a['flannel.alpha.coreos.com/public-ip']).toBe('10.0.2.15');
    // Its masquerade rules are in the node's netfilter tables (not the host's: see afterAll's check).
    expect(ssh('node2', 'iptables-save -t nat')).toContain('FLANNEL-POSTRTG');
    expect(flanneldPid(dir, 'node2')).toBeDefined();
    expect(flanneldLog(dir, 'node2')).toContain('Wrote subnet file to /run/flannel/subnet.env');
  }, 90_000);

  test("flanneld's identity is its own, bound to flannel's ClusterRole only", () => {
    const can = (...args: string[]) => kubectl(flannelKubeconfig('node2'), 'auth', 'can-i', ...args).stdout;
    expect(kubectl(flannelKubeconfig('node2'), 'auth', 'can-i', '--list').status).toBe(0);
    expect(can('watch', 'nodes')).toBe('yes');
    expect(can('patch', 'nodes', '--subresource=status')).toBe('yes');
    expect(can('patch', 'nodes')).toBe('no');
    expect(can('delete', 'nodes')).toBe('no');
    expect(can('get', 'secrets', '-n', 'kube-system')).toBe('no');
    expect(readFileSync(flannelKubeconfig('node2'), 'utf8')).not.toContain(readFileSync(join(dir, 'cp', 'pki', 'admin.crt')).toString('base64'));
    expect(admin('get', 'clusterrolebinding', 'kubemend-lab-flannel-node2', '-o', 'jsonpath={.subjects[0].name}').stdout).toBe(flannelUser('node2'));
  });

  test('stopped and started again, flanneld keeps its lease and device', async () => {
    const before = flannel1('node2');
    await stopFlanneld(dir, 'node2');
    expect(flanneldPid(dir, 'node2')).toBeUndefined();
    const run = await startFlanneld(dir, 'node2');
    expectSubnetEnvFor(await waitForSubnetEnv(dir, 'node2', run), podCidr('node2'));
    expect(flannel1('node2')).toEqual(before);
  }, 60_000);
});

describe('seed 002: no default route', () => {
  test("flanneld exits with its own message; after netplan apply a restarted flanneld runs and subnet.env is back", async () => {
    expect(ssh('node1', 'ip -j route show default').trim()).toBe('[]');
    expect(readSubnetEnv(dir, 'node1')).toBeUndefined();

    const failed = await startFlanneld(dir, 'node1');
    expect(await failed.exited).toBe(1);
    const log = flanneldLog(dir, 'node1');
    expect(log).toContain('Failed to find any valid interface to use');
    expect(log).toContain('unable to find default route');
    expect(log).toMatch(/^E\d{4} [\d:.]+ +\d+ main\.go:\d+\] Failed to find any valid interface to use: failed to get default interface: unable to find default route$/m);
    expect(flanneldPid(dir, 'node1')).toBeUndefined();
    expect(readSubnetEnv(dir, 'node1')).toBeUndefined();
    expect(flannel1('node1')).toBeUndefined();

    ssh('node1', 'netplan apply');
    expect(JSON.parse(ssh('node1', 'ip -j route show default'))[0]).toMatchObject({ gateway: '10.0.2.2', dev: 'enp0s3' });
    const run = await startFlanneld(dir, 'node1');
    expectSubnetEnvFor(await waitForSubnetEnv(dir, 'node1', run), podCidr('node1'));
    expect(flannel1('node1')).toMatchObject({ kind: 'vxlan', id: 1, addrs: ['10.244.0.0/32'] });
    expect(flanneldPid(dir, 'node1')).toBeDefined();
    // The failed run's output is kept, as `kubectl logs --previous` keeps it.
    expect(readFileSync(flanneldPreviousLogPath(dir, 'node1'), 'utf8')).toContain('unable to find default route');
  }, 90_000);
});

test('npm run lab -- flanneld stop|start: the subnet, or the exit status and flanneld\'s last lines with exit 1; bad input exit 2', () => {
  const lab = (...args: string[]) => spawnSync(process.execPath, [join(REPO_ROOT, 'dist', 'test', 'lab', 'main.js'), 'flanneld', ...args], { encoding: 'utf8', env: { ...process.env, KUBEMEND_LAB_DIR: dir } });
  const stop = lab('stop', 'node1');
  expect(stop.status).toBe(0);
  expect(flanneldPid(dir, 'node1')).toBeUndefined();
  const start = lab('start', 'node1');
  expect(start.stderr).toBe('');
  expect(start.status).toBe(0);
  expect(start.stdout).toMatch(/^node1: flanneld running \(pid \d+\), FLANNEL_SUBNET=10\.244\.0\.1\/24 FLANNEL_MTU=1450; log /);
  expect(flanneldPid(dir, 'node1')).toBeDefined();
  const again = lab('start', 'node1');
  expect(again.status).toBe(1);
  expect(again.stderr).toContain('flanneld is already running');
  for (const bad of [['start', 'node9'], ['restart', 'node1'], ['start', 'node1', '--iface', 'eth0;reboot']]) {
    const r = lab(...bad);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^lab: /);
  }
  expect(flanneldPid(dir, 'node1')).toBeDefined();
}, 60_000);

test('a reboot stops flanneld with the node; started again, it runs on the rebooted node', async () => {
  const before = flanneldPid(dir, 'node2');
  expect(before).toBeDefined();
  await requestReboot(dir, 'node2');
  expect(flanneldPid(dir, 'node2')).toBeUndefined();
  const run = await startFlanneld(dir, 'node2');
  expectSubnetEnvFor(await waitForSubnetEnv(dir, 'node2', run), podCidr('node2'));
  expect(flanneldPid(dir, 'node2')).not.toBe(before);
  const dev = flannel1('node2');
  expect(dev).toMatchObject({ kind: 'vxlan', id: 1, addrs: ['10.244.1.0/32'] });
  expect(JSON.parse(annotations('node2')['flannel.alpha.coreos.com/backend-data']).VtepMAC).toBe(dev!.address);
}, 90_000);

/** Host pids whose network or PID namespace is one of `namespaces`, with their argv[0]. */
function processesIn(namespaces: Set<string>): Array<{ pid: number; argv0: string }> {
  const out: Array<{ pid: number; argv0: string }> = [];
  for (const e of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const ns = [readlinkSync(`/proc/${e}/ns/net`), readlinkSync(`/proc/${e}/ns/pid`)];
      if (!ns.some((n) => namespaces.has(n))) continue;
      if (/^State:\s+Z/m.test(readFileSync(`/proc/${e}/status`, 'utf8'))) continue;
      out.push({ pid: Number(e), argv0: readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0')[0] });
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

test('every process started for flanneld carries the marker; down stops them all; the host keeps its links, routes, mounts and iptables rules', async () => {
  const marked = flannelProcesses(dir);
  // node1 and node2: each a flanneld and the API forwarder, each under the nsenter that put it in the node, and the forwarder's open connection(s).
  for (const name of ['node1', 'node2']) {
    const mine = marked.filter((p) => p.argv0.split(' ')[2] === name);
    expect(mine.filter((p) => p.comm === 'flanneld')).toHaveLength(1);
    // The forwarder: its nsenter, the listening socat and a forked socat per open connection.
    const forwarder = mine.filter((p) => p.argv0.endsWith(' api-forwarder')).map((p) => p.comm);
    expect(forwarder.filter((c) => c === 'nsenter')).toHaveLength(1);
    expect(forwarder.filter((c) => c !== 'nsenter' && c !== 'socat')).toEqual([]);
    expect(mine.filter((p) => p.argv0 === `kmlab-flanneld ${dir} ${name}`).map((p) => p.comm).sort()).toEqual(['flanneld', 'nsenter']);
    expect(mine.filter((p) => p.argv0.endsWith(' api-connection')).length).toBeGreaterThanOrEqual(1);
  }
  // Whatever runs in the nodes' namespaces is the lab's own (a holder's unshare, sshd) or marked.
  const holders = state.nodes.map((n) => labProcesses(dir).find((p) => p.argv0 === `kmlab-node ${dir} ${n.name}`)!.pid);
  const namespaces = new Set(holders.flatMap((pid) => [readlinkSync(`/proc/${pid}/ns/net`), readlinkSync(`/proc/${pid}/ns/pid`)]));
  const unmarked = processesIn(namespaces).filter((p) => !p.argv0.startsWith('kmlab-') && !/^(unshare|sshd|\/usr\/sbin\/sshd)\b/.test(p.argv0));
  expect(unmarked).toEqual([]);

  await down(dir);
  expect(flannelProcesses(dir)).toEqual([]);
  expect(processesIn(namespaces)).toEqual([]);
  expect(hostSnapshot()).toEqual(hostBefore);
  expect(iptablesSave()).toEqual(iptablesBefore);
}, 60_000);
