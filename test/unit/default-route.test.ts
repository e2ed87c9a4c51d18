import { managerCommands, planDefaultRoute, probeSandboxConfig, problemsAfter, recurrence, uplinkOf } from '../../lib/default-route';
import { defaultRoute, linkStates, parsePingMs, parseProbeSandbox, pingArgv, probeSandboxArgv, toolCheckArgv } from '../../lib/default-route-scripts';
import { detectNoDefaultRoute } from '../../lib/detect/seed002-default-route';
import { parseIfupdown, parseNetplan, parseNmKeyfile } from '../../lib/diagnose-script';
import { commandLine } from '../../lib/shell';
import { factsOf } from '../helpers/diagnose-fixtures';

const NETPLAN = '/etc/netplan/50-cloud-init.yaml';

/** The lab's all-five capture (with its control plane), the netplan file as the lab now writes it. */
function broken() {
  const f = factsOf('cp-all-five');
  for (const n of f.nodes) n.netConfig = [parseNetplan(NETPLAN, 'network:\n  version: 2\n  ethernets:\n    enp0s3:\n      dhcp4: true\n    enp0s8:\n      addresses:\n        - 10.213.0.11/24\n')];
  return f;
}
const opts = { selected: ['node1', 'node2', 'node3'], excluded: [] as string[], controlPlane: ['node1'], routeTimeoutMs: 120_000, podTimeoutMs: 300_000 };

describe('uplinkOf: which manager owns the uplink', () => {
  test("the lab's node1: netplan, enp0s3 down", () => {
    const n1 = broken().nodes.find((n) => n.name === 'node1')!;
    expect(uplinkOf(n1)).toEqual({ manager: 'netplan', files: [NETPLAN], interfaces: ['enp0s3'], down: ['enp0s3'] });
  });

  test('a configuration that gives no interface the default route is refused: kubemend never invents a gateway', () => {
    const n1 = broken().nodes.find((n) => n.name === 'node1')!;
    n1.netConfig = [parseNetplan(NETPLAN, 'network:\n  ethernets:\n    enp0s3:\n      addresses: [10.0.2.15/24]\n')];
    expect(uplinkOf(n1)).toEqual({ refusal: expect.stringMatching(/^node1: no default route, and no network configuration on the node gives one \(read: \/etc\/netplan\/50-cloud-init.yaml\); kubemend never invents a gateway/) });
    n1.netConfig = [];
    expect(uplinkOf(n1)).toEqual({ refusal: expect.stringContaining('no netplan, ifupdown or NetworkManager files') });
  });

  test('two managers claiming the default route is ambiguous, and refused', () => {
    const n1 = broken().nodes.find((n) => n.name === 'node1')!;
    n1.netConfig.push(parseIfupdown('/etc/network/interfaces', 'auto enp0s3\niface enp0s3 inet dhcp\n'));
    expect(uplinkOf(n1)).toEqual({ refusal: expect.stringContaining('both give an interface the default route') });
  });

  test('a configured interface the node does not have is refused (re-applying cannot help)', () => {
    const n1 = broken().nodes.find((n) => n.name === 'node1')!;
    n1.netConfig = [parseNetplan(NETPLAN, 'network:\n  wifis:\n    wlan0:\n      dhcp4: true\n')];
    expect(uplinkOf(n1)).toEqual({ refusal: expect.stringContaining('the node has no such interface') });
  });
});

describe('managerCommands', () => {
  test('each manager its own command, as argv', () => {
    expect(managerCommands('netplan', ['enp0s3'])).toEqual([['netplan', 'apply']]);
    expect(managerCommands('ifupdown', ['eth0', 'eth1'])).toEqual([['ifup', 'eth0'], ['ifup', 'eth1']]);
    expect(managerCommands('networkmanager', ['wlan0'])).toEqual([['nmcli', 'device', 'connect', 'wlan0']]);
  });

  test('a hostile interface name never reaches a command line', () => {
    expect(() => managerCommands('ifupdown', ['eth0; reboot'])).toThrow(/not an interface name/);
    expect(() => managerCommands('networkmanager', ['$(id)'])).toThrow(/not an interface name/);
  });
});

