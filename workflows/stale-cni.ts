/**
 * stale-cni: seed 003, the light level. `kubeadm reset` leaves cni0 and flannel.1 behind; after
 * the re-join the node's podCIDR differs from what they carry, and every new pod fails in the
 * bridge plugin ("cni0" already has an IP address different from 10.244.1.1/24), or flannel's
 * subnet.env is missing.
 *
 * Its own story, on the shared runbook (workflows/runbook.ts), which does the locks,
 * approval, budget, cordon, drain, uncordon, audit, notifications and the breaker:
 *  - facts: diagnose's read of each selected node and of the API; detect is diagnose's own
 *    seed-003 detector (its stale-cni findings, lib/stale-cni.ts);
 *  - plan: per node the devices to delete with the exact addresses they carry, whether
 *    flannel's pod is restarted and why; control-plane nodes, nodes without a podCIDR, a
 *    foreign first CNI config and a full host-local range are `refused` (the runbook fails the
 *    run before approval, changing nothing);
 *  - per node, out of service (cordoned and drained; no reboot): delete cni0 and flannel.1,
 *    each only if it still carries exactly what the plan named; evict the node's kube-flannel
 *    pod so the DaemonSet recreates it now; wait for it Ready and subnet.env in the podCIDR;
 *  - verify: a probe sandbox gets an address in the Node's podCIDR (a real CNI ADD, which makes
 *    cni0 again), and cni0, flannel.1 and subnet.env read back as the podCIDR says.
 * No step has an undo: a deleted device is made again by the CNI with the right address, and
 * putting the stale address back would be the fault; the flannel pod is recreated by its
 * DaemonSet. A node that fails stays cordoned (the runbook's uncordon undo acts only on a Ready
 * node this run cordoned) and the status says where it stopped.
 *
 *
 * The full level (--full for every planned node; --escalate for a light node whose fix did not
 * verify, or one the light level cannot fix): back up once, `kubeadm reset -f`, delete the
 * stale devices, move the CNI leftovers into the backup, re-join with a fresh short-lived token
 * (activities/node-address.ts joinNode: the token never leaves that activity), wait for the
 * Node Ready with a heartbeat after the reset, restart flannel's pod, then verify as the light
 * level. Nothing destructive before the backup; after the reset there is no undo: the node
 * stays cordoned and the failure says how to finish by hand.
 */
import { ApplicationFailure, patched } from '@temporalio/workflow';
import type { DiagnoseFacts } from '../lib/detect/facts';
import { Failure } from '../lib/failures';
import { StaleCniInput } from '../lib/remediation-input';
import type { RunbookResult } from '../lib/runbook';
import { detectStaleCniFindings, fullBackupDir, planStaleCni, problemsAfter, staleCniFacts, type StaleCniFixed, staleCniLines, type StaleCniNode, type StaleCniPlan } from '../lib/stale-cni';
import { gatherDiagnoseFacts } from './diagnose-facts';
import { describe, type FixedByRunbook, type NodeContext, parseInput, type Remediation, type RunContext, runRemediation } from './runbook';

type Input = ReturnType<typeof StaleCniInput.parse>;

interface Applied {
  deleted: string[];
  already: string[];
  restarted: string[];
  newPods: string[];
  /** The level that fixed the node, and why the full level ran (null: it did not). */
  level: 'light' | 'full';
  escalatedBecause: string | null;
  /** The full level's own results. */
  reset?: { outcome: 'reset' | 'already'; output: string[] };
  moved?: string[];
  joined?: 'joined' | 'already';
}

const Step = {
  DeletingStaleDevices: 'DeletingStaleDevices',
  RestartingFlannel: 'RestartingFlannel',
  WaitingForFlannel: 'WaitingForFlannel',
  CheckingLightFix: 'CheckingLightFix',
  Escalating: 'Escalating',
  BackingUp: 'BackingUp',
  ResettingNode: 'ResettingNode',
  MovingCniLeftovers: 'MovingCniLeftovers',
  WaitingForNotReady: 'WaitingForNotReady',
  Joining: 'Joining',
  WaitingForRejoin: 'WaitingForRejoin',
} as const;

