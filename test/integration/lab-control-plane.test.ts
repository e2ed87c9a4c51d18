/**
 * The lab's Kubernetes control plane, used as an SRE would: Debian's kubectl (1.20.2, from
 * package kubernetes-client) against a real kube-apiserver v1.34.4 with controllers and
 * kwok as the kubelets; kubemend's worker with the ClusterRole kubemend ships and nothing
 * more; the probe showing Node objects next to what SSH finds.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ProbeReport } from '../../lib/probe';
import { TOOLS_BIN } from '../../worker/paths';
import { controlPlaneInfo, type ControlPlaneInfo, NODE_MONITOR_GRACE_S } from '../lab/control-plane';
import { down, labProcesses, type LabState, requestReboot, up } from '../lab/lab';
import { hostSnapshot } from '../helpers/host';
import { labSsh, labTestConfig } from '../helpers/lab';
import { loadTestConfig, runCli, type RunningWorker, startWorker, tempDir } from '../helpers/harness';

const KUBECTL = join(TOOLS_BIN, 'kubectl');
const dir = join(tempDir('cp'), 'lab');
let state: LabState;
let cp: ControlPlaneInfo;
let hostBefore: ReturnType<typeof hostSnapshot>;
let listeningBefore: string[];

/** Sockets in LISTEN on this host (IPv4 and IPv6), as "address:port" in hex as the kernel prints them. */
function listening(): string[] {
  const rows = ['/proc/net/tcp', '/proc/net/tcp6'].flatMap((f) => readFileSync(f, 'utf8').split('\n').slice(1));
  return rows.map((r) => r.trim().split(/\s+/)).filter((c) => c[3] === '0A').map((c) => c[1]).sort();
}

beforeAll(async () => {
  hostBefore = hostSnapshot();
  listeningBefore = listening();
  state = await up({ dir, nodes: 3, controlPlane: true, rebootDowntimeMs: 300 });
  cp = controlPlaneInfo(dir)!;
}, 180_000);

afterAll(async () => {
  await down(dir); // a no-op when the last test took the lab down
});

