/**
 * Calico-style pod sandboxes on lab nodes (the orphan-calico scenario, seed 004).
 *
 * Not built here: Calico's CNI plugin (`calico`, `calico-ipam`). Its steps are done here as the
 * plugin does them in KDD mode, so what the API and the node hold is what a Calico node holds:
 *  - IPAM (calico-ipam) through the lab's API with the admin's identity: the IPAMHandle
 *    "k8s-pod-network.<sandbox id>" is created first (name: the id lower-cased, spec
 *    {handleID, block: {<cidr>: 1}}), then an address is taken from the node's affine
 *    IPAMBlock: the first ordinal of `unallocated`, `allocations[ord]` set to a new attribute
 *    {handle_id, secondary: {namespace, node, pod, timestamp}}, written with the block's
 *    resourceVersion (compare-and-swap: on 409 read again and retry). Release is the reverse:
 *    every ordinal of the handle back to the end of `unallocated`, attributes no longer used
 *    dropped and the others renumbered (CAS), then the handle deleted. The lab never claims a
 *    new block: a node without an affine block, or a full one, is an error;
 *  - the network (the calico plugin): the sandbox's netns inside the node (`ip netns add
 *    cni-<uuid>` in the node's mount namespace, as cni.ts makes them), a veth pair with the
 *    host end named calicoVethName(namespace, pod) (MAC ee:ee:ee:ee:ee:ee, up, proxy_arp=1,
 *    neigh proxy_delay=0, forwarding=1 in the node's netns) and `eth0` in the sandbox with
 *    <ip>/32, a link-scope route to 169.254.1.1 and the default route via it; in the node, a
 *    /32 route to the pod's address over the host end (as Felix programs it);
 *  - DEL as the plugin does it: the address released, eth0 deleted inside the sandbox's netns
 *    (its host end goes with it: never a cali device looked up by name), the netns removed.
 *    Every step is idempotent: a second DEL finds nothing to do.
 * The runtime's side: a READY record in the crictl stand-in's file (/var/lib/kmlab/cri, the
 * line format of cni.ts) with a container line, so `crictl pods`, `ps` and `inspectp` show the
 * sandbox; and a file /var/lib/kmlab/calico/<sandbox id> holding what the DEL needs (handle,
 * block, address): a sandbox with that file is one this module made, and the lab's kubelet
 * (pod-kubelet.ts) runs these pods.
 */
import { randomBytes } from 'node:crypto';
import { calicoVethName } from '../../lib/calico';
import { type PodRef, CRI_DB, holderPid, netnsName, nodeExec, nodeExists, nodeList, nodeRead, nodeWrite, recordLine, recordsOf, rewriteRecords, type SandboxRecord, withRecordLock } from './cni';
import { adminRequest, controlPlaneInfo } from './control-plane';
import { LabError } from './lab';
import { calicoBlockCidr, calicoHandleId, calicoSeedAddresses, sandboxId } from './manifests';

/** What a Calico-style DEL needs, one JSON file per sandbox made here. */
export const CALICO_DATA = '/var/lib/kmlab/calico';