/**
 * Failures of the light level that escalate: its verification (flannel not back in time, the
 * probe sandbox refused). Not a refusal (a node changed since the plan is never escalated),
 * not a command that failed (kubemend does not answer its own failure with a reset).
 */
const ESCALATABLE = new Set<string>([Failure.VerificationFailed]);

function failureType(err: unknown): string | undefined {
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof ApplicationFailure) return cause.type ?? undefined;
  if (err instanceof ApplicationFailure) return err.type ?? undefined;
  return undefined;
}

/** Runs recorded before verification read the Node's readiness replay without that read. */
const PATCH_VERIFY_READY = 'stale-cni-verify-node-ready';

/** The Node's Ready condition, as the budget reads it (undefined on a run recorded before this check). */
async function nodeReady(ctx: NodeContext<Input>): Promise<string | null | undefined> {
  if (!patched(PATCH_VERIFY_READY)) return undefined;
  return (await ctx.acts.listClusterNodes({ cluster: ctx.cluster })).find((n) => n.name === ctx.node)?.ready ?? null;
}

/** What is still wrong after the light level, read as verifyNode reads it (probe, devices, subnet.env, the Node Ready). */
async function lightProblems(planned: StaleCniNode, ctx: NodeContext<Input>): Promise<string[]> {
  const probe = await ctx.acts.probePodNetwork({ cluster: ctx.cluster, node: ctx.node, runTag: ctx.runTag });
  const facts = await ctx.acts.gatherNodeFacts({ cluster: ctx.cluster, node: ctx.node });
  const n = staleCniFacts({ cluster: ctx.cluster, configured: [ctx.node], nodes: [facts], api: null }, ctx.node)!;
  return problemsAfter(planned, { cni0: n.cni0, flannel1: n.flannel1, subnet: n.subnetEnv?.FLANNEL_SUBNET ?? null, probeIp: probe.ip, nodeReady: await nodeReady(ctx) });
}

/** Deletes the plan's stale devices, each only if it still carries what the plan named (both levels). */
async function deleteDevices(planned: StaleCniNode, ctx: NodeContext<Input>, afterLight = false): Promise<{ deleted: string[]; already: string[] }> {
  if (!planned.deletes.length) return { deleted: [], already: [] };
  ctx.step(Step.DeletingStaleDevices, planned.deletes.map((d) => `${d.dev} (${d.stale.join(' ')})`).join(', '));
  // No undo: the CNI makes the device again with the podCIDR's address; the old one back would be the fault.
  const r = await ctx.acts.deleteStaleDevices({ cluster: ctx.cluster, node: ctx.node, devices: planned.deletes, audit: ctx.audit });
  // After the light level (an escalation), a device found gone or right is the light level's work, not a retry's.
  if (!afterLight) ctx.resumed.push(...r.already.map((d) => `delete-${d}`));
  return r;
}

/** The light level; what it did so far is in `done` too, for an escalation after it failed half-way. */
async function lightLevel(planned: StaleCniNode, ctx: NodeContext<Input>, done: Applied = emptyApplied()): Promise<Applied> {
  const base = { cluster: ctx.cluster, node: ctx.node };
  const { deleted, already } = await deleteDevices(planned, ctx);
  done.deleted.push(...deleted);
  done.already.push(...already);
  let restarted: string[] = [];
  if (planned.flannelPods.length) {
    ctx.step(Step.RestartingFlannel, planned.flannelPods.map((p) => `${p.namespace}/${p.name}`).join(', '));
    // No undo: the DaemonSet recreates the pod, which is the point.
    const r = await ctx.acts.restartCniPods({ ...base, pods: planned.flannelPods, audit: ctx.audit, why: `that the node's stale CNI devices are gone (${planned.restartWhy})` });
    if (r.already.length) ctx.resumed.push('restart-pod');
    restarted = [...r.deleted, ...r.already];
    done.restarted.push(...restarted);
  }
  ctx.step(Step.WaitingForFlannel);
  const cni = await ctx.longActs.waitForCniPods({ ...base, replaced: planned.flannelPods, flannel: true, podCidr: planned.podCidr, timeoutMs: ctx.input.podTimeoutMs });
  return { deleted, already, restarted, newPods: cni.pods, level: 'light', escalatedBecause: null };
}

