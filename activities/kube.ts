/**
 * Kubernetes API clients, one per cluster, built once by the worker. A cluster without a
 * `kubeconfig` in kubemend's config has no API client: SSH-only activities (probe) work,
 * and an activity that needs the API refuses with a clear error instead of guessing at
 * ~/.kube/config, which may point at another cluster.
 */
import { ApiException, CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { ApplicationFailure } from '@temporalio/common';
import { Failure } from '../lib/failures';
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

/**
 * An API error as a typed failure: 401/403 are the worker's identity or RBAC (not retried),
 * 409/429/5xx and network errors are transient (retried with backoff), any other 4xx is a
 * request the API will never accept (not retried). The server's message is kept; no
 * credentials are in it.
 */
/** The API server's own words from an error: Status.message plus its causes' messages. */
export function apiMessage(err: ApiException<unknown>): string {
  let body: unknown = err.body;
  if (typeof body === 'string') {
    const text = body;
    try {
      body = JSON.parse(text);
    } catch {
      return text.slice(0, 300);
    }
  }
  const status = body as { message?: string; details?: { causes?: Array<{ message?: string }> } } | undefined;
  const causes = (status?.details?.causes ?? []).map((c) => c.message).filter((m): m is string => !!m);
  return [status?.message ?? '', ...causes].filter(Boolean).join(' ').slice(0, 500);
}

export function kubeFailure(err: unknown, what: string): ApplicationFailure {
  if (err instanceof ApiException) {
    const code = err.code;
    const detail = apiMessage(err);
    const message = `${what}: HTTP ${code}${detail ? ` ${detail}` : ''}`;
    if (code === 401 || code === 403) return ApplicationFailure.create({ type: Failure.KubeForbidden, message, nonRetryable: true });
    if (code === 409 || code === 429 || code >= 500) return ApplicationFailure.create({ type: Failure.KubeApiTransient, message });
    return ApplicationFailure.create({ type: Failure.KubeRejected, message, nonRetryable: true });
  }
  return ApplicationFailure.create({ type: Failure.KubeApiTransient, message: `${what}: ${(err as Error).message ?? String(err)}` });
}

/**
 * Evicts a pod through the Eviction API, as a drain does (a PodDisruptionBudget still holds:
 * its 429 is an API error the caller's retry handles), only the pod with that uid when one is
 * given, so a retry never evicts its replacement. Gone (404) or replaced (409: a pod of that
 * name with another uid) is done already.
 */
export async function evictPod(core: CoreV1Api, p: { namespace: string; name: string; uid: string | null }): Promise<'evicted' | 'already'> {
  try {
    await core.createNamespacedPodEviction({ name: p.name, namespace: p.namespace, body: { apiVersion: 'policy/v1', kind: 'Eviction', metadata: { name: p.name, namespace: p.namespace }, ...(p.uid ? { deleteOptions: { preconditions: { uid: p.uid } } } : {}) } });
    return 'evicted';
  } catch (err) {
    if (err instanceof ApiException && (err.code === 404 || err.code === 409)) return 'already';
    throw kubeFailure(err, `evicting pod ${p.namespace}/${p.name}`);
  }
}
