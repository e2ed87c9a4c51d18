/**
 * The notify activity against real HTTP listeners on 127.0.0.1: what it delivers, and that a
 * failing endpoint (HTTP 500, a refused connection, a listener that never answers, a redirect)
 * gives `delivered: false` without throwing. The activity is the one createActivities builds,
 * run in the SDK's activity context with the worker's JSON logger, whose every line is
 * checked for the webhook's URL: the host may appear, the URL's path (its token) never.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { MockActivityEnvironment } from '@temporalio/testing';
import { createActivities } from '../../activities';
import { AuditStore } from '../../activities/audit-store';
import { KubeClients } from '../../activities/kube';
import { SshConnector } from '../../activities/ssh';
import { type Config, parseConfig } from '../../lib/config';
import type { NotifyInput } from '../../lib/notification';
import { jsonLogger } from '../../worker/log';
import { tempDir } from '../helpers/harness';

const TOKEN = 'T0KUBE/B0MEND/xoxbSecretWebhookToken42';

interface Listener {
  server: Server;
  port: number;
  url: string;
  requests: Array<{ method: string; headers: IncomingMessage['headers']; body: string }>;
  close(): Promise<void>;
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<Listener> {
  const requests: Listener['requests'] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      requests.push({ method: req.method ?? '', headers: req.headers, body });
      handler(req, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    port,
    url: `http://127.0.0.1:${port}/services/${TOKEN}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const answer = (status: number, body = '') => (_req: IncomingMessage, res: ServerResponse) => {
  res.writeHead(status, { 'content-type': 'text/plain' });
  res.end(body);
};

/** Everything the worker's JSON logger wrote, over the whole file. */
let logged = '';
const logOut = new Writable({
  write(chunk, _enc, cb) {
    logged += chunk.toString();
    cb();
  },
});
const logger = jsonLogger(logOut, 'DEBUG');

let dir: string;
const stores: AuditStore[] = [];
const listeners: Listener[] = [];

beforeAll(() => {
  dir = tempDir('notify');
});
afterAll(async () => {
  await Promise.all(listeners.map((l) => l.close()));
  await Promise.all(stores.map((s) => s.close()));
});

async function track(l: Promise<Listener>): Promise<Listener> {
  const x = await l;
  listeners.push(x);
  return x;
}

function config(webhook: Record<string, unknown> | undefined): Config {
  return parseConfig(
    {
      audit: { store: 'sqlite', path: join(dir, 'audit.db') },
      ...(webhook ? { notifications: { webhook } } : {}),
      clusters: [{ name: 'lab', ssh: { privateKeyPath: 'k', knownHostsPath: 'kh' }, nodes: [{ name: 'node1', role: 'worker', host: '127.0.0.1' }] }],
    },
    { resolvePath: (p) => (p.startsWith('/') ? p : join(dir, p)) },
  );
}

/** The activities as the worker builds them, from real clients (none of which connects here). */
async function activities(webhook: Record<string, unknown> | undefined, env: Record<string, string | undefined> = {}) {
  const cfg = config(webhook);
  const audit = await AuditStore.open(cfg.audit);
  stores.push(audit);
  return createActivities({ config: cfg, ssh: new SshConnector({ connectTimeoutMs: 1000, commandTimeoutMs: 1000 }), kube: new KubeClients(cfg), audit, env });
}

const RUN = 'machine-id-lab-20261125T200000Z-abc123';
const awaiting: NotifyInput = {
  cluster: 'lab',
  remediation: 'machine-id',
  runId: RUN,
  event: 'awaiting-approval',
  summary: 'machine-id on lab waits for approval of plan 0123456789abcdef: node2, node3',
  nodes: ['node2', 'node3'],
  approveCommand: `kubemend approve ${RUN} --plan 0123456789abcdef`,
  planId: '0123456789abcdef',
};

/** Runs the activity in the SDK's activity context, as a worker would, with the JSON logger. */
function runActivity<T>(fn: () => Promise<T>, startToCloseTimeoutMs = 30_000): Promise<T> {
  const env = new MockActivityEnvironment({ startToCloseTimeoutMs, workflowExecution: { workflowId: RUN, runId: 'r1' } }, { logger });
  return env.run(fn);
}

