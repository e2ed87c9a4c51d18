/**
 * orphan-calico (seed 004) on lab nodes with the control plane, as an operator finds it: the
 * node's cali* veths, the pods the runtime has (crictl pods / inspectp), the netns each veth's
 * pod end lives in, Calico's IPAM in the API, and the pods' statuses from the lab's kubelet.
 * Composed with stale-cni, so the crictl records of both scenarios coexist.
 */
import { join } from 'node:path';
import { calicoVethName } from '../../lib/calico';
import { adminRequest, controlPlaneInfo } from '../lab/control-plane';
import { type ApiPod, isRunning, labKubeletPods, waitForLabPods } from '../lab/pod-kubelet';
import { calicoPods, down, type LabState, LIVE_PODS_PER_NODE, requestReboot, up } from '../lab/lab';
import { CALICO_STATEFULSET_LABEL, sandboxId } from '../lab/manifests';
import { tempDir } from '../helpers/harness';
import { hostSnapshot } from '../helpers/host';
import { labSsh } from '../helpers/lab';

const dir = join(tempDir('calico'), 'lab');
let state: LabState;

let hostBefore: ReturnType<typeof hostSnapshot>;
let upMs = 0;

beforeAll(async () => {
  hostBefore = hostSnapshot();
  const t0 = Date.now();
  state = await up({ dir, nodes: 2, controlPlane: true, scenarios: ['orphan-calico', 'stale-cni'], rebootDowntimeMs: 200 });
  upMs = Date.now() - t0;
  console.log(`lab up (orphan-calico + stale-cni, 2 nodes, control plane, seed pods Running): ${upMs} ms`);
}, 240_000);
afterAll(async () => {
  await down(dir);
  expect(hostSnapshot()).toEqual(hostBefore); // the host after the scenario, its reboots, and down
});

const ssh = (port: number, cmd: string) => labSsh(dir, port, cmd);
const portOf = (name: string) => state.nodes.find((n) => n.name === name)!.port;

async function api(method: string, path: string, data?: unknown): Promise<{ status: number; body: string }> {
  const port = Number(new URL(controlPlaneInfo(dir)!.server).port);
  return adminRequest(dir, port, method, path, data === undefined ? undefined : { contentType: 'application/json', data });
}
async function apiGet<T>(path: string): Promise<T> {
  const r = await api('GET', path);
  expect(r.status).toBe(200);
  return JSON.parse(r.body) as T;
}

interface Sandbox {
  id: string;
  name: string;
  state: string;
  ip: string;
  /** The netns path from info.runtimeSpec.linux.namespaces. */
  netns: string;
}

/** Every sandbox the node's runtime has, as `crictl pods -q` and `crictl inspectp` show them. */
function sandboxes(port: number): Sandbox[] {
  const ids = ssh(port, 'crictl pods -q').trim().split('\n').filter(Boolean);
  return ids.map((id) => {
    const doc = JSON.parse(ssh(port, `crictl inspectp -o json ${id}`)) as {
      status: { id: string; state: string; metadata: { name: string }; network: { ip: string } };
      info: { runtimeSpec: { linux: { namespaces: Array<{ type: string; path?: string }> } } };
    };
    const netns = doc.info.runtimeSpec.linux.namespaces.find((n) => n.type === 'network')?.path ?? '';
    return { id: doc.status.id, name: doc.status.metadata.name, state: doc.status.state, ip: doc.status.network.ip, netns };
  });
}

interface Link {
  ifname: string;
  ifindex: number;
  link_index?: number;
  link_netnsid?: number;
  flags: string[];
  address?: string;
}

/** The node's cali veths with the name of the netns their peer is in (ip -j -d link, ip -j netns list-id). */
function caliPeers(port: number): Array<Link & { peerNetns?: string }> {
  const links = JSON.parse(ssh(port, 'ip -j -d link')) as Link[];
  const ids = JSON.parse(ssh(port, 'ip -j netns list-id') || '[]') as Array<{ nsid: number; name?: string }>;
  return links.filter((l) => l.ifname.startsWith('cali')).map((l) => ({ ...l, peerNetns: ids.find((x) => x.nsid === l.link_netnsid)?.name }));
}

