/**
 * Kubernetes API clients, one per cluster, built once by the worker. A cluster without a
 * `kubeconfig` in kubemend's config has no API client: SSH-only activities (probe) work,
 * and an activity that needs the API refuses with a clear error instead of guessing at
 * ~/.kube/config, which may point at another cluster.
 */
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import type { Config } from '../lib/config';
import { ConfigError } from '../lib/config';

export interface KubeCluster {
  kubeConfig: KubeConfig;
  context: string;
  core: CoreV1Api;
}

export interface KubePort {
  /** The cluster's API client, or undefined when the config gives it no kubeconfig. */
  cluster(name: string): KubeCluster | undefined;
}

export class KubeClients implements KubePort {
  private readonly clusters = new Map<string, KubeCluster>();

  /** Loads every cluster's kubeconfig and selects its context; problems are config errors. */
  constructor(cfg: Config) {
    const problems: string[] = [];
    cfg.clusters.forEach((c, i) => {
      if (!c.kubeconfig) return;
      const kc = new KubeConfig();
      try {
        kc.loadFromFile(c.kubeconfig);
      } catch (err) {
        problems.push(`clusters[${i}].kubeconfig: cannot load ${c.kubeconfig}: ${(err as Error).message}`);
        return;
      }
      const context = c.context ?? kc.getCurrentContext();
      if (!context || !kc.getContextObject(context)) {
        const have = kc.getContexts().map((x) => x.name).join(', ') || 'none';
        problems.push(`clusters[${i}].context: ${c.kubeconfig} has no context ${JSON.stringify(context ?? '')} (it has: ${have})`);
        return;
      }
      kc.setCurrentContext(context);
      this.clusters.set(c.name, { kubeConfig: kc, context, core: kc.makeApiClient(CoreV1Api) });
    });
    if (problems.length) throw new ConfigError(problems);
  }

  cluster(name: string): KubeCluster | undefined {
    return this.clusters.get(name);
  }
}
