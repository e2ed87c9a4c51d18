/**
 * The circuit breaker on both audit stores (the embedded SQLite file and this machine's real
 * PostgreSQL), through the activities the worker builds, each call in the SDK's activity
 * context of its own workflow run: three failed runs open it, a reset closes it, failures
 * spread wider than the window never open it, other clusters are unaffected, a retried
 * activity records nothing twice, and concurrent failures trip it exactly once.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Client } from 'pg';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createActivities } from '../../activities';
import { AuditStore } from '../../activities/audit-store';
import { readBreaker } from '../../activities/breaker';
import { KubeClients } from '../../activities/kube';
import { SshConnector } from '../../activities/ssh';
import { BREAKER_STEP } from '../../lib/breaker';
import { type Config, parseConfig } from '../../lib/config';
import { tempDir } from '../helpers/harness';

const PG_ADMIN = 'postgres://postgres@127.0.0.1:5432/postgres';

async function pgAdmin(sql: string): Promise<void> {
  const c = new Client({ connectionString: PG_ADMIN });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

interface Backend {
  name: string;
  audit(): Promise<Config['audit']>;
  cleanup(): Promise<void>;
}

const backends: Backend[] = [
  (() => {
    let dir = '';
    return {
      name: 'sqlite',
      audit: async () => {
        dir ||= tempDir('breaker');
        return { store: 'sqlite' as const, path: join(dir, `audit-${randomBytes(3).toString('hex')}.db`) };
      },
      cleanup: async () => undefined,
    };
  })(),
  (() => {
    const dbs: string[] = [];
    return {
      name: 'postgres',
      audit: async () => {
        const db = `kubemend_breaker_${randomBytes(4).toString('hex')}`;
        await pgAdmin(`CREATE DATABASE ${db}`);
        dbs.push(db);
        return { store: 'postgres' as const, url: `postgres://postgres@127.0.0.1:5432/${db}` };
      },
      cleanup: async () => {
        for (const db of dbs) await pgAdmin(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      },
    };
  })(),
];

const quiet = new DefaultLogger('ERROR');

describe.each(backends)('circuit breaker on $name', (backend) => {
  const opened: AuditStore[] = [];
  afterAll(async () => {
    for (const s of opened) await s.close();
    await backend.cleanup();
  });

  async function setup(policy: Record<string, unknown> = {}) {
    const cfg = parseConfig(
      {
        audit: await backend.audit(),
        policy,
        clusters: ['lab', 'other'].map((name) => ({ name, ssh: { privateKeyPath: 'k', knownHostsPath: 'kh' }, nodes: [{ name: 'node1', role: 'worker', host: '127.0.0.1' }] })),
      },
      { resolvePath: (p) => p },
    );
    const store = await AuditStore.open(cfg.audit);
    opened.push(store);
    const acts = createActivities({ config: cfg, ssh: new SshConnector({ connectTimeoutMs: 1000, commandTimeoutMs: 1000 }), kube: new KubeClients(cfg), audit: store, env: {} });
    /** Runs an activity as workflow run `workflowId` would. */
    const inRun = <T>(workflowId: string, fn: () => Promise<T>): Promise<T> => new MockActivityEnvironment({ workflowExecution: { workflowId, runId: `${workflowId}-r1` } }, { logger: quiet }).run(fn);
    const fail = (cluster: string, workflowId: string, failureType?: string) =>
      inRun(workflowId, () =>
        acts.recordRunFailure({ cluster, remediation: 'machine-id', error: `NodeDidNotReturn: node1 did not come back (${workflowId})`, audit: { actor: 'sre', reason: 'INC-7', remediation: 'machine-id' }, failureType }),
      );
    const check = (cluster: string) => inRun('check', () => acts.checkBreaker({ cluster }));
    const steps = async (cluster: string) => (await store.list({ cluster, limit: 1000 })).map((r) => `${r.step} ${r.workflowId}`);
    return { cfg, store, acts, fail, check, steps };
  }

  async function refusal(p: Promise<unknown>): Promise<ApplicationFailure> {
    try {
      await p;
    } catch (err) {
      if (err instanceof ApplicationFailure) return err;
      throw err;
    }
    throw new Error('expected checkBreaker to refuse');
  }

  test('three failed runs open it; the fourth run is refused naming them; other clusters are unaffected', async () => {
    const { fail, check, steps } = await setup();
    await check('lab');
    expect(await fail('lab', 'run-1')).toEqual({ failures: 1, tripped: false, counted: true });
    expect(await fail('lab', 'run-2')).toEqual({ failures: 2, tripped: false, counted: true });
    await check('lab');
    expect(await fail('lab', 'run-3')).toEqual({ failures: 3, tripped: true, counted: true });

    const refused = await refusal(check('lab'));
    expect(refused.type).toBe('BreakerOpen');
    expect(refused.nonRetryable).toBe(true);
    for (const id of ['run-1', 'run-2', 'run-3']) expect(refused.message).toContain(id);
    expect(refused.message).toContain('kubemend breaker reset --cluster lab');

    await check('other');
    expect(await steps('lab')).toEqual(['run/failed run-1', 'run/failed run-2', 'run/failed run-3', 'breaker/tripped run-3']);
    expect(await steps('other')).toEqual([]);
  });

  test('a retried recordRunFailure writes nothing twice and gives the same answer', async () => {
    const { fail, steps } = await setup();
    await fail('lab', 'run-1');
    await fail('lab', 'run-2');
    const first = await fail('lab', 'run-3');
    const retried = await fail('lab', 'run-3');
    expect(retried).toEqual(first);
    expect(await steps('lab')).toEqual(['run/failed run-1', 'run/failed run-2', 'run/failed run-3', 'breaker/tripped run-3']);
  });

  test('refused and cancelled runs do not count', async () => {
    const { fail, check, steps } = await setup();
    for (const [i, type] of ['LockHeld', 'BudgetExhausted', 'NodeExcluded', 'DrainRefused', 'BreakerOpen', 'Cancelled'].entries()) {
      expect(await fail('lab', `refused-${i}`, type)).toEqual({ failures: 0, tripped: false, counted: false });
    }
    await check('lab');
    expect(await steps('lab')).toEqual([]);
  });

  test('a reset closes it, is recorded, and earlier failures no longer count', async () => {
    const { cfg, store, fail, check } = await setup();
    for (const id of ['run-1', 'run-2', 'run-3']) await fail('lab', id);
    expect((await refusal(check('lab'))).type).toBe('BreakerOpen');
    // What `kubemend breaker reset` writes (its CLI test drives the real process).
    await store.append({ idempotencyKey: 'reset-1', actor: 'alice', reason: 'uplink fixed', cluster: 'lab', node: '', remediation: '', workflowId: 'reset-1', runId: '', step: BREAKER_STEP.reset, action: 'kubemend breaker reset --cluster lab', before: { open: true }, after: { open: false }, outcome: 'applied', error: '' });
    await check('lab');
    const s = await readBreaker(store, 'lab', { maxFailures: cfg.policy.maxFailures, failureWindowMs: cfg.policy.failureWindow });
    expect(s).toMatchObject({ open: false, recentFailures: [], lastReset: { actor: 'alice', reason: 'uplink fixed' } });
    // Two more failures after the reset: still closed; the third opens it again.
    expect(await fail('lab', 'run-4')).toMatchObject({ failures: 1, tripped: false });
    expect(await fail('lab', 'run-5')).toMatchObject({ failures: 2, tripped: false });
    await check('lab');
    expect(await fail('lab', 'run-6')).toMatchObject({ failures: 3, tripped: true });
    const again = await refusal(check('lab'));
    expect(again.message).toContain('run-4');
    expect(again.message).not.toContain('run-1 ');
    expect((await store.verify()).ok).toBe(true);
  });

  test('once open it stays open after the window has passed, until a reset', async () => {
    const { cfg, store, fail } = await setup();
    for (const id of ['run-1', 'run-2', 'run-3']) await fail('lab', id);
    const policy = { maxFailures: cfg.policy.maxFailures, failureWindowMs: cfg.policy.failureWindow };
    const later = await readBreaker(store, 'lab', policy, new Date(Date.now() + 10 * 3_600_000));
    expect(later.open).toBe(true);
    expect(later.recentFailures).toEqual([]);
  });

  test('window expiry: failures further apart than failureWindow never open it', async () => {
    const { store, fail, check } = await setup({ failureWindow: '1s' });
    /** Waits until the newest failure on the trail is older than the window. */
    const outlast = async () => {
      const newest = (await store.list({ cluster: 'lab', steps: [BREAKER_STEP.failed], limit: 1 }))[0];
      while (Date.now() <= Date.parse(newest.recordedAt) + 1100) await new Promise<void>((r) => setTimeout(r, 100));
    };
    for (const id of ['spread-1', 'spread-2', 'spread-3', 'spread-4']) {
      expect(await fail('lab', id)).toEqual({ failures: 1, tripped: false, counted: true });
      await check('lab');
      await outlast();
    }
  });

  test('failures recorded at the same time by several workers trip it exactly once', async () => {
    const { fail, check, steps } = await setup();
    await fail('lab', 'run-1');
    const results = await Promise.all(['run-a', 'run-b', 'run-c', 'run-d'].map((id) => fail('lab', id)));
    expect(results.filter((r) => r.tripped)).toHaveLength(1);
    expect((await steps('lab')).filter((s) => s.startsWith(BREAKER_STEP.tripped))).toHaveLength(1);
    expect((await refusal(check('lab'))).type).toBe('BreakerOpen');
  });

  test('an unknown cluster is bad input, not a breaker', async () => {
    const { check } = await setup();
    const err = await refusal(check('nope'));
    expect(err.type).toBe('BadInput');
  });
});