export interface CalicoSandboxData {
  handle: string;
  /** The block the address came from. */
  cidr: string;
  ip: string;
  /** The host end's name (for readers; the DEL deletes eth0 in the sandbox). */
  veth: string;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
const SANDBOX_ID = /^[0-9a-f]{64}$/;
const VETH = /^cali[0-9a-f]{11}$/;

function check(what: string, value: string, re: RegExp): string {
  if (!re.test(value)) throw new LabError(`calico stand-in: refusing ${what} ${JSON.stringify(value)}`);
  return value;
}

// ---------------------------------------------------------------------------------------
// The network, in the node. Each script takes its words as positional arguments, checked
// before they get there; nothing is pasted into the script's text.

/**
 * The sandbox's netns with lo up; with a veth, the pair and routes as Calico's plugin makes
 * them. $1 netns name, $2 host end, $3 address, $4 "veth" or "none".
 */
const NETWORK_ADD = `set -e
ip netns add "$1"
ip -n "$1" link set lo up
[ "$4" = veth ] || exit 0
ip link add "$2" address ee:ee:ee:ee:ee:ee type veth peer name eth0 netns "$1"
ip -n "$1" addr add "$3/32" dev eth0
ip -n "$1" link set eth0 up
ip -n "$1" route add 169.254.1.1 dev eth0 scope link
ip -n "$1" route add default via 169.254.1.1 dev eth0
echo 1 > "/proc/sys/net/ipv4/conf/$2/proxy_arp"
echo 0 > "/proc/sys/net/ipv4/neigh/$2/proxy_delay"
echo 1 > "/proc/sys/net/ipv4/conf/$2/forwarding"
ip link set "$2" up
ip route add "$3/32" dev "$2" scope link
`;

/** DEL: eth0 inside the sandbox (its host end and that end's route go with it), then the netns. $1 netns name. */
const NETWORK_DEL = `set -e
[ -e "/run/netns/$1" ] || exit 0
if ip -n "$1" link show eth0 >/dev/null 2>&1; then ip -n "$1" link del eth0; fi
ip netns delete "$1"
`;

/** Makes a sandbox's network in the node (see NETWORK_ADD); `veth` false: a netns with lo only. */
export async function networkAdd(pid: number, s: { id: string; ip: string; veth?: string }): Promise<void> {
  const ns = netnsName(check('sandbox id', s.id, SANDBOX_ID));
  const args = s.veth ? [ns, check('veth', s.veth, VETH), check('address', s.ip, IPV4), 'veth'] : [ns, '-', '-', 'none'];
  const r = await nodeExec(pid, ['sh', '-c', NETWORK_ADD, 'kmlab-calico-add', ...args]);
  if (r.code !== 0) throw new LabError(`calico stand-in: the network of sandbox ${s.id.slice(0, 13)}: ${(r.stderr || r.stdout).trim()}`);
}

/** Undoes networkAdd; nothing to do if the netns is gone. */
export async function networkDel(pid: number, id: string): Promise<void> {
  const r = await nodeExec(pid, ['sh', '-c', NETWORK_DEL, 'kmlab-calico-del', netnsName(check('sandbox id', id, SANDBOX_ID))]);
  if (r.code !== 0) throw new LabError(`calico stand-in: deleting the network of sandbox ${id.slice(0, 13)}: ${(r.stderr || r.stdout).trim()}`);
}

// ---------------------------------------------------------------------------------------
// IPAM through the API (calico-ipam in KDD mode).

interface Attribute {
  handle_id?: string;
  secondary?: Record<string, string>;
}

export interface IpamBlock {
  metadata: { name: string; resourceVersion?: string };
  spec: { cidr: string; affinity?: string; allocations: Array<number | null>; unallocated: number[]; attributes: Attribute[] } & Record<string, unknown>;
}

const GROUP = '/apis/crd.projectcalico.org/v1';
const blockNameOf = (cidr: string) => cidr.replace(/[./]/g, '-');

async function api(dir: string, method: string, path: string, data?: unknown): Promise<{ status: number; body: string }> {
  const info = controlPlaneInfo(dir);
  if (!info) throw new LabError('calico stand-in: the lab has no control plane (Calico keeps its IPAM in the API)');
  return adminRequest(dir, Number(new URL(info.server).port), method, path, data === undefined ? undefined : { contentType: 'application/json', data });
}

function fail(what: string, r: { status: number; body: string }): never {
  throw new LabError(`calico stand-in: ${what}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
}

/** Go's time.Time.String() of a UTC time: "2026-11-26 05:20:01.123 +0000 UTC" (trailing zeros of the fraction dropped). */
export function goUtcString(ms: number): string {
  const iso = new Date(ms).toISOString(); // 2026-11-26T05:20:01.123Z
  const frac = iso.slice(20, 23).replace(/0+$/, '');
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}${frac ? `.${frac}` : ''} +0000 UTC`;
}

/**
 * The block after assigning its first unallocated ordinal to `handle` (pure): the ordinal and
 * the new spec. Throws when the block is full.
 */
export function assignInBlock(block: IpamBlock['spec'], handle: string, secondary: Record<string, string>): { ordinal: number; spec: IpamBlock['spec'] } {
  const [ordinal, ...rest] = block.unallocated;
  if (ordinal === undefined) throw new LabError(`calico stand-in: block ${block.cidr} has no free address (the lab claims no new block)`);
  const attributes = [...block.attributes, { handle_id: handle, secondary }];
  const allocations = [...block.allocations];
  allocations[ordinal] = attributes.length - 1;
  return { ordinal, spec: { ...block, allocations, unallocated: rest, attributes } };
}

/**
 * The block after releasing every ordinal held by `handle` (pure): released ordinals go to
 * the end of `unallocated`, attributes nothing refers to any more are dropped and the
 * allocations renumbered. `released` is empty when the handle holds nothing here.
 */
export function releaseInBlock(block: IpamBlock['spec'], handle: string): { released: number[]; spec: IpamBlock['spec'] } {
  const allocations = [...block.allocations];
  const released: number[] = [];
  allocations.forEach((a, ord) => {
    if (a !== null && block.attributes[a]?.handle_id === handle) {
      allocations[ord] = null;
      released.push(ord);
    }
  });
  if (!released.length) return { released, spec: block };
  const used = new Set(allocations.filter((a): a is number => a !== null));
  const renumber = new Map<number, number>();
  const attributes: Attribute[] = [];
  block.attributes.forEach((attr, k) => {
    if (!used.has(k)) return;
    renumber.set(k, attributes.length);
    attributes.push(attr);
  });
  return { released, spec: { ...block, allocations: allocations.map((a) => (a === null ? null : renumber.get(a)!)), unallocated: [...block.unallocated, ...released], attributes } };
}

/** Reads a block, changes it with `change`, writes it with its resourceVersion; on 409 again from the read. */
async function casBlock<T>(dir: string, name: string, change: (b: IpamBlock) => { result: T; spec?: IpamBlock['spec'] }): Promise<T | undefined> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const got = await api(dir, 'GET', `${GROUP}/ipamblocks/${name}`);
    if (got.status === 404) return undefined;
    if (got.status !== 200) fail(`reading IPAMBlock ${name}`, got);
    const block = JSON.parse(got.body) as IpamBlock & { apiVersion: string; kind: string };
    const { result, spec } = change(block);
    if (!spec) return result;
    const put = await api(dir, 'PUT', `${GROUP}/ipamblocks/${name}`, { ...block, spec });
    if (put.status === 200) return result;
    if (put.status !== 409) fail(`writing IPAMBlock ${name}`, put);
  }
  throw new LabError(`calico stand-in: IPAMBlock ${name} kept changing under 50 writes in a row`);
}

