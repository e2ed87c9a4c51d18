/**
 * `kubemend diagnose` through the real CLI, a real worker and the suite's Temporal server,
 * on labs with a real control plane: one lab with all five seeds' scenarios at once (they
 * compose on one lab), where every seed's failure is named on the right node with its
 * evidence; and a healthy lab, where it finds nothing and exits 0. It changes nothing and
 * takes no lock.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { temporal } from '@temporalio/proto';
import { parse, stringify } from 'yaml';
import type { DiagnoseReport } from '../../lib/diagnose';
import type { Finding } from '../../lib/findings';
import { down, type LabState, up } from '../lab/lab';
import { labSsh, labTestConfig } from '../helpers/lab';
import { loadTestConfig, recordHistory, runCli, runIdFrom, type RunningWorker, startWorker, tempDir, testClient, uniqueQueue, writeConfig } from '../helpers/harness';

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

async function history(runId: string): Promise<HistoryEvent[]> {
  const { client, close } = await testClient();
  try {
    return (await client.workflow.getHandle(runId).fetchHistory()).events ?? [];
  } finally {
    await close();
  }
}

async function diagnose(config: string, ...extra: string[]): Promise<{ code: number | null; report: DiagnoseReport; runId: string; stderr: string }> {
  const r = await runCli(['--config', config, 'diagnose', '--cluster', 'lab', '--json', ...extra]);
  return { code: r.code, report: JSON.parse(r.stdout) as DiagnoseReport, runId: runIdFrom(r.stderr), stderr: r.stderr };
}

const on = (report: DiagnoseReport, seed: string, node: string, remediation?: string): Finding[] => report.findings.filter((f) => f.seed === seed && f.node === node && (!remediation || f.remediation === remediation));

describe('a lab with all five scenarios', () => {
  const dir = join(tempDir('diag5'), 'lab');
  let state: LabState;
  let worker: RunningWorker;
  let config: string;
  let report: DiagnoseReport;
  let code: number | null;
  let runId: string;
  const ssh = (node: number, cmd: string) => labSsh(dir, state.nodes[node - 1].port, cmd);

  beforeAll(async () => {
    state = await up({ dir, nodes: 3, controlPlane: true, scenarios: ['cloned-machine-id', 'nat-advertise', 'no-default-route', 'stale-cni', 'orphan-calico'] });
    // The leaked host-local files are older than the detector's grace period, as after a real reset.
    for (let i = 1; i <= 3; i++) ssh(i, "touch -d '1 hour ago' /var/lib/cni/networks/cbr0/*");
    config = labTestConfig(dir, 'diag5');
    worker = await startWorker(loadTestConfig(config));
    ({ report, code, runId } = await diagnose(config));
  }, 240_000);

  afterAll(async () => {
    await worker?.stop();
    await down(dir);
  });

  test('exit 4, every node and the API read', () => {
    expect(code).toBe(4);
    expect(report.cluster).toBe('lab');
    expect(report.api).toBe('read');
    expect(report.nodes).toEqual(['node1', 'node2', 'node3'].map((name) => ({ name, error: null, problems: [] })));
  });

  test('seed 000: the shared machine-id and weave MAC on every node, fixable by the machine-id run', () => {
    const id = ssh(1, 'cat /etc/machine-id').trim();
    for (const node of ['node1', 'node2', 'node3']) {
      const [f] = on(report, '000', node);
      expect(f).toMatchObject({ remediation: 'machine-id', signature: 'local and remote peer names collision', fixable: true });
      expect(f.evidence).toContain(`/etc/machine-id ${id}`);
      expect(f.evidence).toContain('weave status connections: 2 connection(s) refused for a peer names collision');
    }
  });

  test('seed 001: the control plane advertises 10.0.2.15, which every node has; the workers never joined; Calico autodetects', () => {
    const [cp] = on(report, '001', 'node1');
    expect(cp).toMatchObject({ remediation: 'node-address', signature: 'dial tcp 10.0.2.15:6443: connect: connection refused', fixable: true });
    expect(cp.evidence).toEqual([
      'kube-apiserver --advertise-address=10.0.2.15 (/etc/kubernetes/manifests/kube-apiserver.yaml)',
      '10.0.2.15 is on node1 on enp0s3, node2 on enp0s3, node3 on enp0s3',
      'node2 never joined (no Node object, no /etc/kubernetes/kubelet.conf)',
      'node3 never joined (no Node object, no /etc/kubernetes/kubelet.conf)',
      'kube-system/calico-node IP_AUTODETECTION_METHOD is not set (first-found), and 10.0.2.15 is on node1 on enp0s3, node2 on enp0s3, node3 on enp0s3',
    ]);
    for (const node of ['node2', 'node3']) expect(on(report, '001', node)[0].evidence).toContain('never joined: no Node object, no /etc/kubernetes/kubelet.conf');
  });

  test('seed 002: only the control-plane node, its uplink down and flannel never started', () => {
    expect(report.findings.filter((f) => f.seed === '002').map((f) => f.node)).toEqual(['node1']);
    expect(on(report, '002', 'node1')[0]).toMatchObject({
      signature: 'Failed to find any valid interface to use: failed to get default interface: Unable to find default route',
      evidence: ['ip route show default: no default route', '/etc/netplan/50-cloud-init.yaml gives enp0s3 the default route; enp0s3 is DOWN', '/run/flannel/subnet.env is missing: flanneld has not started on this boot'],
    });
  });

  test("seed 003: cni0 and flannel.1 keep the old lease, and the leaked host-local files fill node1's range", () => {
    const [stale] = on(report, '003', 'node1', 'stale-cni');
    expect(stale.signature).toBe('"cni0" already has an IP address different from 10.244.0.1/24');
    expect(stale.evidence).toEqual([
      "cni0 has 10.244.101.1/24, outside the Node's podCIDR 10.244.0.0/24",
      "flannel.1 has 10.244.101.0/32 from an old lease (10.244.101.0/24), outside the Node's podCIDR 10.244.0.0/24",
      '/run/flannel/subnet.env is missing',
    ]);
    const [gc] = on(report, '003', 'node1', 'ipam-gc');
    expect(gc.signature).toBe('no IP addresses available in network: cbr0');
    expect(gc.evidence.slice(0, 2)).toEqual([
      '250 of 253 files in /var/lib/cni/networks/cbr0 name a container that no live sandbox has (crictl pods -q, crictl ps -a -q list 14)',
      'the range 10.244.0.0/24 has 253 addresses; 253 are reserved: none is free',
    ]);
    // The workers never joined: no podCIDR and no subnet.env, but host-local's own files show cni0 is stale.
    for (const node of ['node2', 'node3']) {
      expect(on(report, '003', node, 'stale-cni')[0].evidence[0]).toMatch(/^cni0 has 10\.244\.10[23]\.1\/24, but every host-local reservation in \/var\/lib\/cni\/networks\/cbr0 is outside 10\.244\.10[23]\.0\/24/);
      expect(on(report, '003', node, 'ipam-gc')[0].evidence[0]).toMatch(/^250 of 253 files/);
    }
  });

  test('seed 004: allocations and veths of pods that are gone, running pods without a veth', () => {
    for (const node of ['node1', 'node2', 'node3']) {
      const [f] = on(report, '004', node);
      expect(f).toMatchObject({ remediation: 'calico-orphans', fixable: true });
      for (const gone of ['x', 'y', 'z']) {
        expect(f.evidence).toContainEqual(expect.stringMatching(new RegExp(`^IPAM 192\\.168\\.\\d+\\.\\d+ \\(block 192\\.168\\.20\\d\\.0/26, handle k8s-pod-network\\.[0-9a-f]{64}\\) is allocated to default/gone-${node}-${gone}, which does not exist$`)));
      }
      expect(f.evidence.filter((e) => / matches no pod on /.test(e))).toHaveLength(3);
    }
    // Only node1 is joined: its pods run (kwok), and two of them have no veth.
    expect(on(report, '004', 'node1')[0].signature).toBe('? (169.254.1.1) at <incomplete> on eth0');
    expect(on(report, '004', 'node1')[0].evidence).toEqual(expect.arrayContaining([expect.stringMatching(/^default\/db-node1-0 is Running on node1 but has no cali[0-9a-f]{11}$/), expect.stringMatching(/^default\/db-node1-1 is Running on node1 but has no cali[0-9a-f]{11}$/)]));
  });

  test('the text names each seed signature, node, evidence and the exact fix command', async () => {
    const r = await runCli(['--config', config, 'diagnose', '--cluster', 'lab']);
    expect(r.code).toBe(4);
    expect(r.stdout).toContain('[seed 000] node2: local and remote peer names collision\n');
    expect(r.stdout).toContain('  fix: kubemend run machine-id --cluster lab --node node1 --node node2 --node node3\n');
    expect(r.stdout).toContain('[seed 003] node1: no IP addresses available in network: cbr0\n');
    expect(r.stdout).toContain('  fix: kubemend run ipam-gc --cluster lab --node node1\n');
    expect(r.stdout).toContain('  fix: kubemend run calico-orphans --cluster lab --node node1\n');
    expect(r.stdout).toMatch(/\n\d+ finding\(s\) on 3 node\(s\)\n$/);
  });

  test('--node reports on that node only, and still sees what it shares with the others', async () => {
    const r = await diagnose(config, '--node', 'node2');
    expect(r.code).toBe(4);
    expect(r.report.nodes.map((n) => n.name)).toEqual(['node2']);
    expect([...new Set(r.report.findings.map((f) => f.node))]).toEqual(['node2']);
    expect(r.report.findings.map((f) => f.seed)).toEqual(['000', '001', '003', '003', '004']);
  });

  test('read-only, no lock: the run started no child workflow and the nodes are as they were', async () => {
    const events = await history(runId);
    expect(events.some((e) => e.startChildWorkflowExecutionInitiatedEventAttributes)).toBe(false);
    const types = events.flatMap((e) => (e.activityTaskScheduledEventAttributes ? [e.activityTaskScheduledEventAttributes.activityType?.name] : []));
    expect([...new Set(types)].sort()).toEqual(['gatherNodeFacts', 'readClusterFacts', 'resolveTargets']);
    expect(ssh(2, 'ls /var/lib/cni/networks/cbr0 | wc -l').trim()).toBe('255');
    expect(ssh(1, 'ip route show default')).toBe('');
  });

  test('kubemend status shows a diagnose run and its findings', async () => {
    const r = await runCli(['--config', config, 'status', runId]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('[seed 002] node1: Failed to find any valid interface to use');
    expect(r.stdout).toMatch(/diagnose lab: 3 of 3 node\(s\) read; API: read/);
  });

  test('a node that cannot be read: exit 1, named, and the others still diagnosed', async () => {
    // node4's known_hosts has no key for it: refused (never trust on first use), not retried.
    const doc = parse(readFileSync(config, 'utf8')) as { temporal: Record<string, unknown>; clusters: Array<{ nodes: Array<Record<string, unknown>> }> };
    const empty = writeConfig(dir, '# nobody\n', 'empty_known_hosts');
    doc.clusters[0].nodes.push({ ...doc.clusters[0].nodes[1], name: 'node4', knownHostsPath: empty });
    doc.temporal.taskQueue = uniqueQueue('diag5-node4');
    const cfg = writeConfig(dir, stringify(doc), 'kubemend-node4.yaml');
    const other = await startWorker(loadTestConfig(cfg));
    try {
      const r = await diagnose(cfg);
      expect(r.code).toBe(1);
      expect(r.report.nodes.find((n) => n.name === 'node4')?.error).toMatch(/^HostKeyUnknown: /);
      expect(on(r.report, '002', 'node1')).toHaveLength(1);
      expect(on(r.report, '000', 'node2')).toHaveLength(1);
    } finally {
      await other.stop();
    }
  });

  test('bad input is exit 2 naming the flag, and starts nothing', async () => {
    for (const [args, msg] of [
      [['--node', 'n1;rm -rf /'], /--node #0: /],
      [['--node', 'node9'], /--node: /],
    ] as const) {
      const r = await runCli(['--config', config, 'diagnose', '--cluster', 'lab', ...args]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr).not.toMatch(/started /);
    }
    const r = await runCli(['--config', config, 'diagnose', '--cluster', 'nope']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--cluster: no cluster "nope"/);
  });
});

describe('a healthy lab', () => {
  const dir = join(tempDir('diag0'), 'lab');
  let worker: RunningWorker;
  let config: string;

  beforeAll(async () => {
    await up({ dir, nodes: 3, controlPlane: true });
    config = labTestConfig(dir, 'diag0');
    worker = await startWorker(loadTestConfig(config));
  }, 240_000);

  afterAll(async () => {
    await worker?.stop();
    await down(dir);
  });

  test('no findings, exit 0', async () => {
    const r = await diagnose(config);
    expect(r.report).toEqual({ cluster: 'lab', api: 'read', nodes: ['node1', 'node2', 'node3'].map((name) => ({ name, error: null, problems: [] })), findings: [] });
    expect(r.code).toBe(0);
    recordHistory(r.runId, 'diagnose-healthy.json');
    const text = await runCli(['--config', config, 'diagnose', '--cluster', 'lab']);
    expect(text.code).toBe(0);
    expect(text.stdout).toBe("diagnose lab: 3 of 3 node(s) read; API: read\n\nno findings: none of the five seeds' failures is on these nodes\n");
  });
});
