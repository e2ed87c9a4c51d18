import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DiagnoseFacts } from '../../lib/detect/facts';
import { detectNatAdvertise } from '../../lib/detect/seed001-nat-advertise';
import {
  advertiseProcedure,
  chooseNetwork,
  isCalicoMethod,
  kubeletArgsOf,
  nodeIpFlag,
  parseArgsLine,
  planNodeAddress,
  type PlanOptions,
  problemsAfter,
  withNodeIp,
} from '../../lib/node-address';
import { joinConfiguration, parseArgsLineOutput, parseJoinCommand, redactToken, RESTORE_ARGS_LINE_SCRIPT, restoreArgsLineArgv, SET_ARGS_LINE_SCRIPT, setArgsLineArgv, tokenDeleteArgv } from '../../lib/node-address-scripts';
import { factsOf } from '../helpers/diagnose-fixtures';

const opts = (o: Partial<PlanOptions> = {}): PlanOptions => ({ selected: ['node1', 'node2', 'node3'], everyNodeSelected: true, excluded: [], kubeletTimeoutMs: 180_000, rolloutTimeoutMs: 300_000, runTag: 'node-address-lab-x', ...o });

/** The nat-advertise capture with every worker joined on 10.0.2.15 and Calico with first-found: seed 001's other half. */
function allJoined(): DiagnoseFacts {
  const f = factsOf('cp-nat-advertise-node2-joined');
  const api = f.api!;
  const node2 = api.nodes.find((n) => n.name === 'node2')!;
  api.nodes.push({ ...node2, name: 'node3' });
  for (const n of api.nodes) n.ready = 'True';
  api.calicoAutodetection = { daemonSet: 'kube-system/calico-node', method: null };
  // The control plane advertises its own address in this half of the seed.
  f.nodes.find((n) => n.name === 'node1')!.apiserverAdvertise = '10.213.0.11';
  for (const n of f.nodes) n.kubeletArgs = ['/var/lib/kubelet/kubeadm-flags.env: KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.10"', '/etc/default/kubelet: KUBELET_EXTRA_ARGS='];
  return f;
}

describe('kubelet argument lines', () => {
  test.each([
    ['KUBELET_EXTRA_ARGS=', []],
    ['KUBELET_EXTRA_ARGS=--node-ip=1.2.3.4', ['--node-ip=1.2.3.4']],
    ['KUBELET_EXTRA_ARGS="--a=b  --node-ip 1.2.3.4"', ['--a=b', '--node-ip', '1.2.3.4']],
  ])('%s parses', (line, args) => {
    expect(parseArgsLine('/etc/default/kubelet', line).args).toEqual(args);
  });

  test.each([["KUBELET_EXTRA_ARGS='--node-ip=1.2.3.4'"], ['KUBELET_EXTRA_ARGS="--x=$HOME"'], ['KUBELET_EXTRA_ARGS="--a" --b'], ['KUBELET_EXTRA_ARGS=--a\\ b'], ['KUBELET_KUBEADM_ARGS=--a']])('%s is refused, not guessed at', (line) => {
    const p = parseArgsLine('/etc/default/kubelet', line);
    expect(p.args).toBeNull();
    expect(p.problem).toBeTruthy();
  });

  test('--node-ip: the last wins, both spellings; withNodeIp drops every old one and appends the new', () => {
    expect(nodeIpFlag(['--node-ip=1.1.1.1', '--x', '--node-ip', '2.2.2.2'])).toBe('2.2.2.2');
    expect(nodeIpFlag(['--x'])).toBeUndefined();
    expect(withNodeIp(['--a', '--node-ip=1.1.1.1', '--node-ip', '2.2.2.2', '--b'], '10.213.0.12')).toEqual(['--a', '--b', '--node-ip=10.213.0.12']);
    expect(() => withNodeIp([], '10.213.0.12; reboot')).toThrow(/not an IPv4/);
  });

  test('the flag in effect: KUBELET_EXTRA_ARGS comes after KUBELET_KUBEADM_ARGS on the kubelet command line', () => {
    const a = kubeletArgsOf({ kubeletArgs: ['/var/lib/kubelet/kubeadm-flags.env: KUBELET_KUBEADM_ARGS="--node-ip=10.0.2.15"', '/etc/default/kubelet: KUBELET_EXTRA_ARGS=--node-ip=10.213.0.12'] });
    expect([a.nodeIp, a.nodeIpFile]).toEqual(['10.213.0.12', '/etc/default/kubelet']);
    const b = kubeletArgsOf({ kubeletArgs: ['/var/lib/kubelet/kubeadm-flags.env: KUBELET_KUBEADM_ARGS="--node-ip=10.0.2.15"'] });
    expect([b.nodeIp, b.nodeIpFile]).toEqual(['10.0.2.15', '/var/lib/kubelet/kubeadm-flags.env']);
    expect(b.lines.find((l) => l.file === '/etc/default/kubelet')).toMatchObject({ line: null, args: [] });
  });
});

