/**
 * Real CNI on lab nodes: the containernetworking plugins (bridge, host-local, loopback
 * v1.10.0 from .tools/cni/bin) attach and detach pod sandboxes made inside the nodes, through
 * each node's own /etc/cni/net.d config and /run/flannel/subnet.env. Every failure asserted
 * here is the plugin's own message, read from its error result.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { TOOLS_BIN, REPO_ROOT } from '../../worker/paths';
import { controlPlaneInfo } from '../lab/control-plane';
import { CniPluginError, netnsName, podAdd, podDel, podForget, type PodAddResult, sandboxes } from '../lab/cni';
import { down, type LabState, staleLeasePrefix, up } from '../lab/lab';
import { hostSnapshot } from '../helpers/host';
import { labSsh } from '../helpers/lab';
import { tempDir } from '../helpers/harness';

const dir = join(tempDir('cni'), 'lab');
let state: LabState;
let hostBefore: ReturnType<typeof hostSnapshot>;
/** Host paths a CNI plugin run on the host would create. */
const HOST_CNI_PATHS = ['/var/lib/cni', '/run/netns', '/var/lib/kmlab', '/run/flannel'];
let hostPathsBefore: boolean[];
/** The host's iptables rules, without counters and comments (bridge's ipMasq would write rules). */
const hostRules = () => spawnSync('iptables-save', { encoding: 'utf8' }).stdout.split('\n').filter((l) => !l.startsWith('#')).map((l) => l.replace(/\[\d+:\d+\]/, '')).join('\n');
let rulesBefore: string;

beforeAll(async () => {
  hostBefore = hostSnapshot();
  hostPathsBefore = HOST_CNI_PATHS.map((p) => existsSync(p));
  rulesBefore = hostRules();
  state = await up({ dir, nodes: 3, controlPlane: true, rebootDowntimeMs: 300 });
}, 180_000);

afterAll(async () => {
  await down(dir);
  expect(hostSnapshot()).toEqual(hostBefore);
  expect(HOST_CNI_PATHS.map((p) => existsSync(p))).toEqual(hostPathsBefore);
  expect(hostRules()).toBe(rulesBefore);
});

const node = (name: string) => state.nodes.find((n) => n.name === name)!;
const ssh = (name: string, cmd: string) => labSsh(dir, node(name).port, cmd);

/** The Node's podCIDR as the lab's API server has it. */
function podCidr(name: string): string {
  const r = spawnSync(join(TOOLS_BIN, 'kubectl'), ['--kubeconfig', controlPlaneInfo(dir)!.adminKubeconfig, 'get', 'node', name, '-o', 'jsonpath={.spec.podCIDR}'], { encoding: 'utf8' });
  expect(r.stderr).toBe('');
  return r.stdout.trim();
}

const ipToInt = (ip: string) => ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
function inCidr(ip: string, cidr: string): boolean {
  const [net, bits] = cidr.split('/');
  const size = 2 ** (32 - Number(bits));
  return Math.floor(ipToInt(ip) / size) === Math.floor(ipToInt(net) / size);
}

/** host-local's reservations for the flannel network on a node: address -> file content. */
function reservations(name: string): Map<string, string> {
  const out = ssh(name, 'cd /var/lib/cni/networks/cbr0 2>/dev/null && for f in 10.*; do [ -e "$f" ] && printf "%s %s\\n" "$f" "$(od -An -c "$f" | tr -d " \\n")"; done; true');
  return new Map(out.trim().split('\n').filter(Boolean).map((l) => l.split(' ') as [string, string]));
}

/** The error a failed ADD threw: must be a plugin's own error result. */
async function addFails(name: string, pod: string): Promise<CniPluginError> {
  const err = await podAdd(dir, name, { namespace: 'default', name: pod }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CniPluginError);
  return err as CniPluginError;
}

