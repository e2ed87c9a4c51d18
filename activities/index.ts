/**
 * Activities: thin adapters that do kubemend's I/O. Built by a factory over narrow ports
 * (SSH, Kubernetes) that the worker constructs once; workflows import only the type.
 */
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { type Config, findCluster, nodeTarget, type NodeTarget, selectNodes } from '../lib/config';
import { Failure } from '../lib/failures';
import { parseBootId, parseDefaultRoute, parseIpLinkJson, parseMachineId } from '../lib/node-facts';
import type { ProbeNodeFacts } from '../lib/probe';
import type { KubePort } from './kube';
import type { SshPort, SshSession } from './ssh';

export interface ActivityDeps {
  config: Config;
  ssh: SshPort;
  kube: KubePort;
  env?: Record<string, string | undefined>;
}

export const MACHINE_ID_FILE = '/etc/machine-id';
export const DBUS_MACHINE_ID_FILE = '/var/lib/dbus/machine-id';
export const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';

export function createActivities(deps: ActivityDeps) {
  const badInput = (message: string) => ApplicationFailure.create({ type: Failure.BadInput, message, nonRetryable: true });

  function clusterOf(name: string) {
    const c = findCluster(deps.config, name);
    if (!c) throw badInput(`the worker's config has no cluster ${JSON.stringify(name)} (it has: ${deps.config.clusters.map((x) => x.name).join(', ')})`);
    return c;
  }

  function target(cluster: string, node: string): NodeTarget {
    const t = nodeTarget(clusterOf(cluster), node, deps.env);
    if (!t) throw badInput(`cluster ${cluster} has no node ${JSON.stringify(node)} in the worker's config`);
    return t;
  }

  return {
    /** The nodes a run targets, checked against the worker's config (the authority on inventory). */
    async resolveTargets(input: { cluster: string; nodes: string[] }): Promise<{ nodes: string[] }> {
      const picked = selectNodes(clusterOf(input.cluster), input.nodes);
      if ('error' in picked) throw badInput(picked.error);
      return picked;
    },

    /** Reads a node's identity and network facts. Read-only: runs cat and ip, nothing else. */
    async probeNode(input: { cluster: string; node: string }): Promise<ProbeNodeFacts> {
      const ctx = Context.current();
      return deps.ssh.withSession(
        target(input.cluster, input.node),
        async (s) => {
          const problems: string[] = [];
          const read = async (file: string) => {
            const r = await s.run(['cat', '--', file], { check: false });
            ctx.heartbeat();
            if (r.exitCode === 0) return r.stdout;
            problems.push(`${file}: ${r.stderr.trim() || `cat exited ${r.exitCode}`}`);
            return undefined;
          };
          const id = (text: string | undefined, file: string) => {
            if (text === undefined) return null;
            const p = parseMachineId(text, file);
            if (!p.ok) problems.push(p.problem);
            return p.ok ? p.value : null;
          };
          const machineId = id(await read(MACHINE_ID_FILE), MACHINE_ID_FILE);
          const dbusMachineId = id(await read(DBUS_MACHINE_ID_FILE), DBUS_MACHINE_ID_FILE);
          const bootText = await read(BOOT_ID_FILE);
          const boot = bootText === undefined ? undefined : parseBootId(bootText);
          if (boot && !boot.ok) problems.push(boot.problem);

          const links = parseIpLinkJson((await ip(s, ['-j', 'link'], problems)) ?? '');
          if (!links.ok) problems.push(links.problem);
          const route = parseDefaultRoute((await ip(s, ['-j', 'route', 'show', 'default'], problems)) ?? '');
          if (!route.ok) problems.push(route.problem);
          ctx.heartbeat();

          return {
            name: input.node,
            machineId,
            dbusMachineId,
            bootId: boot?.ok ? boot.value : null,
            links: links.ok ? links.value : [],
            defaultRoute: route.ok ? route.value : null,
            problems,
          };
        },
        ctx.cancellationSignal,
      );
    },
  };
}

async function ip(s: SshSession, args: string[], problems: string[]): Promise<string | undefined> {
  const r = await s.run(['ip', ...args], { check: false });
  if (r.exitCode === 0) return r.stdout;
  problems.push(`ip ${args.join(' ')} exited ${r.exitCode}: ${r.stderr.trim().slice(0, 200)}`);
  return undefined;
}

export type Activities = ReturnType<typeof createActivities>;