const emptyApplied = (): Applied => ({ deleted: [], already: [], restarted: [], newPods: [], level: 'light', escalatedBecause: null });

/** How to finish a node by hand once it was reset and the run stopped. */
function finishByHand(planned: StaleCniNode, ctx: NodeContext<Input>): string {
  const f = planned.full!;
  return [
    `kubeadm token create --ttl 15m0s --print-join-command on ${f.joinFrom}, then on ${ctx.node}: kubeadm join <endpoint> --token <token> --discovery-token-ca-cert-hash <hash>${f.nodeIp ? ` with nodeRegistration.kubeletExtraArgs node-ip=${f.nodeIp} (a JoinConfiguration)` : ''} (skip if /etc/kubernetes/kubelet.conf exists)`,
    `wait for kubectl get node ${ctx.node} Ready`,
    `kubectl -n kube-flannel delete pod -l app=flannel --field-selector spec.nodeName=${ctx.node}; wait for it Ready and /run/flannel/subnet.env inside ${planned.podCidr}`,
    `start a pod pinned to ${ctx.node} and check its address is in ${planned.podCidr}`,
    `kubectl uncordon ${ctx.node}`,
    `the node's configuration before the reset is in ${fullBackupDir(ctx.runTag)} on ${ctx.node}`,
  ]
    .map((x, i) => `(${i + 1}) ${x}`)
    .join('; ');
}

