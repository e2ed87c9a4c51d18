/**
 * node-address: seed 001. On VirtualBox NAT every node has 10.0.2.15 on its first interface:
 * the kubelets register it as their InternalIP, Calico's first-found autodetection picks it
 * (calico-node never becomes Ready: BIRD cannot peer with an address every node has), and a
 * control plane initialised without --apiserver-advertise-address advertises it.
 *
 * Its own story, on the shared runbook (workflows/runbook.ts), which does the locks,
 * approval, audit, notifications and the breaker:
 *  - facts: diagnose's read of every node (the nodes' own network is chosen among all of
 *    them) and of the API; detect is diagnose's own seed-001 detector;
 *  - plan (lib/node-address.ts): the nodes' own network and each node's address on it; per
 *    node, the kubelet argument line that gets --node-ip, exactly as it will read; calico-node's
 *    new IP_AUTODETECTION_METHOD; what is left to the operator (the control plane's advertise
 *    address, never-joined workers) with the exact procedure. A kubelet line kubemend cannot
 *    rewrite with certainty, an operator-managed calico-node, or no clear network: `refused`;
 *  - per node, in service, one at a time (workers first, the control plane last): the
 *    disruption budget, the line written (copy first), `systemctl restart kubelet`, the wait
 *    for the Node Ready with its new InternalIP. Undo: the copy put back, the kubelet
 *    restarted, the Node Ready with its old InternalIP again;
 *  - once for the cluster: calico-node's method set on its DaemonSet, the rollout watched until
 *    every pod is Ready with an address on the nodes' network. Undo: the env entry put back
 *    and the template checked byte for byte against the one before;
 *  - verify: fresh facts show every Node's InternalIP and calico-node as planned.
 */
import { ApplicationFailure } from '@temporalio/workflow';
import type { DiagnoseFacts } from '../lib/detect/facts';
import { detectNatAdvertise } from '../lib/detect/seed001-nat-advertise';
import { Failure } from '../lib/failures';
import { kubeletArgsOf, type NodeAddressNode, type NodeAddressPlan, planNodeAddress, problemsAfter } from '../lib/node-address';
import { NodeAddressInput, type NodeAddressFixed } from '../lib/remediation-input';
import type { RunbookResult } from '../lib/runbook';
import { gatherDiagnoseFacts } from './diagnose-facts';
import { type FixedByRunbook, type NodeContext, parseInput, type Remediation, type RunContext, runRemediation } from './runbook';

type Input = ReturnType<typeof NodeAddressInput.parse>;

interface Applied {
  written: 'written' | 'already';
  internalIps: string[];
}

const Step = {
  CheckingBudget: 'CheckingBudget',
  WritingKubeletFlags: 'WritingKubeletFlags',
  RestartingKubelet: 'RestartingKubelet',
  WaitingForKubelet: 'WaitingForKubelet',
  Joining: 'Joining',
  SettingCalicoAutodetection: 'SettingCalicoAutodetection',
  WaitingForCalicoRollout: 'WaitingForCalicoRollout',
} as const;

const gatherFacts = (run: RunContext<Input>) => gatherDiagnoseFacts(run, run.everyNode, 'node-address', "every Node's InternalIP, calico-node's DaemonSet");

const lines = (facts: DiagnoseFacts) => detectNatAdvertise(facts).map((f) => `${f.node || 'cluster'}: ${f.evidence.join('; ')}`);