/** The links and addresses inside a netns of the node. */
function netnsLinks(port: number, ns: string): Array<{ ifname: string; ifindex: number; addr_info: Array<{ local: string; prefixlen: number }> }> {
  expect(ns).toMatch(/^cni-[0-9a-f-]{36}$/);
  return JSON.parse(ssh(port, `ip -n ${ns} -j addr`));
}

const base = (path: string) => path.split('/').pop()!;

function nodeView(port: number) {
  const links = JSON.parse(ssh(port, 'ip -j link')) as Array<{ ifname: string; operstate: string; flags: string[] }>;
  const cali = links.filter((l) => l.ifname.startsWith('cali'));
  // crictl pods: POD ID, CREATED ("About an hour ago": 4 words), STATE, NAME, NAMESPACE, ...
  const pods = ssh(port, 'crictl pods').trim().split('\n').slice(1).map((l) => l.split(/\s+/)).map((f) => ({ name: f[6], namespace: f[7] }));
  return { cali, pods };
}

interface Block {
  spec: { cidr: string; affinity: string; allocations: Array<number | null>; attributes: Array<{ handle_id: string; secondary: { pod: string } }> };
}
async function blockOf(node: string): Promise<Block> {
  const blocks = await apiGet<{ items: Block[] }>('/apis/crd.projectcalico.org/v1/ipamblocks');
  return blocks.items.find((b) => b.spec.affinity === `host:${node}`)!;
}
/** The block's allocations: address -> the attribute's handle and pod. */
function allocations(b: Block): Array<{ ip: string; handle: string; pod: string }> {
  const prefix = b.spec.cidr.split('/')[0].split('.').slice(0, 3).join('.');
  const first = Number(b.spec.cidr.split('/')[0].split('.')[3]);
  return b.spec.allocations.flatMap((a, ord) => (a === null ? [] : [{ ip: `${prefix}.${first + ord}`, handle: b.spec.attributes[a].handle_id, pod: b.spec.attributes[a].secondary.pod }]));
}

test.each([1, 2])('node%i: the veths and the pods disagree exactly as seeded', (index) => {
  const n = state.nodes[index - 1];
  const seeded = calicoPods(n.name);
  const { cali, pods } = nodeView(n.port);
  for (const l of cali) expect(l.flags).toContain('LOWER_UP'); // a live veth, as Calico's would be
  const expected = new Map(pods.map((p) => [calicoVethName(p.namespace, p.name), p]));
  const orphanVeths = cali.map((l) => l.ifname).filter((v) => !expected.has(v)).sort();
  expect(orphanVeths).toEqual(seeded.vethOnly.map((p) => calicoVethName(seeded.namespace, p)).sort());
  // Pods without a veth: every runtime pod whose name-derived veth is missing (stale-cni's
  // app pods use the flannel bridge in that seed, so they are filtered by name here).
  const calicoManaged = pods.filter((p) => /^(web|db)-/.test(p.name));
  const missing = calicoManaged.filter((p) => !cali.some((l) => l.ifname === calicoVethName(p.namespace, p.name))).map((p) => p.name).sort();
  expect(missing).toEqual([...seeded.withoutVeth].sort());
  expect(pods).toHaveLength(LIVE_PODS_PER_NODE + seeded.withVeth.length + seeded.withoutVeth.length);
  // Each cali veth has its /32 route, as Felix programs it.
  const routes = ssh(n.port, 'ip -j route').trim();
  for (const l of cali) expect(routes).toContain(`"dev":"${l.ifname}"`);
});