/** The node's affine block (spec.affinity host:<node>). */
async function affineBlock(dir: string, node: string): Promise<IpamBlock> {
  const r = await api(dir, 'GET', `${GROUP}/ipamblocks`);
  if (r.status !== 200) fail('listing IPAMBlocks', r);
  const block = (JSON.parse(r.body) as { items: IpamBlock[] }).items.find((b) => b.spec.affinity === `host:${node}`);
  if (!block) throw new LabError(`calico stand-in: no IPAMBlock is affine to ${node} (the lab claims no new block)`);
  return block;
}

/** calico-ipam's ADD: the handle, then an address from the node's affine block. */
export async function ipamAssign(dir: string, node: string, pod: PodRef, sandboxId: string): Promise<{ ip: string; cidr: string; handle: string }> {
  const handle = calicoHandleId(check('sandbox id', sandboxId, SANDBOX_ID));
  const block = await affineBlock(dir, node);
  const cidr = block.spec.cidr;
  const h = await api(dir, 'POST', `${GROUP}/ipamhandles`, { apiVersion: 'crd.projectcalico.org/v1', kind: 'IPAMHandle', metadata: { name: handle.toLowerCase() }, spec: { handleID: handle, block: { [cidr]: 1 } } });
  if (h.status !== 201) fail(`creating IPAMHandle ${handle}`, h);
  try {
    const secondary = { namespace: pod.namespace, node, pod: pod.name, timestamp: goUtcString(Date.now()) };
    const ordinal = await casBlock(dir, block.metadata.name, (b) => {
      const { ordinal: ord, spec } = assignInBlock(b.spec, handle, secondary);
      return { result: ord, spec };
    });
    if (ordinal === undefined) throw new LabError(`calico stand-in: IPAMBlock ${block.metadata.name} went away`);
    const [a, b, c, d] = cidr.split('/')[0].split('.').map(Number);
    const base = ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
    const n = base + ordinal;
    return { ip: `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`, cidr, handle };
  } catch (err) {
    await api(dir, 'DELETE', `${GROUP}/ipamhandles/${handle.toLowerCase()}`).catch(() => undefined);
    throw err;
  }
}

