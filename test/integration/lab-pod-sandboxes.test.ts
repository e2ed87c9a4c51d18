/**
 * Every pod the lab's Deployments place (coredns, demo/web) runs in a real sandbox when the
 * lab runs the real network parts (realFlannel): the lab's kubelet (test/lab/pod-kubelet.ts)
 * makes each one as containerd does, with the real CNI plugins v1.10.0 through the node's
 * /etc/cni/net.d and the real flanneld's subnet.env. Everything asserted is read off the
 * nodes as an SRE reads it (ssh: crictl, ip, host-local's files) and off the real
 * kube-apiserver (kubectl): the pod's address is the one host-local gave its sandbox, a
 * failed sandbox is the plugin's own words in the kubelet's event, and a reboot leaks nothing.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { inCidr } from '../../lib/detect/facts';
import { TOOLS_BIN } from '../../worker/paths';
import { controlPlaneInfo, type ControlPlaneInfo } from '../lab/control-plane';
import { waitForFlannelPodReady } from '../lab/flannel-kubelet';
import { down, type LabState, Patience, podCidrPrefix, requestReboot, staleLeasePrefix, up } from '../lab/lab';
import { SANDBOX_RETRY_MS } from '../lab/pod-kubelet';
import { hostSnapshot } from '../helpers/host';
import { labKubectl, labSsh, nodeIpv4 } from '../helpers/lab';
import { tempDir } from '../helpers/harness';

const dir = join(tempDir('pod-sandboxes'), 'lab');
let state: LabState;
let cp: ControlPlaneInfo;
let hostBefore: ReturnType<typeof hostSnapshot>;

beforeAll(async () => {
  hostBefore = hostSnapshot();
  state = await up({ dir, nodes: 3, controlPlane: true, realFlannel: true, rebootDowntimeMs: 300 });
  cp = controlPlaneInfo(dir)!;
}, 300_000);

afterAll(async () => {
  await down(dir);
});

const node = (name: string) => state.nodes.find((n) => n.name === name)!;
const ssh = (name: string, cmd: string) => labSsh(dir, node(name).port, cmd);
const kubectl = (args: string[]) => {
  const r = labKubectl(cp.adminKubeconfig, args);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
};
const cidrOf = (name: string) => `${podCidrPrefix(node(name).index)}.0/24`;

interface Pod {
  metadata: { name: string; namespace: string; uid: string; deletionTimestamp?: string };
  spec: { nodeName?: string };
  status: { phase?: string; podIP?: string; containerStatuses?: Array<{ restartCount: number; state: { running?: unknown; waiting?: { reason: string } } }> };
}
const appPods = (): Pod[] =>
  [
    ...(JSON.parse(kubectl(['get', 'pods', '-n', 'kube-system', '-l', 'app=coredns', '-o', 'json'])) as { items: Pod[] }).items,
    ...(JSON.parse(kubectl(['get', 'pods', '-n', 'demo', '-l', 'app=web', '-o', 'json'])) as { items: Pod[] }).items,
  ].filter((p) => !p.metadata.deletionTimestamp);
const getPod = (ns: string, name: string): Pod | undefined => {
  const r = labKubectl(cp.adminKubeconfig, ['get', 'pod', '-n', ns, name, '-o', 'json']);
  return r.code === 0 ? (JSON.parse(r.stdout) as Pod) : undefined;
};

/** `crictl pods` on the node: the id's first 13 characters (as crictl prints them), state, name, namespace. */
function crictlPods(name: string): Array<{ id: string; state: string; pod: string; namespace: string }> {
  return ssh(name, 'crictl pods')
    .split('\n')
    .map((l) => /^([0-9a-f]{13})\s+About an hour ago\s+(Ready|NotReady)\s+(\S+)\s+(\S+)/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ id: m[1], state: m[2], pod: m[3], namespace: m[4] }));
}
/** host-local's files for the flannel network (cbr0) on the node: address -> the container id in it. */
function hostLocal(name: string): Map<string, string> {
  const out = ssh(name, 'cd /var/lib/cni/networks/cbr0 2>/dev/null && for f in 10.*; do [ -f "$f" ] && printf "%s %s\\n" "$f" "$(head -n1 "$f")"; done; true');
  return new Map(out.trim().split('\n').filter(Boolean).map((l) => l.split(' ') as [string, string]));
}
const netnsList = (name: string) => ssh(name, 'ip netns list').split('\n').map((l) => l.split(' ')[0]).filter(Boolean);

