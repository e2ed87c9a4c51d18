/**
 * The circuit breaker end to end on the lab (real Temporal, worker, sshd, kube-apiserver, the
 * CLI as an SRE runs it): three machine-id runs fail honestly (a PodDisruptionBudget blocks
 * the drain of the first planned node until --drain-timeout), the third trips the breaker, the
 * fourth run is refused with exit 3 before it starts and touches nothing, a run started past
 * the CLI is refused by the workflow itself, `breaker reset` is recorded, and the next run
 * fixes the cluster.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowFailedError } from '@temporalio/client';
import { ActivityFailure, ApplicationFailure } from '@temporalio/common';
import type { AuditRecord } from '../../lib/audit';
import { TOOLS_BIN } from '../../worker/paths';
import { controlPlaneInfo, type ControlPlaneInfo } from '../lab/control-plane';
import { down, type LabState, up } from '../lab/lab';
import { labSsh, labTestConfig } from '../helpers/lab';
import { loadTestConfig, runCli, runIdFrom, type RunningWorker, startWorker, tempDir, testClient } from '../helpers/harness';

const KUBECTL = join(TOOLS_BIN, 'kubectl');
const dir = join(tempDir('brk'), 'lab');
let state: LabState;
let cp: ControlPlaneInfo;
let worker: RunningWorker | undefined;
let config: string;

beforeAll(async () => {
  state = await up({ dir, nodes: 3, controlPlane: true, scenarios: ['cloned-machine-id'], rebootDowntimeMs: 300 });
  cp = controlPlaneInfo(dir)!;
  config = labTestConfig(dir, 'brk');
  worker = await startWorker(loadTestConfig(config));
}, 180_000);

afterAll(async () => {
  await worker?.stop();
  await down(dir);
});

function kubectl(args: string[], input?: string) {
  const r = spawnSync(KUBECTL, ['--kubeconfig', cp.adminKubeconfig, ...args], { encoding: 'utf8', input, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const json = <T>(args: string[]) => JSON.parse(kubectl([...args, '-o', 'json']).stdout) as T;
const ssh = (name: string, cmd: string) => labSsh(dir, state.nodes.find((n) => n.name === name)!.port, cmd);
const cli = (args: string[], timeoutMs = 120_000) => runCli(['--config', config, ...args], {}, timeoutMs);
const breaker = async () => JSON.parse((await cli(['breaker', 'status', '--cluster', 'lab', '--json'])).stdout) as { open: boolean; trippedBy: Array<{ runId: string }>; lastReset: { actor: string; reason: string } | null };
const trail = async () => JSON.parse((await cli(['audit', 'list', '--cluster', 'lab', '--limit', '100000', '--json'])).stdout) as AuditRecord[];
const unschedulable = () => json<{ items: Array<{ metadata: { name: string }; spec: { unschedulable?: boolean } }> }>(['get', 'nodes']).items.filter((n) => n.spec.unschedulable).map((n) => n.metadata.name);

test('three failed runs trip the breaker; the fourth is refused (exit 3); after a reset a run fixes the cluster', async () => {
  // The first node the plan fixes (a worker: node1 is the control plane and kept) runs a pod
  // whose PodDisruptionBudget allows no eviction.
  const dry = await cli(['run', 'machine-id', '--cluster', 'lab', '--dry-run', '--json']);
  expect(dry.code).toBe(0);
  const first = (JSON.parse(dry.stdout) as { plan: { nodes: Array<{ name: string }> } }).plan.nodes[0].name;
  const manifest = [
    'apiVersion: apps/v1', 'kind: Deployment', 'metadata: {name: ledger, namespace: demo}',
    `spec: {replicas: 1, selector: {matchLabels: {app: ledger}}, template: {metadata: {labels: {app: ledger}}, spec: {nodeSelector: {kubernetes.io/hostname: ${first}}, containers: [{name: ledger, image: "postgres:17"}]}}}`,
    '---',
    'apiVersion: policy/v1', 'kind: PodDisruptionBudget', 'metadata: {name: ledger, namespace: demo}',
    'spec: {minAvailable: 1, selector: {matchLabels: {app: ledger}}}', '',
  ].join('\n');
  expect(kubectl(['apply', '-f', '-'], manifest).code).toBe(0);
  for (let i = 0; i < 100 && json<{ status?: { currentHealthy?: number } }>(['get', 'pdb', '-n', 'demo', 'ledger']).status?.currentHealthy !== 1; i++) await sleep(200);
  const idBefore = ssh(first, 'cat /etc/machine-id').trim();

  // 1-3: each run fails in its drain; its undo uncordons the node.
  const failed: string[] = [];
  for (let i = 1; i <= 3; i++) {
    expect(await breaker()).toMatchObject({ open: false });
    const r = await cli(['run', 'machine-id', '--cluster', 'lab', '--auto-approve', '--drain-timeout', '1s', '--reason', `attempt ${i}`]);
    expect({ i, code: r.code }).toEqual({ i, code: 1 });
    expect(r.stderr).toMatch(/DrainTimedOut: drain of \S+ did not finish within 1 s/);
    failed.push(runIdFrom(r.stderr));
  }
  const open = await breaker();
  expect(open.open).toBe(true);
  expect(open.trippedBy.map((f) => f.runId)).toEqual(failed);
  let records = await trail();
  expect(records.filter((x) => x.step === 'run/failed').map((x) => x.workflowId)).toEqual(failed);
  expect(records.filter((x) => x.step === 'breaker/tripped').map((x) => x.workflowId)).toEqual([failed[2]]);
  expect(unschedulable()).toEqual([]);
  expect(ssh(first, 'cat /etc/machine-id').trim()).toBe(idBefore);

  // 4: refused before anything starts, naming the failed runs; nothing is touched.
  const refused = await cli(['run', 'machine-id', '--cluster', 'lab', '--auto-approve', '--drain-timeout', '1s']);
  expect(refused.code).toBe(3);
  expect(refused.stderr).toMatch(/^kubemend: refused: circuit breaker open on cluster lab: 3 failed run\(s\) within 1h/m);
  for (const id of failed) expect(refused.stderr).toContain(id);
  expect(refused.stderr).toContain('kubemend breaker reset --cluster lab');
  expect(refused.stderr).not.toContain('started ');
  expect(unschedulable()).toEqual([]);
  // A dry run touches nothing and is still allowed: the plan can be looked at.
  expect((await cli(['run', 'machine-id', '--cluster', 'lab', '--dry-run'])).code).toBe(0);

  // A run started past the CLI (any Temporal client can) is refused by the workflow itself.
  const { client, close } = await testClient();
  try {
    const wfConfig = loadTestConfig(config);
    const handle = await client.workflow.start('remediateMachineId', {
      workflowId: `machine-id-lab-direct-${Date.now()}`,
      taskQueue: wfConfig.temporal.taskQueue,
      args: [{ cluster: 'lab', nodes: [], requestedBy: 'test', autoApprove: true, drainTimeoutMs: 1000 }],
    });
    const err = await handle.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const cause = (err as WorkflowFailedError).cause instanceof ActivityFailure ? (err as WorkflowFailedError).cause!.cause : (err as WorkflowFailedError).cause;
    expect(cause).toBeInstanceOf(ApplicationFailure);
    expect((cause as ApplicationFailure).type).toBe('BreakerOpen');
    expect((await trail()).filter((x) => x.workflowId === handle.workflowId).map((x) => [x.step, x.outcome])).toEqual([['refused', 'refused']]);
  } finally {
    await close();
  }
  expect(unschedulable()).toEqual([]);

  // Reset: recorded with who and why; then, with the PDB gone, a run fixes the cluster.
  const reset = await cli(['breaker', 'reset', '--cluster', 'lab', '--actor', 'alice', '--reason', 'ledger PDB removed']);
  expect(reset.code).toBe(0);
  expect(await breaker()).toMatchObject({ open: false, lastReset: { actor: 'alice', reason: 'ledger PDB removed' } });
  kubectl(['delete', 'pdb', '-n', 'demo', 'ledger']);
  kubectl(['delete', 'deployment', '-n', 'demo', 'ledger']);
  const fixed = await cli(['run', 'machine-id', '--cluster', 'lab', '--auto-approve', '--json'], 180_000);
  expect(fixed.code).toBe(0);
  expect((JSON.parse(fixed.stdout) as { outcome: string }).outcome).toBe('fixed');
  expect(ssh(first, 'cat /etc/machine-id').trim()).not.toBe(idBefore);
  records = await trail();
  expect(records.filter((x) => x.step === 'breaker/reset').map((x) => [x.actor, x.reason, x.outcome])).toEqual([['alice', 'ledger PDB removed', 'applied']]);
  expect((await cli(['audit', 'verify'])).code).toBe(0);
  expect(await breaker()).toMatchObject({ open: false });
}, 600_000);
