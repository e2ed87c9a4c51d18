/**
 * `kubemend diagnose`'s reads: one SSH exec per node (lib/diagnose-script.ts) and one read of
 * the API (Nodes, pods, DaemonSets, Calico IPAM). Read-only: nothing here writes to a node
 * or the API. What they return is facts, never raw file contents (no secrets in history).
 */
import { randomBytes } from 'node:crypto';
import { ApiException, AppsV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { ApplicationFailure } from '@temporalio/common';
import type { NodeTarget } from '../lib/config';
import { apiFacts, type DiagnoseApiFacts, type RawApi } from '../lib/diagnose-api';
import { diagnoseArgv, diagnoseFacts, type DiagnoseNodeFacts, parseDiagnoseOutput } from '../lib/diagnose-script';
import { Failure } from '../lib/failures';
import { type KubeCluster, kubeFailure } from './kube';
import { whileHeartbeating } from './heartbeat';
import type { SshPort } from './ssh';

export interface DiagnoseContext {
  ssh: SshPort;
  target(cluster: string, node: string): NodeTarget;
  /** The cluster's API client, or undefined when the config gives it no kubeconfig. */
  kubeIfAny(cluster: string): KubeCluster | undefined;
}

const CALICO = { group: 'crd.projectcalico.org', version: 'v1' };

/** Everything the detectors read from the API, in one go; a Calico CRD that is not installed is null. */
export async function readRawApi(kube: KubeCluster, cluster: string): Promise<RawApi> {
  const apps = kube.kubeConfig.makeApiClient(AppsV1Api);
  const custom = kube.kubeConfig.makeApiClient(CustomObjectsApi);
  const api = async <T>(what: string, call: () => Promise<T>): Promise<T> => {
    try {
      return await call();
    } catch (err) {
      throw kubeFailure(err, `${what} of cluster ${cluster}`);
    }
  };
  const crd = async (plural: string) => {
    try {
      return ((await custom.listClusterCustomObject({ ...CALICO, plural })) as { items?: unknown[] }).items ?? [];
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return null; // Calico's CRDs are not installed
      throw kubeFailure(err, `listing ${plural}.${CALICO.group} of cluster ${cluster}`);
    }
  };
  const [nodes, pods, daemonSets, ipamBlocks, ipamHandles, blockAffinities] = await Promise.all([
    api('listing the Nodes', () => kube.core.listNode({})),
    api('listing the pods', () => kube.core.listPodForAllNamespaces({})),
    api('listing the DaemonSets', () => apps.listDaemonSetForAllNamespaces({})),
    crd('ipamblocks'),
    crd('ipamhandles'),
    crd('blockaffinities'),
  ]);
  return { nodes: nodes.items, pods: pods.items, daemonSets: daemonSets.items, ipamBlocks, ipamHandles, blockAffinities } as RawApi;
}

export function createDiagnoseActivities(dc: DiagnoseContext) {
  return {
    /** Reads one node's facts for every detector in one exec (read-only). */
    async gatherNodeFacts(input: { cluster: string; node: string }): Promise<DiagnoseNodeFacts> {
      const marker = randomBytes(16).toString('hex');
      const r = await whileHeartbeating((signal) => dc.ssh.withSession(dc.target(input.cluster, input.node), (s) => s.run(diagnoseArgv(marker)), signal));
      const sections = parseDiagnoseOutput(r.stdout, marker);
      if (Object.keys(sections).length === 0) {
        throw ApplicationFailure.create({
          type: Failure.ProbeNoOutput,
          message: `the diagnose script did not run on ${input.node} (exit ${r.exitCode}, output ${JSON.stringify(r.stdout.slice(0, 120))}); is a forced command configured for this key?`,
          nonRetryable: true,
        });
      }
      return diagnoseFacts(input.node, sections, marker);
    },

    /** The API side in one read; `configured: false` when the cluster has no kubeconfig. */
    async readClusterFacts(input: { cluster: string }): Promise<{ configured: boolean; facts: DiagnoseApiFacts | null }> {
      const kube = dc.kubeIfAny(input.cluster);
      if (!kube) return { configured: false, facts: null };
      return { configured: true, facts: apiFacts(await whileHeartbeating(() => readRawApi(kube, input.cluster))) };
    },
  };
}
