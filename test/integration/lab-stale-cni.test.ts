/**
 * stale-cni (seed 003) on lab nodes, as an operator sees it over ssh: cni0 with an address
 * outside the node's pod CIDR, flannel.1 left over, no /run/flannel/subnet.env, and a
 * host-local pool for cbr0 that is full, mostly of sandboxes that no longer exist.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { down, LIVE_PODS_PER_NODE, type LabState, podCidrPrefix, requestReboot, staleLeasePrefix, up } from '../lab/lab';
import { tempDir } from '../helpers/harness';
import { hostSnapshot } from '../helpers/host';
import { labSsh, labSshArgs } from '../helpers/lab';

const dir = join(tempDir('stalecni'), 'lab');
let state: LabState;

let hostBefore: ReturnType<typeof hostSnapshot>;

beforeAll(async () => {
  hostBefore = hostSnapshot();
  state = await up({ dir, nodes: 2, scenarios: ['stale-cni'], rebootDowntimeMs: 200 });
});
afterAll(async () => {
  await down(dir);
  expect(hostSnapshot()).toEqual(hostBefore); // the host after the scenario, its reboots, and down
});

const ssh = (port: number, cmd: string) => labSsh(dir, port, cmd);

test.each([1, 2])('node%i: cni0 and flannel.1 carry the old lease, outside the pod CIDR', (index) => {
  const n = state.nodes[index - 1];
  const cni0 = JSON.parse(ssh(n.port, 'ip -j addr show cni0'))[0];
  const v4 = cni0.addr_info.filter((a: { family: string }) => a.family === 'inet');
  expect(v4).toEqual([expect.objectContaining({ local: `${staleLeasePrefix(index)}.1`, prefixlen: 24 })]);
  expect(v4[0].local.startsWith(`${podCidrPrefix(index)}.`)).toBe(false);
  const flannel = JSON.parse(ssh(n.port, 'ip -d -j link show flannel.1'))[0];
  expect(flannel.linkinfo).toMatchObject({ info_kind: 'vxlan', info_data: expect.objectContaining({ id: 1, port: 8472, link: 'enp0s8' }) });
  expect(ssh(n.port, 'test -e /run/flannel/subnet.env && echo present || echo absent').trim()).toBe('absent');
});

test('the cbr0 pool is full: one host-local file per address, live sandboxes are the few crictl knows', () => {
  const n = state.nodes[1];
  const prefix = podCidrPrefix(2);
  const files = ssh(n.port, 'ls /var/lib/cni/networks/cbr0').trim().split('\n').sort();
  const ipFiles = files.filter((f) => f.startsWith(`${prefix}.`));
  expect(ipFiles).toHaveLength(253); // .2 to .254: "no IP addresses available in network: cbr0"
  expect(files.filter((f) => !ipFiles.includes(f))).toEqual(['last_reserved_ip.0', 'lock']);
  expect(ssh(n.port, 'cat /var/lib/cni/networks/cbr0/last_reserved_ip.0')).toBe(`${prefix}.254`);
  // host-local's format: "<container id>\r\n<ifname>", no trailing newline.
  const owners = ssh(n.port, 'cd /var/lib/cni/networks/cbr0 && for f in 10.*; do od -An -c "$f" | tr -d " \\n"; echo; done').trim().split('\n');
  for (const o of owners) expect(o).toMatch(/^[0-9a-f]{64}\\r\\neth0$/);
  const ids = owners.map((o) => o.slice(0, 64));
  const live = ssh(n.port, 'crictl pods -q').trim().split('\n');
  expect(live).toHaveLength(LIVE_PODS_PER_NODE);
  expect(ids.filter((id) => live.includes(id))).toHaveLength(LIVE_PODS_PER_NODE);
  expect(ssh(n.port, 'crictl ps -a')).toMatch(/^CONTAINER\s+IMAGE\s+CREATED\s+STATE\s+NAME\s+ATTEMPT\s+POD ID\s+POD\n(.*Running\s+app\s+0\s+[0-9a-f]{13}\s+app-node2-\d\n){3}$/);
});

test('kubeadm reset -f leaves exactly what seed 003 found behind: cni0, flannel.1, the cbr0 files, the CNI config, and (no CRI socket for kubeadm) the live sandboxes', () => {
  const n = state.nodes[0];
  const r = spawnSync('ssh', labSshArgs(dir, n.port, 'kubeadm reset -f'), { encoding: 'utf8' });
  expect(r.status).toBe(0);
  expect(r.stdout).toContain('[reset] Deleting files: [/etc/kubernetes/admin.conf /etc/kubernetes/super-admin.conf /etc/kubernetes/kubelet.conf /etc/kubernetes/bootstrap-kubelet.conf /etc/kubernetes/controller-manager.conf /etc/kubernetes/scheduler.conf]');
  // The real kubeadm says it leaves the CNI configuration, and does.
  expect(r.stdout).toContain('The reset process does not perform cleanup of CNI plugin configuration,\nnetwork filtering rules and kubeconfig files.');
  // It finds no containerd socket in a lab node, so it removes no containers: it warns and goes on.
  expect(r.stderr).toContain('[reset] Failed to remove containers: failed to create new CRI runtime service: validate service connection: validate CRI v1 runtime API for endpoint "unix:///var/run/containerd/containerd.sock"');
  expect(ssh(n.port, 'test -e /etc/kubernetes/kubelet.conf || echo gone').trim()).toBe('gone');
  expect(ssh(n.port, 'ls /etc/cni/net.d').trim()).toBe('10-flannel.conflist');
  const links = (JSON.parse(ssh(n.port, 'ip -j link')) as Array<{ ifname: string }>).map((l) => l.ifname);
  expect(links).toEqual(expect.arrayContaining(['cni0', 'flannel.1']));
  expect(ssh(n.port, 'ls /var/lib/cni/networks/cbr0 | wc -l').trim()).toBe('255');
  expect(ssh(n.port, 'crictl pods -q').trim().split('\n')).toHaveLength(LIVE_PODS_PER_NODE);
});

test('a reboot replaces the stale interfaces with the current lease, but the leaked IPAM files stay', async () => {
  await requestReboot(dir, 'node2');
  const n = state.nodes[1];
  const prefix = podCidrPrefix(2);
  expect(ssh(n.port, 'ip -j addr show cni0')).toContain(`"local":"${prefix}.1","prefixlen":24`);
  expect(ssh(n.port, 'ip -j addr show flannel.1')).toContain(`"local":"${prefix}.0","prefixlen":32`);
  expect(ssh(n.port, 'grep FLANNEL_SUBNET /run/flannel/subnet.env').trim()).toBe(`FLANNEL_SUBNET=${prefix}.1/24`);
  expect(ssh(n.port, 'ls /var/lib/cni/networks/cbr0 | wc -l').trim()).toBe('255');
});