describe('the nodes own network', () => {
  test('found: the host-only network, where every node has its own address; the NAT one is shared', () => {
    const f = factsOf('cp-nat-advertise-node2-joined');
    const c = chooseNetwork(f.nodes, new Set(['10.0.2.15']), {});
    expect(c).toMatchObject({ network: '10.213.0.0/24', by: 'found 10.213.0.0/24' });
    expect(Object.fromEntries(Object.entries((c as { addresses: Record<string, { address: string; ifname: string }> }).addresses).map(([k, v]) => [k, `${v.ifname} ${v.address}`]))).toEqual({ node1: 'enp0s8 10.213.0.11', node2: 'enp0s8 10.213.0.12', node3: 'enp0s8 10.213.0.13' });
  });

  test('--interface and --network name it; a wrong one is refused with what each node has', () => {
    const f = factsOf('cp-nat-advertise-node2-joined');
    expect(chooseNetwork(f.nodes, new Set(['10.0.2.15']), { interface: 'enp0s8' })).toMatchObject({ network: 'enp0s8' });
    expect(chooseNetwork(f.nodes, new Set(['10.0.2.15']), { network: '10.213.0.0/24' })).toMatchObject({ network: '10.213.0.0/24' });
    expect(chooseNetwork(f.nodes, new Set(['10.0.2.15']), { interface: 'enp0s3' })).toEqual({ refusal: expect.stringContaining("node1's 10.0.2.15 is held by other nodes too") });
    expect(chooseNetwork(f.nodes, new Set(['10.0.2.15']), { interface: 'nope0' })).toEqual({ refusal: expect.stringContaining('node1 has no address on nope0') });
    expect(chooseNetwork(f.nodes, new Set(['10.0.2.15']), { network: '10.213.0.1/24' })).toEqual({ refusal: expect.stringContaining('not an IPv4 network') });
  });

  test('no network qualifies, or two do: refused, asking which', () => {
    const f = factsOf('cp-nat-advertise-node2-joined');
    const only = f.nodes.map((n) => ({ ...n, addrs: n.addrs.filter((a) => a.ifname !== 'enp0s8') }));
    expect(chooseNetwork(only, new Set(['10.0.2.15']), {})).toEqual({ refusal: expect.stringMatching(/^no network on which every node has its own address.*--network CIDR/) });
    const two = f.nodes.map((n, i) => ({ ...n, addrs: [...n.addrs, { ifname: 'enp0s9', operstate: 'UP', up: true, ipv4: [`192.168.56.${10 + i}/24`] }] }));
    expect(chooseNetwork(two, new Set(['10.0.2.15']), {})).toEqual({ refusal: expect.stringContaining('several networks could be the nodes\' own (10.213.0.0/24, 192.168.56.0/24)') });
  });
});

