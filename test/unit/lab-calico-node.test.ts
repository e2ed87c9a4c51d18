/**
 * calico-node's startup and BIRD's readiness as the lab plays them (test/lab/calico-node.ts):
 * Calico v3.29's IP autodetection methods over a lab node's links, the conflict check, and
 * the readiness output.
 */
import { birdReadiness, calicoInterfaces, calicoLogText, calicoStartup, type CalicoStartupInput, canReachDestination, DEFAULT_INTERFACES_TO_EXCLUDE } from '../lab/calico-node';
import { replacedIps } from '../lab/flannel-kubelet';
import type { IpLink } from '../lab/kubelet';
import type { LabNode } from '../lab/lab';
import { calicoNodeDaemonSet, LAB_KUBELET_POD_LABEL, labCnis, labObjects, labRunsCalicoNode } from '../lab/manifests';

const link = (ifindex: number, ifname: string, ...addrs: Array<[string, number]>): IpLink => ({ ifindex, ifname, addr_info: addrs.map(([local, prefixlen]) => ({ family: 'inet', local, prefixlen, scope: 'global' })) });
/** node2 of a lab, `ip -j addr` order: enp0s8 (2) was made before enp0s3 (3). */
const node2: IpLink[] = [
  { ifindex: 1, ifname: 'lo', addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host' }] },
  link(2, 'enp0s8', ['10.213.0.12', 24]),
  link(3, 'enp0s3', ['10.0.2.15', 24]),
  link(4, 'weave'),
  link(5, 'flannel.1', ['10.244.1.0', 32]),
  link(6, 'cni0', ['10.244.1.1', 24]),
];
const base = (over: Partial<CalicoStartupInput> = {}): CalicoStartupInput => ({ nodeName: 'node2', env: { IP: 'autodetect' }, links: node2, internalIps: ['10.0.2.15'], others: [], ...over });
const messages = (r: { lines: Array<{ message: string }> }) => r.lines.map((l) => l.message);

describe('interfaces as Calico enumerates them', () => {
  test('highest index first (Calico walks the kernel list backwards), the default excludes applied', () => {
    const r = calicoInterfaces(node2, [], DEFAULT_INTERFACES_TO_EXCLUDE);
    expect(r.ok && r.value.map((i) => i.name)).toEqual(['weave', 'enp0s3', 'enp0s8']);
  });
  test('a bad regex is an error', () => {
    expect(calicoInterfaces(node2, ['(']).ok).toBe(false);
  });
});

describe('methods', () => {
  test('first-found (unset): enp0s3 comes first here, so 10.0.2.15/24', () => {
    const r = calicoStartup(base());
    expect(r).toMatchObject({ ok: true, address: '10.0.2.15/24' });
    expect(messages(r)).toContain('Using autodetected IPv4 address on interface enp0s3: 10.0.2.15/24');
  });

  test('first-found with the NAT link first in index order picks the host-only address', () => {
    const natFirst = node2.map((l) => (l.ifname === 'enp0s3' ? { ...l, ifindex: 2 } : l.ifname === 'enp0s8' ? { ...l, ifindex: 3 } : l));
    expect(calicoStartup(base({ links: natFirst, env: { IP: 'autodetect', IP_AUTODETECTION_METHOD: 'first-found' } })).address).toBe('10.213.0.12/24');
  });

  test('interface= regexes (comma separated)', () => {
    expect(calicoStartup(base({ env: { IP: 'autodetect', IP_AUTODETECTION_METHOD: 'interface=enp0s8' } })).address).toBe('10.213.0.12/24');
    expect(calicoStartup(base({ env: { IP: 'autodetect', IP_AUTODETECTION_METHOD: 'interface=eth1, enp0s8' } })).address).toBe('10.213.0.12/24');
  });

  test('interface= naming no interface, no address yet: Calico\'s messages and the container exits', () => {
    const r = calicoStartup(base({ env: { IP: 'autodetect', IP_AUTODETECTION_METHOD: 'interface=nope0' } }));
    expect(r.ok).toBe(false);
    expect(messages(r)).toEqual(expect.arrayContaining([
      'Unable to auto-detect an IPv4 address using interface regexes [nope0]: no valid host interfaces found',
      "Couldn't autodetect an IPv4 address. If auto-detecting, choose a different autodetection method. Otherwise provide an explicit address.",
      'Failed to configure IP addresses error=failed to configure IP addresses and subnets: failed to autodetect an IPv4 address',
      'Terminating',
    ]));
  });

  test('a failed detection with an address already on the Node keeps it, as Calico does', () => {
    const r = calicoStartup(base({ existing: '10.0.2.15/24', env: { IP: 'autodetect', IP_AUTODETECTION_METHOD: 'interface=nope0' } }));
    expect(r).toMatchObject({ ok: true, address: undefined });
    expect(messages(r)).toContain('Autodetection of IPv4 address failed, keeping existing value: 10.0.2.15/24');
  });

  test('skip-interface= adds to the default excludes', () => {
    const r = calicoStartup(base({ env: { IP: 'autodetect', IP_AUTODETECTION_METHOD: 'skip-interface=enp0s3' } }));
    expect(r.address).toBe('10.213.0.12/24');
    expect(messages(r)).toContain('Using autodetected IPv4 address on interface enp0s8: 10.213.0.12/24 while skipping matching interfaces');
  });

  test('cidr=', () => {
    expect(calicoStartup(base({ env: { IP: 'autodetect', IP_AUTODETECTION_METHOD: 'cidr=10.213.0.0/24' } })).address).toBe('10.213.0.12/24');
    const bad = calicoStartup(base({ env: { IP: 'autodetect', IP_AUTODETECTION_METHOD: 'cidr=10.213.0.0/33' } }));
    expect(bad.ok).toBe(false);
    expect(messages(bad)[1]).toBe('Invalid CIDR "10.213.0.0/33" for IP autodetection method: cidr=10.213.0.0/33');
    const none = calicoStartup(base({ env: { IP: 'autodetect', IP_AUTODETECTION_METHOD: 'cidr=172.16.0.0/12' } }));
    expect(messages(none)).toContain('Unable to auto-detect an IPv4 address using interface cidr [172.16.0.0/12]: no valid IPv4 addresses found on the host interfaces');
  });

  test('can-reach=: the source address of the route to it', () => {
    const method = 'can-reach=10.213.0.11';
    expect(canReachDestination(method)).toBe('10.213.0.11');
    const r = calicoStartup(base({ env: { IP: 'autodetect', IP_AUTODETECTION_METHOD: method }, reach: { src: '10.213.0.12' } }));
    expect(r.address).toBe('10.213.0.12/24');
    expect(messages(r)).toContain('Using autodetected IPv4 address 10.213.0.12/24, detected by connecting to 10.213.0.11');
    const unreachable = calicoStartup(base({ env: { IP: 'autodetect', IP_AUTODETECTION_METHOD: method }, reach: { error: 'dial udp4 [10.213.0.11]:80: connect: network is unreachable' } }));
    expect(unreachable.ok).toBe(false);
  });

  test('kubernetes-internal-ip: the Node\'s InternalIP with its interface\'s prefix', () => {
    expect(calicoStartup(base({ env: { IP: 'autodetect', IP_AUTODETECTION_METHOD: 'kubernetes-internal-ip' }, internalIps: ['10.213.0.12'] })).address).toBe('10.213.0.12/24');
    const off = calicoStartup(base({ env: { IP: 'autodetect', IP_AUTODETECTION_METHOD: 'kubernetes-internal-ip' }, internalIps: ['10.9.9.9'] }));
    expect(off.ok).toBe(false);
    expect(messages(off)).toContain('Unable to find matching host interface for IP 10.9.9.9');
  });

  test('an unknown method: Calico terminates at once', () => {
    const r = calicoStartup(base({ env: { IP: 'autodetect', IP_AUTODETECTION_METHOD: 'bogus' } }));
    expect(r.ok).toBe(false);
    expect(messages(r).slice(-2)).toEqual(['Invalid IP autodetection method: bogus', 'Terminating']);
  });
});

test('an address another Node already has: "IPv4 address conflict", the address cleared, the container exits', () => {
  const r = calicoStartup(base({ others: [{ name: 'node1', address: '10.0.2.15/24' }] }));
  expect(r).toMatchObject({ ok: false, address: null });
  expect(messages(r)).toEqual(expect.arrayContaining(["Calico node 'node1' is already using the IPv4 address 10.0.2.15.", 'Failed to configure IP addresses error=conflicting node detected: IPv4 address conflict']));
  // Unchanged from what the Node has: no conflict check (the first node keeps running).
  expect(calicoStartup(base({ existing: '10.0.2.15/24', others: [{ name: 'node1', address: '10.0.2.15/24' }] })).ok).toBe(true);
});

test("calico-node's log format", () => {
  expect(calicoLogText({ level: 'WARNING', file: 'utils/utils.go', message: 'Terminating' }, new Date(Date.UTC(2026, 10, 26, 9, 0, 0, 5)))).toBe('2026-11-26 09:00:00.005 [WARNING][1] utils/utils.go: Terminating');
});

describe("BIRD's readiness", () => {
  const reaches = (ok: string[]) => async (ip: string) => ok.includes(ip);
  test('every peer established: ready', async () => {
    const r = await birdReadiness(['10.213.0.12', '10.0.2.15'], [{ name: 'node1', address: '10.213.0.11/24', running: true }, { name: 'node3', address: '10.213.0.13/24', running: true }], reaches(['10.213.0.11', '10.213.0.13']));
    expect(r).toEqual({ ready: true, output: 'Number of node(s) with BGP peering established = 2' });
  });
  test("a peer on an address of our own (everyone's 10.0.2.15), one not running, one not answering: not ready, as calico-node prints it", async () => {
    const r = await birdReadiness(['10.213.0.12', '10.0.2.15'], [
      { name: 'node1', address: '10.0.2.15/24', running: true },
      { name: 'node3', address: '10.213.0.13/24', running: false },
      { name: 'node4', address: '10.213.0.14/24', running: true },
    ], reaches(['10.0.2.15', '10.213.0.13']));
    expect(r).toEqual({ ready: false, output: 'Number of node(s) with BGP peering established = 0\ncalico/node is not ready: BIRD is not ready: BGP not established with 10.0.2.15,10.213.0.13,10.213.0.14' });
  });
  test('no peers: ready', async () => {
    expect((await birdReadiness(['10.0.2.15'], [], reaches([]))).ready).toBe(true);
  });
});

describe('the lab objects under seed 001', () => {
  const labNode = (index: number): LabNode => ({ name: `node${index}`, index, role: index === 1 ? 'control-plane' : 'worker', address: `10.213.0.${10 + index}`, port: 2200 + index, machineId: 'm', bootMachineId: 'm', bootId: 'b', weaveMac: '02:00:00:00:00:00', boots: 1 });
  const nodes = [1, 2, 3].map(labNode);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  type Any = any;

  test('nat-node-ip: every node joined with InternalIP 10.0.2.15; Calico is the CNI and the lab runs calico-node', () => {
    const objs = labObjects({ nodes, scenarios: ['nat-node-ip'] }, [], []);
    expect(objs.nodes.map((n) => n.metadata?.name)).toEqual(['node1', 'node2', 'node3']);
    for (const n of objs.nodes as Any[]) expect(n.status.addresses[0]).toEqual({ type: 'InternalIP', address: '10.0.2.15' });
    expect(labCnis(['nat-node-ip'])).toEqual(['calico']);
    expect(labCnis(['nat-advertise'])).toEqual(['calico']);
    const ds = objs.workloads.find((o) => o.kind === 'DaemonSet' && o.metadata?.name === 'calico-node') as Any;
    expect(ds.spec.template.metadata.labels[LAB_KUBELET_POD_LABEL.key]).toBe(LAB_KUBELET_POD_LABEL.value);
  });

  test("orphan-calico keeps kwok's calico-node, also beside nat-advertise", () => {
    expect(labRunsCalicoNode(['nat-advertise'])).toBe(true);
    expect(labRunsCalicoNode(['nat-advertise', 'orphan-calico'])).toBe(false);
    expect(labRunsCalicoNode(['orphan-calico'])).toBe(false);
    const ds = labObjects({ nodes, scenarios: ['orphan-calico'] }, [], []).workloads.find((o) => o.kind === 'DaemonSet' && o.metadata?.name === 'calico-node') as Any;
    expect(ds.spec.template.metadata.labels[LAB_KUBELET_POD_LABEL.key]).toBeUndefined();
  });

  test("calico-node as calico.yaml has it: IP=autodetect, no IP_AUTODETECTION_METHOD (first-found), BIRD's probes, one node at a time", () => {
    const ds = calicoNodeDaemonSet() as Any;
    const c = ds.spec.template.spec.containers[0];
    const env = Object.fromEntries(c.env.map((e: Any) => [e.name, e.value ?? e.valueFrom]));
    expect(env).toMatchObject({ IP: 'autodetect', CALICO_NETWORKING_BACKEND: 'bird', CLUSTER_TYPE: 'k8s,bgp', CALICO_IPV4POOL_CIDR: '192.168.0.0/16', NODENAME: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    expect(env).not.toHaveProperty('IP_AUTODETECTION_METHOD');
    expect(c.image).toBe('docker.io/calico/node:v3.29.3');
    expect(c.readinessProbe.exec.command).toEqual(['/bin/calico-node', '-felix-ready', '-bird-ready']);
    expect(c.livenessProbe.exec.command).toEqual(['/bin/calico-node', '-felix-live', '-bird-live']);
    expect(ds.spec.updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
  });
});

test("a hostNetwork pod's IPs after its node changed address: the old entries are deleted in the patch (they merge by ip)", () => {
  const current = { podIPs: [{ ip: '10.0.2.15' }], hostIPs: [{ ip: '10.0.2.15' }] };
  expect(replacedIps(current, { podIPs: [{ ip: '10.213.0.11' }], hostIPs: [{ ip: '10.213.0.11' }] })).toEqual({
    podIPs: [{ ip: '10.213.0.11' }, { ip: '10.0.2.15', $patch: 'delete' }],
    hostIPs: [{ ip: '10.213.0.11' }, { ip: '10.0.2.15', $patch: 'delete' }],
  });
  expect(replacedIps(current, current)).toEqual({});
});
