/**
 * default-route's own activities (seed 002): re-apply the node's network configuration,
 * wait for its default route and ping the gateway, restart the node's crash-looping CNI pod,
 * wait for its replacement, and prove the pod network with a probe sandbox. Each checks the
 * node first and does nothing it has already done; each change writes its audit record.
 * The commands and parsers are in lib/default-route-scripts.ts, the decisions in
 * lib/default-route.ts.
 */
import type { V1Pod } from '@kubernetes/client-node';
import { ApplicationFailure } from '@temporalio/common';
import { AuditReason } from '../lib/audit-reasons';
import type { NodeTarget } from '../lib/config';
import { inCidr } from '../lib/detect/facts';
import { cniOf } from '../lib/diagnose-api';
import { type CniPodRef, MANAGER_TOOL, managerCommands, NET_MANAGERS, type NetManager, probeSandboxConfig } from '../lib/default-route';
import {
  defaultRoute,
  type DefaultRouteState,
  LINKS_ARGV,
  linkStates,
  parsePingMs,
  parseProbeSandbox,
  pingArgv,
  PROBE_CLEANUP_FAILED,
  PROBE_RUNP_FAILED,
  probeSandboxArgv,
  ROUTE_ARGV,
  toolCheckArgv,
} from '../lib/default-route-scripts';
import { Failure } from '../lib/failures';
import { IFNAME } from '../lib/patterns';
import type { AuditContext } from '../lib/remediation-input';
import { commandLine } from '../lib/shell';
import type { Recorder } from './audit';
import { whileHeartbeating } from './heartbeat';
import { evictPod, type KubeCluster } from './kube';
import { pollUntil, type Poll } from './poll';
import type { SshPort, SshSession } from './ssh';

const fail = (type: string, message: string) => ApplicationFailure.create({ type, message, nonRetryable: true });

interface Deps {
  ssh: SshPort;
  target(cluster: string, node: string): NodeTarget;
  kube(cluster: string): KubeCluster;
  record: Recorder;
}

function checkInterfaces(interfaces: readonly string[]): void {
  if (interfaces.length === 0 || interfaces.some((i) => !IFNAME.test(i))) throw fail(Failure.BadInput, `interfaces must be Linux interface names, got ${JSON.stringify(interfaces)}`);
}

async function readRoute(s: SshSession, node: string): Promise<DefaultRouteState | null> {
  const r = await s.run(ROUTE_ARGV);
  const route = defaultRoute(r.stdout);
  if (route && 'problem' in route) throw fail(Failure.NodeStateUnexpected, `${node}: ${route.problem}`);
  return route;
}

async function readLinks(s: SshSession, node: string) {
  const r = await s.run(LINKS_ARGV);
  const links = linkStates(r.stdout);
  if ('problem' in links) throw fail(Failure.NodeStateUnexpected, `${node}: ${links.problem}`);
  // Only the host's own links: pod veths and CNI devices are not what this fix changes.
  return links.filter((l) => !/^(lo|veth|cali|cni|flannel|weave|vxlan|docker|tunl)/.test(l.ifname));
}