async function fullLevel(planned: StaleCniNode, ctx: NodeContext<Input>, because: string | null, light: Applied | null): Promise<Applied> {
  const f = planned.full!;
  const base = { cluster: ctx.cluster, node: ctx.node };
  ctx.step(Step.BackingUp, fullBackupDir(ctx.runTag));
  // Changes nothing but the backup directory: no undo (the copy is kept).
  await ctx.acts.backupBeforeReset({ ...base, runTag: ctx.runTag, audit: ctx.audit });
  // From the reset on, a failed node stays cordoned, whatever its Ready condition still says.
  ctx.keepCordoned();
  ctx.step(Step.ResettingNode, because ?? '--full');
  // No undo: reset deleted the node's credentials and kubelet configuration; the backup keeps them.
  const reset = await ctx.longActs.kubeadmReset({ ...base, runTag: ctx.runTag, audit: ctx.audit });
  if (reset.outcome === 'already') ctx.resumed.push('kubeadm-reset');
  try {
    const { deleted, already } = await deleteDevices(planned, ctx, light !== null);
    let moved: string[] = [];
    if (f.moveConfigs.length || f.deadNetworks.length) {
      ctx.step(Step.MovingCniLeftovers, [...f.moveConfigs, ...f.deadNetworks].join(', '));
      // The way back is a mv from the backup; nothing is deleted.
      moved = (await ctx.acts.moveCniLeftovers({ ...base, runTag: ctx.runTag, configs: f.moveConfigs, networks: f.deadNetworks, audit: ctx.audit })).moved;
    }
    // kubeadm join refuses the name of a Node that is still Ready; the Node is kept (its podCIDR, labels, taints), so wait for the controller to see the kubelet gone.
    ctx.step(Step.WaitingForNotReady);
    await ctx.longActs.waitForNodeNotReady({ ...base, timeoutMs: ctx.input.joinTimeoutMs });
    ctx.step(Step.Joining, `token from ${f.joinFrom}`);
    // No undo: undoing a join is another reset. The token is made, used and deleted inside this one activity.
    const joined = await ctx.longActs.joinNode({ ...base, controlPlane: f.joinFrom, nodeIp: f.nodeIp, name: ctx.node, audit: ctx.audit });
    if (joined.outcome === 'already') ctx.resumed.push('join');
    ctx.step(Step.WaitingForRejoin);
    await ctx.longActs.waitForRejoinedNode({ ...base, since: reset.at, timeoutMs: ctx.input.joinTimeoutMs });
    // flannel's pod as the API lists it now (the light level may have replaced it): restarted so it runs on the new kubelet.
    const api = await ctx.acts.readClusterFacts({ cluster: ctx.cluster });
    const pods = (api.facts?.cniPods ?? []).filter((p) => p.node === ctx.node && p.cni === 'flannel').map((p) => ({ namespace: p.namespace, name: p.name, uid: p.uid ?? null, cni: p.cni }));
    let restarted: string[] = [];
    if (pods.length) {
      ctx.step(Step.RestartingFlannel, pods.map((p) => `${p.namespace}/${p.name}`).join(', '));
      const r = await ctx.acts.restartCniPods({ ...base, pods, audit: ctx.audit, why: 'that the node was reset and joined again' });
      restarted = [...r.deleted, ...r.already];
    }
    ctx.step(Step.WaitingForFlannel);
    const cni = await ctx.longActs.waitForCniPods({ ...base, replaced: pods, flannel: true, podCidr: planned.podCidr, timeoutMs: ctx.input.podTimeoutMs });
    return {
      deleted: [...(light?.deleted ?? []), ...deleted],
      already: [...(light?.already ?? []), ...already],
      restarted: [...(light?.restarted ?? []), ...restarted],
      newPods: cni.pods,
      level: 'full',
      escalatedBecause: because,
      reset: { outcome: reset.outcome, output: reset.output },
      moved,
      joined: joined.outcome,
    };
  } catch (err) {
    const type = failureType(err) ?? Failure.CommandFailed;
    throw ApplicationFailure.create({ type, message: `${describe(err)}. ${ctx.node} was reset (kubeadm reset -f) and stays cordoned; to finish by hand: ${finishByHand(planned, ctx)}`, nonRetryable: true });
  }
}

const gatherFacts = (run: RunContext<Input>, nodes: readonly string[]) => gatherDiagnoseFacts(run, nodes, 'stale-cni', "the Node's podCIDR, cordon, drain, flannel's pod");