/** calico-ipam's DEL (ReleaseByHandle): the handle's addresses in each of its blocks (and `cidr`), then the handle. */
export async function ipamRelease(dir: string, handle: string, cidr?: string): Promise<number> {
  const name = handle.toLowerCase();
  const h = await api(dir, 'GET', `${GROUP}/ipamhandles/${name}`);
  if (h.status !== 200 && h.status !== 404) fail(`reading IPAMHandle ${handle}`, h);
  const blocks = new Set<string>(h.status === 200 ? Object.keys((JSON.parse(h.body) as { spec?: { block?: Record<string, number> } }).spec?.block ?? {}) : []);
  if (cidr) blocks.add(cidr);
  let released = 0;
  for (const c of blocks) {
    released += (await casBlock(dir, blockNameOf(c), (b) => {
      const r = releaseInBlock(b.spec, handle);
      return { result: r.released.length, spec: r.released.length ? r.spec : undefined };
    })) ?? 0;
  }
  if (h.status === 200) {
    const uid = (JSON.parse(h.body) as { metadata: { uid: string } }).metadata.uid;
    const del = await api(dir, 'DELETE', `${GROUP}/ipamhandles/${name}`, { kind: 'DeleteOptions', apiVersion: 'v1', preconditions: { uid } });
    if (del.status !== 200 && del.status !== 404 && del.status !== 409) fail(`deleting IPAMHandle ${handle}`, del);
  }
  return released;
}

// ---------------------------------------------------------------------------------------
// Sandboxes: what the runtime and the plugin do together.

export interface CalicoPod extends PodRef {
  uid: string;
  /** The pod's first container's name, for the runtime's container line. */
  container?: string;
}

/** The runtime's lines for a sandbox made here (a pod line and its container's). */
export function sandboxLines(r: SandboxRecord, container = 'app'): string {
  const cid = randomBytes(32).toString('hex');
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(container)) throw new LabError(`calico stand-in: refusing container name ${JSON.stringify(container)}`);
  return `${recordLine(r)}\ncontainer ${cid} ${r.id} ${container} ${r.pod.name} CONTAINER_RUNNING\n`;
}

/**
 * A new sandbox for `pod` on `node`, as containerd with Calico's plugin makes it: IPAM, the
 * network, the saved data, then the runtime's record. On any failure what was made goes again.
 */
export async function calicoAdd(dir: string, node: string, pod: CalicoPod): Promise<SandboxRecord> {
  const pid = holderPid(dir, node);
  const id = randomBytes(32).toString('hex');
  const veth = calicoVethName(pod.namespace, pod.name);
  const { ip, cidr, handle } = await ipamAssign(dir, node, pod, id);
  const record: SandboxRecord = { id, pod: { namespace: pod.namespace, name: pod.name }, netns: `/var/run/netns/${netnsName(id)}`, state: 'SANDBOX_READY', uid: pod.uid, attempt: 0, createdAtMs: Date.now(), ip };
  try {
    await networkAdd(pid, { id, ip, veth });
    const data: CalicoSandboxData = { handle, cidr, ip, veth };
    await nodeWrite(pid, `${CALICO_DATA}/${id}`, `${JSON.stringify(data)}\n`);
    await withRecordLock(pid, () => nodeWrite(pid, CRI_DB, sandboxLines(record, pod.container), true));
    return record;
  } catch (err) {
    await calicoDelete(dir, node, id, { handle, cidr }).catch(() => undefined);
    throw err;
  }
}