// A failed drain test must not leave a node cordoned for the tests after it.
afterEach(() => {
  if (controlPlaneInfo(dir)) for (const n of ['node1', 'node2', 'node3']) kubectl(['uncordon', n]);
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}
function kubectl(args: string[], opts: { as?: 'admin' | 'worker'; input?: string; timeoutMs?: number } = {}): Run {
  const kubeconfig = opts.as === 'worker' ? cp.workerKubeconfig : cp.adminKubeconfig;
  const r = spawnSync(KUBECTL, ['--kubeconfig', kubeconfig, ...args], { encoding: 'utf8', input: opts.input, timeout: opts.timeoutMs ?? 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
function kubectlJson<T>(args: string[], as: 'admin' | 'worker' = 'admin'): T {
  const r = kubectl([...args, '-o', 'json'], { as });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

interface Pod {
  metadata: { name: string; namespace: string; ownerReferences?: Array<{ kind: string }> };
  spec: { nodeName?: string };
  status: { phase?: string };
}
const podsOn = (node: string) => kubectlJson<{ items: Pod[] }>(['get', 'pods', '--all-namespaces', '--field-selector', `spec.nodeName=${node}`]).items;
const isDaemonSetPod = (p: Pod) => p.metadata.ownerReferences?.some((o) => o.kind === 'DaemonSet') ?? false;

async function eventually<T>(what: string, fn: () => T | undefined, timeoutMs = 60_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(500);
  }
}

function deploymentAvailable(ns: string, name: string): true | undefined {
  const d = kubectlJson<{ spec: { replicas: number }; status: { availableReplicas?: number; updatedReplicas?: number } }>(['get', 'deployment', '-n', ns, name]);
  return (d.status.availableReplicas ?? 0) >= d.spec.replicas ? true : undefined;
}

test('Debian kubectl sees the lab nodes as Ready Nodes with their addresses, pod CIDRs and machine ids', () => {
  expect(kubectl(['version', '--client', '--short']).stdout).toMatch(/v1\.20\.2/);
  expect(kubectl(['version', '--short']).stdout).toMatch(/Server Version: v1\.34\.4/);
  type Node = { metadata: { name: string; labels: Record<string, string> }; spec: { podCIDR: string }; status: { addresses: Array<{ type: string; address: string }>; conditions: Array<{ type: string; status: string }>; nodeInfo: { machineID: string; bootID: string } } };
  const nodes = kubectlJson<{ items: Node[] }>(['get', 'nodes']).items;
  expect(nodes.map((n) => n.metadata.name).sort()).toEqual(['node1', 'node2', 'node3']);
  for (const n of nodes) {
    const lab = state.nodes.find((x) => x.name === n.metadata.name)!;
    expect(n.status.conditions.find((c) => c.type === 'Ready')?.status).toBe('True');
    expect(n.status.addresses).toContainEqual({ type: 'InternalIP', address: lab.address });
    expect(n.spec.podCIDR).toBe(`10.244.${lab.index - 1}.0/24`);
    // What the kubelet reports is what the node has.
    expect(n.status.nodeInfo.machineID).toBe(labSsh(dir, lab.port, 'cat /etc/machine-id').trim());
    expect(n.status.nodeInfo.bootID).toBe(labSsh(dir, lab.port, 'cat /proc/sys/kernel/random/boot_id').trim());
    expect('node-role.kubernetes.io/control-plane' in n.metadata.labels).toBe(lab.role === 'control-plane');
  }
  // The system workloads run: a kube-proxy and a flannel pod per node, two coredns, the app.
  const pods = kubectlJson<{ items: Pod[] }>(['get', 'pods', '--all-namespaces']).items;
  const running = (prefix: string) => pods.filter((p) => p.metadata.name.startsWith(prefix) && p.status.phase === 'Running').length;
  expect([running('kube-proxy-'), running('kube-flannel-ds-'), running('coredns-'), running('web-')]).toEqual([3, 3, 2, 2]);
});

test("drain as kubemend's worker: DaemonSet pods need --ignore-daemonsets, the rest are evicted and rescheduled, kwok finishes the deletions", async () => {
  const target = 'node2';
  const before = podsOn(target);
  const evictable = before.filter((p) => !isDaemonSetPod(p));
  expect(before.some(isDaemonSetPod)).toBe(true);

  const refused = kubectl(['drain', target, '--timeout=30s'], { as: 'worker' });
  expect(refused.code).not.toBe(0);
  expect(refused.stderr).toMatch(/DaemonSet-managed Pods \(use --ignore-daemonsets to ignore\)/);

  const drained = kubectl(['drain', target, '--ignore-daemonsets', '--timeout=90s'], { as: 'worker' });
  expect({ code: drained.code, stderr: drained.stderr }).toEqual({ code: 0, stderr: expect.any(String) });
  expect(drained.stdout).toMatch(/^node\/node2 (drained|evicted)$/m); // kubectl 1.20 says "evicted"
  for (const p of evictable) expect(drained.stdout).toContain(`pod/${p.metadata.name} evicted`);
  // kwok ended the evicted pods; only DaemonSet pods remain, and the node is cordoned.
  expect(podsOn(target).filter((p) => !isDaemonSetPod(p))).toEqual([]);
  expect(podsOn(target).filter(isDaemonSetPod).length).toBe(before.filter(isDaemonSetPod).length);
  expect(kubectlJson<{ spec: { unschedulable?: boolean } }>(['get', 'node', target]).spec.unschedulable).toBe(true);
  await eventually('web available again elsewhere', () => deploymentAvailable('demo', 'web'));
  expect(kubectl(['uncordon', target], { as: 'worker' }).code).toBe(0);
});

test('a PodDisruptionBudget blocks the drain; without it the drain goes through', async () => {
  const manifest = [
    'apiVersion: apps/v1', 'kind: Deployment', 'metadata: {name: ledger, namespace: demo}',
    'spec: {replicas: 1, selector: {matchLabels: {app: ledger}}, template: {metadata: {labels: {app: ledger}}, spec: {containers: [{name: ledger, image: "postgres:17"}]}}}',
    '---',
    'apiVersion: policy/v1', 'kind: PodDisruptionBudget', 'metadata: {name: ledger, namespace: demo}',
    'spec: {minAvailable: 1, selector: {matchLabels: {app: ledger}}}', '',
  ].join('\n');
  expect(kubectl(['apply', '-f', '-'], { input: manifest }).code).toBe(0);
  await eventually('ledger available', () => deploymentAvailable('demo', 'ledger'));
  const pod = await eventually('PDB observed', () => {
    const pdb = kubectlJson<{ status?: { currentHealthy?: number; disruptionsAllowed?: number } }>(['get', 'pdb', '-n', 'demo', 'ledger']);
    return pdb.status?.currentHealthy === 1 ? kubectlJson<{ items: Pod[] }>(['get', 'pods', '-n', 'demo', '-l', 'app=ledger']).items[0] : undefined;
  });
  const node = pod.spec.nodeName!;

  const blocked = kubectl(['drain', node, '--ignore-daemonsets', '--timeout=12s'], { as: 'worker' });
  expect(blocked.code).not.toBe(0);
  expect(blocked.stderr).toMatch(/Cannot evict pod as it would violate the pod's disruption budget/);
  const still = kubectlJson<Pod>(['get', 'pod', '-n', 'demo', pod.metadata.name]);
  expect([still.spec.nodeName, still.status.phase]).toEqual([node, 'Running']);

  expect(kubectl(['delete', 'pdb', '-n', 'demo', 'ledger']).code).toBe(0);
  const drained = kubectl(['drain', node, '--ignore-daemonsets', '--timeout=60s'], { as: 'worker' });
  expect([drained.code, drained.stderr]).toEqual([0, expect.any(String)]);
  expect(drained.stdout).toContain(`pod/${pod.metadata.name} evicted`);
  expect(kubectl(['uncordon', node], { as: 'worker' }).code).toBe(0);
  expect(kubectl(['delete', 'deployment', '-n', 'demo', 'ledger']).code).toBe(0);
});

test("the worker's ClusterRole allows what remediations need and nothing like reading Secrets", () => {
  const can = (...args: string[]) => kubectl(['auth', 'can-i', ...args], { as: 'worker' }).stdout.trim();
  const allowed = [
    ['get', 'nodes'], ['list', 'nodes'], ['patch', 'nodes'], ['list', 'pods', '--all-namespaces'], ['create', 'pods', '--subresource=eviction', '-n', 'demo'],
    ['get', 'daemonsets.apps', '-n', 'kube-system'], ['list', 'poddisruptionbudgets.policy', '--all-namespaces'], ['create', 'events', '-n', 'default'],
    ['list', 'ipamblocks.crd.projectcalico.org'], ['delete', 'ipamhandles.crd.projectcalico.org'], ['get', 'leases.coordination.k8s.io', '-n', 'kube-node-lease'],
  ];
  const denied = [
    ['get', 'secrets', '-n', 'kube-system'], ['list', 'secrets', '--all-namespaces'], ['delete', 'pods', '-n', 'demo'], ['create', 'pods', '-n', 'demo'],
    ['delete', 'nodes'], ['update', 'deployments.apps', '-n', 'demo'], ['get', 'configmaps', '-n', 'kube-system'], ['create', 'clusterrolebindings.rbac.authorization.k8s.io'],
    ['patch', 'ippools.crd.projectcalico.org'], ['create', 'serviceaccounts', '--subresource=token', '-n', 'kube-system'],
  ];
  expect(allowed.map((a) => [a.join(' '), can(...a)])).toEqual(allowed.map((a) => [a.join(' '), 'yes']));
  expect(denied.map((a) => [a.join(' '), can(...a)])).toEqual(denied.map((a) => [a.join(' '), 'no']));
  // And the API server enforces it, not just answers questions about it.
  const secrets = kubectl(['get', 'secrets', '-n', 'kube-system'], { as: 'worker' });
  expect(secrets.code).not.toBe(0);
  expect(secrets.stderr).toMatch(/secrets is forbidden: User "kubemend-worker" cannot list resource "secrets"/);
  expect(kubectl(['get', 'ipamblocks.crd.projectcalico.org'], { as: 'worker' }).code).toBe(0);
});

test('probe reports each Node object next to what SSH found on the node', async () => {
  const config = labTestConfig(dir, 'cp');
  let worker: RunningWorker | undefined;
  try {
    worker = await startWorker(loadTestConfig(config));
    const r = await runCli(['--config', config, 'run', 'probe', '--cluster', 'lab', '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as ProbeReport;
    expect(report.api).toBe('read');
    for (const n of report.nodes) {
      const lab = state.nodes.find((x) => x.name === n.name)!;
      expect(n.kubernetes).toMatchObject({ ready: 'True', internalIPs: [lab.address], podCIDRs: [`10.244.${lab.index - 1}.0/24`], machineId: n.machineId, bootId: n.bootId, controlPlane: lab.role === 'control-plane' });
      expect(n.problems).toEqual([]);
    }
    const text = await runCli(['--config', config, 'run', 'probe', '--cluster', 'lab', '--node', 'node2']);
    expect(text.stdout).toMatch(/Kubernetes API: read/);
    expect(text.stdout).toMatch(/Node object +Ready=True\n +InternalIP +10\.213\.0\.12 +podCIDR 10\.244\.1\.0\/24/);
  } finally {
    await worker?.stop();
  }
});

test('a reboot shows on the Node (new boot id); kubeadm reset takes it NotReady and a re-join brings it back', async () => {
  const n3 = state.nodes[2];
  const rebooted = await requestReboot(dir, 'node3');
  const bootIdOf = () => kubectlJson<{ status: { nodeInfo: { bootID: string } } }>(['get', 'node', 'node3']).status.nodeInfo.bootID;
  await eventually('new boot id on the Node', () => (bootIdOf() === rebooted.bootId ? true : undefined), 10_000);

  labSsh(dir, n3.port, 'kubeadm reset -f >/dev/null');
  const readyOf = () => kubectlJson<{ status: { conditions: Array<{ type: string; status: string }> } }>(['get', 'node', 'node3']).status.conditions.find((c) => c.type === 'Ready')?.status;
  await eventually('node3 NotReady after kubeadm reset', () => (readyOf() !== 'True' ? true : undefined), (NODE_MONITOR_GRACE_S + 40) * 1000);
  const join = kubectlJson<{ spec: { unschedulable?: boolean } }>(['get', 'node', 'node3']); // the Node object stays, as after a real reset
  expect(join.spec.unschedulable).toBeUndefined();

  // A real token made on the control plane, a real join (kubeadm v1.34.4; the lab kubelet's TLS bootstrap is real too).
  const joinCommand = labSsh(dir, state.nodes[0].port, 'kubeadm token create --ttl 15m0s --print-join-command').trim();
  expect(joinCommand).toMatch(/^kubeadm join 10\.213\.0\.11:6443 --token [a-z0-9]{6}\.[a-z0-9]{16} --discovery-token-ca-cert-hash sha256:[0-9a-f]{64}$/);
  labSsh(dir, n3.port, `${joinCommand} >/dev/null`);
  await eventually('node3 Ready after the re-join', () => (readyOf() === 'True' ? true : undefined), 30_000);
});

test('down stops the control plane with the nodes and leaves nothing behind', async () => {
  const port = Number(new URL(cp.server).port);
  expect(labProcesses(dir).filter((p) => p.argv0.startsWith('kmlab-cp ')).map((p) => p.argv0.split(' ')[2]).sort()).toEqual(['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kwok']);
  await down(dir);
  expect(labProcesses(dir)).toEqual([]);
  expect(existsSync(dir)).toBe(false);
  expect(listening()).toEqual(listeningBefore);
  expect(listening()).not.toContain(`0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`);
  expect(hostSnapshot()).toEqual(hostBefore);
});
