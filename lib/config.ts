/**
 * kubemend's one config file: Temporal connection, remediation policy, clusters and their
 * nodes. Parsing is pure (text in, typed config or a list of field errors out); reading
 * the file and resolving paths against its directory happen in the caller.
 */
import { z } from 'zod';
import { durationMs } from './duration';
import { clusterName, filePath, host, loginName, nodeName, port } from './patterns';

const hostPort = z.string().refine((v) => /^[A-Za-z0-9.-]+:\d{1,5}$/.test(v) || /^\[[0-9A-Fa-f:.]+\]:\d{1,5}$/.test(v), {
  message: 'must be host:port',
});
/**
 * An address the worker listens on: an IP literal and a port from 1 to 65535 (127.0.0.1:9464,
 * 0.0.0.0:9464, [::1]:9464). Stricter than hostPort: the Temporal runtime binds a socket
 * address, so a host name would only fail when the worker starts.
 */
export function isListenAddress(v: string): boolean {
  const m = /^(?:(\d{1,3}(?:\.\d{1,3}){3})|\[([0-9A-Fa-f:.]{2,45})\]):(\d{1,5})$/.exec(v);
  if (!m) return false;
  const port = Number(m[3]);
  if (port < 1 || port > 65_535) return false;
  if (m[1]) return m[1].split('.').every((o) => Number(o) <= 255 && !/^0\d/.test(o));
  try {
    return new URL(`http://[${m[2]}]/`).hostname !== '';
  } catch {
    return false;
  }
}
const listenAddress = z.string().refine(isListenAddress, { message: 'must be IP:port to listen on, e.g. 127.0.0.1:9464, 0.0.0.0:9464 or [::1]:9464 (no host name; port 1-65535)' });
const identifier = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/, 'must be 1-200 of A-Z a-z 0-9 . _ - (no spaces)');

/**
 * The webhook's URL is a secret (whoever has a Slack webhook URL can post to the channel), so
 * it stays in the worker: give it from a file (`urlFile`, e.g. a mounted secret, read at each
 * send so it can be rotated), from an environment variable (`urlEnv`), or inline (`url`).
 * Errors never echo it.
 */
const WebhookSchema = z
  .object({
    url: z.string().refine(isWebhookUrl, 'must be an http:// or https:// URL (the value is not shown: it is a secret)').optional(),
    urlFile: filePath.optional(),
    urlEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'must be an environment variable name').optional(),
    /** Per attempt. */
    timeout: durationMs({ min: 100, max: 60_000 }).default(5000),
    /** Attempts per notification, inside one activity (a failed webhook never fails the run). */
    attempts: z.number().int().min(1).max(5).default(3),
  })
  .strict()
  .superRefine((w, ctx) => {
    const given = (['url', 'urlFile', 'urlEnv'] as const).filter((k) => w[k] !== undefined);
    if (given.length !== 1) ctx.addIssue({ code: 'custom', message: `set exactly one of url, urlFile, urlEnv${given.length ? ` (got ${given.join(', ')})` : ''}` });
  });

/** An absolute http(s) URL with a host, without credentials or spaces. */
export function isWebhookUrl(v: string): boolean {
  if (!/^https?:\/\/\S+$/.test(v)) return false;
  try {
    const u = new URL(v);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '' && !u.username && !u.password;
  } catch {
    return false;
  }
}

/** SSH settings; each can be given per cluster (defaults) and overridden per node. */
const sshFields = {
  port: port.optional(),
  user: loginName.optional(),
  privateKeyPath: filePath.optional(),
  agent: z.union([z.literal(true), filePath]).optional(),
  knownHostsPath: filePath.optional(),
};

const NodeSchema = z
  .object({
    name: nodeName,
    role: z.enum(['control-plane', 'worker']),
    host,
    ...sshFields,
  })
  .strict();

const ClusterSchema = z
  .object({
    name: clusterName,
    kubeconfig: filePath.optional(),
    context: z.string().min(1).max(253).optional(),
    ssh: z.object(sshFields).strict().optional(),
    nodes: z.array(NodeSchema).min(1, 'a cluster needs at least one node'),
  })
  .strict()
  .superRefine((c, ctx) => {
    const seen = new Map<string, number>();
    c.nodes.forEach((n, i) => {
      const first = seen.get(n.name);
      if (first !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['nodes', i, 'name'], message: `duplicate node name ${JSON.stringify(n.name)} (also nodes[${first}])` });
      }
      seen.set(n.name, i);
    });
  });

