import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DiagnoseFacts } from '../../lib/detect/facts';
import { detectStaleCni } from '../../lib/detect/seed003-stale-cni';
import { deleteOutcome, detectStaleCniFindings, expectedFor, manualProcedure, planStaleCni, problemsAfter, staleCniFacts, staleCniLines } from '../../lib/stale-cni';
import { backupArgv, DELETE_STALE_DEVICE_SCRIPT, deleteStaleDeviceArgv, MOVE_LEFTOVERS_SCRIPT, moveLeftoversArgv, parseBackupOutput, parseDeleteOutput, parseMoveOutput, parseResetOutput, RESET_SCRIPT, resetArgv } from '../../lib/stale-cni-scripts';
import { commandLine } from '../../lib/shell';
import { factsOf } from '../helpers/diagnose-fixtures';
import { staleCniText } from '../../cli/render';

/**
 * The lab's all-five capture with its control plane: node1 (control plane) and, with the
 * nat-advertise scenario, node2 and node3 never joined (no Node, no podCIDR). `joined` gives
 * node2 the Node a re-join gives it (podCIDR 10.244.1.0/24, its kube-flannel pod), and
 * `released` empties the host-local pools (as ipam-gc leaves them).
 */
function lab(o: { joined?: boolean; released?: boolean } = {}): DiagnoseFacts {
  const f = factsOf('cp-all-five');
  if (o.joined) {
    const n1 = f.api!.nodes.find((n) => n.name === 'node1')!;
    f.api!.nodes.push({ ...n1, name: 'node2', controlPlane: false, podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.213.0.12'] });
    f.api!.cniPods.push({ cni: 'flannel', namespace: 'kube-flannel', name: 'kube-flannel-ds-abcde', uid: '11111111-2222-3333-4444-555555555555', node: 'node2', phase: 'Running', ready: false, restarts: 4, waitingReason: 'CrashLoopBackOff', message: null });
  }
  if (o.released) for (const n of f.nodes) n.hostLocal = [];
  return f;
}
const opts = { cluster: 'lab', selected: ['node1', 'node2', 'node3'], excluded: [] as string[], controlPlane: ['node1'], podTimeoutMs: 300_000, full: false, escalate: false, joinFrom: 'node1' as string | null, joinTimeoutMs: 300_000 };
const plan = (f: DiagnoseFacts, o: Partial<typeof opts> = {}) => planStaleCni(f, detectStaleCniFindings(f), { ...opts, ...o });

describe('detect: diagnose\'s own seed-003 detector, its stale-cni findings', () => {
  test('the same findings diagnose makes, without the ipam-gc ones', () => {
    const f = lab();
    for (const n of f.nodes) n.now = n.now! + 3600; // the files are old enough to be called leaked
    const all = detectStaleCni(f);
    expect(all.some((x) => x.remediation === 'ipam-gc')).toBe(true);
    expect(detectStaleCniFindings(f)).toEqual(all.filter((x) => x.remediation === 'stale-cni'));
    expect(detectStaleCniFindings(f).map((x) => x.node)).toEqual(['node1', 'node2', 'node3']);
  });

  test('a healthy lab: nothing', () => {
    expect(detectStaleCniFindings(factsOf('ssh-healthy'))).toEqual([]);
    expect(staleCniLines(factsOf('ssh-healthy'))).toEqual([]);
  });
});

describe('staleCniFacts: one node, as the plan reads it', () => {
  test("node1 of the capture: cni0 and flannel.1 on the old lease, no subnet.env, the Node's podCIDR and its flannel pod", () => {
    const n = staleCniFacts(lab(), 'node1')!;
    expect(n).toMatchObject({
      cni0: ['10.244.101.1/24'],
      flannel1: ['10.244.101.0/32'],
      subnetEnv: null,
      podCidr: '10.244.0.0/24',
      cniConfigs: [{ file: '/etc/cni/net.d/10-flannel.conflist', network: 'cbr0', types: ['flannel', 'portmap'] }],
      clusterRunsFlannel: true,
    });
    expect(n.flannelPods).toEqual([expect.objectContaining({ namespace: 'kube-flannel', cni: 'flannel', uid: expect.stringMatching(/^[0-9a-f-]{36}$/) })]);
    expect(n.hostLocal.cbr0).toHaveLength(253);
    expect(staleCniFacts(lab(), 'node9')).toBeNull();
  });

  test('without the API: no podCIDR, and whether flannel runs is unknown', () => {
    const f = lab();
    f.api = null;
    expect(staleCniFacts(f, 'node1')).toMatchObject({ podCidr: null, flannelPods: [], clusterRunsFlannel: null });
  });
});

describe('expectedFor: what the podCIDR says', () => {
  test('cni0 the gateway with its length, flannel.1 the network /32, subnet.env as cni0', () => {
    expect(expectedFor('10.244.1.0/24')).toEqual({ cni0: '10.244.1.1/24', flannel1: '10.244.1.0/32', flannelSubnet: '10.244.1.1/24' });
    expect(expectedFor('10.42.0.0/16')).toEqual({ cni0: '10.42.0.1/16', flannel1: '10.42.0.0/32', flannelSubnet: '10.42.0.1/16' });
  });

  test('anything that is not an IPv4 network of /30 or larger: null', () => {
    for (const bad of ['10.244.1.5/24', '10.244.1.0/31', 'fd00::/64', '10.244.1.0', '10.244.1.0/24; reboot', '', '300.1.1.0/24']) expect(expectedFor(bad)).toBeNull();
  });
});

describe('planStaleCni', () => {
  test('the capture as it is: node1 refused as the control plane, node2 and node3 for want of a podCIDR; nothing planned', () => {
    const p = plan(lab());
    expect(p.nodes).toEqual([]);
    expect(p.refused).toEqual([
      expect.stringMatching(/^node1 is a control-plane node: kubemend does not take one out of service for this fix/),
      expect.stringMatching(/^node2: nothing says what its CNI devices should carry: the Node has no IPv4 podCIDR \(no Node object, or the controller manager allocates none\); kubemend takes neither cni0's nor subnet.env's word for it. Found: cni0 has 10.244.102.1\/24/),
      expect.stringMatching(/^node3: nothing says what its CNI devices should carry/),
    ]);
  });

  test('a control-plane node is refused, with the exact manual procedure', () => {
    const p = plan(lab({ released: true }), { selected: ['node1'] });
    expect(p.nodes).toEqual([]);
    expect(p.refused).toHaveLength(1);
    const n1Pod = staleCniFacts(lab(), 'node1')!.flannelPods[0].name;
    expect(p.refused[0]).toBe(
      'node1 is a control-plane node: kubemend does not take one out of service for this fix (its static pods stay on the node, and with them the API every other node needs). By hand: ' +
        "(1) kubectl drain node1 --ignore-daemonsets (its static pods stay; plan for the API server's pod network being cut); " +
        '(2) on node1: ip -4 addr show dev cni0 (expect 10.244.101.1/24), then ip link delete cni0; ' +
        '(3) on node1: ip -4 addr show dev flannel.1 (expect 10.244.101.0/32), then ip link delete flannel.1; ' +
        `(4) kubectl -n kube-flannel delete pod ${n1Pod}; ` +
        '(5) wait until /run/flannel/subnet.env says FLANNEL_SUBNET=10.244.0.1/24; ' +
        '(6) start a pod pinned to node1 and check its address is in 10.244.0.0/24 and cni0 carries 10.244.0.1/24; ' +
        '(7) kubectl uncordon node1',
    );
  });

  test('a joined worker: delete cni0 and flannel.1 (each only with the addresses named), evict its flannel pod, wait, probe, check', () => {
    const f = lab({ joined: true, released: true });
    const p = plan(f, { selected: ['node2'] });
    expect(p.refused).toEqual([]);
    expect(p.skipped).toEqual([
      { name: 'node1', reason: 'not selected (--node)' },
      { name: 'node3', reason: 'not selected (--node)' },
    ]);
    expect(p.id).toMatch(/^[0-9a-f]{16}$/);
    const [n2] = p.nodes;
    expect(n2).toMatchObject({
      name: 'node2',
      role: 'worker',
      podCidr: '10.244.1.0/24',
      expected: { cni0: '10.244.1.1/24', flannel1: '10.244.1.0/32', flannelSubnet: '10.244.1.1/24' },
      deletes: [
        { dev: 'cni0', stale: ['10.244.102.1/24'], expected: '10.244.1.1/24' },
        { dev: 'flannel.1', stale: ['10.244.102.0/32'], expected: '10.244.1.0/32' },
      ],
      flannelPods: [{ namespace: 'kube-flannel', name: 'kube-flannel-ds-abcde', uid: '11111111-2222-3333-4444-555555555555', cni: 'flannel' }],
    });
    expect(n2.restartWhy).toBe('flanneld makes flannel.1 only when it starts; /run/flannel/subnet.env is missing; kube-flannel/kube-flannel-ds-abcde not Running and Ready');
    expect(n2.steps).toEqual([
      'ip link delete cni0: only if it still carries exactly 10.244.102.1/24 (re-checked on the node in the same command; already gone counts as done); the bridge plugin makes it again at the next pod with 10.244.1.1/24',
      'ip link delete flannel.1: only if it still carries exactly 10.244.102.0/32 (re-checked on the node in the same command; already gone counts as done); the new flanneld makes it again with 10.244.1.0/32',
      `evict pod kube-flannel/kube-flannel-ds-abcde (uid 11111111-2222-3333-4444-555555555555): its DaemonSet recreates it now instead of after the crash-loop back-off (${n2.restartWhy})`,
      "wait up to 300 s for the node's new kube-flannel pod Ready and /run/flannel/subnet.env inside 10.244.1.0/24",
      'crictl runp a probe sandbox on the node: it must get an address in 10.244.1.0/24 (a real CNI ADD); then crictl stopp and rmp it',
      'check: cni0 carries 10.244.1.1/24 only, flannel.1 10.244.1.0/32 only, subnet.env FLANNEL_SUBNET=10.244.1.1/24',
    ]);
    expect(p.summary!.join('\n')).toMatch(/No undo for a deleted device/);
  });

  test('only cni0 stale, flannel running with the right subnet.env and flannel.1 (as the real flanneld leaves it): cni0 deleted, flannel left running', () => {
    const f = lab({ joined: true, released: true });
    const n2 = f.nodes.find((n) => n.name === 'node2')!;
    n2.subnetEnv = { FLANNEL_NETWORK: '10.244.0.0/16', FLANNEL_SUBNET: '10.244.1.1/24', FLANNEL_MTU: '1450', FLANNEL_IPMASQ: 'true' };
    n2.addrs = n2.addrs.map((a) => (a.ifname === 'flannel.1' ? { ...a, ipv4: ['10.244.1.0/32'] } : a));
    const pod = f.api!.cniPods.find((p) => p.node === 'node2')!;
    Object.assign(pod, { ready: true, phase: 'Running', waitingReason: null });
    const [planned] = plan(f, { selected: ['node2'] }).nodes;
    expect(planned.deletes).toEqual([{ dev: 'cni0', stale: ['10.244.102.1/24'], expected: '10.244.1.1/24' }]);
    expect(planned.flannelPods).toEqual([]);
    expect(planned.restartWhy).toBe('not restarted: flannel runs with subnet.env 10.244.1.1/24 and flannel.1 10.244.1.0/32 as the podCIDR says');
    expect(planned.steps.map((s) => s.split(':')[0])).toEqual(['ip link delete cni0', 'wait up to 300 s for /run/flannel/subnet.env inside 10.244.1.0/24', 'crictl runp a probe sandbox on the node', 'check']);
  });

  test("a worker whose host-local range is full is refused: no pod could get an address, so ipam-gc first", () => {
    const p = plan(lab({ joined: true }), { selected: ['node2'] });
    expect(p.nodes).toEqual([]);
    expect(p.refused).toEqual([
      "node2: host-local's range for cbr0 (10.244.1.0/24) is full (253 of 253 addresses reserved): a new pod gets no address whatever cni0 carries, so the fix could not be verified; release the leaked ones first: kubemend run ipam-gc --cluster lab --node node2",
    ]);
  });

  test('excluded nodes are skipped with the reason; the plan id follows the content', () => {
    const f = lab({ joined: true, released: true });
    const a = plan(f, { selected: ['node2'] });
    expect(plan(f, { selected: ['node2'] }).id).toBe(a.id);
    const ex = plan(f, { selected: ['node2'], excluded: ['node2'] });
    expect(ex.nodes).toEqual([]);
    expect(ex.skipped).toContainEqual({ name: 'node2', reason: 'labelled kubemend.io/exclude=true' });
    expect(ex.id).not.toBe(a.id);
  });

  test("a first CNI config that is not flannel's is refused: the light level changes no CNI config", () => {
    const f = lab({ joined: true, released: true });
    f.nodes.find((n) => n.name === 'node2')!.cniConfigs.push({ file: '/etc/cni/net.d/05-weave.conflist', network: 'weave', types: ['weave-net'] });
    expect(plan(f, { selected: ['node2'] }).refused).toEqual([
      "node2: /etc/cni/net.d/05-weave.conflist is the first CNI config (the kubelet uses it) and is not flannel's (weave-net): the light level changes no CNI config; move it aside by hand (mv /etc/cni/net.d/05-weave.conflist /root/) and run again, or run with --full (kubeadm reset, the config moved into a backup, re-join)",
    ]);
  });

  test('a cluster without flannel is refused (the light level restarts flannel)', () => {
    const f = lab({ joined: true, released: true });
    f.api!.cniDaemonSets = f.api!.cniDaemonSets.filter((d) => d.cni !== 'flannel');
    expect(plan(f, { selected: ['node2'] }).refused[0]).toMatch(/^node2: the light level restarts flannel, and the cluster runs no flannel DaemonSet/);
  });

  test('flannel to restart but no flannel pod on the node: refused', () => {
    const f = lab({ joined: true, released: true });
    f.api!.cniPods = f.api!.cniPods.filter((p) => p.node !== 'node2');
    expect(plan(f, { selected: ['node2'] }).refused[0]).toMatch(/^node2: flannel must be restarted \(.*\), and the API lists no kube-flannel pod on the node/);
  });

  test('hostile values on the node never become a planned address: the node is refused, naming them quoted', () => {
    const f = lab({ joined: true, released: true });
    const n2 = f.nodes.find((n) => n.name === 'node2')!;
    n2.addrs = n2.addrs.map((a) => (a.ifname === 'cni0' ? { ...a, ipv4: ['10.244.102.1/24 ; reboot', '$(id)'] } : a));
    const p = plan(f, { selected: ['node2'] });
    expect(p.nodes).toEqual([]);
    expect(p.refused).toEqual(['node2: its devices carry addresses kubemend cannot name exactly ("10.244.102.1/24 ; reboot", "$(id)"): fix by hand']);
  });

  test('a podCIDR that is not a network is refused, quoted', () => {
    const f = lab({ joined: true, released: true });
    f.api!.nodes.find((n) => n.name === 'node2')!.podCIDRs = ['10.244.1.7/31'];
    expect(plan(f, { selected: ['node2'] }).refused[0]).toMatch(/^node2: nothing says what its CNI devices should carry: the Node has podCIDR "10.244.1.7\/31", which is not an IPv4 network of \/30 or larger/);
  });

  test('manualProcedure without a flannel pod or a podCIDR still reads as steps; without a restart, no restart step', () => {
    const n = { ...staleCniFacts(lab(), 'node2')! };
    expect(manualProcedure(n, null, [], true)).toBe(
      "(1) kubectl drain node2 --ignore-daemonsets (its static pods stay; plan for the API server's pod network being cut); (2) restart flanneld on node2 (delete the node's kube-flannel pod); (3) wait until /run/flannel/subnet.env says FLANNEL_SUBNET=<the Node's podCIDR, .1>; (4) start a pod pinned to node2 and check its address is in the Node's podCIDR and cni0 carries its gateway; (5) kubectl uncordon node2",
    );
    expect(manualProcedure(n, null, [], false)).not.toContain('restart');

  });
});

describe('problemsAfter', () => {
  const planned = () => plan(lab({ joined: true, released: true }), { selected: ['node2'] }).nodes[0];
  const good = { cni0: ['10.244.1.1/24'], flannel1: ['10.244.1.0/32'], subnet: '10.244.1.1/24', probeIp: '10.244.1.2' };
  test('fixed: nothing', () => expect(problemsAfter(planned(), good)).toEqual([]));
  test('the Node not Ready is a problem once read; not read (an old run) is none', () => {
    expect(problemsAfter(planned(), { ...good, nodeReady: 'True' })).toEqual([]);
    expect(problemsAfter(planned(), { ...good, nodeReady: 'False' })).toEqual(['the Node is not Ready (Ready=False): its kubelet does not report to the API server']);
    expect(problemsAfter(planned(), { ...good, nodeReady: null })).toEqual(['the Node is not Ready (Ready=never reported): its kubelet does not report to the API server']);
  });
  test('each way it can still be wrong', () => {
    expect(problemsAfter(planned(), { ...good, probeIp: null })).toEqual(['the probe sandbox got no address']);
    expect(problemsAfter(planned(), { ...good, probeIp: '10.244.102.3' })).toEqual(["the probe sandbox got 10.244.102.3, outside the Node's podCIDR 10.244.1.0/24"]);
    expect(problemsAfter(planned(), { ...good, cni0: ['10.244.1.1/24', '10.244.102.1/24'] })).toEqual(['cni0 carries 10.244.1.1/24 10.244.102.1/24, not 10.244.1.1/24']);
    expect(problemsAfter(planned(), { ...good, cni0: null })).toEqual(["no cni0 after the probe's ADD"]);
    expect(problemsAfter(planned(), { ...good, flannel1: null })).toEqual(['flannel.1 carries nothing (missing), not 10.244.1.0/32']);
    expect(problemsAfter(planned(), { ...good, subnet: null })).toEqual(['/run/flannel/subnet.env says FLANNEL_SUBNET=(missing), not 10.244.1.1/24']);
  });
});

describe('deleteOutcome: verify-then-act', () => {
  const d = { dev: 'cni0' as const, stale: ['10.244.102.1/24'], expected: '10.244.1.1/24' };
  test('deleted: applied; gone, no address or only the right one: already done', () => {
    expect(deleteOutcome(d, { state: 'deleted', addresses: ['10.244.102.1/24'] })).toEqual({ outcome: 'applied' });
    expect(deleteOutcome(d, { state: 'gone' })).toEqual({ outcome: 'already-done' });
    expect(deleteOutcome(d, { state: 'differs', addresses: [] })).toEqual({ outcome: 'already-done' });
    expect(deleteOutcome(d, { state: 'differs', addresses: ['10.244.1.1/24'] })).toEqual({ outcome: 'already-done' });
  });
  test('anything else the plan did not name: refused, left as it is', () => {
    expect(deleteOutcome(d, { state: 'differs', addresses: ['10.244.55.1/24'] })).toEqual({ refusal: 'cni0 now carries 10.244.55.1/24, not the 10.244.102.1/24 the plan named: it was changed since the plan, so it was left as it is; run again for a new plan' });
    expect('refusal' in deleteOutcome(d, { state: 'differs', addresses: ['10.244.1.1/24', '10.244.102.1/24'] })).toBe(true);
  });
});

describe('the delete script', () => {
  test('argv: the constant script, then the device and the addresses as arguments', () => {
    expect(deleteStaleDeviceArgv('cni0', ['10.244.102.1/24'])).toEqual(['sh', '-c', DELETE_STALE_DEVICE_SCRIPT, 'kubemend-stale-cni-delete', 'cni0', '10.244.102.1/24']);
    expect(commandLine(deleteStaleDeviceArgv('flannel.1', ['10.244.102.0/32']))).toMatch(/ kubemend-stale-cni-delete flannel.1 10.244.102.0\/32$/);
  });

  test('hostile values are refused before they reach a command line', () => {
    expect(() => deleteStaleDeviceArgv('eth0', ['10.0.0.1/24'])).toThrow(/not a device stale-cni deletes/);
    expect(() => deleteStaleDeviceArgv('cni0; reboot', ['10.0.0.1/24'])).toThrow(/not a device/);
    expect(() => deleteStaleDeviceArgv('cni0', [])).toThrow(/name 1 to 32 stale addresses/);
    for (const bad of ['10.244.102.1/24; reboot', '$(reboot)', '10.244.102.1', '10.244.102.1/33', '-a', '10.244.102.1/24\n10.0.0.1/8']) {
      expect(() => deleteStaleDeviceArgv('cni0', [bad])).toThrow(/not an IPv4 address with its prefix length/);
    }
  });

  test('parser: the three answers; anything else is a problem', () => {
    expect(parseDeleteOutput('gone\n')).toEqual({ state: 'gone' });
    expect(parseDeleteOutput('deleted 10.244.102.1/24 \n')).toEqual({ state: 'deleted', addresses: ['10.244.102.1/24'] });
    expect(parseDeleteOutput('differs \n')).toEqual({ state: 'differs', addresses: [] });
    expect(parseDeleteOutput('differs 10.244.1.1/24 10.244.102.1/24 \n')).toEqual({ state: 'differs', addresses: ['10.244.1.1/24', '10.244.102.1/24'] });
    expect(parseDeleteOutput('deleted \n')).toEqual({ problem: 'deleted, naming no address' });
    expect(parseDeleteOutput('differs $(reboot)\n')).toEqual({ problem: expect.stringMatching(/^unexpected address "\$\(reboot\)"/) });
    expect(parseDeleteOutput('')).toEqual({ problem: 'unexpected output: ""' });
    expect(parseDeleteOutput('gone\ndeleted 1.2.3.4/5\n')).toEqual({ problem: expect.stringMatching(/^unexpected output/) });
  });

  /**
   * The script itself, run by sh with an `ip` on its PATH that plays iproute2 over files
   * (one per device, its addresses one per line): what it reads and deletes is the files'.
   */
  describe('run by sh against a stand-in ip', () => {
    const dir = mkdtempSync(join(tmpdir(), 'stalecni-'));
    const state = join(dir, 'state');
    const log = join(dir, 'log');
    writeFileSync(
      join(dir, 'ip'),
      [
        '#!/bin/sh',
        `S=${state}; echo "ip $*" >> ${log}`,
        'case "$*" in',
        '  "-o link show dev "*) d=$5; [ -f "$S.$d" ] || { echo "Device \\"$d\\" does not exist." >&2; exit 1; }; echo "7: $d: <UP> mtu 1450"; exit 0 ;;',
        '  "-4 -o addr show dev "*) d=$6; while read -r a; do [ -n "$a" ] && echo "7: $d    inet $a brd 0.0.0.0 scope global $d\\       valid_lft forever"; done < "$S.$d"; exit 0 ;;',
        '  "link delete "*) rm "$S.$3" ;;',
        '  *) echo "unexpected: $*" >&2; exit 9 ;;',
        'esac',
      ].join('\n'),
    );
    chmodSync(join(dir, 'ip'), 0o755);
    const run = (dev: string, stale: string[]) => {
      const [cmd, ...args] = deleteStaleDeviceArgv(dev, stale);
      return spawnSync(cmd, args, { encoding: 'utf8', env: { PATH: `${dir}:/usr/bin:/bin` } });
    };
    const device = (dev: string, addrs: string[]) => writeFileSync(`${state}.${dev}`, addrs.map((a) => `${a}\n`).join(''));
    beforeEach(() => writeFileSync(log, ''));

    test('it carries exactly the stale addresses: deleted', () => {
      device('cni0', ['10.244.102.1/24']);
      const r = run('cni0', ['10.244.102.1/24']);
      expect([r.status, r.stdout, r.stderr]).toEqual([0, 'deleted 10.244.102.1/24 \n', '']);
      expect(existsSync(`${state}.cni0`)).toBe(false);
      expect(readFileSync(log, 'utf8')).toBe('ip -o link show dev cni0\nip -4 -o addr show dev cni0\nip link delete cni0\n');
    });

    test('two stale addresses, named in another order: deleted', () => {
      device('flannel.1', ['10.244.102.0/32', '10.244.7.0/32']);
      expect(run('flannel.1', ['10.244.7.0/32', '10.244.102.0/32']).stdout).toBe('deleted 10.244.102.0/32 10.244.7.0/32 \n');
      expect(existsSync(`${state}.flannel.1`)).toBe(false);
    });

    test('already gone: done, nothing deleted (a retry)', () => {
      const r = run('cni0', ['10.244.102.1/24']);
      expect([r.status, r.stdout]).toEqual([0, 'gone\n']);
      expect(readFileSync(log, 'utf8')).not.toContain('delete');
    });

    test('it carries something else (the right address, one more, or none): left as it is', () => {
      for (const addrs of [['10.244.1.1/24'], ['10.244.102.1/24', '10.244.1.1/24'], []]) {
        device('cni0', addrs);
        const r = run('cni0', ['10.244.102.1/24']);
        expect([r.status, r.stdout]).toEqual([0, `differs ${[...addrs].sort().map((a) => `${a} `).join('')}\n`]);
        expect(existsSync(`${state}.cni0`)).toBe(true);
      }
      expect(readFileSync(log, 'utf8')).not.toContain('delete');
    });

    test('a hostile-looking address is only ever an argument: the script compares it as text', () => {
      device('cni0', ['10.244.102.1/24']);
      // Refused by the validator; passed directly, the shell still never evaluates it.
      const r = spawnSync('sh', ['-c', DELETE_STALE_DEVICE_SCRIPT, 'x', 'cni0', '$(touch /tmp/kubemend-pwned)'], { encoding: 'utf8', env: { PATH: `${dir}:/usr/bin:/bin` } });
      expect(r.stdout).toBe('differs 10.244.102.1/24 \n');
      expect(existsSync('/tmp/kubemend-pwned')).toBe(false);
      expect(existsSync(`${state}.cni0`)).toBe(true);
    });

    test('ip cannot read the device (not "does not exist"): exit 2 with its words, nothing deleted', () => {
      writeFileSync(join(dir, 'ip.bak'), readFileSync(join(dir, 'ip')));
      writeFileSync(join(dir, 'ip'), '#!/bin/sh\necho "RTNETLINK answers: Operation not permitted" >&2; exit 2\n');
      try {
        const r = run('cni0', ['10.244.102.1/24']);
        expect([r.status, r.stdout, r.stderr]).toEqual([2, '', 'RTNETLINK answers: Operation not permitted\n']);
      } finally {
        writeFileSync(join(dir, 'ip'), readFileSync(join(dir, 'ip.bak')));
      }
    });

  });
});

describe('staleCniText: the CLI result', () => {
  test('a fixed node: what was deleted, the restart, what the devices carry, the probe, the uncordon; a dry run prints the plan', () => {
    const p = plan(lab({ joined: true, released: true }), { selected: ['node2'] });
    const base = { cluster: 'lab', remediation: 'stale-cni', planId: p.id, plan: p, approvedBy: 'alice', findings: [], remaining: [] };
    const fixed = staleCniText({
      ...base,
      outcome: 'fixed',
      nodes: [{ name: 'node2', podCidr: '10.244.1.0/24', deleted: ['cni0'], alreadyGone: ['flannel.1'], restartedPods: ['kube-flannel/kube-flannel-ds-abcde'], newPods: ['kube-flannel/kube-flannel-ds-fghij'], flannelSubnet: '10.244.1.1/24', probeIp: '10.244.1.7', cni0: ['10.244.1.1/24'], flannel1: ['10.244.1.0/32'], level: 'light', escalatedBecause: null, uncordoned: true, resumed: ['delete-flannel.1'] }],
    });
    expect(fixed).toBe(
      'stale-cni on cluster lab: fixed (approved by alice)\n' +
        '  node2: deleted cni0, flannel.1 already gone; restarted kube-flannel/kube-flannel-ds-abcde -> kube-flannel/kube-flannel-ds-fghij; cni0 10.244.1.1/24, flannel.1 10.244.1.0/32, subnet 10.244.1.1/24; probe pod got 10.244.1.7 (podCIDR 10.244.1.0/24), uncordoned (found done on retry: delete-flannel.1)\n',
    );
    const dry = staleCniText({ ...base, approvedBy: null, outcome: 'planned (dry run)', nodes: [], remaining: ['node2: cni0 has 10.244.102.1/24'] });
    expect(dry).toContain(`plan ${p.id}\n`);
    expect(dry).toContain('  1. node2 (worker)\n       ip link delete cni0: only if it still carries exactly 10.244.102.1/24');
    expect(dry.endsWith('  still stale: node2: cni0 has 10.244.102.1/24\n')).toBe(true);
  });
});

describe('the full level: kubeadm reset and re-join', () => {
  const joined = () => lab({ joined: true, released: true });
  const withFlags = (f: DiagnoseFacts, line: string) => {
    const n2 = f.nodes.find((n) => n.name === 'node2')!;
    n2.kubeletArgs = [...n2.kubeletArgs.filter((l) => !l.startsWith('/var/lib/kubelet/kubeadm-flags.env: ')), `/var/lib/kubelet/kubeadm-flags.env: ${line}`];
    return f;
  };

  test('--full: backup, reset, the devices, the join from the control plane (keeping kubeadm-flags.env\'s --node-ip), the waits and the checks, in that order', () => {
    const f = withFlags(joined(), 'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --node-ip=10.213.0.12"');
    const p = plan(f, { selected: ['node2'], full: true });
    expect(p.refused).toEqual([]);
    const [n2] = p.nodes;
    expect(n2).toMatchObject({ name: 'node2', level: 'full', escalate: false, full: { joinFrom: 'node1', nodeIp: '10.213.0.12', moveConfigs: [], deadNetworks: [] } });
    expect(n2.steps).toBe(n2.full!.steps);
    expect(n2.steps.map((x) => x.split(/[:(]/)[0].trim())).toEqual([
      'back up, once',
      'kubeadm reset -f',
      'ip link delete cni0',
      'ip link delete flannel.1',
      'wait up to 300 s until the Node is no longer Ready',
      'kubeadm token create --ttl 15m0s --print-join-command on node1; kubeadm join --config as node2',
      'wait up to 300 s for the Node Ready with a kubelet heartbeat after the join',
      "wait up to 300 s for the node's kube-flannel pod Ready and /run/flannel/subnet.env inside 10.244.1.0/24",
      'crictl runp a probe sandbox',
    ]);
    expect(n2.steps[5]).toContain('nodeRegistration keeps --node-ip=10.213.0.12 from kubeadm-flags.env');
    expect(n2.steps[1]).toContain('from here there is no undo');
    expect(p.summary!.join('\n')).toMatch(/^Full level on every node/);
    expect(p.summary!.join('\n')).toMatch(/appears in no input, result, history or audit record/);
  });

  test('--escalate: the light steps, then the full level only if they do not verify; the plan id differs from the light plan', () => {
    const f = joined();
    const light = plan(f, { selected: ['node2'] });
    const esc = plan(f, { selected: ['node2'], escalate: true });
    expect(esc.nodes[0]).toMatchObject({ level: 'light', escalate: true, full: { joinFrom: 'node1', nodeIp: null } });
    expect(esc.nodes[0].steps.slice(0, -1)).toEqual(light.nodes[0].steps);
    expect(esc.nodes[0].steps.at(-1)).toMatch(/^if any check above fails \(or flannel's pod is not Ready in time\): escalate to the full level: back up, once/);
    expect(light.nodes[0]).toMatchObject({ level: 'light', escalate: false, full: null });
    expect(esc.id).not.toBe(light.id);
    expect(plan(f, { selected: ['node2'], full: true }).id).not.toBe(esc.id);
    expect(esc.summary![0]).toMatch(/Escalation allowed \(--escalate\)/);
  });

  test("a foreign first CNI config: --full and --escalate plan the full level, which moves it and the dead network's host-local directory into the backup", () => {
    const f = joined();
    const n2 = f.nodes.find((n) => n.name === 'node2')!;
    n2.cniConfigs.push({ file: '/etc/cni/net.d/05-weave.conflist', network: 'weave', types: ['weave-net'] });
    n2.hostLocal = [{ network: 'weave', ip: '10.32.0.5', containerId: 'abc', mtime: 0 }];
    for (const o of [{ full: true }, { escalate: true }]) {
      const p = plan(f, { selected: ['node2'], ...o });
      expect(p.refused).toEqual([]);
      expect(p.nodes[0]).toMatchObject({ level: 'full', escalate: false, full: { moveConfigs: ['/etc/cni/net.d/05-weave.conflist'], deadNetworks: ['weave'] } });
      expect(p.nodes[0].steps).toContain('move /etc/cni/net.d/05-weave.conflist (not the installed CNI\'s: weave-net) into the backup');
      expect(p.nodes[0].steps).toContain('move /var/lib/cni/networks/weave (host-local\'s reservations for weave, a network no remaining CNI config names) into the backup');
    }
  });

  test('refused: no control-plane node to make the token; a control-plane target; a --node-ip that is not an address; names kubemend does not move', () => {
    const f = joined();
    expect(plan(f, { selected: ['node2'], full: true, joinFrom: null }).refused).toEqual([
      "node2: the full level re-joins the node with a token made on a control-plane node, and the worker's config lists none besides the nodes being fixed: add one to the config, or run without --full and --escalate",
    ]);
    const cp = plan(lab({ joined: true, released: true }), { selected: ['node1'], full: true, controlPlane: ['node1'] });
    expect(cp.nodes).toEqual([]);
    expect(cp.refused[0]).toMatch(/^node1 is a control-plane node: .*and never runs kubeadm reset on one \(it deletes the static pods and, with stacked etcd, the etcd member/);
    expect(plan(withFlags(joined(), 'KUBELET_KUBEADM_ARGS="--node-ip=$(reboot)"'), { selected: ['node2'], full: true }).refused[0]).toMatch(/^node2: its kubeadm-flags.env line .* cannot be read with certainty \(it uses quoting or expansion/);
    expect(plan(withFlags(joined(), 'KUBELET_KUBEADM_ARGS="--node-ip=10.213.0.300"'), { selected: ['node2'], full: true }).refused[0]).toMatch(/^node2: kubeadm-flags.env gives the kubelet --node-ip="10.213.0.300", which is not an IPv4 address/);
    const odd = joined();
    odd.nodes.find((n) => n.name === 'node2')!.cniConfigs.push({ file: '/etc/cni/net.d/.hidden;rm', network: 'x', types: ['bridge'] });
    expect(plan(odd, { selected: ['node2'], full: true }).refused[0]).toMatch(/^node2: the full level moves CNI leftovers into its backup, and these names are not ones kubemend moves: "\/etc\/cni\/net.d\/.hidden;rm"/);
  });
});

describe('the full level\'s node scripts', () => {
  test('argv: constant scripts, the run\'s backup directory and the items as arguments; hostile values refused', () => {
    expect(backupArgv('stale-cni-lab-1')).toEqual(['sh', '-c', expect.any(String), 'kubemend-stale-cni-backup', '/var/lib/kubemend/backup/stale-cni-lab-1/stale-cni']);
    expect(resetArgv('r1').slice(3)).toEqual(['kubemend-stale-cni-reset', '/var/lib/kubemend/backup/r1/stale-cni']);
    expect(moveLeftoversArgv('r1', ['/etc/cni/net.d/05-weave.conflist'], ['weave']).slice(3)).toEqual(['kubemend-stale-cni-move', '/var/lib/kubemend/backup/r1/stale-cni', 'config:/etc/cni/net.d/05-weave.conflist', 'network:weave']);
    for (const bad of ['../x', 'a/b', 'r1;reboot', '']) expect(() => backupArgv(bad)).toThrow(/not a run tag/);
    expect(() => moveLeftoversArgv('r1', ['/etc/passwd'], [])).toThrow(/not a CNI config/);
    expect(() => moveLeftoversArgv('r1', ['/etc/cni/net.d/../x'], [])).toThrow(/not a CNI config/);
    expect(() => moveLeftoversArgv('r1', [], ['../../etc'])).toThrow(/not a CNI network name/);
  });

  test('parsers: each answer; anything else is a problem', () => {
    expect(parseBackupOutput('made\n--- kubeadm-flags.env\nKUBELET_KUBEADM_ARGS="--node-ip=10.0.0.1"\n')).toEqual({ state: 'made', kubeadmFlags: 'KUBELET_KUBEADM_ARGS="--node-ip=10.0.0.1"\n' });
    expect(parseBackupOutput('already\n--- kubeadm-flags.env\n')).toEqual({ state: 'already', kubeadmFlags: '' });
    expect(parseBackupOutput('made\n')).toHaveProperty('problem');
    expect(parseResetOutput('reset\n1764160000\n[reset] Stopping the kubelet service\n\n')).toEqual({ state: 'reset', at: 1764160000, output: ['[reset] Stopping the kubelet service'] });
    expect(parseResetOutput('reset\nsoon\n')).toHaveProperty('problem');
    expect(parseMoveOutput('moved config:/etc/cni/net.d/a.conf\ngone network:weave\n', 2)).toEqual({ moved: ['config:/etc/cni/net.d/a.conf'], gone: ['network:weave'] });
    expect(parseMoveOutput('moved config:/etc/cni/net.d/a.conf\n', 2)).toHaveProperty('problem');
    expect(parseMoveOutput('copied x\n', 1)).toHaveProperty('problem');
  });

  describe('run by sh against a stand-in kubeadm', () => {
    const dir = mkdtempSync(join(tmpdir(), 'stalecni-full-'));
    const backup = join(dir, 'backup');
    const calls = join(dir, 'calls');
    writeFileSync(join(dir, 'kubeadm'), `#!/bin/sh\necho "kubeadm $*" >> ${calls}\n[ -e ${dir}/fail ] && { echo "error: boom" >&2; exit 1; }\necho "[reset] Stopping the kubelet service"\necho "W1126 warning on stderr" >&2\n`);
    chmodSync(join(dir, 'kubeadm'), 0o755);
    const reset = () => spawnSync('sh', ['-c', RESET_SCRIPT, 'x', backup], { encoding: 'utf8', env: { PATH: `${dir}:/usr/bin:/bin` } });

    test('no complete backup: exit 4, kubeadm never called', () => {
      const r = reset();
      expect(r.status).toBe(4);
      expect(r.stderr).toContain('kubemend runs kubeadm reset only on a node it has backed up');
      expect(existsSync(calls)).toBe(false);
    });

    test('a failing reset: exit 6 with its output, no marker; then it succeeds once, and a retry finds it done with the same time', () => {
      spawnSync('mkdir', ['-p', backup]);
      writeFileSync(join(backup, 'complete'), 'x\n');
      writeFileSync(join(dir, 'fail'), '');
      const failed = reset();
      expect(failed.status).toBe(6);
      expect(failed.stdout).toBe('failed 1\nerror: boom\n');
      spawnSync('rm', [join(dir, 'fail')]);
      const first = reset();
      expect(first.status).toBe(0);
      const p1 = parseResetOutput(first.stdout);
      expect(p1).toMatchObject({ state: 'reset', output: ['[reset] Stopping the kubelet service', 'W1126 warning on stderr'] });
      const again = parseResetOutput(reset().stdout);
      expect(again).toEqual({ ...(p1 as object), state: 'already' });
      expect(readFileSync(calls, 'utf8')).toBe('kubeadm reset -f\nkubeadm reset -f\n');
    });

    test('move: each item once; gone counts; a half-made copy is made again', () => {
      const net = join(dir, 'net.d');
      spawnSync('mkdir', ['-p', net]);
      writeFileSync(join(net, '05-weave.conflist'), '{"name":"weave"}');
      const move = (...items: string[]) => spawnSync('sh', ['-c', MOVE_LEFTOVERS_SCRIPT, 'x', backup, ...items], { encoding: 'utf8' });
      spawnSync('mkdir', ['-p', join(backup, 'moved-cni-net.d', '05-weave.conflist')]); // a killed cross-filesystem mv left a partial copy
      const r = move(`config:${join(net, '05-weave.conflist')}`);
      expect(r.status).toBe(0);
      expect(r.stdout).toBe(`moved config:${join(net, '05-weave.conflist')}\n`);
      expect(readFileSync(join(backup, 'moved-cni-net.d', '05-weave.conflist'), 'utf8')).toBe('{"name":"weave"}');
      expect(existsSync(join(net, '05-weave.conflist'))).toBe(false);
      expect(move(`config:${join(net, '05-weave.conflist')}`).stdout).toBe(`gone config:${join(net, '05-weave.conflist')}\n`);
      expect(move('bogus').status).toBe(3);
    });
  });
});