describe('the configuration parsers: what makes the link stay down at boot', () => {
  test('netplan: wifis, optional, activation-mode', () => {
    const c = parseNetplan(NETPLAN, 'network:\n  wifis:\n    wlan0:\n      dhcp4: true\n      optional: true\n  ethernets:\n    eth0:\n      dhcp4: true\n      activation-mode: manual\n');
    expect(c).toMatchObject({ interfaces: ['wlan0', 'eth0'], defaultRouteInterfaces: ['wlan0', 'eth0'], wifi: ['wlan0'], optional: ['wlan0'], notAtBoot: { eth0: 'activation-mode: manual' } });
  });

  test('ifupdown: a stanza without auto or allow-hotplug does not come up at boot', () => {
    const c = parseIfupdown('/etc/network/interfaces', 'auto lo\niface lo inet loopback\nallow-hotplug eth1\niface eth1 inet static\n  address 10.0.0.2/24\niface eth0 inet dhcp\n');
    expect(c.defaultRouteInterfaces).toEqual(['eth0']);
    expect(c.notAtBoot).toEqual({ eth0: 'no "auto eth0" or "allow-hotplug eth0" line' });
  });

  test('NetworkManager: autoconnect=false and Wi-Fi', () => {
    const c = parseNmKeyfile('/etc/NetworkManager/system-connections/home.nmconnection', '[connection]\nid=home\ntype=wifi\ninterface-name=wlan0\nautoconnect=false\n[ipv4]\nmethod=auto\n');
    expect(c).toMatchObject({ defaultRouteInterfaces: ['wlan0'], notAtBoot: { wlan0: 'autoconnect=false' }, wifi: ['wlan0'] });
  });
});

describe('recurrence: why it will happen again', () => {
  test('the seed: a Wi-Fi uplink that did not associate at boot', () => {
    const n1 = broken().nodes.find((n) => n.name === 'node1')!;
    n1.addrs.push({ ifname: 'wlan0', operstate: 'DOWN', up: false, ipv4: [] });
    n1.netConfig = [parseNetplan('/etc/netplan/01-netcfg.yaml', 'network:\n  wifis:\n    wlan0:\n      dhcp4: true\n      access-points:\n        "home": {}\n')];
    const u = uplinkOf(n1);
    if ('refusal' in u) throw new Error(u.refusal);
    expect(recurrence(n1, u)).toEqual([expect.stringMatching(/^wlan0 is a Wi-Fi link \(\/etc\/netplan\/01-netcfg.yaml\): it carries the default route only once it associates/)]);
  });

  test('a configuration that brings it up at boot: the cause is elsewhere, and the next reboot will probably repeat it', () => {
    const n1 = broken().nodes.find((n) => n.name === 'node1')!;
    const u = uplinkOf(n1);
    if ('refusal' in u) throw new Error(u.refusal);
    const [line] = recurrence(n1, u);
    expect(line).toContain(`${NETPLAN} brings enp0s3 up at boot, yet after boot ${n1.bootId} enp0s3 had no default route`);
    expect(line).toContain('journalctl -b -u systemd-networkd');
  });

  test('ifupdown without auto: the configuration itself leaves it down', () => {
    const n1 = broken().nodes.find((n) => n.name === 'node1')!;
    n1.netConfig = [parseIfupdown('/etc/network/interfaces', 'iface enp0s3 inet dhcp\n')];
    const u = uplinkOf(n1);
    if ('refusal' in u) throw new Error(u.refusal);
    expect(recurrence(n1, u)).toEqual([expect.stringContaining('/etc/network/interfaces: no "auto enp0s3" or "allow-hotplug enp0s3" line for enp0s3: the configuration does not bring enp0s3 up at boot')]);
  });
});

