/**
 * Where node state and API state must agree under the seeds' scenarios: seed 001's NAT
 * address on the Node objects and the workers that could not join, seed 000's shared
 * machine-id as the kubelets report it, and seed 004's Calico IPAM held in real CRDs.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { joinConfiguration, parseJoinCommand } from '../../lib/node-address-scripts';
import type { ProbeReport } from '../../lib/probe';
import { TOOLS_BIN } from '../../worker/paths';
import { isRunning, waitForLabPods } from '../lab/pod-kubelet';
import { controlPlaneInfo, type ControlPlaneInfo } from '../lab/control-plane';
import { moveAdvertiseAddress } from '../lab/kubeadm-cluster';
import { down, type LabState, up } from '../lab/lab';
import { labSsh, labSshArgs, labTestConfig } from '../helpers/lab';
import { loadTestConfig, runCli, type RunningWorker, startWorker, tempDir } from '../helpers/harness';

const KUBECTL = join(TOOLS_BIN, 'kubectl');
const dir = join(tempDir('cp-scen'), 'lab');
let state: LabState;
let cp: ControlPlaneInfo;
let worker: RunningWorker;
let config: string;

beforeAll(async () => {
  state = await up({ dir, nodes: 3, controlPlane: true, scenarios: ['nat-advertise', 'cloned-machine-id', 'orphan-calico'] });
  cp = controlPlaneInfo(dir)!;
  config = labTestConfig(dir, 'cpscen');
  worker = await startWorker(loadTestConfig(config));
}, 180_000);

afterAll(async () => {
  await worker?.stop();
  await down(dir);
});

function kubectl(args: string[], as: 'admin' | 'worker' = 'admin', input?: string) {
  const r = spawnSync(KUBECTL, ['--kubeconfig', as === 'worker' ? cp.workerKubeconfig : cp.adminKubeconfig, ...args], { encoding: 'utf8', input, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const json = <T>(args: string[], as: 'admin' | 'worker' = 'admin') => JSON.parse(kubectl([...args, '-o', 'json'], as).stdout) as T;

async function probe(): Promise<ProbeReport> {
  const r = await runCli(['--config', config, 'run', 'probe', '--cluster', 'lab', '--json']);
  expect(r.stderr).not.toMatch(/error/i);
  return JSON.parse(r.stdout) as ProbeReport;
}

test('seed 001: only the control plane joined, advertising 10.0.2.15; the probe says the workers have no Node', async () => {
  type Node = { metadata: { name: string }; status: { addresses: Array<{ type: string; address: string }> } };
  const nodes = json<{ items: Node[] }>(['get', 'nodes']).items;
  expect(nodes.map((n) => n.metadata.name)).toEqual(['node1']);
  expect(nodes[0].status.addresses).toContainEqual({ type: 'InternalIP', address: '10.0.2.15' });
  const report = await probe();
  expect(report.nodes.find((n) => n.name === 'node1')?.kubernetes?.internalIPs).toEqual(['10.0.2.15']);
  for (const name of ['node2', 'node3']) {
    const n = report.nodes.find((x) => x.name === name)!;
    expect(n.kubernetes).toBeNull();
    expect(n.problems).toContainEqual(expect.stringContaining('no Node object'));
  }
});

test('seed 001: a join to the NAT address fails and registers nothing; a join to the right address registers the Node', async () => {
  const n2 = state.nodes[1];
  // The real kubeadm v1.34.4: a token made on the control plane; its printed join names the advertised 10.0.2.15.
  const printed = parseJoinCommand(labSsh(dir, state.nodes[0].port, 'kubeadm token create --ttl 15m0s --print-join-command'));
  if ('problem' in printed) throw new Error(printed.problem);
  expect(printed.endpoint).toBe('10.0.2.15:6443');
  // Discovery given 10 s: by default kubeadm retries an unreachable endpoint for 5 minutes.
  const config = (endpoint: string) => `${joinConfiguration({ ...printed, endpoint }, null)}timeouts:\n  discovery: 10s\n`;
  const join = (endpoint: string) => spawnSync('ssh', labSshArgs(dir, n2.port, 'f=$(mktemp /run/join.XXXXXX) && cat > "$f" && kubeadm join --config "$f"; rc=$?; rm -f "$f"; exit $rc'), { encoding: 'utf8', input: config(endpoint) });
  const failed = join('10.0.2.15:6443');
  expect(failed.status).toBe(1);
  expect(failed.stderr).toMatch(/dial tcp 10\.0\.2\.15:6443: connect: connection refused/);
  await sleep(1000);
  expect(kubectl(['get', 'node', 'node2']).code).not.toBe(0);

  // By the right address it fails too while cluster-info names 10.0.2.15; once the advertise address is moved, it joins.
  const early = join('10.213.0.11:6443');
  expect(early.status).toBe(1);
  expect(early.stderr).toMatch(/unable to fetch the kubeadm-config ConfigMap: .*dial tcp 10\.0\.2\.15:6443: connect: connection refused/);
  await moveAdvertiseAddress(dir, '10.213.0.11');
  const joined = join('10.213.0.11:6443');
  expect(joined.status).toBe(0);
  const until = Date.now() + 30_000;
  let ready: string | undefined;
  while (Date.now() < until && ready !== 'True') {
    await sleep(500);
    const r = kubectl(['get', 'node', 'node2', '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']);
    ready = r.code === 0 ? r.stdout : undefined;
  }
  expect(ready).toBe('True');
  // Its kubelet took the NAT address too: two Nodes now share an InternalIP, and the probe says so.
  const report = await probe();
  expect(report.nodes.find((n) => n.name === 'node2')?.problems).toContainEqual(expect.stringContaining('InternalIP 10.0.2.15 is also the InternalIP of node1'));
});

test('seed 000: the kubelets report the same machine-id the nodes share', () => {
  const ids = new Set(json<{ items: Array<{ status: { nodeInfo: { machineID: string } } }> }>(['get', 'nodes']).items.map((n) => n.status.nodeInfo.machineID));
  expect(ids).toEqual(new Set([labSsh(dir, state.nodes[0].port, 'cat /etc/machine-id').trim()]));
});

test('seed 004: Calico IPAM lives in CRDs the API validates, readable with the worker identity', async () => {
  type Block = { metadata: { name: string }; spec: { affinity: string; attributes: Array<{ secondary: { pod: string } }> } };
  const blocks = json<{ items: Block[] }>(['get', 'ipamblocks.crd.projectcalico.org'], 'worker').items;
  expect(blocks.map((b) => b.spec.affinity).sort()).toEqual(['host:node1', 'host:node2', 'host:node3']);
  // The pods with an address: those with a veth, those that are gone but kept their veth, those without a veth.
  const b2 = blocks.find((b) => b.spec.affinity === 'host:node2')!;
  expect(b2.spec.attributes.map((a) => a.secondary.pod)).toEqual(['web-node2-a', 'web-node2-b', 'gone-node2-x', 'gone-node2-y', 'gone-node2-z', 'db-node2-0', 'db-node2-1']);
  // node2 joined in the test above (seed 001's fix): the StatefulSet's db-node2-0 was placed there beside the bare pods,
  // and node2's kubelet (the lab's, for these pods) runs them in the sandboxes `up` made, with their Calico addresses.
  const onNode2 = await waitForLabPods(dir, "node2's seed 004 pods Running", (ps) => ['db-node2-0', 'db-node2-1', 'web-node2-a', 'web-node2-b'].every((n) => ps.some((p) => p.metadata.name === n && p.spec.nodeName === 'node2' && isRunning(p))));
  expect(onNode2.filter((p) => p.spec.nodeName === 'node2').map((p) => p.status?.podIP).sort()).toEqual(['192.168.202.10', '192.168.202.11', '192.168.202.15', '192.168.202.16']);
  // On node1 (joined), the lab's kubelet runs them with their Calico addresses.
  const node1 = json<{ items: Array<{ metadata: { name: string }; status: { phase: string; podIP?: string } }> }>(['get', 'pods', '-n', 'default', '--field-selector', 'spec.nodeName=node1']).items;
  expect(node1.map((p) => [p.metadata.name, p.status.phase]).sort()).toEqual([['db-node1-0', 'Running'], ['db-node1-1', 'Running'], ['web-node1-a', 'Running'], ['web-node1-b', 'Running']]);
  for (const p of node1) expect(p.status.podIP).toMatch(/^192\.168\.201\.\d+$/);
  // A malformed block is refused by the CRD's schema, as on a cluster with Calico installed.
  const badBlock = 'apiVersion: crd.projectcalico.org/v1\nkind: IPAMBlock\nmetadata: {name: bad}\nspec: {cidr: 192.168.99.0/26, allocations: "all"}\n';
  // kubectl checks against the schema the API server publishes for the CRD...
  const client = kubectl(['create', '-f', '-'], 'admin', badBlock);
  expect(client.code).not.toBe(0);
  expect(client.stderr).toMatch(/invalid type for org\.projectcalico\.crd\.v1\.IPAMBlock\.spec\.allocations: got "string", expected "array"/);
  // ...and the API server enforces it.
  const bad = kubectl(['create', '--validate=false', '-f', '-'], 'admin', badBlock);
  expect(bad.code).not.toBe(0);
  expect(bad.stderr).toMatch(/spec\.allocations: Invalid value: "string": spec\.allocations in body must be of type array/);
  expect(bad.stderr).toMatch(/spec\.unallocated: Required value/);
});