const isReady = (p: V1Pod) => (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');

export function createDefaultRouteActivities(d: Deps) {
  return {
    /**
     * Re-applies the node's own network configuration with its manager's command (netplan:
     * `netplan apply`; ifupdown and NetworkManager: each interface of `up`, else of
     * `interfaces`). Does
     * nothing (already-done) when a default route via one of the configured interfaces is
     * there. Refuses when the manager's tool is missing. Links and routes before and after go
     * into the audit record. No undo: taking the uplink down again would only restore the fault.
     */
    async applyNetworkConfig(input: { cluster: string; node: string; manager: NetManager; interfaces: string[]; up: string[]; audit: AuditContext }): Promise<{ already: boolean; command: string }> {
      if (!NET_MANAGERS.includes(input.manager)) throw fail(Failure.BadInput, `unknown network manager ${JSON.stringify(input.manager)}`);
      checkInterfaces(input.interfaces);
      if (!input.up.every((i) => input.interfaces.includes(i))) throw fail(Failure.BadInput, `interfaces to bring up ${JSON.stringify(input.up)} must be among ${JSON.stringify(input.interfaces)}`);
      const commands = managerCommands(input.manager, input.up.length ? input.up : input.interfaces);
      const command = commands.map(commandLine).join('; ');
      return whileHeartbeating((signal) =>
        d.ssh.withSession(
          d.target(input.cluster, input.node),
          async (s) => {
            const before = { links: await readLinks(s, input.node), defaultRoute: await readRoute(s, input.node) };
            const step = `${input.node}/network-config`;
            if (before.defaultRoute?.dev && input.interfaces.includes(before.defaultRoute.dev)) {
              await d.record(input.audit, { cluster: input.cluster, node: input.node, step, action: command, before, after: before, outcome: 'already-done' });
              return { already: true, command };
            }
            const tool = MANAGER_TOOL[input.manager];
            if ((await s.run(toolCheckArgv(tool), { check: false })).exitCode !== 0) {
              throw fail(Failure.NodeStateUnexpected, `${input.node}: its configuration is ${input.manager}'s, but ${tool} is not on the node's PATH; nothing was changed`);
            }
            const outputs: string[] = [];
            for (const argv of commands) {
              const r = await s.run(argv, { check: false });
              outputs.push(`${commandLine(argv)}: exit ${r.exitCode}${r.stderr.trim() ? `: ${r.stderr.trim().slice(0, 300)}` : ''}`);
              if (r.exitCode !== 0) {
                const after = { links: await readLinks(s, input.node), defaultRoute: await readRoute(s, input.node) };
                await d.record(input.audit, { cluster: input.cluster, node: input.node, step, action: command, before, after, outcome: 'failed', error: outputs.join('; ') });
                throw fail(Failure.CommandFailed, `${input.node}: ${outputs[outputs.length - 1]}`);
              }
            }
            const after = { links: await readLinks(s, input.node), defaultRoute: await readRoute(s, input.node) };
            await d.record(input.audit, {
              cluster: input.cluster,
              node: input.node,
              step,
              action: command,
              before,
              after,
              outcome: 'applied',
              event: { reason: AuditReason.NetworkConfigApplied, message: `${command}: default route ${after.defaultRoute ? `via ${after.defaultRoute.gateway ?? '?'} dev ${after.defaultRoute.dev ?? '?'}` : 'still missing'}` },
            });
            return { already: false, command };
          },
          signal,
        ),
      );
    },

    /**
     * Waits for a default route via one of the configured interfaces (DHCP may take a
     * while), then for its gateway to answer one ping from the node. Read-only.
     */
    async waitForDefaultRoute(input: { cluster: string; node: string; interfaces: string[]; timeoutMs: number }): Promise<{ dev: string; gateway: string; pingMs: number | null }> {
      checkInterfaces(input.interfaces);
      return pollUntil(input.timeoutMs, (seen) => `${input.node}: no working default route within ${Math.round(input.timeoutMs / 1000)} s of re-applying its configuration (last seen: ${seen})`, (signal) =>
        d.ssh.withSession(
          d.target(input.cluster, input.node),
          async (s): Promise<Poll<{ dev: string; gateway: string; pingMs: number | null }>> => {
            const route = await readRoute(s, input.node);
            if (!route) return { seen: 'no default route' };
            if (!route.dev || !input.interfaces.includes(route.dev)) return { seen: `default route via ${route.dev ?? 'no device'}, not ${input.interfaces.join(' or ')}` };
            if (!route.gateway) return { seen: `default route on ${route.dev} has no IPv4 gateway` };
            const ping = await s.run(pingArgv(route.gateway), { check: false });
            if (ping.exitCode !== 0) return { seen: `default route via ${route.gateway} dev ${route.dev}; the gateway did not answer a ping (exit ${ping.exitCode})` };
            return { ok: { dev: route.dev, gateway: route.gateway, pingMs: parsePingMs(ping.stdout) } };
          },
          signal,
        ),
      );
    },

    /**
     * Evicts (deletes through the Eviction API) the node's crash-looping CNI pods, each only
     * if it is still the pod the plan saw (a uid precondition): a retry never deletes the
     * replacement. Gone or replaced
     * already counts as done. No undo: the DaemonSet recreates the pod, which is the point.
     * `why` ends the Event's message (default: "that the node has a default route").
     */
    async restartCniPods(input: { cluster: string; node: string; pods: CniPodRef[]; audit: AuditContext; why?: string }): Promise<{ deleted: string[]; already: string[] }> {
      const kube = d.kube(input.cluster);
      const deleted: string[] = [];
      const already: string[] = [];
      for (const p of input.pods) {
        const ref = `${p.namespace}/${p.name}`;
        const step = `${input.node}/restart-pod`;
        if ((await evictPod(kube.core, p)) === 'already') {
          already.push(ref);
          await d.record(input.audit, { cluster: input.cluster, node: input.node, step, action: `evict pod ${ref}`, before: { pod: ref, uid: p.uid }, outcome: 'already-done' });
          continue;
        }
        deleted.push(ref);
        await d.record(input.audit, {
          cluster: input.cluster,
          node: input.node,
          step,
          action: `evict pod ${ref}`,
          before: { pod: ref, uid: p.uid },
          after: { deleted: true, why: 'its DaemonSet recreates it at once instead of after the crash-loop back-off' },
          outcome: 'applied',
          event: { reason: AuditReason.CniPodRestarted, message: `deleted ${ref} so its DaemonSet recreates it now ${input.why ?? 'that the node has a default route'}` },
        });
      }
      return { deleted, already };
    },

    /**
     * Waits until each replaced CNI pod has a Ready successor on the node (same namespace and
     * CNI, another uid) and, on a flannel node, until /run/flannel/subnet.env names a subnet
     * inside the Node's podCIDR. Read-only.
     */
    async waitForCniPods(input: { cluster: string; node: string; replaced: CniPodRef[]; flannel: boolean; podCidr: string | null; timeoutMs: number }): Promise<{ pods: string[]; subnet: string | null }> {
      const kube = d.kube(input.cluster);
      return pollUntil(input.timeoutMs, (seen) => `${input.node}: the CNI did not come back within ${Math.round(input.timeoutMs / 1000)} s (last seen: ${seen})`, async (signal): Promise<Poll<{ pods: string[]; subnet: string | null }>> => {
        const ready: string[] = [];
        const waiting: string[] = [];
        for (const old of input.replaced) {
          const list = await kube.core.listNamespacedPod({ namespace: old.namespace, fieldSelector: `spec.nodeName=${input.node}` });
          const successor = list.items.find((p) => cniOf(p.metadata?.name ?? '') === old.cni && p.metadata?.uid !== old.uid && !p.metadata?.deletionTimestamp);
          if (successor && isReady(successor)) ready.push(`${old.namespace}/${successor.metadata?.name}`);
          else waiting.push(successor ? `${old.namespace}/${successor.metadata?.name} not Ready${restartsOf(successor)}` : `no new ${old.cni} pod on ${input.node} yet`);
        }
        if (waiting.length) return { seen: waiting.join('; ') };
        if (!input.flannel) return { ok: { pods: ready, subnet: null } };
        const env = await d.ssh.withSession(d.target(input.cluster, input.node), (s) => s.run(['cat', '--', '/run/flannel/subnet.env'], { check: false }), signal);
        const subnet = /^FLANNEL_SUBNET=(\S+)$/m.exec(env.stdout)?.[1] ?? null;
        if (!subnet) return { seen: '/run/flannel/subnet.env not written yet' };
        if (input.podCidr && !inCidr(subnet, input.podCidr)) throw fail(Failure.VerificationFailed, `${input.node}: flannel wrote FLANNEL_SUBNET=${subnet}, outside the Node's podCIDR ${input.podCidr}`);
        return { ok: { pods: ready, subnet } };
      });
    },

    /**
     * A real CNI ADD on the node: a probe sandbox made with `crictl runp`, its address read
     * with `crictl inspectp`, then stopped and removed. Leaves nothing behind (an earlier
     * attempt's sandbox is removed first).
     */
    async probePodNetwork(input: { cluster: string; node: string; runTag: string }): Promise<{ sandboxId: string; ip: string | null }> {
      const argv = probeSandboxArgv(probeSandboxConfig(input.runTag, input.node), input.runTag);
      const r = await whileHeartbeating((signal) => d.ssh.withSession(d.target(input.cluster, input.node), (s) => s.run(argv, { check: false }), signal));
      if (r.exitCode === PROBE_RUNP_FAILED) throw fail(Failure.VerificationFailed, `${input.node}: a probe sandbox could not be made: ${r.stderr.trim().slice(-600)}`);
      const parsed = parseProbeSandbox(r.stdout);
      if ('problem' in parsed) throw fail(Failure.CommandFailed, `${input.node}: the probe sandbox (exit ${r.exitCode}): ${parsed.problem}${r.stderr.trim() ? `; ${r.stderr.trim().slice(0, 300)}` : ''}`);
      if (r.exitCode === PROBE_CLEANUP_FAILED) throw ApplicationFailure.create({ type: Failure.CommandFailed, message: `${input.node}: stopping or removing the probe sandbox ${parsed.id} failed (the next attempt removes it first): ${r.stderr.trim().slice(0, 300)}` });
      if (r.exitCode !== 0) throw fail(Failure.CommandFailed, `${input.node}: crictl inspectp ${parsed.id} failed (exit ${r.exitCode}): ${r.stderr.trim().slice(0, 300)}`);
      return { sandboxId: parsed.id, ip: parsed.ip };
    },
  };
}

function restartsOf(p: V1Pod): string {
  const cs = p.status?.containerStatuses ?? [];
  const n = cs.reduce((a, c) => a + (c.restartCount ?? 0), 0);
  const why = cs.find((c) => c.state?.waiting?.reason)?.state?.waiting?.reason;
  return `${why ? ` (${why}` : ' ('}${n} restarts)`;
}