describe('planDefaultRoute', () => {
  test("the lab's broken control plane: netplan apply, then its crash-looping flannel pod, the probe", () => {
    const f = broken();
    f.api!.cniPods = f.api!.cniPods.map((p) => (p.node === 'node1' && p.cni === 'flannel' ? { ...p, uid: 'uid-1', ready: false, waitingReason: 'CrashLoopBackOff' } : p));
    const plan = planDefaultRoute(f, detectNoDefaultRoute(f), opts);
    expect(plan.refused).toEqual([]);
    expect(plan.nodes.map((n) => [n.name, n.role, n.manager, n.commands])).toEqual([['node1', 'control-plane', 'netplan', [['netplan', 'apply']]]]);
    const n1 = plan.nodes[0];
    expect(n1.cniPods).toEqual([expect.objectContaining({ namespace: 'kube-flannel', uid: 'uid-1', cni: 'flannel' })]);
    expect(n1.flannel).toBe(true);
    expect(n1.podCidr).toMatch(/^10\.244\.\d+\.0\/24$/);
    expect(n1.steps[0]).toBe(`netplan apply: re-apply the node's own netplan configuration (${NETPLAN}); no file is edited, no gateway invented`);
    expect(n1.steps.some((s) => s.startsWith(`evict pod kube-flannel/${n1.cniPods[0].name} (uid uid-1)`))).toBe(true);
    expect(plan.summary!.some((s) => s.startsWith('No drain'))).toBe(true);
    expect(plan.summary!.some((s) => s.startsWith('node1 will break again: '))).toBe(true);
  });

  test('the same facts give the same plan id; another pod uid gives another', () => {
    const f = broken();
    const a = planDefaultRoute(f, detectNoDefaultRoute(f), opts);
    expect(planDefaultRoute(broken(), detectNoDefaultRoute(broken()), opts).id).toBe(a.id);
    const g = broken();
    g.api!.cniPods = g.api!.cniPods.map((p) => (p.node === 'node1' ? { ...p, uid: 'other', ready: false } : p));
    expect(planDefaultRoute(g, detectNoDefaultRoute(g), opts).id).not.toBe(a.id);
  });

  test('unselected and excluded nodes are skipped with the reason; a refused node is named', () => {
    const f = broken();
    expect(planDefaultRoute(f, detectNoDefaultRoute(f), { ...opts, selected: ['node2'] })).toMatchObject({ nodes: [], skipped: [{ name: 'node1', reason: 'not selected (--node)' }] });
    expect(planDefaultRoute(f, detectNoDefaultRoute(f), { ...opts, excluded: ['node1'] })).toMatchObject({ nodes: [], skipped: [{ name: 'node1', reason: 'labelled kubemend.io/exclude=true' }] });
    f.nodes.find((n) => n.name === 'node1')!.netConfig = [];
    const refused = planDefaultRoute(f, detectNoDefaultRoute(f), opts);
    expect(refused.nodes).toEqual([]);
    expect(refused.refused).toEqual([expect.stringMatching(/^node1: no default route, and no network configuration/)]);
  });

  test('a healthy lab: nothing to plan', () => {
    const f = factsOf('ssh-healthy');
    expect(planDefaultRoute(f, detectNoDefaultRoute(f), opts).nodes).toEqual([]);
  });
});