export const staleCniRemediation: Remediation<Input, DiagnoseFacts, StaleCniPlan, Applied, StaleCniFixed> = {
  name: 'stale-cni',
  disruption: {
    outOfService: true,
    reboots: false,
    why: "cordon and drain: deleting cni0 cuts the network of every pod still attached to it, so the node's pods move first; no reboot: the devices are deleted and made again by the CNI",
  },

  gather: (run) => gatherFacts(run, run.selected),

  detect: (facts) => detectStaleCniFindings(facts),

  plan: (facts, findings, run) =>
    planStaleCni(facts, findings, {
      cluster: run.cluster,
      selected: run.selected,
      excluded: run.apiNodes.filter((n) => n.excluded).map((n) => n.name),
      controlPlane: run.apiNodes.filter((n) => n.controlPlane).map((n) => n.name),
      podTimeoutMs: run.input.podTimeoutMs,
      full: run.input.full,
      escalate: run.input.escalate,
      // A Ready control-plane node the worker can reach makes the join token.
      joinFrom: run.apiNodes.find((n) => n.controlPlane && n.ready === 'True' && run.everyNode.includes(n.name))?.name ?? null,
      joinTimeoutMs: run.input.joinTimeoutMs,
    }),

  async apply(planned: StaleCniNode, ctx: NodeContext<Input>) {
    if (planned.level === 'full') return fullLevel(planned, ctx, null, null);
    if (!planned.escalate) return lightLevel(planned, ctx);
    let light: Applied;
    const done = emptyApplied();
    try {
      light = await lightLevel(planned, ctx, done);
    } catch (err) {
      const type = failureType(err);
      if (!type || !ESCALATABLE.has(type)) throw err;
      ctx.step(Step.Escalating, describe(err));
      return fullLevel(planned, ctx, `the light level failed: ${describe(err)}`, done);
    }
    ctx.step(Step.CheckingLightFix);
    const problems = await lightProblems(planned, ctx);
    if (!problems.length) return light;
    ctx.step(Step.Escalating, problems.join('; '));
    return fullLevel(planned, ctx, `the light fix did not verify: ${problems.join('; ')}`, light);
  },

  async verifyNode(planned, applied, ctx) {
    const probe = await ctx.acts.probePodNetwork({ cluster: ctx.cluster, node: ctx.node, runTag: ctx.runTag });
    const facts = await ctx.acts.gatherNodeFacts({ cluster: ctx.cluster, node: ctx.node });
    const n = staleCniFacts({ cluster: ctx.cluster, configured: [ctx.node], nodes: [facts], api: null }, ctx.node)!;
    const subnet = n.subnetEnv?.FLANNEL_SUBNET ?? null;
    const problems = problemsAfter(planned, { cni0: n.cni0, flannel1: n.flannel1, subnet, probeIp: probe.ip, nodeReady: await nodeReady(ctx) });
    if (problems.length) throw ApplicationFailure.create({ type: Failure.VerificationFailed, message: `${ctx.node} after its fix: ${problems.join('; ')}`, nonRetryable: true });
    return {
      result: {
        name: ctx.node,
        podCidr: planned.podCidr,
        deleted: applied.deleted,
        alreadyGone: applied.already,
        restartedPods: applied.restarted,
        newPods: applied.newPods,
        flannelSubnet: subnet,
        probeIp: probe.ip,
        cni0: n.cni0,
        flannel1: n.flannel1,
        level: applied.level,
        escalatedBecause: applied.escalatedBecause,
        ...(applied.reset ? { reset: applied.reset.outcome, moved: applied.moved ?? [], joined: applied.joined } : {}),
      },
      detail: `cni0 ${n.cni0?.join(' ')}, flannel.1 ${n.flannel1?.join(' ') ?? '-'}; probe pod ${probe.ip}`,
      record: {
        action: `verified${applied.level === 'full' ? ' after kubeadm reset and re-join' : ''}: probe sandbox got ${probe.ip} in ${planned.podCidr}; cni0 ${n.cni0?.join(' ')}, flannel.1 ${n.flannel1?.join(' ') ?? '-'}, subnet.env ${subnet}`,
        before: { found: planned.found, deletes: planned.deletes, flannelPods: planned.flannelPods.map((p) => `${p.namespace}/${p.name}`) },
        after: { cni0: n.cni0, flannel1: n.flannel1, flannelSubnet: subnet, probeIp: probe.ip, newPods: applied.newPods },
      },
    };
  },

  remaining: staleCniLines,

  async verifyCluster(run, plan) {
    const remaining = staleCniLines(await gatherFacts(run, run.selected));
    const fixed = new Set(plan.nodes.map((n) => n.name));
    return { remaining, failing: remaining.filter((l) => fixed.has(l.split(':')[0])) };
  },
};

export type StaleCniResult = RunbookResult<StaleCniPlan, FixedByRunbook<StaleCniFixed>>;

/** The stale-cni remediation's workflow type (light level). */
export async function remediateStaleCni(rawInput: StaleCniInput): Promise<StaleCniResult> {
  return runRemediation(staleCniRemediation, parseInput(StaleCniInput, rawInput, 'stale-cni'));
}
