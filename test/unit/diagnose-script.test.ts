import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DIAGNOSE_SCRIPT, DIAGNOSE_SECTIONS, diagnoseArgv, diagnoseFacts, dumpedFiles, parseCniConfig, parseDiagnoseOutput, parseIfupdown, parseNetplan, parseNmKeyfile } from '../../lib/diagnose-script';
import { commandLine } from '../../lib/shell';
import { capture, factsOf } from '../helpers/diagnose-fixtures';

const M = '0123456789abcdef0123456789abcdef';

describe('the diagnose script through a real sh on this machine (read-only)', () => {
  const stdout = execFileSync('/bin/sh', ['-c', commandLine(diagnoseArgv(M))], { encoding: 'utf8' });
  const sections = parseDiagnoseOutput(stdout, M);

  test('every section ends, with its exit status', () => {
    expect(Object.keys(sections).sort()).toEqual(Object.keys(DIAGNOSE_SECTIONS).sort());
    expect(sections.now?.exitCode).toBe(0);
    expect(Math.abs(Number(sections.now!.text.trim()) - Date.now() / 1000)).toBeLessThan(600);
  });

  test('a host without CNI, kubelet or crictl gives empty facts, not errors, for files that may be absent', () => {
    const f = diagnoseFacts('here', sections, M);
    expect(f.links.map((l) => l.ifname)).toContain('lo');
    expect(f.addrs.find((a) => a.ifname === 'lo')?.ipv4).toEqual(['127.0.0.1/8']);
    expect(f.subnetEnv).toBeNull();
    expect(f.hostLocal).toEqual([]);
    expect(f.kubeletServer).toBeNull();
    expect(f.apiserverAdvertise).toBeNull();
  });

  test('the marker is checked before it reaches a command line', () => {
    expect(() => diagnoseArgv('x; rm -rf /')).toThrow(/16-64 lowercase hex/);
  });
});

test('network config files are read without their secret lines, and only interface facts are kept', () => {
  const dir = mkdtempSync(join(tmpdir(), 'diag-netplan-'));
  writeFileSync(join(dir, '50-cloud-init.yaml'), 'network:\n  version: 2\n  wifis:\n    wlan0:\n      dhcp4: true\n      access-points:\n        "home":\n          password: "hunter2hunter2"\n  ethernets:\n    eth0:\n      dhcp4: false\n      addresses: [192.168.6.11/24]\n');
  const script = DIAGNOSE_SCRIPT.replace('dump /etc/netplan/*.yaml /etc/netplan/*.yml', `dump ${dir}/*.yaml`);
  const out = execFileSync('/bin/sh', ['-c', script, 'x', M], { encoding: 'utf8' });
  expect(out).not.toContain('hunter2');
  const f = diagnoseFacts('n', parseDiagnoseOutput(out, M), M);
  expect(f.netConfig).toEqual([{ file: `${dir}/50-cloud-init.yaml`, kind: 'netplan', interfaces: ['wlan0', 'eth0'], defaultRouteInterfaces: ['wlan0'], notAtBoot: {}, optional: [], wifi: ['wlan0'] }]);
  expect(JSON.stringify(f)).not.toContain('hunter2');
});