export const nodeAddressRemediation: Remediation<Input, DiagnoseFacts, NodeAddressPlan, Applied, NodeAddressFixed> = {
  name: 'node-address',
  disruption: {
    outOfService: false,
    reboots: false,
    why: "no drain: a kubelet restart keeps the node's pods running; for the seconds it takes, the Node's status is not updated and kubectl logs/exec to the node pause",
  },

  gather: (run) => gatherFacts(run),

  detect: (facts) => detectNatAdvertise(facts),

  plan: (facts, findings, run) =>
    planNodeAddress(facts, findings, {
      selected: run.selected,
      everyNodeSelected: run.everyNode.every((n) => run.selected.includes(n)),
      excluded: run.apiNodes.filter((n) => n.excluded).map((n) => n.name),
      network: run.input.network,
      interface: run.input.interface,
      calicoMethod: run.input.calicoMethod,
      kubeletTimeoutMs: run.input.kubeletTimeoutMs,
      rolloutTimeoutMs: run.input.rolloutTimeoutMs,
      runTag: run.runId.replace(/[^A-Za-z0-9-]/g, '-'),
    }),

  async apply(planned: NodeAddressNode, ctx: NodeContext<Input>) {
    const base = { cluster: ctx.cluster, node: ctx.node };
    if (planned.kind === 'join') {
      ctx.step(Step.Joining, `to ${planned.endpoint} (token from ${planned.controlPlane})`);
      // No undo: undoing a join is kubeadm reset -f, which deletes more than the join made; a
      // node that joined but is not Ready is left joined, and the failure says so.
      const j = await ctx.longActs.joinNode({ ...base, controlPlane: planned.controlPlane, endpoint: planned.endpoint, nodeIp: planned.target.address, audit: ctx.audit });
      if (j.outcome === 'already') ctx.resumed.push('join');
      ctx.step(Step.WaitingForKubelet, `Node ${ctx.node} Ready with InternalIP ${planned.target.address}`);
      const back = await ctx.longActs.waitForNodeAddress({ ...base, address: planned.target.address, timeoutMs: ctx.input.kubeletTimeoutMs });
      return { written: j.outcome === 'joined' ? ('written' as const) : ('already' as const), internalIps: back.internalIPs };
    }
    // In service, but a kubelet that does not come back takes the node out: only while no
    // other node is NotReady beyond the budget. A control-plane node is no exception: its static
    // pods (the API server, etcd) keep running while its kubelet restarts.
    ctx.step(Step.CheckingBudget);
    await ctx.acts.checkClusterHealth({ cluster: ctx.cluster, maxUnavailable: ctx.input.maxUnavailable });
    // The undo first: it acts only on a line this run wrote (the copy says so), so it is safe whatever the write got to.
    ctx.pushUndo(`restore ${planned.file} on ${ctx.node}`, () =>
      ctx.longActs.restoreKubeletNodeIp({ ...base, file: planned.file, lineWritten: planned.lineAfter, runTag: ctx.runTag, internalIpsBefore: planned.internalIpsBefore, timeoutMs: ctx.input.kubeletTimeoutMs, audit: ctx.audit }),
    );
    ctx.step(Step.WritingKubeletFlags, `${planned.file}: ${planned.lineAfter}`);
    const w = await ctx.acts.writeKubeletNodeIp({ ...base, file: planned.file, lineBefore: planned.lineBefore, lineAfter: planned.lineAfter, runTag: ctx.runTag, audit: ctx.audit });
    if (w.outcome === 'already') ctx.resumed.push('kubelet-node-ip');
    ctx.step(Step.RestartingKubelet);
    const restarted = await ctx.acts.restartKubelet({ ...base, why: `--node-ip=${planned.target.address}`, audit: ctx.audit, step: 'restart-kubelet', unlessAddress: planned.target.address });
    if (restarted.outcome === 'already') ctx.resumed.push('restart-kubelet');
    ctx.step(Step.WaitingForKubelet, `Node ${ctx.node} Ready with InternalIP ${planned.target.address}`);
    const back = await ctx.longActs.waitForNodeAddress({ ...base, address: planned.target.address, timeoutMs: ctx.input.kubeletTimeoutMs });
    return { written: w.outcome, internalIps: back.internalIPs };
  },

  async verifyNode(planned, applied, ctx) {
    const facts = await ctx.acts.gatherNodeFacts({ cluster: ctx.cluster, node: ctx.node });
    const { nodeIp, nodeIpFile } = kubeletArgsOf(facts);
    if (nodeIp !== planned.target.address) throw ApplicationFailure.create({ type: Failure.VerificationFailed, message: `${ctx.node}: after the fix the kubelet's flags give --node-ip ${nodeIp ?? '(none)'}, not ${planned.target.address}`, nonRetryable: true });
    const joined = planned.kind === 'join';
    const file = planned.kind === 'kubelet' ? planned.file : nodeIpFile;
    return {
      result: { name: ctx.node, joined, file, lineBefore: planned.kind === 'kubelet' ? planned.lineBefore : null, lineAfter: planned.kind === 'kubelet' ? planned.lineAfter : null, internalIpsBefore: planned.internalIpsBefore, internalIps: applied.internalIps, written: applied.written },
      detail: `${joined ? 'joined, ' : ''}InternalIP ${applied.internalIps.join(', ')} (was ${planned.internalIpsBefore.join(', ') || 'none'})`,
      record: {
        action: `verified: Node ${ctx.node} Ready with InternalIP ${applied.internalIps.join(', ')}; ${file} gives --node-ip=${nodeIp}`,
        before: { internalIPs: planned.internalIpsBefore, ...(planned.kind === 'kubelet' ? { line: planned.lineBefore } : { joined: false }) },
        after: { internalIPs: applied.internalIps, ...(planned.kind === 'kubelet' ? { line: planned.lineAfter } : { joined: true }) },
      },
    };
  },

  async applyCluster(plan, ctx) {
    const c = plan.calico;
    if (!c) return { calico: 'unchanged' };
    const base = { cluster: ctx.cluster, namespace: c.namespace, name: c.name };
    ctx.step(Step.SettingCalicoAutodetection, `${c.daemonSet} IP_AUTODETECTION_METHOD ${c.from ?? '(unset)'} -> ${c.to}`);
    const set = await ctx.acts.setCalicoAutodetection({ ...base, from: c.from, to: c.to, audit: ctx.audit });
    ctx.pushUndo(`roll back ${c.daemonSet}`, () => ctx.acts.restoreCalicoAutodetection({ ...base, from: c.from, to: c.to, digestBefore: set.digestBefore, audit: ctx.audit }));
    ctx.step(Step.WaitingForCalicoRollout);
    const rollout = await ctx.longActs.waitForCalicoRollout({ ...base, method: c.to, timeoutMs: ctx.input.rolloutTimeoutMs });
    // With a method kubemend chose, each node's calico-node must have found the node's own address.
    if (c.predicted && plan.network) {
      const wrong = Object.entries(rollout.addresses).filter(([node, a]) => plan.network!.addresses[node] !== undefined && a.split('/')[0] !== plan.network!.addresses[node]);
      if (wrong.length) throw ApplicationFailure.create({ type: Failure.VerificationFailed, message: `calico-node detected ${wrong.map(([n, a]) => `${a || 'no address'} on ${n} (expected ${plan.network!.addresses[n]})`).join(', ')}`, nonRetryable: true });
    }
    return { calico: { daemonSet: c.daemonSet, from: c.from, to: c.to, outcome: set.outcome, ready: rollout.ready, addresses: rollout.addresses } };
  },

  remaining: lines,

  async verifyCluster(run, plan) {
    const facts = await gatherFacts(run);
    const problems = problemsAfter(facts, plan);
    const fixed = new Set(plan.nodes.map((n) => n.name));
    const failing = problems.filter((p) => fixed.has(p.split(':')[0]) || (plan.calico !== null && p.startsWith(plan.calico.daemonSet.split('/')[0])));
    return { remaining: [...problems, ...plan.manual.map((m) => `manual: ${m}`)], failing };
  },
};

export type NodeAddressResult = RunbookResult<NodeAddressPlan, FixedByRunbook<NodeAddressFixed>>;

/** The node-address remediation's workflow type. */
export async function remediateNodeAddress(rawInput: NodeAddressInput): Promise<NodeAddressResult> {
  return runRemediation(nodeAddressRemediation, parseInput(NodeAddressInput, rawInput, 'node-address'));
}
