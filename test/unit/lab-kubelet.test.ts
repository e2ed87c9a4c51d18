/**
 * The lab kubelet's pure parts (test/lab/kubelet.ts): its flags from kubeadm-flags.env and
 * /etc/default/kubelet, and the Node address it reports from the node's links and routes.
 */
import { chooseNodeIp, envFileValue, type IpLink, isGlobalUnicast4, klogLine, klogQuote, kubeletNodeIp, nodeIpFlag } from '../lab/kubelet';
import { defaultKubeletText, KUBEADM_FLAGS_TEXT } from '../lab/topology';

/** A lab node's links as `ip -j addr show` gives them (trimmed): enp0s8 made before enp0s3. */
const link = (ifindex: number, ifname: string, ...addrs: Array<[string, number]>): IpLink => ({
  ifindex,
  ifname,
  flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'],
  addr_info: addrs.map(([local, prefixlen]) => ({ family: 'inet', local, prefixlen, scope: 'global' })),
});
const links: IpLink[] = [
  { ifindex: 1, ifname: 'lo', addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host' }, { family: 'inet6', local: '::1', prefixlen: 128 }] },
  link(2, 'enp0s8', ['10.213.0.12', 24]),
  link(3, 'enp0s3', ['10.0.2.15', 24]),
  link(4, 'weave'),
  link(5, 'flannel.1', ['10.244.1.0', 32]),
  link(6, 'cni0', ['10.244.1.1', 24]),
];
const viaNat = [{ dst: 'default', gateway: '10.0.2.2', dev: 'enp0s3' }];

describe('flags', () => {
  test('kubeadm-flags.env as kubeadm writes it has no --node-ip; Debian ships KUBELET_EXTRA_ARGS empty', () => {
    expect(envFileValue(KUBEADM_FLAGS_TEXT, 'KUBELET_KUBEADM_ARGS')).toBe('--pod-infra-container-image=registry.k8s.io/pause:3.10.1');
    expect(kubeletNodeIp(KUBEADM_FLAGS_TEXT, defaultKubeletText())).toBeUndefined();
    expect(envFileValue(defaultKubeletText(), 'KUBELET_EXTRA_ARGS')).toBe('');
  });

  test.each([
    [['--node-ip=10.213.0.12'], '10.213.0.12'],
    [['--node-ip', '10.213.0.12'], '10.213.0.12'],
    [['--node-ip=10.0.2.15', '--v=2', '--node-ip', '10.213.0.12'], '10.213.0.12'],
    [['--node-ip=10.213.0.12', '--node-ip='], undefined],
    [['--node-ip'], undefined],
    [['--node-ipx=1.2.3.4'], undefined],
  ])('%j -> %s', (args, ip) => {
    expect(nodeIpFlag(args)).toBe(ip);
  });

  test('KUBELET_KUBEADM_ARGS comes first on the command line, KUBELET_EXTRA_ARGS after: the last wins', () => {
    const kubeadm = 'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --node-ip=10.0.2.15"\n';
    expect(kubeletNodeIp(kubeadm, 'KUBELET_EXTRA_ARGS=--node-ip=10.213.0.12\n')).toBe('10.213.0.12');
    expect(kubeletNodeIp(kubeadm, 'KUBELET_EXTRA_ARGS=\n')).toBe('10.0.2.15');
    expect(kubeletNodeIp(undefined, "# comment\nKUBELET_EXTRA_ARGS='--node-ip 10.213.0.13 --v=2'\n")).toBe('10.213.0.13');
    expect(kubeletNodeIp(undefined, 'KUBELET_EXTRA_ARGS=--node-ip=1.1.1.1\nKUBELET_EXTRA_ARGS=\n')).toBeUndefined(); // the last assignment wins
    expect(kubeletNodeIp(undefined, undefined)).toBeUndefined();
  });
});

describe('the Node address', () => {
  test('without --node-ip: the first global IPv4 of the default route interface (10.0.2.15 behind VirtualBox NAT)', () => {
    expect(chooseNodeIp(undefined, links, viaNat)).toEqual({ ok: true, ip: '10.0.2.15' });
  });

  test('--node-ip on one of the node\'s interfaces is taken as it is', () => {
    expect(chooseNodeIp('10.213.0.12', links, viaNat)).toEqual({ ok: true, ip: '10.213.0.12' });
  });

  test("--node-ip not on the node: the kubelet's own error", () => {
    expect(chooseNodeIp('10.213.0.99', links, viaNat)).toEqual({ ok: false, error: 'failed to validate nodeIP: node IP: "10.213.0.99" not found in the host\'s network interfaces' });
  });

  test("no default route: apimachinery's ChooseHostInterface error", () => {
    const r = chooseNodeIp(undefined, links, []);
    expect(r).toEqual({ ok: false, error: 'can\'t get ip address of node %NODE%. error: no default routes found in "/proc/net/route" or "/proc/net/ipv6_route"' });
  });

  test('a default route on an interface without a global IPv4 address', () => {
    expect(chooseNodeIp(undefined, [...links, link(9, 'ppp0', ['169.254.3.3', 16])], [{ dst: 'default', dev: 'ppp0' }])).toEqual({ ok: false, error: "can't get ip address of node %NODE%. error: unable to select an IP from default routes." });
  });

  test.each([
    ['10.0.2.15', true], ['192.168.1.1', true], ['127.0.0.1', false], ['169.254.1.1', false], ['224.0.0.1', false], ['0.0.0.0', false], ['255.255.255.255', false], ['10.0.2', false],
  ])('global unicast %s: %s', (ip, yes) => {
    expect(isGlobalUnicast4(ip)).toBe(yes);
  });
});

test('klog lines as the kubelet writes them', () => {
  expect(klogLine('E', 'run.go', '"command failed" err="x"', new Date(Date.UTC(2026, 10, 26, 9, 5, 7, 42)), 1234)).toBe('E1126 09:05:07.042000    1234 run.go] "command failed" err="x"');
  expect(klogQuote('node IP: "10.1.1.1" a\\b')).toBe('node IP: \\"10.1.1.1\\" a\\\\b');
});
