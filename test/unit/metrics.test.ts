/** The metrics endpoint's config key, and the outcome tag of a run (pure parts; the endpoint itself: test/integration/metrics.test.ts). */
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { ConfigError, isListenAddress, parseConfig } from '../../lib/config';
import { resultOutcome } from '../../lib/metrics';
import { failureOutcome } from '../../workflows/metrics';

const resolvePath = (p: string) => (p.startsWith('/') ? p : `/etc/kubemend/${p}`);
const doc = (worker?: unknown) => ({
  ...(worker === undefined ? {} : { worker }),
  clusters: [{ name: 'c', ssh: { privateKeyPath: '/k', knownHostsPath: '/kh' }, nodes: [{ name: 'n', role: 'worker', host: '10.0.0.1' }] }],
});

function problems(d: unknown): string[] {
  try {
    parseConfig(d, { resolvePath });
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

describe('worker.metrics.address', () => {
  test('absent: no endpoint (and the worker section keeps its default)', () => {
    expect(parseConfig(doc(), { resolvePath }).worker).toEqual({ shutdownGraceTime: 30_000 });
    expect(parseConfig(doc({ shutdownGraceTime: '5s' }), { resolvePath }).worker.metrics).toBeUndefined();
  });

  test('given: kept as written', () => {
    expect(parseConfig(doc({ metrics: { address: '127.0.0.1:9464' } }), { resolvePath }).worker).toEqual({ shutdownGraceTime: 30_000, metrics: { address: '127.0.0.1:9464' } });
  });

  test.each(['127.0.0.1:9464', '0.0.0.0:9464', '[::1]:9464', '[::]:1', '10.0.2.15:65535', '[::ffff:10.0.2.15]:9464'])('%s is an address to listen on', (a) => expect(isListenAddress(a)).toBe(true));
  test.each(['localhost:9464', 'metrics.example.internal:9464', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:65536', '256.0.0.1:9464', '127.0.0.01:9464', '::1:9464', '[1.2.3.4]:9464', '[::1::2]:9464', ' 127.0.0.1:9464', '127.0.0.1:9464/metrics', 'http://127.0.0.1:9464'])(
    '%j is not',
    (a) => expect(isListenAddress(a)).toBe(false),
  );

  test('a bad value is a config error naming the key', () => {
    expect(problems(doc({ metrics: { address: 'localhost:9464' } }))).toEqual([
      'worker.metrics.address: must be IP:port to listen on, e.g. 127.0.0.1:9464, 0.0.0.0:9464 or [::1]:9464 (no host name; port 1-65535)',
    ]);
    expect(problems(doc({ metrics: { address: 9464 } }))).toEqual([expect.stringMatching(/^worker\.metrics\.address: /)]);
    expect(problems(doc({ metrics: {} }))).toEqual([expect.stringMatching(/^worker\.metrics\.address: /)]);
    expect(problems(doc({ metrics: { address: '127.0.0.1:9464', path: '/m' } }))).toEqual([expect.stringMatching(/^worker\.metrics: .*path/)]);
  });
});

describe('the outcome tag of a run', () => {
  test.each([
    ['fixed', 'fixed'],
    ['nothing to do', 'nothing_to_do'],
    ['planned (dry run)', 'dry_run'],
  ] as const)('a result %j is %s', (outcome, tag) => expect(resultOutcome(outcome)).toBe(tag));

  test('a result outcome added later still gives a tag of one word', () => {
    expect(resultOutcome('outside maintenance window' as never)).toBe('outside_maintenance_window');
  });

  test('an error: cancelled, refused by a safety rule (isRefusal), or failed', () => {
    expect(failureOutcome(new CancelledFailure('cancelled'), 'cancelled')).toBe('cancelled');
    expect(failureOutcome(ApplicationFailure.create({ type: 'LockHeld', message: 'x' }), 'LockHeld: node n is locked by run r')).toBe('refused');
    expect(failureOutcome(ApplicationFailure.create({ type: 'BreakerOpen', message: 'x' }), 'BreakerOpen: 3 failed runs')).toBe('refused');
    expect(failureOutcome(ApplicationFailure.create({ type: 'VerificationFailed', message: 'x' }), 'VerificationFailed: still leaked')).toBe('failed');
    expect(failureOutcome(ApplicationFailure.create({ type: 'ApprovalTimedOut', message: 'x' }), 'ApprovalTimedOut: nobody approved')).toBe('failed');
  });
});