export const ConfigSchema = z
  .object({
    temporal: z
      .object({
        address: hostPort.default('127.0.0.1:7233'),
        namespace: identifier.default('default'),
        taskQueue: identifier.default('kubemend'),
      })
      .strict()
      .default({ address: '127.0.0.1:7233', namespace: 'default', taskQueue: 'kubemend' }),
    server: z
      .object({
        dbFile: filePath.default('.kubemend/temporal.db'),
        uiPort: port.default(8233),
      })
      .strict()
      .default({ dbFile: '.kubemend/temporal.db', uiPort: 8233 }),
    worker: z
      .object({
        /** On SIGINT/SIGTERM, how long in-flight activities may run on before they are cancelled. */
        shutdownGraceTime: durationMs({ min: 0, max: 3_600_000 }).default(30_000),
        /**
         * The worker's Prometheus endpoint (GET /metrics), served by the Temporal SDK's runtime:
         * kubemend's metrics (kubemend_*) and the SDK's own (temporal_*). Absent: no endpoint.
         */
        metrics: z.object({ address: listenAddress }).strict().optional(),
      })
      .strict()
      .default({ shutdownGraceTime: 30_000 }),
    ssh: z
      .object({
        connectTimeout: durationMs({ min: 100, max: 300_000 }).default(10_000),
        commandTimeout: durationMs({ min: 100, max: 3_600_000 }).default(60_000),
        /** How long the worker keeps an unused connection to a node for its next command; 0: no reuse. */
        idleTimeout: durationMs({ min: 0, max: 3_600_000 }).default(30_000),
      })
      .strict()
      .default({ connectTimeout: 10_000, commandTimeout: 60_000, idleTimeout: 30_000 }),
    policy: z
      .object({
        maxUnavailable: z.number().int().min(1).max(100).default(1),
        approvalRequired: z.boolean().default(true),
        approvalTimeout: durationMs({ min: 1000, max: 7 * 86_400_000 }).default(3_600_000),
        drainTimeout: durationMs({ min: 1000, max: 86_400_000 }).default(600_000),
        /** Circuit breaker: this many failed runs on one cluster within failureWindow refuse new runs until a reset; 0 turns it off. */
        maxFailures: z.number().int().min(0).max(100).default(3),
        failureWindow: durationMs({ min: 1000, max: 30 * 86_400_000 }).default(3_600_000),
      })
      .strict()
      .default({ maxUnavailable: 1, approvalRequired: true, approvalTimeout: 3_600_000, drainTimeout: 600_000, maxFailures: 3, failureWindow: 3_600_000 }),
    /** Where kubemend tells people about runs: a Slack-compatible incoming webhook (optional). */
    notifications: z.object({ webhook: WebhookSchema.optional() }).strict().default({}),
    /**
     * The audit trail of applied fixes. sqlite (the embedded default): a file the worker
     * writes and the CLI reads. postgres: a database the worker and CLI reach by URL.
     */
    audit: z
      .discriminatedUnion('store', [
        z.object({ store: z.literal('sqlite'), path: filePath.default('.kubemend/audit.db') }).strict(),
        z.object({ store: z.literal('postgres'), url: z.string().regex(/^postgres(ql)?:\/\/[^\s]+$/, 'must be a postgres:// URL') }).strict(),
      ])
      .default({ store: 'sqlite', path: '.kubemend/audit.db' }),
    clusters: z.array(ClusterSchema).min(1, 'at least one cluster is required'),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const seen = new Set<string>();
    cfg.clusters.forEach((c, i) => {
      if (seen.has(c.name)) ctx.addIssue({ code: 'custom', path: ['clusters', i, 'name'], message: `duplicate cluster name ${JSON.stringify(c.name)}` });
      seen.add(c.name);
      c.nodes.forEach((n, j) => {
        const ssh = { ...c.ssh, ...stripUndefined(n) };
        if (!ssh.privateKeyPath && !ssh.agent) {
          ctx.addIssue({ code: 'custom', path: ['clusters', i, 'nodes', j], message: 'no SSH credential: set privateKeyPath or agent (on the node or in the cluster\'s ssh block)' });
        }
        if (!ssh.knownHostsPath) {
          ctx.addIssue({ code: 'custom', path: ['clusters', i, 'nodes', j], message: 'no knownHostsPath: host keys are always verified, so a known_hosts file is required' });
        }
      });
    });
  });

export type Config = z.output<typeof ConfigSchema>;
export type ClusterConfig = Config['clusters'][number];