test('delivers Slack-compatible JSON: text has the run, cluster, nodes, event and the approve command', async () => {
  const l = await track(listen(answer(200, 'ok')));
  const acts = await activities({ url: l.url });
  const r = await runActivity(() => acts.notify(awaiting));
  expect(r).toEqual({ delivered: true, attempts: 1 });
  expect(l.requests).toHaveLength(1);
  const req = l.requests[0];
  expect(req.method).toBe('POST');
  expect(req.headers['content-type']).toMatch(/^application\/json/);
  const body = JSON.parse(req.body) as { text: string; blocks: Array<Record<string, unknown>> };
  for (const s of [RUN, 'cluster lab', 'node2, node3', 'awaiting-approval', 'waiting for approval', `kubemend approve ${RUN} --plan 0123456789abcdef`]) expect(body.text).toContain(s);
  expect(Array.isArray(body.blocks)).toBe(true);
  expect(JSON.stringify(body.blocks)).toContain(`kubemend approve ${RUN} --plan 0123456789abcdef`);
});

test.each(['fixed', 'failed', 'compensated'] as const)('delivers %s, naming it, without an approve command', async (event) => {
  const l = await track(listen(answer(200, 'ok')));
  const acts = await activities({ url: l.url });
  const r = await runActivity(() => acts.notify({ ...awaiting, event, approveCommand: undefined, planId: undefined, summary: `machine-id on lab: ${event}` }));
  expect(r.delivered).toBe(true);
  const body = JSON.parse(l.requests[0].body) as { text: string };
  expect(body.text).toContain(`event: ${event}`);
  expect(body.text).toContain(RUN);
  expect(body.text).not.toContain('kubemend approve');
});

test('HTTP 500 on every attempt: delivered false after the configured attempts, no throw', async () => {
  const l = await track(listen(answer(500, 'internal trouble')));
  const acts = await activities({ url: l.url, attempts: 3, timeout: '2s' });
  const r = await runActivity(() => acts.notify(awaiting));
  expect(r.delivered).toBe(false);
  expect(r.attempts).toBe(3);
  expect(r.error).toBe(`webhook 127.0.0.1:${l.port}: HTTP 500: internal trouble (attempt 3 of 3)`);
  expect(l.requests).toHaveLength(3);
});

test('HTTP 500, then 200: delivered on the second attempt', async () => {
  let n = 0;
  const l = await track(listen((req, res) => answer(++n === 1 ? 503 : 200, 'ok')(req, res)));
  const acts = await activities({ url: l.url, attempts: 3 });
  expect(await runActivity(() => acts.notify(awaiting))).toEqual({ delivered: true, attempts: 2 });
  expect(l.requests).toHaveLength(2);
});

test('an answer a retry cannot change (404 no_service) is not retried', async () => {
  const l = await track(listen(answer(404, 'no_service')));
  const acts = await activities({ url: l.url, attempts: 3 });
  const r = await runActivity(() => acts.notify(awaiting));
  expect(r).toMatchObject({ delivered: false, attempts: 1 });
  expect(r.error).toContain('HTTP 404: no_service');
  expect(l.requests).toHaveLength(1);
});

test('an endpoint that echoes the URL back: the URL is cut out of the error and the log', async () => {
  const l = await track(listen((req, res) => answer(400, `invalid_token for ${req.url} at http://127.0.0.1:${l.port}${req.url}`)(req, res)));
  const acts = await activities({ url: l.url });
  const r = await runActivity(() => acts.notify(awaiting));
  expect(r.delivered).toBe(false);
  expect(r.error).toBe(`webhook 127.0.0.1:${l.port}: HTTP 400: invalid_token for /<redacted> at <webhook> (attempt 1 of 3)`);
});

test('a redirect is not followed (the message goes to the configured endpoint or nowhere)', async () => {
  const elsewhere = await track(listen(answer(200, 'ok')));
  const l = await track(listen((_req, res) => {
    res.writeHead(302, { location: elsewhere.url });
    res.end();
  }));
  const acts = await activities({ url: l.url });
  const r = await runActivity(() => acts.notify(awaiting));
  expect(r.delivered).toBe(false);
  expect(r.error).toContain('HTTP 302');
  expect(elsewhere.requests).toHaveLength(0);
});

test('connection refused on a closed port: delivered false, no throw', async () => {
  const l = await listen(answer(200));
  await l.close(); // the port is now closed
  const acts = await activities({ url: l.url, attempts: 2, timeout: '2s' });
  const r = await runActivity(() => acts.notify(awaiting));
  expect(r).toMatchObject({ delivered: false, attempts: 2 });
  expect(r.error).toBe(`webhook 127.0.0.1:${l.port}: connection refused (attempt 2 of 2)`);
});