describe('the plan', () => {
  test('every kubelet on 10.0.2.15 with Calico first-found: --node-ip per node (workers first), can-reach the control plane', () => {
    const f = allJoined();
    const plan = planNodeAddress(f, detectNatAdvertise(f), opts());
    expect(plan.refused).toEqual([]);
    expect(plan.nodes.map((n) => (n.kind === 'kubelet' ? [n.name, n.role, n.file, n.lineBefore, n.lineAfter] : [n.name, 'join']))).toEqual([
      ['node2', 'worker', '/etc/default/kubelet', 'KUBELET_EXTRA_ARGS=', 'KUBELET_EXTRA_ARGS="--node-ip=10.213.0.12"'],
      ['node3', 'worker', '/etc/default/kubelet', 'KUBELET_EXTRA_ARGS=', 'KUBELET_EXTRA_ARGS="--node-ip=10.213.0.13"'],
      ['node1', 'control-plane', '/etc/default/kubelet', 'KUBELET_EXTRA_ARGS=', 'KUBELET_EXTRA_ARGS="--node-ip=10.213.0.11"'],
    ]);
    expect(plan.nodes[0].steps[0]).toBe('copy /etc/default/kubelet to /var/lib/kubemend/backup/node-address-lab-x/_etc_default_kubelet (once)');
    expect(plan.calico).toEqual({ daemonSet: 'kube-system/calico-node', namespace: 'kube-system', name: 'calico-node', from: null, to: 'can-reach=10.213.0.11', predicted: true });
    expect(plan.manual).toEqual([]);
    expect(plan.cluster).toEqual(['kube-system/calico-node: IP_AUTODETECTION_METHOD (unset) -> can-reach=10.213.0.11', expect.stringMatching(/^wait until every calico-node pod runs the new template and is Ready \(at most 300 s\)/)]);
    expect(plan.network).toEqual({ by: 'found 10.213.0.0/24', network: '10.213.0.0/24', addresses: { node1: '10.213.0.11', node2: '10.213.0.12', node3: '10.213.0.13' } });
    // The same facts give the same plan id; another line on the node gives another.
    expect(planNodeAddress(f, detectNatAdvertise(f), opts()).id).toBe(plan.id);
    f.nodes[1].kubeletArgs = ['/etc/default/kubelet: KUBELET_EXTRA_ARGS=--v=2'];
    const other = planNodeAddress(f, detectNatAdvertise(f), opts());
    expect(other.id).not.toBe(plan.id);
    expect(other.nodes.find((n) => n.name === 'node2')).toMatchObject({ lineAfter: 'KUBELET_EXTRA_ARGS="--v=2 --node-ip=10.213.0.12"' });
  });

  test('on facts captured from a nat-node-ip lab (every kubelet on 10.0.2.15, calico-node first-found): the same plan', () => {
    const f = factsOf('cp-nat-node-ip');
    const found = detectNatAdvertise(f);
    expect(found.map((x) => [x.node, x.signature])).toEqual(['node1', 'node2', 'node3'].map((n) => [n, 'INTERNAL-IP 10.0.2.15 on 3 Nodes']));
    const plan = planNodeAddress(f, found, opts());
    expect(plan.refused).toEqual([]);
    expect(plan.manual).toEqual([]);
    expect(plan.nodes.map((n) => (n.kind === 'kubelet' ? [n.name, n.file, n.lineBefore, n.lineAfter, n.internalIpsBefore] : [n.name, 'join']))).toEqual([
      ['node2', '/etc/default/kubelet', 'KUBELET_EXTRA_ARGS=', 'KUBELET_EXTRA_ARGS="--node-ip=10.213.0.12"', ['10.0.2.15']],
      ['node3', '/etc/default/kubelet', 'KUBELET_EXTRA_ARGS=', 'KUBELET_EXTRA_ARGS="--node-ip=10.213.0.13"', ['10.0.2.15']],
      ['node1', '/etc/default/kubelet', 'KUBELET_EXTRA_ARGS=', 'KUBELET_EXTRA_ARGS="--node-ip=10.213.0.11"', ['10.0.2.15']],
    ]);
    expect(plan.calico).toEqual({ daemonSet: 'kube-system/calico-node', namespace: 'kube-system', name: 'calico-node', from: null, to: 'can-reach=10.213.0.11', predicted: true });
    // The facts after the fix would show none of it; these show all of it.
    expect(problemsAfter(f, plan)).toEqual(expect.arrayContaining(['node2: InternalIP 10.0.2.15, expected 10.213.0.12', 'kube-system/calico-node: IP_AUTODETECTION_METHOD is unset, expected can-reach=10.213.0.11']));
  });

  test('--node-ip already in kubeadm-flags.env: edited there; a node already right is left out', () => {
    const f = allJoined();
    f.nodes[1].kubeletArgs = ['/var/lib/kubelet/kubeadm-flags.env: KUBELET_KUBEADM_ARGS="--node-ip=10.0.2.15 --v=2"'];
    f.api!.nodes.find((n) => n.name === 'node3')!.internalIPs = ['10.213.0.13'];
    f.nodes[2].kubeletArgs = ['/etc/default/kubelet: KUBELET_EXTRA_ARGS=--node-ip=10.213.0.13'];
    const plan = planNodeAddress(f, detectNatAdvertise(f), opts());
    expect(plan.nodes.map((n) => n.name)).toEqual(['node2', 'node1']);
    expect(plan.nodes[0]).toMatchObject({ file: '/var/lib/kubelet/kubeadm-flags.env', lineAfter: 'KUBELET_KUBEADM_ARGS="--v=2 --node-ip=10.213.0.12"' });
  });

  test('unselected and excluded nodes are skipped with their addresses; an unreadable line is refused', () => {
    const f = allJoined();
    f.nodes[2].kubeletArgs = ["/etc/default/kubelet: KUBELET_EXTRA_ARGS='--v=2'"];
    const plan = planNodeAddress(f, detectNatAdvertise(f), opts({ selected: ['node1', 'node3'], everyNodeSelected: false, excluded: ['node1'] }));
    expect(plan.calico).toBeNull();
    expect(plan.cluster).toEqual([]);
    expect(plan.skipped).toEqual([
      { name: 'node1', reason: 'excluded by its label: its InternalIP is 10.0.2.15, it should be 10.213.0.11' },
      { name: 'node2', reason: 'not selected (--node): its InternalIP is 10.0.2.15, it should be 10.213.0.12' },
      { name: 'kube-system/calico-node', reason: 'not changed by a run limited with --node: IP_AUTODETECTION_METHOD is one setting for every node (it would become can-reach=10.213.0.11); run without --node' },
    ]);
    expect(plan.refused).toEqual([expect.stringMatching(/^node3: \/etc\/default\/kubelet has .*quoting or expansion.*set --node-ip=10\.213\.0\.13 there by hand$/)]);
  });

  test('the control plane advertising the NAT address and a worker that never joined: manual, with the procedure', () => {
    const f = factsOf('cp-nat-advertise-node2-joined');
    const plan = planNodeAddress(f, detectNatAdvertise(f), opts());
    expect(plan.manual).toHaveLength(2);
    expect(plan.manual[0]).toBe(advertiseProcedure('node1', '10.0.2.15', '10.213.0.11'));
    expect(plan.manual[0]).toContain('kubeadm init phase certs apiserver');
    expect(plan.manual[1]).toBe('never joined: node3. Once the control plane advertises an address it reaches, kubemend run node-address joins it (or by hand: kubeadm token create --print-join-command --ttl 15m on node1, and the command it prints on node3)');
    expect(plan.nodes.map((n) => n.name)).toEqual(['node2', 'node1']);
    expect(plan.calico).toBeNull(); // no calico-node in this capture
    expect(plan.summary).toContain(`manual: ${plan.manual[0]}`);
  });

  test('a control plane that advertises its own address: the never-joined worker is joined (before the control plane\'s kubelet), with its node-ip', () => {
    const f = factsOf('cp-nat-advertise-node2-joined');
    f.nodes.find((n) => n.name === 'node1')!.apiserverAdvertise = '10.213.0.11';
    const plan = planNodeAddress(f, detectNatAdvertise(f), opts());
    expect(plan.manual).toEqual([]);
    expect(plan.refused).toEqual([]);
    expect(plan.nodes.map((n) => [n.name, n.kind])).toEqual([['node2', 'kubelet'], ['node3', 'join'], ['node1', 'kubelet']]);
    expect(plan.nodes[1]).toMatchObject({ kind: 'join', controlPlane: 'node1', endpoint: '10.213.0.11:6443', target: { address: '10.213.0.13' } });
    expect(plan.nodes[1].steps[1]).toContain('nodeRegistration.kubeletExtraArgs node-ip=10.213.0.13');
    expect(plan.summary).toContain('joins: node3 to 10.213.0.11:6443, with --node-ip from the start');
    // Unselected: skipped; a kubelet.conf without a Node: refused (a half-done join, or another cluster's).
    expect(planNodeAddress(f, [], opts({ selected: ['node1', 'node2'], everyNodeSelected: false })).skipped).toContainEqual({ name: 'node3', reason: 'not selected (--node): it never joined' });
    f.nodes.find((n) => n.name === 'node3')!.kubeletServer = 'https://10.0.2.15:6443';
    expect(planNodeAddress(f, [], opts()).refused).toEqual([expect.stringMatching(/^node3: no Node object, yet it has \/etc\/kubernetes\/kubelet\.conf \(server https:\/\/10\.0\.2\.15:6443\).*kubeadm reset -f/)]);
  });

  test('Calico: --interface, --network and --calico-method choose the method; the operator-managed DaemonSet is refused', () => {
    const f = allJoined();
    expect(planNodeAddress(f, [], opts({ interface: 'enp0s8' })).calico?.to).toBe('interface=enp0s8');
    expect(planNodeAddress(f, [], opts({ network: '10.213.0.0/24' })).calico?.to).toBe('cidr=10.213.0.0/24');
    expect(planNodeAddress(f, [], opts({ calicoMethod: 'interface=nope0' })).calico).toMatchObject({ to: 'interface=nope0', predicted: false });
    expect(planNodeAddress(f, [], opts({ calicoMethod: 'reach=1.2.3.4' })).refused).toEqual([expect.stringContaining('is not one of Calico')]);
    f.api!.calicoAutodetection = { daemonSet: 'calico-system/calico-node', method: null };
    expect(planNodeAddress(f, [], opts()).refused).toEqual([expect.stringContaining('Tigera operator')]);
    f.api!.calicoAutodetection = { daemonSet: 'kube-system/calico-node', method: 'can-reach=10.213.0.11' };
    expect(planNodeAddress(f, [], opts()).calico).toBeNull();
  });

  test('Calico methods kubemend accepts', () => {
    for (const ok of ['first-found', 'kubernetes-internal-ip', 'can-reach=10.213.0.11', 'can-reach=www.example.com', 'interface=eth.*,enp0s8', 'skip-interface=^enp0s3$', 'cidr=10.213.0.0/24,192.168.0.0/16']) expect([ok, isCalicoMethod(ok)]).toEqual([ok, true]);
    for (const bad of ['', 'reach=1.2.3.4', 'can-reach=', 'cidr=10.0.0.0', 'interface=(', 'interface=a b', 'interface="x"']) expect([bad, isCalicoMethod(bad)]).toEqual([bad, false]);
  });

  test('after the run: wrong InternalIPs, NotReady Nodes and calico-node not Ready are problems', () => {
    const f = allJoined();
    const plan = planNodeAddress(f, [], opts());
    expect(problemsAfter(f, plan)).toEqual(expect.arrayContaining(['node1: InternalIP 10.0.2.15, expected 10.213.0.11', 'kube-system/calico-node: IP_AUTODETECTION_METHOD is unset, expected can-reach=10.213.0.11']));
    for (const n of f.api!.nodes) n.internalIPs = [plan.network!.addresses[n.name]];
    f.api!.calicoAutodetection = { daemonSet: 'kube-system/calico-node', method: 'can-reach=10.213.0.11' };
    expect(problemsAfter(f, plan)).toEqual([]);
  });
});

