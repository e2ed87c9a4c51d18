/**
 * default-route: seed 002. After a reboot the node's uplink stayed down: no default route,
 * so flanneld exits ("Failed to find any valid interface to use: failed to get default
 * interface: Unable to find default route") and its pod crash-loops.
 *
 * Its own story, on the shared runbook (workflows/runbook.ts), which does the locks,
 * approval, audit, notifications and the breaker:
 *  - facts: diagnose's read of each selected node and of the API (lib/diagnose-script.ts,
 *    lib/diagnose-api.ts); detect is diagnose's own seed-002 detector;
 *  - plan: per node, the manager that owns the uplink and its command, the CNI pods to
 *    restart, and why it will happen again (lib/default-route.ts); a node kubemend will not
 *    touch (no configured default route, two managers) is `refused`: the runbook fails the
 *    run before approval, changing nothing;
 *  - per node, in service (no drain, no reboot): re-apply the node's own configuration, wait
 *    for the route and ping its gateway, delete the crash-looping CNI pod, wait for its
 *    replacement Ready and subnet.env;
 *  - verify: a probe sandbox gets an address in the Node's podCIDR (a real CNI ADD), and the
 *    route and subnet.env read back as they should.
 * No step has an undo: each re-applies the node's own configuration or lets a DaemonSet
 * recreate its pod; bringing the link back down would only restore the fault.
 */
import { ApplicationFailure } from '@temporalio/workflow';
import { type DefaultRouteNode, type DefaultRoutePlan, planDefaultRoute, problemsAfter } from '../lib/default-route';
import type { DiagnoseFacts } from '../lib/detect/facts';
import { detectNoDefaultRoute } from '../lib/detect/seed002-default-route';
import { Failure } from '../lib/failures';
import { DefaultRouteInput, type DefaultRouteFixed } from '../lib/remediation-input';
import type { RunbookResult } from '../lib/runbook';
import { gatherDiagnoseFacts } from './diagnose-facts';
import { type FixedByRunbook, type NodeContext, parseInput, type Remediation, type RunContext, runRemediation } from './runbook';

type Input = ReturnType<typeof DefaultRouteInput.parse>;

interface Applied {
  command: string;
  already: boolean;
  route: { dev: string; gateway: string; pingMs: number | null };
  restarted: string[];
  newPods: string[];
}

const Step = { ApplyingNetworkConfig: 'ApplyingNetworkConfig', WaitingForRoute: 'WaitingForRoute', RestartingCniPod: 'RestartingCniPod', WaitingForCni: 'WaitingForCni' } as const;

const gatherFacts = (run: RunContext<Input>, nodes: readonly string[]) => gatherDiagnoseFacts(run, nodes, 'default-route', "it restarts the node's CNI pod");

const lines = (facts: DiagnoseFacts) => detectNoDefaultRoute(facts).map((f) => `${f.node}: ${f.evidence.join('; ')}`);