test('a listener that never answers: each attempt gives up at the timeout, delivered false', async () => {
  const l = await track(listen(() => undefined)); // reads the request, never responds
  const acts = await activities({ url: l.url, attempts: 2, timeout: '300ms' });
  const r = await runActivity(() => acts.notify(awaiting));
  expect(r).toMatchObject({ delivered: false, attempts: 2 });
  expect(r.error).toBe(`webhook 127.0.0.1:${l.port}: no answer within 300ms (attempt 2 of 2)`);
  expect(l.requests).toHaveLength(2);
});

test("never past the activity's own timeout, whatever the webhook's settings allow", async () => {
  const l = await track(listen(() => undefined));
  const acts = await activities({ url: l.url, attempts: 5, timeout: '1m' });
  // 1.6 s to close: attempts must end 1 s before, so one attempt of 600 ms, then no time for another.
  const r = await runActivity(() => acts.notify(awaiting), 1600);
  expect(r.delivered).toBe(false);
  expect(r.attempts).toBe(1);
  expect(r.error).toMatch(/no answer within \d+ms; no time left for attempt 2 before the activity's timeout$/);
});

test('no webhook configured: delivered false, nothing sent', async () => {
  const acts = await activities(undefined);
  expect(await runActivity(() => acts.notify(awaiting))).toEqual({ delivered: false, error: 'no webhook configured' });
});

test('urlFile is read at each send (a rotated secret is used at once); a missing file is a logged failure', async () => {
  const first = await track(listen(answer(200, 'ok')));
  const second = await track(listen(answer(200, 'ok')));
  const file = join(dir, 'webhook-url');
  writeFileSync(file, `${first.url}\n`);
  const acts = await activities({ urlFile: 'webhook-url' });
  expect((await runActivity(() => acts.notify(awaiting))).delivered).toBe(true);
  writeFileSync(file, second.url);
  expect((await runActivity(() => acts.notify(awaiting))).delivered).toBe(true);
  expect([first.requests.length, second.requests.length]).toEqual([1, 1]);

  const missing = await activities({ urlFile: 'no-such-file' });
  const r = await runActivity(() => missing.notify(awaiting));
  expect(r).toEqual({ delivered: false, attempts: 0, error: `notifications.webhook.urlFile: cannot read ${join(dir, 'no-such-file')} (ENOENT)` });
  writeFileSync(file, 'not a url');
  const bad = await runActivity(() => acts.notify(awaiting));
  expect(bad.delivered).toBe(false);
  expect(bad.error).toMatch(/not an http\(s\) URL \(not shown: it is a secret\)/);
});

test("urlEnv names a variable of the worker's environment", async () => {
  const l = await track(listen(answer(200, 'ok')));
  const acts = await activities({ urlEnv: 'KUBEMEND_TEST_WEBHOOK' }, { KUBEMEND_TEST_WEBHOOK: l.url });
  expect((await runActivity(() => acts.notify(awaiting))).delivered).toBe(true);
  const unset = await activities({ urlEnv: 'KUBEMEND_TEST_WEBHOOK' }, {});
  expect(await runActivity(() => unset.notify(awaiting))).toEqual({ delivered: false, attempts: 0, error: "notifications.webhook.urlEnv: $KUBEMEND_TEST_WEBHOOK is not set in the worker's environment" });
});

test('bad input is reported, not thrown, and nothing is sent', async () => {
  const l = await track(listen(answer(200, 'ok')));
  const acts = await activities({ url: l.url });
  const r = await runActivity(() => acts.notify({ ...awaiting, event: 'rebooted' as never }));
  expect(r.delivered).toBe(false);
  expect(r.error).toMatch(/^bad input: event: /);
  expect(l.requests).toHaveLength(0);
});

test('failures are logged as JSON lines naming the host, the run and the error; the URL never', () => {
  const lines = logged.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const notDelivered = lines.filter((l) => l.msg === 'notification not delivered');
  expect(notDelivered.length).toBeGreaterThan(0);
  expect(notDelivered.some((l) => l.level === 'ERROR' && typeof l.host === 'string' && l.runId === RUN && /HTTP 500/.test(String(l.error)))).toBe(true);
  expect(lines.some((l) => l.msg === 'notification delivered' && l.event === 'awaiting-approval')).toBe(true);
  // Everything logged by the tests above (this one runs last): the host, never the URL's secret path.
  expect(logged).toContain('"host":"127.0.0.1:');
  expect(logged).not.toContain(TOKEN);
  expect(logged).not.toContain('xoxbSecretWebhookToken42');
  expect(logged).not.toContain('/services/');
});
