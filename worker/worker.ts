/**
 * Process wiring: config in, clients built once, injected into activities, one task queue.
 * Graceful shutdown: on SIGINT/SIGTERM the SDK stops polling, gives in-flight activities
 * `shutdownGraceTime` to finish, then cancels them (they see it through their
 * cancellation signal) and the process exits 0.
 */
import { Connection } from '@temporalio/client';
import { type Logger, type MetricsExporterConfig, NativeConnection, Runtime, Worker, type WorkerOptions } from '@temporalio/worker';
import { createActivities } from '../activities';
import { KubeClients } from '../activities/kube';
import { type AuditPort, AuditStore } from '../activities/audit-store';
import { SshConnector } from '../activities/ssh';
import { type Config, ConfigError } from '../lib/config';
import { Metric, RUN_DURATION_BUCKETS_S } from '../lib/metrics';
import { prebuiltBundle, WORKFLOWS_PATH } from './bundle';
import { jsonLogger } from './log';
import { ensureSearchAttributes } from './temporal-setup';


export interface WorkerWiring {
  /** A prebuilt bundle; default: dist/workflow-bundle.js when fresh, else bundle workflows/ at start. */
  workflowBundle?: { codePath: string };
  connection?: NativeConnection;
  identity?: string;
  shutdownGraceTimeMs?: number;
  env?: Record<string, string | undefined>;
  /** Kubernetes clients already built from cfg (runWorker builds them before any network I/O). */
  kube?: KubeClients;
  /** Worker interceptors (tests use one to crash the process at chosen points). */
  interceptors?: WorkerOptions['interceptors'];
  /** How long a workflow task waits on a dead worker's sticky queue before any worker may take it. */
  stickyQueueScheduleToStartTimeoutMs?: number;
  /** The audit store, opened by the caller (who closes it after the worker stops). */
  audit: AuditPort;
  /** The SSH connector, when the caller closes its pooled connections after the worker stops (runWorker does). */
  ssh?: SshConnector;
}

export async function createWorker(cfg: Config, wiring: WorkerWiring): Promise<Worker> {
  const activities = createActivities({
    config: cfg,
    ssh: wiring.ssh ?? sshConnector(cfg),
    kube: wiring.kube ?? new KubeClients(cfg),
    audit: wiring.audit,
    env: wiring.env ?? process.env,
  });
  const connection = wiring.connection ?? (await NativeConnection.connect({ address: cfg.temporal.address }));
  const options: WorkerOptions = {
    connection,
    namespace: cfg.temporal.namespace,
    taskQueue: cfg.temporal.taskQueue,
    activities,
    ...(wiring.identity ? { identity: wiring.identity } : {}),
    ...(wiring.interceptors ? { interceptors: wiring.interceptors } : {}),
    ...(wiring.stickyQueueScheduleToStartTimeoutMs ? { stickyQueueScheduleToStartTimeout: wiring.stickyQueueScheduleToStartTimeoutMs } : {}),
    shutdownGraceTime: wiring.shutdownGraceTimeMs ?? cfg.worker.shutdownGraceTime,
    ...workflowSource(wiring.workflowBundle ?? prebuiltBundle()),
  };
  return Worker.create(options);
}

function sshConnector(cfg: Config): SshConnector {
  return new SshConnector({ connectTimeoutMs: cfg.ssh.connectTimeout, commandTimeoutMs: cfg.ssh.commandTimeout, idleTimeoutMs: cfg.ssh.idleTimeout });
}

function workflowSource(bundle: { codePath: string } | undefined): Pick<WorkerOptions, 'workflowBundle' | 'workflowsPath'> {
  return bundle ? { workflowBundle: bundle } : { workflowsPath: WORKFLOWS_PATH };
}

/**
 * The process's Temporal runtime, with its Prometheus endpoint when the config names one: the
 * SDK's own metrics (temporal_*, durations in seconds) and kubemend's (workflows/metrics.ts,
 * named as they are created). An address the runtime cannot bind is a config error naming the key.
 */
export function installRuntime(cfg: Config, logger: Logger): Runtime {
  const address = cfg.worker.metrics?.address;
  if (!address) return Runtime.install({ logger });
  try {
    return Runtime.install({ logger, telemetryOptions: { metrics: metricsOptions(address) } });
  } catch (err) {
    throw new ConfigError([`worker.metrics.address: cannot serve /metrics on ${address}: ${(err as Error).message}`]);
  }
}

/** The runtime's Prometheus exporter on `address`. */
export function metricsOptions(address: string): MetricsExporterConfig {
  return {
    metricPrefix: 'temporal_', // the SDK's own metrics; custom ones keep the names they are created with
    prometheus: {
      bindAddress: address,
      useSecondsForDurations: true,
      histogramBucketOverrides: { [Metric.RunDuration]: RUN_DURATION_BUCKETS_S },
    },
  };
}

/** `kubemend worker`: runs until SIGINT/SIGTERM. */
export async function runWorker(cfg: Config): Promise<void> {
  const kube = new KubeClients(cfg); // a bad kubeconfig is a config error (exit 2) before anything connects
  const logger = jsonLogger();
  installRuntime(cfg, logger);
  const client = await Connection.connect({ address: cfg.temporal.address });
  try {
    const added = await ensureSearchAttributes(client, cfg.temporal.namespace);
    if (added.length) logger.info('registered search attributes', { added });
  } finally {
    await client.close();
  }
  const audit = await AuditStore.open(cfg.audit);
  const ssh = sshConnector(cfg);
  try {
    const worker = await createWorker(cfg, { kube, audit, ssh });
    logger.info('kubemend worker started', {
      address: cfg.temporal.address,
      namespace: cfg.temporal.namespace,
      taskQueue: cfg.temporal.taskQueue,
      clusters: cfg.clusters.map((c) => c.name),
      audit: audit.where,
      ...(cfg.worker.metrics ? { metrics: `http://${cfg.worker.metrics.address}/metrics` } : {}),
    });
    await worker.run();
  } finally {
    ssh.close(); // the pooled connections; in-flight activities have ended with the worker
    await audit.close();
  }
  logger.info('kubemend worker stopped');
}