describe('problemsAfter', () => {
  const planned = { name: 'node1', interfaces: ['enp0s3'], podCidr: '10.244.1.0/24', flannel: true };
  test('fixed: route via the configured interface, subnet and probe inside the podCIDR', () => {
    expect(problemsAfter(planned, { defaultRoute: { dev: 'enp0s3', gateway: '10.0.2.2' }, subnet: '10.244.1.1/24', probeIp: '10.244.1.7' })).toEqual([]);
  });
  test('each way it can still be broken is named', () => {
    expect(problemsAfter(planned, { defaultRoute: null, subnet: null, probeIp: null })).toEqual([
      'still no default route',
      '/run/flannel/subnet.env has no FLANNEL_SUBNET: flanneld did not start',
      'the probe sandbox got no address',
    ]);
    expect(problemsAfter(planned, { defaultRoute: { dev: 'enp0s8', gateway: '10.213.0.1' }, subnet: '10.244.9.1/24', probeIp: '10.244.9.2' })).toEqual([
      'the default route goes via enp0s8, not enp0s3 as the configuration says',
      "FLANNEL_SUBNET 10.244.9.1/24 is outside the Node's podCIDR 10.244.1.0/24",
      "the probe sandbox got 10.244.9.2, outside the Node's podCIDR 10.244.1.0/24",
    ]);
  });
});

describe('the node commands and their parsers', () => {
  test('ping and the tool check take only validated values, as arguments', () => {
    expect(commandLine(pingArgv('10.0.2.2'))).toBe('ping -n -c 1 -W 2 10.0.2.2');
    expect(() => pingArgv('10.0.2.2; reboot')).toThrow(/not an IPv4 gateway/);
    expect(() => toolCheckArgv('netplan; rm')).toThrow(/not a tool name/);
    expect(toolCheckArgv('netplan').slice(-1)).toEqual(['netplan']);
  });

  test('ping output: the round trip', () => {
    expect(parsePingMs('64 bytes from 10.0.2.2: icmp_seq=1 ttl=64 time=0.052 ms\n')).toBe(0.052);
    expect(parsePingMs('1 packets transmitted, 0 received, 100% packet loss')).toBeNull();
  });

  test('ip -j route / link as the audit keeps them', () => {
    expect(defaultRoute('[{"dst":"default","gateway":"10.0.2.2","dev":"enp0s3","flags":[]}]')).toEqual({ dev: 'enp0s3', gateway: '10.0.2.2' });
    expect(defaultRoute('[]')).toBeNull();
    expect(defaultRoute('not json')).toEqual({ problem: expect.stringContaining('did not print JSON') });
    expect(linkStates('[{"ifindex":2,"ifname":"enp0s3","flags":["BROADCAST","MULTICAST"],"operstate":"DOWN"}]')).toEqual([{ ifname: 'enp0s3', operstate: 'DOWN', up: false }]);
  });

  test("the probe sandbox: the config is built from validated values and passed as an argument, never pasted", () => {
    const config = probeSandboxConfig('default-route-lab-20261125T000000Z-abc123', 'node1');
    expect(JSON.parse(config)).toEqual({ metadata: { name: 'kubemend-probe-node1', namespace: 'kube-system', uid: 'kubemend-default-route-lab-20261125T000000Z-abc123', attempt: 0 }, log_directory: '/tmp', linux: {} });
    const argv = probeSandboxArgv(config, 'run-1');
    expect(argv.slice(-2)).toEqual([config, 'run-1']);
    expect(argv[2]).not.toContain('kubemend-probe-node1');
    expect(() => probeSandboxArgv(config, 'run;1')).toThrow(/not a run tag/);
    expect(() => probeSandboxArgv('{not json', 'run-1')).toThrow();
  });

  test("the probe's output: the sandbox id and its address", () => {
    const id = 'a'.repeat(64);
    expect(parseProbeSandbox(`sandbox ${id}\n{"status":{"id":"${id}","state":"SANDBOX_READY","network":{"additionalIps":[],"ip":"10.244.1.5"}},"info":{}}\n`)).toEqual({ id, ip: '10.244.1.5', state: 'SANDBOX_READY' });
    expect(parseProbeSandbox(`sandbox ${id}\n{"status":{"id":"${id}","network":{"ip":""}}}`)).toMatchObject({ ip: null });
    expect(parseProbeSandbox('something else')).toEqual({ problem: expect.stringContaining('unexpected output') });
  });
});
