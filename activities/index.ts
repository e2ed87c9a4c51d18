/**
 * Activities: thin adapters that do kubemend's I/O. Built by a factory over narrow ports
 * (SSH, Kubernetes) that the worker constructs once; workflows import only the type.
 */
import { randomBytes } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import { type Config, findCluster, nodeTarget, type NodeTarget, selectNodes } from '../lib/config';
import { Failure } from '../lib/failures';
import type { ProbeNodeFacts } from '../lib/probe';
import { parseProbeOutput, probeArgv, probeFacts } from '../lib/probe-script';
import { kubeFailure, type KubePort } from './kube';
import type { AuditPort } from './audit-store';
import { createAuditActivities, createRecorder } from './audit';
import { whileHeartbeating } from './heartbeat';
import { createLifecycleActivities } from './node-lifecycle';
import { createMachineIdActivities } from './machine-id';
import { createDefaultRouteActivities } from './default-route';
import { createIpamGcActivities } from './ipam-gc';
import { createStaleCniActivities } from './stale-cni';
import { createCalicoOrphansActivities } from './calico-orphans';
import { createNodeAddressActivities } from './node-address';
import { createDiagnoseActivities } from './diagnose';
import { type NodeObjectFacts, nodeObjectFacts } from '../lib/node-object';
import { createNotifyActivities } from './notify';
import { createBreakerActivities } from './breaker';
import type { SshPort } from './ssh';

export interface ActivityDeps {
  config: Config;
  ssh: SshPort;
  kube: KubePort;
  /** The audit trail; every mutating step writes one record. */
  audit: AuditPort;
  env?: Record<string, string | undefined>;
}

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

  function kube(cluster: string) {
    clusterOf(cluster);
    const k = deps.kube.cluster(cluster);
    if (!k) throw badInput(`cluster ${cluster} has no kubeconfig in the worker's config: this remediation needs the Kubernetes API (cordon, drain)`);
    return k;
  }
  const record = createRecorder({ audit: deps.audit, kubeIfAny: (cluster) => deps.kube.cluster(cluster) });

  return {
    ...createAuditActivities(record),
    ...createLifecycleActivities({ ssh: deps.ssh, target, kube, record }),
    ...createMachineIdActivities({ ssh: deps.ssh, target, record }),
    ...createDefaultRouteActivities({ ssh: deps.ssh, target, kube, record }),
    ...createIpamGcActivities({ ssh: deps.ssh, target, record }),
    ...createStaleCniActivities({ ssh: deps.ssh, target, kube, record }),
    ...createCalicoOrphansActivities({ ssh: deps.ssh, target, kube, record }),
    ...createNodeAddressActivities({ ssh: deps.ssh, target, kube, record }),
    ...createDiagnoseActivities({ ssh: deps.ssh, target, kubeIfAny: (cluster) => (clusterOf(cluster), deps.kube.cluster(cluster)) }),
    ...createNotifyActivities(deps), ...createBreakerActivities(deps),

    /** A run's nodes (its --node selection, or all) and every node of the cluster, from the worker's config. */
    async resolveRun(input: { cluster: string; nodes: string[] }): Promise<{ selected: string[]; all: string[] }> {
      const c = clusterOf(input.cluster);
      const picked = selectNodes(c, input.nodes);
      if ('error' in picked) throw badInput(picked.error);
      const all = selectNodes(c, []);
      return { selected: picked.nodes, all: 'error' in all ? [] : all.nodes };
    },

    /** The nodes a run targets, checked against the worker's config (the authority on inventory). */
    async resolveTargets(input: { cluster: string; nodes: string[] }): Promise<{ nodes: string[] }> {
      const picked = selectNodes(clusterOf(input.cluster), input.nodes);
      if ('error' in picked) throw badInput(picked.error);
      return picked;
    },

    /** Reads a node's identity and network facts in one exec. Read-only: cat and ip, nothing else. */
    async probeNode(input: { cluster: string; node: string }): Promise<ProbeNodeFacts> {
      const marker = randomBytes(16).toString('hex');
      const r = await whileHeartbeating((signal) => deps.ssh.withSession(target(input.cluster, input.node), (s) => s.run(probeArgv(marker)), signal));
      const sections = parseProbeOutput(r.stdout, marker);
      if (Object.keys(sections).length === 0) {
        // e.g. a ForceCommand or authorized_keys command= ran instead of ours: nothing was probed.
        throw ApplicationFailure.create({
          type: Failure.ProbeNoOutput,
          message: `the probe script did not run on ${input.node} (exit ${r.exitCode}, output ${JSON.stringify(r.stdout.slice(0, 120))}); is a forced command configured for this key?`,
          nonRetryable: true,
        });
      }
      return probeFacts(input.node, sections);
    },

    /**
     * The Node objects of a run's nodes, in one list call (read-only). A cluster whose config
     * has no kubeconfig reports `configured: false`; a node without an object maps to null.
     */
    async readNodeObjects(input: { cluster: string; nodes: string[] }): Promise<{ configured: boolean; nodes: Record<string, NodeObjectFacts | null> }> {
      clusterOf(input.cluster);
      const kube = deps.kube.cluster(input.cluster);
      if (!kube) return { configured: false, nodes: {} };
      let items;
      try {
        items = (await kube.core.listNode({})).items;
      } catch (err) {
        throw kubeFailure(err, `listing the Nodes of cluster ${input.cluster}`);
      }
      const byName = new Map(items.map((n) => [n.metadata?.name ?? '', n]));
      const nodes: Record<string, NodeObjectFacts | null> = {};
      for (const name of input.nodes) {
        const n = byName.get(name);
        nodes[name] = n ? nodeObjectFacts(n) : null;
      }
      return { configured: true, nodes };
    },
  };
}

export type Activities = ReturnType<typeof createActivities>;
