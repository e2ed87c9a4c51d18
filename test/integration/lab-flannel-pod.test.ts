/**
 * kube-flannel's pods run the real flanneld (lab option realFlannel): each node's kubelet for
 * its kube-flannel pod (test/lab/flannel-kubelet.ts) runs flanneld v0.28.10 in the node and
 * reports it in the pod's status on the real kube-apiserver, where the DaemonSet controller
 * counts it. Seed 002 (no-default-route): node1's pod crash-loops with flanneld's own message;
 * after `netplan apply` on node1 and deleting its pod, the DaemonSet's new pod runs flanneld
 * and is Ready; a reboot brings the crash loop back. Every message asserted was written by
 * flanneld, the kubelet's back-off is not waited out (10 s, as the kubelet's), and `down`
 * leaves no process.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, TOOLS_BIN } from '../../worker/paths';
import { controlPlaneInfo, NODE_MONITOR_GRACE_S } from '../lab/control-plane';
import { flanneldLog, flanneldPid, flannelProcesses, readSubnetEnv } from '../lab/flannel';
import { type FlannelPod, flannelPod, flannelPods, inCrashLoop, waitForFlannelCrashLoop, waitForFlannelPod, waitForFlannelPodReady } from '../lab/flannel-kubelet';
import { down, labProcesses, type LabState, Patience, requestReboot, up } from '../lab/lab';
import { hostSnapshot } from '../helpers/host';
import { labSsh } from '../helpers/lab';
import { tempDir } from '../helpers/harness';

const dir = join(tempDir('flannel-pod'), 'lab');
let state: LabState;
let hostBefore: ReturnType<typeof hostSnapshot>;
const iptablesSave = () => execFileSync('iptables-save', { encoding: 'utf8' }).split('\n').filter((l) => !l.startsWith('#'));
let iptablesBefore: string[];

beforeAll(async () => {
  hostBefore = hostSnapshot();
  iptablesBefore = iptablesSave();
  // node1, the control plane, has its uplink down at every boot (seed 002); node2 is healthy.
  state = await up({ dir, nodes: 2, scenarios: ['no-default-route'], controlPlane: true, realFlannel: true, rebootDowntimeMs: 300 });
}, 240_000);

afterAll(async () => {
  await down(dir); // a no-op when the last test took the lab down
});

const node = (name: string) => state.nodes.find((n) => n.name === name)!;
const ssh = (name: string, cmd: string) => labSsh(dir, node(name).port, cmd);
const kubectl = (...args: string[]) => {
  const r = spawnSync(join(TOOLS_BIN, 'kubectl'), ['--kubeconfig', controlPlaneInfo(dir)!.adminKubeconfig, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
};
const podCidr = (name: string) => kubectl('get', 'node', name, '-o', 'jsonpath={.spec.podCIDR}');
const numberReady = () => Number(kubectl('get', 'daemonset', '-n', 'kube-flannel', 'kube-flannel-ds', '-o', 'jsonpath={.status.numberReady}') || '0');
const links = (name: string) => (JSON.parse(ssh(name, 'ip -j link show')) as Array<{ ifname: string }>).map((l) => l.ifname);
const DEFAULT_ROUTE_MESSAGE = 'Failed to find any valid interface to use: failed to get default interface: unable to find default route';

/** Polls `probe` until it returns a value; the deadline counts time waited (Patience). */
async function eventually<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
  const patience = new Patience(timeoutMs);
  while (!patience.exhausted) {
    const v = await patience.charge(Promise.resolve(probe()), 5000);
    if (v !== undefined) return v;
    await patience.sleep(200);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms of waiting`);
}

/** What flanneld writes for a node whose podCIDR is `cidr` (a.b.c.0/24). */
function expectSubnetEnvFor(env: Record<string, string> | undefined, cidr: string): void {
  expect(env).toEqual({ FLANNEL_NETWORK: '10.244.0.0/16', FLANNEL_SUBNET: cidr.replace(/\.0\/24$/, '.1/24'), FLANNEL_MTU: '1450', FLANNEL_IPMASQ: 'true' });
}

/** node1's pod as a crash-looping pod of seed 002 shows it: flanneld's own last words, the kubelet's back-off message. */
function expectCrashLoopOfSeed002(p: FlannelPod): void {
  expect(p.ready).toBe(false);
  expect(p.phase).toBe('Running');
  expect(p.restartCount).toBeGreaterThanOrEqual(1);
  expect(p.waiting?.message).toMatch(new RegExp(`^back-off (10s|20s|40s|1m20s|2m40s|5m0s) restarting failed container=kube-flannel pod=${p.name}_kube-flannel\\(${p.uid}\\)$`));
  expect(p.lastTerminated).toMatchObject({ exitCode: 1, reason: 'Error' });
  expect(p.lastTerminated!.message).toContain(DEFAULT_ROUTE_MESSAGE);
  expect(p.lastTerminated!.message).toMatch(/^E\d{4} [\d:.]+ +\d+ main\.go:\d+\] Failed to find any valid interface to use: failed to get default interface: unable to find default route$/m);
  expect(Buffer.byteLength(p.lastTerminated!.message!)).toBeLessThanOrEqual(2048);
  expect(Date.parse(p.lastTerminated!.finishedAt)).toBeGreaterThanOrEqual(Date.parse(p.lastTerminated!.startedAt));
}

describe('refused without what it needs', () => {
  test('up: realFlannel needs the control plane and a lab that runs flannel; nothing is started', async () => {
    const other = join(tempDir('flannel-pod-refused'), 'lab');
    await expect(up({ dir: other, nodes: 1, realFlannel: true })).rejects.toThrow('--real-flannel needs the control plane');
    await expect(up({ dir: other, nodes: 1, controlPlane: true, realFlannel: true, scenarios: ['orphan-calico'] })).rejects.toThrow('--real-flannel needs a lab that runs flannel; scenarios orphan-calico run calico');
    expect(existsSync(other)).toBe(false);
    expect(labProcesses(other)).toEqual([]);
  });

  test('npm run lab -- up --real-flannel --no-control-plane: exit 2', () => {
    const other = join(tempDir('flannel-pod-cli'), 'lab');
    const r = spawnSync(process.execPath, [join(REPO_ROOT, 'dist', 'test', 'lab', 'main.js'), 'up', '--nodes', '1', '--real-flannel', '--no-control-plane'], { encoding: 'utf8', env: { ...process.env, KUBEMEND_LAB_DIR: other } });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^lab: --real-flannel needs the control plane/);
  });
});

describe('at up', () => {
  test("the boot fakes nothing: node1, whose flanneld failed, has no flannel.1, subnet.env or cni0; node2's cni0 is the bridge plugin's, made at its first pod's sandbox", () => {
    expect(links('node1')).not.toContain('flannel.1');
    expect(readSubnetEnv(dir, 'node1')).toBeUndefined();
    expect(links('node1')).not.toContain('cni0');
    // node2 runs the Deployments' pods in real sandboxes (pod-kubelet.ts): bridge made cni0 with the podCIDR's gateway.
    expect(ssh('node2', 'ip -4 -o addr show dev cni0')).toContain('inet 10.244.1.1/24');
    expect(ssh('node2', 'crictl pods')).toContain('Ready');
    // node2's flannel.1 and subnet.env are its flanneld's.
    expect(flanneldLog(dir, 'node2')).toContain('Wrote subnet file to /run/flannel/subnet.env');
  });

  test("the healthy node's pod is Ready: its flanneld runs and wrote subnet.env from the Node's podCIDR; the DaemonSet counts it", async () => {
    const p = await waitForFlannelPodReady(dir, 'node2');
    expect(p).toMatchObject({ phase: 'Running', restartCount: 0, lastTerminated: undefined });
    expect(p.containerID).toMatch(/^containerd:\/\/[0-9a-f]{64}$/);
    expect(flanneldPid(dir, 'node2')).toBeDefined();
    expect(podCidr('node2')).toBe('10.244.1.0/24');
    expectSubnetEnvFor(readSubnetEnv(dir, 'node2'), podCidr('node2'));
    expect(ssh('node2', 'cat /run/flannel/subnet.env')).toContain('FLANNEL_SUBNET=10.244.1.1/24');
    expect(links('node2')).toContain('flannel.1');
    // What an SRE sees with kubectl is the same status.
    const name = kubectl('get', 'pods', '-n', 'kube-flannel', '--field-selector', 'spec.nodeName=node2', '-o', 'jsonpath={.items[0].metadata.name}');
    expect(kubectl('get', 'pod', '-n', 'kube-flannel', name, '-o', 'jsonpath={.status.containerStatuses[0].name} {.status.containerStatuses[0].ready} {.status.conditions[?(@.type=="Ready")].status}')).toBe('kube-flannel true True');
    expect(await eventually('numberReady 1', () => (numberReady() === 1 ? 1 : undefined))).toBe(1);
  }, 150_000);

  test("seed 002: node1's pod is in CrashLoopBackOff with flanneld's own message; no flanneld runs and there is no subnet.env", async () => {
    expect(ssh('node1', 'ip -j route show default').trim()).toBe('[]');
    // Read just after it went back into CrashLoopBackOff (a restart newer than the one it shows now), so
    // the back-off lies ahead: between back-offs the pod runs flanneld for the second it takes to fail.
    const restarts = (await waitForFlannelCrashLoop(dir, 'node1')).restartCount;
    const p = await waitForFlannelPod(dir, 'node1', `in CrashLoopBackOff after restart ${restarts + 1}`, (x) => inCrashLoop(x) && x.restartCount > restarts, 120_000);
    expectCrashLoopOfSeed002(p);
    expect(flanneldPid(dir, 'node1')).toBeUndefined();
    expect(readSubnetEnv(dir, 'node1')).toBeUndefined();
    expect(numberReady()).toBe(1);
    // The status stays the lab kubelet's: kwok, which plays every other pod's kubelet, leaves it alone.
    const again = await flannelPod(dir, 'node1');
    expect(again).toMatchObject({ uid: p.uid, ready: false });
    expect(again!.restartCount).toBeGreaterThanOrEqual(p.restartCount);
  }, 150_000);
});

describe("seed 002's fix, by hand: netplan apply, then the pod deleted so the DaemonSet recreates it at once", () => {
  let fixed: FlannelPod;

  test('the new pod (new uid, restartCount 0) runs flanneld, which writes subnet.env; the pod is Ready and the DaemonSet counts both', async () => {
    const old = (await flannelPod(dir, 'node1'))!;
    ssh('node1', 'netplan apply');
    expect(JSON.parse(ssh('node1', 'ip -j route show default'))[0]).toMatchObject({ gateway: '10.0.2.2', dev: 'enp0s3' });
    kubectl('delete', 'pod', '-n', 'kube-flannel', old.name, '--wait=false');
    fixed = await waitForFlannelPod(dir, 'node1', 'replaced and Ready', (p) => p.uid !== old.uid && p.ready);
    expect(fixed).toMatchObject({ phase: 'Running', restartCount: 0, lastTerminated: undefined });
    expect(fixed.name).not.toBe(old.name);
    expect(flanneldPid(dir, 'node1')).toBeDefined();
    expectSubnetEnvFor(readSubnetEnv(dir, 'node1'), podCidr('node1'));
    expect(links('node1')).toContain('flannel.1');
    // The lab's kubelet finished the old pod's deletion, as a kubelet does once its containers stopped.
    expect((await flannelPods(dir)).map((p) => p.uid)).not.toContain(old.uid);
    expect(await eventually('numberReady 2', () => (numberReady() === 2 ? 2 : undefined))).toBe(2);
  }, 150_000);

  test('after a reboot the uplink is down again: the same pod crash-loops with a restart more', async () => {
    await requestReboot(dir, 'node1');
    expect(ssh('node1', 'ip -j route show default').trim()).toBe('[]');
    const p = await waitForFlannelPod(dir, 'node1', 'in CrashLoopBackOff again', (x) => x.uid === fixed.uid && inCrashLoop(x) && x.lastTerminated?.exitCode === 1);
    expectCrashLoopOfSeed002(p);
    expect(flanneldPid(dir, 'node1')).toBeUndefined();
    expect(readSubnetEnv(dir, 'node1')).toBeUndefined(); // /run starts empty at boot, and flanneld wrote none
    expect(await eventually('numberReady 1', () => (numberReady() === 1 ? 1 : undefined))).toBe(1);
  }, 150_000);
});

describe('the healthy node', () => {
  test("its pod deleted while flanneld runs: that flanneld is stopped and the new pod's started", async () => {
    const old = (await waitForFlannelPodReady(dir, 'node2'))!;
    const oldPid = flanneldPid(dir, 'node2')!;
    kubectl('delete', 'pod', '-n', 'kube-flannel', old.name, '--wait=false');
    const p = await waitForFlannelPod(dir, 'node2', 'replaced and Ready', (x) => x.uid !== old.uid && x.ready);
    expect(p.restartCount).toBe(0);
    const pid = flanneldPid(dir, 'node2');
    expect(pid).toBeDefined();
    expect(pid).not.toBe(oldPid);
    expect(existsSync(`/proc/${oldPid}`)).toBe(false);
    expectSubnetEnvFor(readSubnetEnv(dir, 'node2'), podCidr('node2'));
  }, 150_000);

  test('a reboot: flanneld dies with the node, and the kubelet that boots with it starts it again (restartCount + 1, the lost one Unknown)', async () => {
    const before = (await waitForFlannelPodReady(dir, 'node2'))!;
    const oldPid = flanneldPid(dir, 'node2');
    await requestReboot(dir, 'node2');
    const p = await waitForFlannelPod(dir, 'node2', 'Ready after the reboot', (x) => x.uid === before.uid && x.ready && x.restartCount === before.restartCount + 1);
    expect(p.lastTerminated).toMatchObject({ exitCode: 255, reason: 'Unknown', containerID: before.containerID });
    expect(flanneldPid(dir, 'node2')).not.toBe(oldPid);
    expectSubnetEnvFor(readSubnetEnv(dir, 'node2'), podCidr('node2'));
  }, 150_000);

  test('kubeadm reset stops the kubelet and with it flanneld; kubeadm join starts them again', async () => {
    const before = (await waitForFlannelPodReady(dir, 'node2'))!;
    ssh('node2', 'kubeadm reset -f >/dev/null');
    await eventually('flanneld stopped on node2', () => (flanneldPid(dir, 'node2') === undefined ? true : undefined));
    // The real kubeadm join refuses a Ready Node's name: the kubelet stopped, so the Node goes NotReady after its grace period.
    await eventually('node2 NotReady after the reset', () => (kubectl('get', 'node', 'node2', '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') !== 'True' ? true : undefined), (NODE_MONITOR_GRACE_S + 40) * 1000);
    // A real token, made on the control plane as kubemend does.
    const command = ssh('node1', 'kubeadm token create --ttl 15m0s --print-join-command').trim();
    expect(command).toMatch(/^kubeadm join 10\.213\.0\.11:6443 --token [a-z0-9]{6}\.[a-z0-9]{16} --discovery-token-ca-cert-hash sha256:[0-9a-f]{64}$/);
    ssh('node2', `${command} >/dev/null`);
    ssh('node1', `kubeadm token delete ${/--token ([a-z0-9]{6})\./.exec(command)![1]} >/dev/null`);
    const p = await waitForFlannelPod(dir, 'node2', 'Ready after the join', (x) => x.uid === before.uid && x.ready && x.restartCount === before.restartCount + 1);
    // Stopped with SIGTERM, as a kubelet stops a container.
    expect(p.lastTerminated).toMatchObject({ exitCode: 143, reason: 'Error', containerID: before.containerID });
    expect(flanneldPid(dir, 'node2')).toBeDefined();
  }, 300_000);
});

/** Host pids whose network namespace is one of `namespaces` (zombies aside). */
function processesIn(namespaces: Set<string>): number[] {
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .filter((e) => {
      try {
        return namespaces.has(readlinkSync(`/proc/${e}/ns/net`)) && !/^State:\s+Z/m.test(readFileSync(`/proc/${e}/status`, 'utf8'));
      } catch {
        return false; // exited meanwhile
      }
    })
    .map(Number);
}

test('down stops every flanneld, forwarder and the daemon: nothing of the lab is left; the host keeps its links, routes, mounts and iptables rules', async () => {
  const holders = labProcesses(dir).filter((p) => p.argv0.startsWith(`kmlab-node ${dir} `)).map((p) => p.pid);
  const namespaces = new Set(holders.map((pid) => readlinkSync(`/proc/${pid}/ns/net`)));
  expect(namespaces.size).toBe(2);
  expect(flannelProcesses(dir).map((p) => p.comm)).toContain('flanneld');
  expect(labProcesses(dir).map((p) => p.argv0)).toContain(`kmlab-daemon ${dir}`);
  await down(dir);
  expect(flannelProcesses(dir)).toEqual([]);
  expect(labProcesses(dir)).toEqual([]);
  expect(processesIn(namespaces)).toEqual([]);
  expect(hostSnapshot()).toEqual(hostBefore);
  expect(iptablesSave()).toEqual(iptablesBefore);
}, 60_000);