describe('a healthy flannel node', () => {
  let web: PodAddResult;

  test("ADD: an address from the node's podCIDR, cni0 made by bridge with the lease's gateway, a veth pair into the pod's netns", async () => {
    // Before its first pod a flannel node has no cni0: flanneld makes flannel.1, the bridge plugin makes cni0.
    ssh('node2', 'ip link del cni0');
    const cidr = podCidr('node2');
    expect(cidr).toBe('10.244.1.0/24');
    web = await podAdd(dir, 'node2', { namespace: 'default', name: 'web' });
    const [ip, prefix] = web.address.split('/');
    expect(inCidr(ip, cidr)).toBe(true);
    expect(prefix).toBe(cidr.split('/')[1]);
    expect(inCidr(web.gateway!, cidr)).toBe(true);
    expect(web.skipped).toEqual([expect.stringMatching(/^portmap /)]);

    // cni0's address is bridge's (isGateway): the gateway host-local gave the lease.
    const cni0 = JSON.parse(ssh('node2', 'ip -j addr show cni0'))[0];
    expect(cni0.addr_info.filter((a: { family: string }) => a.family === 'inet').map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`)).toEqual([`${web.gateway}/${prefix}`]);
    // host-local's file: "<container id>\r\n<ifname>" in the node's /var/lib/cni/networks/cbr0.
    expect(reservations('node2').get(ip)).toBe(`${web.id}\\r\\neth0`);
    // The veth pair: its host end on cni0 in the node, eth0 with the address in the sandbox.
    const links = JSON.parse(ssh('node2', 'ip -j link show master cni0')) as Array<{ ifname: string }>;
    expect(links).toHaveLength(1);
    expect(links[0].ifname).toMatch(/^veth[0-9a-f]{8}$/);
    const eth0 = JSON.parse(ssh('node2', `ip netns exec ${netnsName(web.id)} ip -j addr show eth0`))[0];
    expect(eth0.addr_info.find((a: { family: string }) => a.family === 'inet')).toMatchObject({ local: ip, prefixlen: Number(prefix) });
    expect(ssh('node2', `ip netns exec ${netnsName(web.id)} ip -j route show default`)).toContain(`"gateway":"${web.gateway}"`);
    expect(ssh('node2', 'crictl pods -q').trim().split('\n')).toContain(web.id);
    // Nothing of it is on the host.
    expect(hostSnapshot()).toEqual(hostBefore);
  });

  test('a second pod gets the next address on the same cni0', async () => {
    const db = await podAdd(dir, 'node2', { namespace: 'default', name: 'db' });
    expect(db.address).not.toBe(web.address);
    expect(inCidr(db.address.split('/')[0], podCidr('node2'))).toBe(true);
    expect(JSON.parse(ssh('node2', 'ip -j link show master cni0'))).toHaveLength(2);
    await podDel(dir, 'node2', { namespace: 'default', name: 'db' });
  });

  test("DEL: host-local releases the address (its file is gone), the veth pair and the netns go", async () => {
    const ip = web.address.split('/')[0];
    await podDel(dir, 'node2', { namespace: 'default', name: 'web' });
    expect(reservations('node2').has(ip)).toBe(false);
    expect(JSON.parse(ssh('node2', 'ip -j link show master cni0'))).toEqual([]);
    expect(ssh('node2', 'ls /run/netns').trim()).toBe('');
    expect(ssh('node2', 'crictl pods -q')).not.toContain(web.id);
    expect(await sandboxes(dir, 'node2')).toEqual([]);
  });
});

test("cni0 holding an old lease, as kubeadm reset leaves it: the ADD fails with bridge's own message, and nothing stays reserved", async () => {
  const gateway = `${podCidr('node3').split('/')[0].replace(/\.0$/, '.1')}`;
  ssh('node3', `ip addr flush dev cni0 && ip addr add ${staleLeasePrefix(3)}.1/24 dev cni0`);
  const err = await addFails('node3', 'web');
  expect(err.plugin).toBe('bridge');
  expect(err.msg).toContain('already has an IP address different from');
  expect(err.msg).toBe(`failed to set bridge addr: "cni0" already has an IP address different from ${gateway}/24`);
  // The runtime's cleanup after a failed ADD: host-local's reservation released, netns gone.
  expect(reservations('node3').size).toBe(0);
  expect(ssh('node3', 'ls /run/netns').trim()).toBe('');
  expect(await sandboxes(dir, 'node3')).toEqual([]);
});

test("npm run lab -- pod add|del: the address it got, or the plugin's error with exit 1; bad input exit 2", () => {
  const lab = (...args: string[]) => spawnSync(process.execPath, [join(REPO_ROOT, 'dist', 'test', 'lab', 'main.js'), 'pod', ...args], { encoding: 'utf8', env: { ...process.env, KUBEMEND_LAB_DIR: dir } });
  const ok = lab('add', 'node1', 'kube-system/coredns-a');
  expect(ok.stderr).toBe('');
  expect(ok.status).toBe(0);
  expect(ok.stdout).toMatch(/^kube-system\/coredns-a on node1: 10\.244\.0\.\d+\/24 via 10\.244\.0\.1 /);
  const del = lab('del', 'node1', 'kube-system/coredns-a');
  expect(del.status).toBe(0);
  expect(del.stdout).toMatch(/^kube-system\/coredns-a on node1: deleted/);
  const stale = lab('add', 'node3', 'default/web');
  expect(stale.status).toBe(1);
  expect(stale.stderr).toContain('"cni0" already has an IP address different from 10.244.2.1/24');
  for (const bad of [['add', 'node1', 'no-slash'], ['add', 'node1', 'default/x;rm -rf /'], ['add', 'node9', 'default/web'], ['del', 'node1', 'default/never-added'], ['attach', 'node1', 'default/web']]) {
    const r = lab(...bad);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^lab: /);
  }
  expect(reservations('node1').size).toBe(0);
});

test("sandboxes removed without a CNI DEL (as a runtime restart loses them) leak their addresses until host-local reports 'no IP addresses available in range set'", async () => {
  let added = 0;
  let failure: unknown;
  let k = 0;
  const worker = async () => {
    while (failure === undefined) {
      const pod = { namespace: 'default', name: `leak-${k++}` };
      try {
        await podAdd(dir, 'node1', pod);
      } catch (e) {
        failure ??= e;
        return;
      }
      added++;
      await podForget(dir, 'node1', pod); // netns and runtime record gone, no DEL
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  expect(failure).toBeInstanceOf(CniPluginError);
  const err = failure as CniPluginError;
  expect(err.plugin).toBe('bridge'); // host-local's error, passed on by bridge, which called it
  expect(err.msg).toContain('no IP addresses available in range set');
  expect(err.msg).toBe('failed to allocate for range 0: no IP addresses available in range set: 10.244.0.1-10.244.0.254');
  // .1 is the gateway: 253 addresses, every one held by a sandbox the runtime no longer has.
  expect(added).toBe(253);
  const held = reservations('node1');
  expect(held.size).toBe(253);
  const live = ssh('node1', 'crictl pods -q').trim();
  for (const owner of held.values()) expect(live).not.toContain(owner.slice(0, 64));
  // The next ADD fails the same way: the range stays full.
  expect((await addFails('node1', 'after')).msg).toContain('no IP addresses available in range set');
}, 300_000);

test("stale-cni (seed 003): the real plugins on the scenario's node fail as the seed says, step by step, until the fix makes it usable", async () => {
  const staleDir = join(tempDir('cni-stale'), 'lab');
  const stale = await up({ dir: staleDir, nodes: 1, scenarios: ['stale-cni'], rebootDowntimeMs: 300 });
  try {
    const sh = (cmd: string) => labSsh(staleDir, stale.nodes[0].port, cmd);
    const add = (name: string) => podAdd(staleDir, 'node1', { namespace: 'default', name });
    const failure = (name: string) => add(name).then(() => undefined, (e: unknown) => e as Error);
    // flanneld is not running: no subnet.env, so no delegation.
    expect((await failure('a'))?.message).toMatch(/\/run\/flannel\/subnet\.env is missing/);
    // flanneld back with the node's lease: host-local finds the range full of the leaked files.
    sh('printf "FLANNEL_NETWORK=10.244.0.0/16\\nFLANNEL_SUBNET=10.244.0.1/24\\nFLANNEL_MTU=1450\\nFLANNEL_IPMASQ=true\\n" > /run/flannel/subnet.env');
    const full = await failure('b');
    expect(full).toBeInstanceOf(CniPluginError);
    expect((full as CniPluginError).msg).toBe('failed to allocate for range 0: no IP addresses available in range set: 10.244.0.1-10.244.0.254');
    // The leaked reservations removed (those of no live sandbox): now cni0's old lease is what fails.
    sh('live=$(crictl pods -q); cd /var/lib/cni/networks/cbr0 && for f in 10.*; do id=$(head -n1 "$f" | tr -d "\\r"); echo "$live" | grep -qx "$id" || rm -f "$f"; done');
    const old = await failure('c');
    expect(old).toBeInstanceOf(CniPluginError);
    expect((old as CniPluginError).msg).toBe('failed to set bridge addr: "cni0" already has an IP address different from 10.244.0.1/24');
    // cni0 deleted, as seed 003's fix does: bridge makes it again with the right gateway, and the pod gets an address.
    sh('ip link del cni0');
    const ok = await add('d');
    expect(ok.address).toMatch(/^10\.244\.0\.\d+\/24$/);
    expect(JSON.parse(sh('ip -j addr show cni0'))[0].addr_info.find((a: { family: string }) => a.family === 'inet')).toMatchObject({ local: '10.244.0.1', prefixlen: 24 });
  } finally {
    await down(staleDir);
  }
});
