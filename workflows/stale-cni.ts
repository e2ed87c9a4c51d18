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
 * The full level (kubeadm reset and re-join) is not built.
 */
import { ApplicationFailure } from '@temporalio/workflow';
import type { DiagnoseFacts } from '../lib/detect/facts';
import { Failure } from '../lib/failures';
import { StaleCniInput } from '../lib/remediation-input';
import type { RunbookResult } from '../lib/runbook';
import { detectStaleCniFindings, planStaleCni, problemsAfter, staleCniFacts, type StaleCniFixed, staleCniLines, type StaleCniNode, type StaleCniPlan } from '../lib/stale-cni';
import { gatherDiagnoseFacts } from './diagnose-facts';
import { type FixedByRunbook, type NodeContext, parseInput, type Remediation, type RunContext, runRemediation } from './runbook';

type Input = ReturnType<typeof StaleCniInput.parse>;

interface Applied {
  deleted: string[];
  already: string[];
  restarted: string[];
  newPods: string[];
}

const Step = { DeletingStaleDevices: 'DeletingStaleDevices', RestartingFlannel: 'RestartingFlannel', WaitingForFlannel: 'WaitingForFlannel' } as const;

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
    }),

  async apply(planned: StaleCniNode, ctx: NodeContext<Input>) {
    const base = { cluster: ctx.cluster, node: ctx.node };
    let deleted: string[] = [];
    let already: string[] = [];
    if (planned.deletes.length) {
      ctx.step(Step.DeletingStaleDevices, planned.deletes.map((d) => `${d.dev} (${d.stale.join(' ')})`).join(', '));
      // No undo: the CNI makes the device again with the podCIDR's address; the old one back would be the fault.
      const r = await ctx.acts.deleteStaleDevices({ ...base, devices: planned.deletes, audit: ctx.audit });
      deleted = r.deleted;
      already = r.already;
      ctx.resumed.push(...r.already.map((d) => `delete-${d}`));
    }
    let restarted: string[] = [];
    if (planned.flannelPods.length) {
      ctx.step(Step.RestartingFlannel, planned.flannelPods.map((p) => `${p.namespace}/${p.name}`).join(', '));
      // No undo: the DaemonSet recreates the pod, which is the point.
      const r = await ctx.acts.restartCniPods({ ...base, pods: planned.flannelPods, audit: ctx.audit, why: `that the node's stale CNI devices are gone (${planned.restartWhy})` });
      if (r.already.length) ctx.resumed.push('restart-pod');
      restarted = [...r.deleted, ...r.already];
    }
    ctx.step(Step.WaitingForFlannel);
    const cni = await ctx.longActs.waitForCniPods({ ...base, replaced: planned.flannelPods, flannel: true, podCidr: planned.podCidr, timeoutMs: ctx.input.podTimeoutMs });
    return { deleted, already, restarted, newPods: cni.pods };
  },

  async verifyNode(planned, applied, ctx) {
    const probe = await ctx.acts.probePodNetwork({ cluster: ctx.cluster, node: ctx.node, runTag: ctx.runTag });
    const facts = await ctx.acts.gatherNodeFacts({ cluster: ctx.cluster, node: ctx.node });
    const n = staleCniFacts({ cluster: ctx.cluster, configured: [ctx.node], nodes: [facts], api: null }, ctx.node)!;
    const subnet = n.subnetEnv?.FLANNEL_SUBNET ?? null;
    const problems = problemsAfter(planned, { cni0: n.cni0, flannel1: n.flannel1, subnet, probeIp: probe.ip });
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
      },
      detail: `cni0 ${n.cni0?.join(' ')}, flannel.1 ${n.flannel1?.join(' ') ?? '-'}; probe pod ${probe.ip}`,
      record: {
        action: `verified: probe sandbox got ${probe.ip} in ${planned.podCidr}; cni0 ${n.cni0?.join(' ')}, flannel.1 ${n.flannel1?.join(' ') ?? '-'}, subnet.env ${subnet}`,
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