async function waitFor<T>(what: string, read: () => T | undefined, timeoutMs = 90_000): Promise<T> {
  const patience = new Patience(timeoutMs);
  let last: unknown;
  while (!patience.exhausted) {
    try {
      const v = read();
      if (v !== undefined) return v;
    } catch (err) {
      last = (err as Error).message;
    }
    await patience.sleep(300);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms of waiting${last ? ` (${String(last)})` : ''}`);
}

test('every Deployment pod runs in a real sandbox: its address is the one host-local gave the sandbox crictl lists, in its node\'s podCIDR, on eth0 in the sandbox\'s netns, and the node reaches it', async () => {
  const pods = appPods();
  expect(pods).toHaveLength(4); // coredns x2, web x2
  for (const p of pods) {
    const n = p.spec.nodeName!;
    expect(p.status.phase).toBe('Running');
    expect(inCidr(p.status.podIP!, cidrOf(n))).toBe(true);
    const sandbox = crictlPods(n).find((s) => s.pod === p.metadata.name);
    expect(sandbox).toMatchObject({ state: 'Ready', namespace: p.metadata.namespace });
    // host-local's own file for the address names the sandbox (CNI_CONTAINERID).
    expect(hostLocal(n).get(p.status.podIP!)?.slice(0, 13)).toBe(sandbox!.id);
    const netns = netnsList(n).find((x) => x.startsWith(`cni-${sandbox!.id.slice(0, 8)}-`));
    expect(netns).toBeDefined();
    expect(ssh(n, `ip netns exec ${netns} ip -4 -o addr show dev eth0`)).toContain(`inet ${p.status.podIP}/24`);
    expect(ssh(n, `ping -c 1 -W 2 ${p.status.podIP}`)).toContain('1 received');
    // Its containers run in it, as `crictl ps` lists them.
    expect(ssh(n, 'crictl ps').split('\n').some((l) => l.includes(p.metadata.name) && l.includes(sandbox!.id))).toBe(true);
  }
  // The bridge plugin made cni0 with the podCIDR's gateway on each node that runs a pod.
  for (const n of new Set(pods.map((p) => p.spec.nodeName!))) expect(nodeIpv4(dir, node(n).port, 'cni0')).toEqual([`${podCidrPrefix(node(n).index)}.1/24`]);
}, 120_000);

test("a pod bound to node3 while cni0 holds an old lease stays ContainerCreating with the bridge plugin's own words in FailedCreatePodSandBox, leaves nothing behind, and runs once cni0 is deleted", async () => {
  // As `kubeadm reset` and a re-join with a new podCIDR leave it (seed 003): cni0 carries the old lease.
  const stale = `${staleLeasePrefix(3)}.1/24`;
  ssh('node3', `ip addr flush dev cni0 && ip addr add ${stale} dev cni0`);
  const before = { files: hostLocal('node3'), netns: netnsList('node3').length };
  const manifest = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'probe', namespace: 'demo', labels: { 'lab.kubemend.io/kubelet-pods': 'lab' } }, spec: { nodeName: 'node3', containers: [{ name: 'probe', image: 'nginx:1.27' }] } };
  const made = spawnSync(join(TOOLS_BIN, 'kubectl'), ['--kubeconfig', cp.adminKubeconfig, 'create', '-f', '-'], { input: JSON.stringify(manifest), encoding: 'utf8' });
  expect(made.stderr).toBe('');

  const gw = `${podCidrPrefix(3)}.1/24`;
  const event = await waitFor('the FailedCreatePodSandBox event', () => {
    const events = JSON.parse(kubectl(['get', 'events', '-n', 'demo', '--field-selector', 'involvedObject.name=probe,reason=FailedCreatePodSandBox', '-o', 'json'])) as { items: Array<{ message: string; type: string; source: { component: string; host: string } }> };
    return events.items[0];
  });
  expect(event.type).toBe('Warning');
  expect(event.source).toEqual({ component: 'kubelet', host: 'node3' });
  expect(event.message).toMatch(new RegExp(`^Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox "[0-9a-f]{64}": plugin type="flannel" failed \\(add\\): failed to set bridge addr: "cni0" already has an IP address different from ${gw.replace(/\./g, '\\.')}$`));
  const pending = getPod('demo', 'probe')!;
  expect(pending.status.phase).toBe('Pending');
  expect(pending.status.containerStatuses?.[0].state.waiting?.reason).toBe('ContainerCreating');
  // The runtime cleaned up after the failed ADD: no new host-local file, netns or sandbox.
  expect(hostLocal('node3')).toEqual(before.files);
  expect(netnsList('node3')).toHaveLength(before.netns);
  expect(crictlPods('node3').some((s) => s.pod === 'probe')).toBe(false);

  // The fix's own step: delete the stale cni0. The kubelet's next try (after its 10 s back-off) runs the pod.
  ssh('node3', 'ip link delete cni0');
  const running = await waitFor('probe Running', () => {
    const p = getPod('demo', 'probe');
    return p?.status.phase === 'Running' ? p : undefined;
  }, SANDBOX_RETRY_MS * 6);
  expect(inCidr(running.status.podIP!, cidrOf('node3'))).toBe(true);
  expect(nodeIpv4(dir, node('node3').port, 'cni0')).toEqual([gw]);
}, 180_000);

test("deleting a pod tears its sandbox down (host-local's file released, netns and record gone) before the deletion finishes; the Deployment's new pod runs in a new sandbox", async () => {
  const victim = appPods().find((p) => p.metadata.namespace === 'demo')!;
  const n = victim.spec.nodeName!;
  const id = crictlPods(n).find((s) => s.pod === victim.metadata.name)!.id;
  kubectl(['delete', 'pod', '-n', 'demo', victim.metadata.name, '--wait=true', '--timeout=60s']);
  expect(hostLocal(n).has(victim.status.podIP!)).toBe(false);
  expect(crictlPods(n).some((s) => s.id === id)).toBe(false);
  expect(netnsList(n).some((x) => x.startsWith(`cni-${id.slice(0, 8)}-`))).toBe(false);
  const replacement = await waitFor('the new web pod Running', () => appPods().find((p) => p.metadata.namespace === 'demo' && p.metadata.uid !== victim.metadata.uid && p.status.phase === 'Running' && !appPods().some((q) => q.metadata.namespace === 'demo' && q.status.phase !== 'Running')));
  expect(inCidr(replacement.status.podIP!, cidrOf(replacement.spec.nodeName!))).toBe(true);
}, 120_000);

test("a reboot: the node's sandboxes die with their netns; each pod gets a new one (restartCount 1) once flanneld is back, the old addresses are released, nothing leaks", async () => {
  const target = 'node2';
  const before = appPods().filter((p) => p.spec.nodeName === target);
  expect(before.length).toBeGreaterThan(0);
  const oldIds = crictlPods(target).map((s) => s.id);
  await requestReboot(dir, target);
  await waitForFlannelPodReady(dir, target);
  const after = await waitFor('node2\'s pods Running again with restartCount 1', () => {
    const now = appPods().filter((p) => before.some((b) => b.metadata.uid === p.metadata.uid));
    return now.length === before.length && now.every((p) => p.status.phase === 'Running' && p.status.containerStatuses?.[0].restartCount === 1) ? now : undefined;
  });
  const sandboxes = crictlPods(target);
  expect(sandboxes.filter((s) => oldIds.includes(s.id))).toEqual([]);
  // host-local holds exactly the running pods' addresses: the dead sandboxes' were released by their DEL.
  const files = hostLocal(target);
  const live = appPods().filter((p) => p.spec.nodeName === target);
  expect([...files.keys()].sort()).toEqual(live.map((p) => p.status.podIP!).sort());
  for (const p of after) expect(inCidr(p.status.podIP!, cidrOf(target))).toBe(true);
  expect(hostSnapshot()).toEqual(hostBefore);
}, 180_000);