describe('the node scripts', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'kubemend-node-ip-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const run = (script: string, args: string[]) => spawnSync('sh', ['-c', script, 'test', ...args], { encoding: 'utf8' });

  test('set: copy once, then the line; again: already; a changed line: differs and nothing written; restore: back as it was', () => {
    const f = join(dir, 'kubelet');
    writeFileSync(f, '# Debian\nKUBELET_EXTRA_ARGS=\nOTHER=1\n');
    chmodSync(f, 0o640);
    const bdir = join(dir, 'backup');
    const after = 'KUBELET_EXTRA_ARGS="--node-ip=10.213.0.12"';
    const r = run(SET_ARGS_LINE_SCRIPT, [f, 'KUBELET_EXTRA_ARGS', 'KUBELET_EXTRA_ARGS=', after, bdir]);
    expect([r.status, parseArgsLineOutput(r.stdout)]).toEqual([0, { state: 'written' }]);
    expect(readFileSync(f, 'utf8')).toBe(`# Debian\n${after}\nOTHER=1\n`);
    expect(statSync(f).mode & 0o777).toBe(0o640);
    const copy = join(bdir, f.replace(/\//g, '_'));
    expect(readFileSync(copy, 'utf8')).toBe('# Debian\nKUBELET_EXTRA_ARGS=\nOTHER=1\n');
    expect(parseArgsLineOutput(run(SET_ARGS_LINE_SCRIPT, [f, 'KUBELET_EXTRA_ARGS', 'KUBELET_EXTRA_ARGS=', after, bdir]).stdout)).toEqual({ state: 'already' });
    // Someone changes it: the restore leaves it alone.
    writeFileSync(f, 'KUBELET_EXTRA_ARGS=--v=4\n');
    expect(parseArgsLineOutput(run(RESTORE_ARGS_LINE_SCRIPT, [f, bdir, 'KUBELET_EXTRA_ARGS', after]).stdout)).toEqual({ state: 'differs', line: 'KUBELET_EXTRA_ARGS=--v=4' });
    // And a set whose plan read another line changes nothing (the copy stays the first one).
    expect(parseArgsLineOutput(run(SET_ARGS_LINE_SCRIPT, [f, 'KUBELET_EXTRA_ARGS', 'KUBELET_EXTRA_ARGS=', after, bdir]).stdout)).toEqual({ state: 'differs', line: 'KUBELET_EXTRA_ARGS=--v=4' });
    expect(readFileSync(f, 'utf8')).toBe('KUBELET_EXTRA_ARGS=--v=4\n');
    writeFileSync(f, `# Debian\n${after}\nOTHER=1\n`);
    expect(parseArgsLineOutput(run(RESTORE_ARGS_LINE_SCRIPT, [f, bdir, 'KUBELET_EXTRA_ARGS', after]).stdout)).toEqual({ state: 'restored' });
    expect(readFileSync(f, 'utf8')).toBe('# Debian\nKUBELET_EXTRA_ARGS=\nOTHER=1\n');
    expect(parseArgsLineOutput(run(RESTORE_ARGS_LINE_SCRIPT, [f, bdir, 'KUBELET_EXTRA_ARGS', after]).stdout)).toEqual({ state: 'already' });
  });

  test('a file that did not exist: created with the line, and the undo removes it; no copy: the undo says so (exit 4)', () => {
    const f = join(dir, 'default', 'kubelet');
    const bdir = join(dir, 'backup');
    const after = 'KUBELET_EXTRA_ARGS="--node-ip=10.213.0.12"';
    expect(run(RESTORE_ARGS_LINE_SCRIPT, [f, bdir, 'KUBELET_EXTRA_ARGS', after]).status).toBe(4);
    expect(parseArgsLineOutput(run(SET_ARGS_LINE_SCRIPT, [f, 'KUBELET_EXTRA_ARGS', '', after, bdir]).stdout)).toEqual({ state: 'written' });
    expect(readFileSync(f, 'utf8')).toBe(`${after}\n`);
    expect(parseArgsLineOutput(run(RESTORE_ARGS_LINE_SCRIPT, [f, bdir, 'KUBELET_EXTRA_ARGS', after]).stdout)).toEqual({ state: 'restored' });
    expect(existsSync(f)).toBe(false);
  });

  test('hostile values never reach a shell: the argv carries them as arguments, and the builders refuse what is not a plain line', () => {
    const argv = setArgsLineArgv('/etc/default/kubelet', 'KUBELET_EXTRA_ARGS=', 'KUBELET_EXTRA_ARGS="--node-ip=10.213.0.12"', 'node-address-lab-x');
    expect(argv.slice(0, 2)).toEqual(['sh', '-c']);
    expect(argv.slice(3)).toEqual(['kubemend-node-ip', '/etc/default/kubelet', 'KUBELET_EXTRA_ARGS', 'KUBELET_EXTRA_ARGS=', 'KUBELET_EXTRA_ARGS="--node-ip=10.213.0.12"', '/var/lib/kubemend/backup/node-address-lab-x']);
    expect(() => setArgsLineArgv('/etc/passwd', null, 'KUBELET_EXTRA_ARGS="--node-ip=1.2.3.4"', 'x')).toThrow(/not a kubelet flags file/);
    expect(() => setArgsLineArgv('/etc/default/kubelet', null, 'KUBELET_EXTRA_ARGS="$(reboot) --node-ip=1.2.3.4"', 'x')).toThrow(/not a plain/);
    expect(() => setArgsLineArgv('/etc/default/kubelet', null, 'KUBELET_EXTRA_ARGS="--v=2"', 'x')).toThrow(/sets no IPv4 --node-ip/);
    expect(() => setArgsLineArgv('/etc/default/kubelet', null, 'KUBELET_EXTRA_ARGS="--node-ip=1.2.3.4"', '../x')).toThrow(/not a run tag/);
    expect(() => restoreArgsLineArgv('/var/lib/kubelet/kubeadm-flags.env', 'KUBELET_EXTRA_ARGS="--node-ip=1.2.3.4"', 'x')).toThrow(/not a plain KUBELET_KUBEADM_ARGS/);
    // The line as the argv carries it lands in the file byte for byte, whatever the shell would make of it.
    const dirFile = join(dir, 'k');
    writeFileSync(dirFile, 'KUBELET_EXTRA_ARGS=\n');
    const odd = 'KUBELET_EXTRA_ARGS="--a=;&|<>* --node-ip=10.213.0.12"';
    execFileSync('sh', ['-c', SET_ARGS_LINE_SCRIPT, 't', dirFile, 'KUBELET_EXTRA_ARGS', 'KUBELET_EXTRA_ARGS=', odd, join(dir, 'b')]);
    expect(readFileSync(dirFile, 'utf8')).toBe(`${odd}\n`);
  });
});

describe('the join', () => {
  const line = 'kubeadm join 10.213.0.11:6443 --token abc123.0123456789abcdef --discovery-token-ca-cert-hash sha256:' + 'a'.repeat(64) + ' \n';
  test('kubeadm token create --print-join-command, parsed; a malformed one says what is wrong without quoting the token', () => {
    expect(parseJoinCommand(line)).toEqual({ endpoint: '10.213.0.11:6443', token: 'abc123.0123456789abcdef', tokenId: 'abc123', caHash: `sha256:${'a'.repeat(64)}` });
    for (const bad of [line.replace('--token', '--tokn'), line.replace('sha256:', 'md5:'), line.replace('10.213.0.11:6443', 'cp.example:6443'), `${line}${line}`, 'error: nope']) {
      const p = parseJoinCommand(bad);
      expect('problem' in p).toBe(true);
      expect(JSON.stringify(p)).not.toContain('0123456789abcdef');
    }
  });

  test('the JoinConfiguration carries the endpoint, token, hash and node-ip; anything malformed is refused', () => {
    const j = parseJoinCommand(line) as Exclude<ReturnType<typeof parseJoinCommand>, { problem: string }>;
    const cfg = joinConfiguration(j, '10.213.0.12');
    expect(cfg).toContain('    apiServerEndpoint: "10.213.0.11:6443"\n    token: "abc123.0123456789abcdef"\n');
    expect(cfg).toContain('  - name: node-ip\n    value: "10.213.0.12"\n');
    expect(() => joinConfiguration({ ...j, token: 'abc123.0123456789abcdef"\nx: y' }, '10.213.0.12')).toThrow(/malformed/);
    expect(() => joinConfiguration(j, '10.213.0.12"; x')).toThrow(/malformed/);
    expect(() => tokenDeleteArgv('abc123; rm')).toThrow(/not a bootstrap token id/);
  });

  test('redaction: the whole token and its secret half alone', () => {
    expect(redactToken('--token abc123.0123456789abcdef; secret 0123456789abcdef; id abc123', 'abc123.0123456789abcdef')).toBe('--token <redacted>; secret <redacted>; id abc123');
  });
});