/**
 * DEL of a sandbox made here (or at `up`): its address released, its network and netns
 * gone, its saved data and its record dropped. Idempotent. `known` is used when the saved
 * data is missing (a failed ADD's cleanup).
 */
export async function calicoDelete(dir: string, node: string, id: string, known?: { handle: string; cidr: string }): Promise<void> {
  check('sandbox id', id, SANDBOX_ID);
  const pid = holderPid(dir, node);
  const text = await nodeRead(pid, `${CALICO_DATA}/${id}`);
  const data = text ? (JSON.parse(text) as CalicoSandboxData) : known;
  if (data) await ipamRelease(dir, data.handle, data.cidr);
  await networkDel(pid, id);
  await withRecordLock(pid, () => rewriteRecords(pid, id, 'forget'));
  const rm = await nodeExec(pid, ['rm', '-f', '--', `${CALICO_DATA}/${id}`]);
  if (rm.code !== 0) throw new LabError(`calico stand-in: removing ${CALICO_DATA}/${id}: ${rm.stderr.trim()}`);
}

/** The ids of the sandboxes made here on the node (those with saved data). */
export async function calicoSandboxIds(pid: number): Promise<Set<string>> {
  return new Set((await nodeList(pid, CALICO_DATA)).filter((f) => SANDBOX_ID.test(f)));
}

/** The node's records of sandboxes made here, with their saved data's presence checked. */
export async function calicoRecords(dir: string, node: string): Promise<SandboxRecord[]> {
  const pid = holderPid(dir, node);
  const ids = await calicoSandboxIds(pid);
  return (await recordsOf(pid)).filter((r) => ids.has(r.id));
}

/** Whether the node's netns of a sandbox exists. */
export async function sandboxNetnsExists(dir: string, node: string, id: string): Promise<boolean> {
  return nodeExists(holderPid(dir, node), `/run/netns/${netnsName(check('sandbox id', id, SANDBOX_ID))}`);
}

/** A record made at `up` (no uid: the pod did not exist yet) given to the pod the kubelet found for it. */
export async function adoptSandbox(dir: string, node: string, id: string, uid: string): Promise<void> {
  const pid = holderPid(dir, node);
  await withRecordLock(pid, () => rewriteRecords(pid, id, (r) => (r.uid ? r : { ...r, uid })));
}

// ---------------------------------------------------------------------------------------
// seed 004 at `up`.

export interface SeedSandbox {
  pod: string;
  kind: 'withVeth' | 'vethOnly' | 'withoutVeth';
  /** The sandbox id: sandboxId(node, pod) for pods the runtime has (manifests.ts names their IPAM handles after it); random for a leaked netns. */
  id: string;
  ip: string;
  data: CalicoSandboxData;
}

/** What seed 004 leaves on a node (pure): per pod, its sandbox id, address and saved data. */
export function seedSandboxes(node: { name: string; index: number }, namespace = 'default'): SeedSandbox[] {
  return calicoSeedAddresses(node).map(({ pod, kind, ip }) => {
    const id = kind === 'vethOnly' ? randomBytes(32).toString('hex') : sandboxId(node.name, pod);
    return { pod, kind, id, ip, data: { handle: calicoHandleId(sandboxId(node.name, pod)), cidr: calicoBlockCidr(node.index), ip, veth: calicoVethName(namespace, pod) } };
  });
}

/**
 * seed 004 in the node's kernel, at `up` (the records and saved data are already in its
 * /var/lib): a live Calico-style sandbox for each pod with a veth; for each pod that is gone,
 * its veth with the pod end in a netns nothing records (leaked: how an orphan veth outlives
 * its pod on a real node); for each pod without a veth, its sandbox's netns with lo only.
 */
export async function seedOrphanCalico(pid: number, seeds: readonly SeedSandbox[]): Promise<void> {
  for (const s of seeds) await networkAdd(pid, { id: s.id, ip: s.ip, ...(s.kind === 'withoutVeth' ? {} : { veth: s.data.veth }) });
}