test.each([1, 2])("node%i: each web pod's cali veth ends in eth0 of its live sandbox's netns; gone pods' veths end in a netns no sandbox has", async (index) => {
  const n = state.nodes[index - 1];
  const seeded = calicoPods(n.name);
  const boxes = sandboxes(n.port);
  const peers = caliPeers(n.port);
  const apiPods = await labKubeletPods(dir);
  for (const pod of seeded.withVeth) {
    const box = boxes.find((b) => b.name === pod)!;
    expect(box).toMatchObject({ state: 'SANDBOX_READY', id: sandboxId(n.name, pod) });
    const veth = peers.find((l) => l.ifname === calicoVethName(seeded.namespace, pod))!;
    expect(veth.address).toBe('ee:ee:ee:ee:ee:ee');
    expect(veth.peerNetns).toBe(base(box.netns));
    const inside = netnsLinks(n.port, veth.peerNetns!);
    const eth0 = inside.find((l) => l.ifname === 'eth0')!;
    expect(eth0.ifindex).toBe(veth.link_index);
    expect(eth0.addr_info.filter((a) => a.prefixlen === 32).map((a) => a.local)).toEqual([box.ip]);
    expect(ssh(n.port, `ip -n ${veth.peerNetns} route`)).toContain('default via 169.254.1.1 dev eth0');
    expect(ssh(n.port, `cat /proc/sys/net/ipv4/conf/${veth.ifname}/proxy_arp`).trim()).toBe('1');
    // The kubelet reported the sandbox's address.
    expect(apiPods.find((p) => p.metadata.name === pod)?.status?.podIP).toBe(box.ip);
  }
  const live = new Set(boxes.map((b) => base(b.netns)));
  for (const pod of seeded.vethOnly) {
    const veth = peers.find((l) => l.ifname === calicoVethName(seeded.namespace, pod))!;
    expect(veth.peerNetns).toMatch(/^cni-/); // a leaked sandbox netns, in the node
    expect(live.has(veth.peerNetns!)).toBe(false);
    expect(boxes.some((b) => b.name === pod)).toBe(false);
  }
});

test.each([1, 2])('node%i: db pods have a READY sandbox with an address in IPAM, a netns with lo only, no veth; Running in the API', async (index) => {
  const n = state.nodes[index - 1];
  const seeded = calicoPods(n.name);
  const boxes = sandboxes(n.port);
  const peers = caliPeers(n.port);
  const allocated = allocations(await blockOf(n.name));
  const apiPods = await labKubeletPods(dir);
  for (const pod of seeded.withoutVeth) {
    const box = boxes.find((b) => b.name === pod)!;
    expect(box.state).toBe('SANDBOX_READY');
    expect(netnsLinks(n.port, base(box.netns)).map((l) => l.ifname)).toEqual(['lo']);
    expect(peers.some((l) => l.ifname === calicoVethName(seeded.namespace, pod) || l.peerNetns === base(box.netns))).toBe(false);
    expect(allocated).toContainEqual({ ip: box.ip, handle: `k8s-pod-network.${box.id}`, pod });
    const p = apiPods.find((x) => x.metadata.name === pod)!;
    expect(isRunning(p)).toBe(true);
    expect(p.status?.podIP).toBe(box.ip);
  }
  // db-<node>-0 is its StatefulSet's; db-<node>-1 is bare.
  const owners = async (name: string) => (await apiGet<{ metadata: { ownerReferences?: Array<{ kind: string; name: string }> } }>(`/api/v1/namespaces/default/pods/${name}`)).metadata.ownerReferences ?? [];
  expect(await owners(`db-${n.name}-0`)).toEqual([expect.objectContaining({ kind: 'StatefulSet', name: `db-${n.name}` })]);
  expect(await owners(`db-${n.name}-1`)).toEqual([]);
});