/** Everything needed to open an SSH session to one node, after defaults are applied. */
export interface NodeTarget {
  cluster: string;
  name: string;
  role: 'control-plane' | 'worker';
  host: string;
  port: number;
  user: string;
  privateKeyPath?: string;
  agent?: string;
  knownHostsPath: string;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[], readonly source?: string) {
    super(`${source ? `${source}: ` : ''}invalid config:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** "clusters[0].nodes[1].name" from zod's path array. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `${out ? '.' : ''}${String(p)}`;
  return out || '(top level)';
}

export function formatZodIssues(error: z.ZodError): string[] {
  return error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`);
}

/**
 * Validates a parsed YAML document. `resolvePath` turns a relative path into an absolute
 * one (relative to the config file's directory); `env` supplies SSH_AUTH_SOCK for `agent: true`.
 */
export function parseConfig(
  doc: unknown,
  opts: { resolvePath: (p: string) => string; env?: Record<string, string | undefined>; source?: string },
): Config {
  const result = ConfigSchema.safeParse(doc ?? {});
  if (!result.success) throw new ConfigError(formatZodIssues(result.error), opts.source);
  const cfg = result.data;
  const problems: string[] = [];
  cfg.clusters.forEach((c, i) => {
    if (c.kubeconfig) c.kubeconfig = opts.resolvePath(c.kubeconfig);
    for (const n of c.nodes) {
      for (const key of ['privateKeyPath', 'knownHostsPath'] as const) {
        if (n[key]) n[key] = opts.resolvePath(n[key]!);
      }
      if (typeof n.agent === 'string') n.agent = opts.resolvePath(n.agent);
    }
    if (c.ssh) {
      for (const key of ['privateKeyPath', 'knownHostsPath'] as const) {
        if (c.ssh[key]) c.ssh[key] = opts.resolvePath(c.ssh[key]!);
      }
      if (typeof c.ssh.agent === 'string') c.ssh.agent = opts.resolvePath(c.ssh.agent);
    }
    const needsAgent = c.nodes.some((n) => (n.agent ?? c.ssh?.agent) === true && !(n.privateKeyPath ?? c.ssh?.privateKeyPath));
    if (needsAgent && !opts.env?.SSH_AUTH_SOCK) {
      problems.push(`clusters[${i}].ssh.agent: agent is true but SSH_AUTH_SOCK is not set`);
    }
  });
  cfg.server.dbFile = opts.resolvePath(cfg.server.dbFile);
  if (cfg.audit.store === 'sqlite') cfg.audit.path = opts.resolvePath(cfg.audit.path);
  const hook = cfg.notifications.webhook;
  if (hook?.urlFile) hook.urlFile = opts.resolvePath(hook.urlFile);
  if (problems.length) throw new ConfigError(problems, opts.source);
  return cfg;
}

export function findCluster(cfg: Config, name: string): ClusterConfig | undefined {
  return cfg.clusters.find((c) => c.name === name);
}

/** Applies cluster SSH defaults to a node. */
export function nodeTarget(cluster: ClusterConfig, nodeName: string, env?: Record<string, string | undefined>): NodeTarget | undefined {
  const n = cluster.nodes.find((x) => x.name === nodeName);
  if (!n) return undefined;
  const d = cluster.ssh ?? {};
  const agent = n.agent ?? d.agent;
  return {
    cluster: cluster.name,
    name: n.name,
    role: n.role,
    host: n.host,
    port: n.port ?? d.port ?? 22,
    user: n.user ?? d.user ?? 'root',
    privateKeyPath: n.privateKeyPath ?? d.privateKeyPath,
    agent: agent === true ? env?.SSH_AUTH_SOCK : agent,
    knownHostsPath: (n.knownHostsPath ?? d.knownHostsPath)!,
  };
}

/**
 * Picks the target nodes of a run: every node of the cluster, or the named ones. Unknown
 * names are an input error listing what the cluster does have.
 */
export function selectNodes(cluster: ClusterConfig, wanted: readonly string[] | undefined): { nodes: string[] } | { error: string } {
  const all = cluster.nodes.map((n) => n.name);
  if (!wanted || wanted.length === 0) return { nodes: all };
  const unknown = wanted.filter((w) => !all.includes(w));
  if (unknown.length) {
    return { error: `cluster ${cluster.name} has no node ${unknown.map((u) => JSON.stringify(u)).join(', ')} (it has: ${all.join(', ')})` };
  }
  return { nodes: [...new Set(wanted)] };
}