export const defaultRouteRemediation: Remediation<Input, DiagnoseFacts, DefaultRoutePlan, Applied, DefaultRouteFixed> = {
  name: 'default-route',
  disruption: {
    outOfService: false,
    reboots: false,
    why: "no drain: the node's pod network is already down, and moving its pods onto the other nodes would add load there without helping this node; no reboot: a reboot is what leaves the uplink down",
  },

  gather: (run) => gatherFacts(run, run.selected),

  detect: (facts) => detectNoDefaultRoute(facts),

  plan: (facts, findings, run) =>
    planDefaultRoute(facts, findings, {
      selected: run.selected,
      excluded: run.apiNodes.filter((n) => n.excluded).map((n) => n.name),
      controlPlane: run.apiNodes.filter((n) => n.controlPlane).map((n) => n.name),
      routeTimeoutMs: run.input.routeTimeoutMs,
      podTimeoutMs: run.input.podTimeoutMs,
    }),

  async apply(planned: DefaultRouteNode, ctx: NodeContext<Input>) {
    const base = { cluster: ctx.cluster, node: ctx.node };
    ctx.step(Step.ApplyingNetworkConfig, planned.commands.map((c) => c.join(' ')).join('; '));
    // No undo: this re-applies the node's own configuration; taking the link down again would only restore the fault.
    const applied = await ctx.acts.applyNetworkConfig({ ...base, manager: planned.manager, interfaces: planned.interfaces, up: planned.down, audit: ctx.audit });
    if (applied.already) ctx.resumed.push('network-config');
    ctx.step(Step.WaitingForRoute);
    const route = await ctx.longActs.waitForDefaultRoute({ ...base, interfaces: planned.interfaces, timeoutMs: ctx.input.routeTimeoutMs });
    let restarted: string[] = [];
    if (planned.cniPods.length) {
      ctx.step(Step.RestartingCniPod, planned.cniPods.map((p) => `${p.namespace}/${p.name}`).join(', '));
      // No undo: the DaemonSet recreates the pod, which is the point.
      const r = await ctx.acts.restartCniPods({ ...base, pods: planned.cniPods, audit: ctx.audit });
      if (r.already.length) ctx.resumed.push('restart-pod');
      restarted = [...r.deleted, ...r.already];
    }
    ctx.step(Step.WaitingForCni);
    const cni = await ctx.longActs.waitForCniPods({ ...base, replaced: planned.cniPods, flannel: planned.flannel, podCidr: planned.podCidr, timeoutMs: ctx.input.podTimeoutMs });
    return { command: applied.command, already: applied.already, route, restarted, newPods: cni.pods };
  },

  async verifyNode(planned, applied, ctx) {
    const probe = await ctx.acts.probePodNetwork({ cluster: ctx.cluster, node: ctx.node, runTag: ctx.runTag });
    const facts = await ctx.acts.gatherNodeFacts({ cluster: ctx.cluster, node: ctx.node });
    const defaultRoute = facts.defaultRoute ? { dev: facts.defaultRoute.dev ?? null, gateway: facts.defaultRoute.gateway ?? null } : null;
    const subnet = facts.subnetEnv?.FLANNEL_SUBNET ?? null;
    const problems = problemsAfter(planned, { defaultRoute, subnet, probeIp: probe.ip });
    if (problems.length) throw ApplicationFailure.create({ type: Failure.VerificationFailed, message: `${ctx.node} after its fix: ${problems.join('; ')}`, nonRetryable: true });
    return {
      result: {
        name: ctx.node,
        manager: planned.manager,
        command: applied.command,
        interfaces: planned.interfaces,
        defaultRoute: { dev: applied.route.dev, gateway: applied.route.gateway },
        gatewayPingMs: applied.route.pingMs,
        restartedPods: applied.restarted,
        newPods: applied.newPods,
        flannelSubnet: subnet,
        probeIp: probe.ip,
        willRecur: planned.willRecur,
      },
      detail: `default route via ${applied.route.gateway} dev ${applied.route.dev}; probe pod ${probe.ip}`,
      record: {
        action: `verified: default route via ${applied.route.dev} (gateway answers ping), ${planned.flannel ? `subnet.env ${subnet}, ` : ''}probe sandbox got ${probe.ip}`,
        before: { defaultRoute: null, down: planned.down, cniPods: planned.cniPods.map((p) => `${p.namespace}/${p.name}`) },
        after: { defaultRoute: applied.route, newPods: applied.newPods, flannelSubnet: subnet, probeIp: probe.ip, willRecur: planned.willRecur },
      },
    };
  },

  remaining: lines,

  async verifyCluster(run, plan) {
    const remaining = lines(await gatherFacts(run, run.selected));
    const fixed = new Set(plan.nodes.map((n) => n.name));
    return { remaining, failing: remaining.filter((l) => fixed.has(l.split(':')[0])) };
  },
};

export type DefaultRouteResult = RunbookResult<DefaultRoutePlan, FixedByRunbook<DefaultRouteFixed>>;

/** The default-route remediation's workflow type. */
export async function remediateDefaultRoute(rawInput: DefaultRouteInput): Promise<DefaultRouteResult> {
  return runRemediation(defaultRouteRemediation, parseInput(DefaultRouteInput, rawInput, 'default-route'));
}