describe('config parsers', () => {
  test('netplan: dhcp4, gateway4 and a default route give an interface the default route', () => {
    const text = 'network:\n  ethernets:\n    enp0s3:\n      dhcp4: true\n    enp0s8:\n      addresses: [10.213.0.11/24]\n    enp0s9:\n      routes:\n        - to: default\n          via: 10.0.9.1\n  bonds:\n    bond0:\n      gateway4: 10.1.1.1\n';
    expect(parseNetplan('/etc/netplan/01.yaml', text)).toEqual({ file: '/etc/netplan/01.yaml', kind: 'netplan', interfaces: ['enp0s3', 'enp0s8', 'enp0s9', 'bond0'], defaultRouteInterfaces: ['enp0s3', 'enp0s9', 'bond0'], notAtBoot: {}, optional: [], wifi: [] });
  });
  test('ifupdown: dhcp or a gateway line', () => {
    const text = 'auto lo\niface lo inet loopback\n\nauto enp0s3\niface enp0s3 inet dhcp\n\niface enp0s8 inet static\n  address 10.213.0.11/24\n\niface eth2 inet static\n  address 10.9.9.9/24\n  gateway 10.9.9.1\n';
    expect(parseIfupdown('/etc/network/interfaces', text)).toMatchObject({ interfaces: ['enp0s3', 'enp0s8', 'eth2'], defaultRouteInterfaces: ['enp0s3', 'eth2'] });
  });
  test('NetworkManager keyfile: method auto without never-default', () => {
    expect(parseNmKeyfile('/x', '[connection]\nid=wired\ninterface-name=eno1\n[ipv4]\nmethod=auto\n')).toMatchObject({ interfaces: ['eno1'], defaultRouteInterfaces: ['eno1'] });
    expect(parseNmKeyfile('/x', '[connection]\ninterface-name=eno2\n[ipv4]\nmethod=auto\nnever-default=true\n')).toMatchObject({ interfaces: ['eno2'], defaultRouteInterfaces: [] });
  });
  test('CNI config: a conflist and a single-plugin conf; not JSON is kept as unknown', () => {
    expect(parseCniConfig('/a', '{"name":"cbr0","plugins":[{"type":"flannel"},{"type":"portmap"}]}')).toEqual({ file: '/a', network: 'cbr0', types: ['flannel', 'portmap'] });
    expect(parseCniConfig('/b', '{"name":"k8s-pod-network","type":"calico"}')).toEqual({ file: '/b', network: 'k8s-pod-network', types: ['calico'] });
    expect(parseCniConfig('/c', 'garbage')).toEqual({ file: '/c', network: null, types: [] });
  });
  test('dumped files keep their text, however many', () => {
    expect(dumpedFiles(`${M} file /a\nx\ny\n\n${M} file /b\n{}\n`, M)).toEqual([{ file: '/a', text: 'x\ny' }, { file: '/b', text: '{}' }]);
  });
});

describe('captured from lab nodes', () => {
  test('healthy: every section read, the lease on cni0 and flannel.1 matches subnet.env, no host-local files', () => {
    const f = factsOf('ssh-healthy');
    for (const n of f.nodes) expect(n.problems).toEqual([]);
    const n2 = f.nodes.find((n) => n.name === 'node2')!;
    expect(n2.subnetEnv?.FLANNEL_SUBNET).toBe('10.244.1.1/24');
    expect(n2.addrs.find((a) => a.ifname === 'cni0')?.ipv4).toEqual(['10.244.1.1/24']);
    expect(n2.addrs.find((a) => a.ifname === 'flannel.1')?.ipv4).toEqual(['10.244.1.0/32']);
    expect(n2.cniConfigs).toEqual([{ file: '/etc/cni/net.d/10-flannel.conflist', network: 'cbr0', types: ['flannel', 'portmap'] }]);
    expect(n2.kubeletServer).toBe('https://10.213.0.11:6443');
    expect(f.nodes[0].apiserverAdvertise).toBe('10.213.0.11');
    expect(n2.weaveCollisions).toEqual([]);
  });

  test('all five scenarios: host-local files with their container ids and times, live sandboxes, stale addresses', () => {
    const c = capture('ssh-all-five');
    expect(c.scenarios).toEqual(['cloned-machine-id', 'nat-advertise', 'no-default-route', 'stale-cni', 'orphan-calico']);
    const f = factsOf('ssh-all-five');
    const n2 = f.nodes.find((n) => n.name === 'node2')!;
    expect(n2.problems).toEqual([]);
    expect(n2.hostLocal).toHaveLength(253); // 10.244.1.2 to .254; last_reserved_ip.0 and lock are not reservations
    expect(n2.hostLocal.every((h) => /^[0-9a-f]{64}$/.test(h.containerId) && h.network === 'cbr0' && h.mtime !== null)).toBe(true);
    expect(n2.sandboxes).toHaveLength(7); // three app pods of stale-cni, four of orphan-calico
    expect(n2.subnetEnv).toBeNull();
    expect(n2.addrs.find((a) => a.ifname === 'cni0')?.ipv4).toEqual(['10.244.102.1/24']);
    expect(n2.kubeletServer).toBeNull(); // never joined
    expect(f.nodes[0].apiserverAdvertise).toBe('10.0.2.15');
    expect(f.nodes[0].defaultRoute).toBeNull();
    expect(n2.weaveCollisions).toHaveLength(2);
  });
});