test('evicting db-node2-0: the StatefulSet makes it again on node2, the lab kubelet gives it a Calico sandbox; the old one is released and gone', async () => {
  const node = 'node2';
  const port = portOf(node);
  const name = `db-${node}-0`;
  const before = (await labKubeletPods(dir)).find((p) => p.metadata.name === name)!;
  const oldBox = sandboxes(port).find((b) => b.name === name)!;
  const oldHandle = `k8s-pod-network.${oldBox.id}`;
  expect(allocations(await blockOf(node))).toContainEqual({ ip: oldBox.ip, handle: oldHandle, pod: name });

  const t0 = Date.now();
  const evicted = await api('POST', `/api/v1/namespaces/default/pods/${name}/eviction`, { apiVersion: 'policy/v1', kind: 'Eviction', metadata: { name, namespace: 'default' } });
  expect(evicted.status).toBe(201);
  const isNew = (p: ApiPod) => p.metadata.name === name && p.metadata.uid !== before.metadata.uid;
  const pods = await waitForLabPods(dir, `${name} made again and Running`, (ps) => ps.some((p) => isNew(p) && isRunning(p)) && !ps.some((p) => p.metadata.uid === before.metadata.uid));
  console.log(`eviction of ${name} to its successor Running: ${Date.now() - t0} ms`);
  const after = pods.find(isNew)!;
  expect(after.spec.nodeName).toBe(node);
  expect(after.metadata.labels?.[CALICO_STATEFULSET_LABEL]).toBe(`db-${node}`);

  // The node: the new sandbox, READY, with the pod's address; its cali veth ends in eth0 of its netns.
  const boxes = sandboxes(port);
  const mine = boxes.filter((b) => b.name === name);
  expect(mine).toHaveLength(1);
  const box = mine[0];
  expect(box.id).not.toBe(oldBox.id);
  expect(box.state).toBe('SANDBOX_READY');
  expect(after.status?.podIP).toBe(box.ip);
  const veth = caliPeers(port).find((l) => l.ifname === calicoVethName('default', name))!;
  expect(veth.flags).toContain('LOWER_UP');
  expect(veth.peerNetns).toBe(base(box.netns));
  const eth0 = netnsLinks(port, base(box.netns)).find((l) => l.ifname === 'eth0')!;
  expect(eth0.addr_info.map((a) => a.local)).toContain(box.ip);
  expect(ssh(port, 'ip -j route')).toContain(`{"dst":"${box.ip}","dev":"${veth.ifname}","scope":"link"`);
  // The old sandbox and its netns are gone.
  expect(boxes.some((b) => b.id === oldBox.id)).toBe(false);
  expect(ssh(port, 'ip netns list')).not.toContain(base(oldBox.netns));

  // IPAM: the new allocation under the new sandbox's handle; the old one released, its handle deleted.
  const allocated = allocations(await blockOf(node));
  expect(allocated).toContainEqual({ ip: box.ip, handle: `k8s-pod-network.${box.id}`, pod: name });
  expect(allocated.some((a) => a.handle === oldHandle)).toBe(false);
  expect((await api('GET', `/apis/crd.projectcalico.org/v1/ipamhandles/${oldHandle.toLowerCase()}`)).status).toBe(404);
  expect((await api('GET', `/apis/crd.projectcalico.org/v1/ipamhandles/k8s-pod-network.${box.id}`)).status).toBe(200);
  // The other pods on the node kept theirs.
  expect(allocated.filter((a) => a.pod !== name).map((a) => a.pod).sort()).toEqual([`db-${node}-1`, `gone-${node}-x`, `gone-${node}-y`, `gone-${node}-z`, `web-${node}-a`, `web-${node}-b`]);
}, 180_000);

test('deleting a bare web pod: the lab kubelet releases its address, its veth and netns go, and the deletion finishes', async () => {
  const node = 'node2';
  const port = portOf(node);
  const name = `web-${node}-b`;
  const box = sandboxes(port).find((b) => b.name === name)!;
  const r = await api('DELETE', `/api/v1/namespaces/default/pods/${name}`);
  expect(r.status).toBe(200);
  await waitForLabPods(dir, `${name} gone`, (ps) => !ps.some((p) => p.metadata.name === name));
  expect(sandboxes(port).some((b) => b.id === box.id)).toBe(false);
  expect(caliPeers(port).some((l) => l.ifname === calicoVethName('default', name))).toBe(false);
  expect(ssh(port, 'ip netns list')).not.toContain(base(box.netns));
  expect(allocations(await blockOf(node)).some((a) => a.pod === name || a.ip === box.ip)).toBe(false);
  expect((await api('GET', `/apis/crd.projectcalico.org/v1/ipamhandles/k8s-pod-network.${box.id}`)).status).toBe(404);
}, 120_000);

test('a reboot takes the veths away with the node (pods come back through the CNI, not the lab)', async () => {
  const node2Veths = caliPeers(portOf('node2')).length;
  await requestReboot(dir, 'node1');
  expect(nodeView(state.nodes[0].port).cali).toEqual([]);
  expect(nodeView(state.nodes[1].port).cali).toHaveLength(node2Veths);
});
