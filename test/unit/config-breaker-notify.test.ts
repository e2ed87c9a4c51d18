/** Config for the circuit breaker (policy.maxFailures, policy.failureWindow) and the webhook. */
import { ConfigError, parseConfig } from '../../lib/config';

const resolvePath = (p: string) => (p.startsWith('/') ? p : `/etc/kubemend/${p}`);
const SECRET = 'https://hooks.slack.example/services/T000/B000/SuperSecretToken123';

function doc(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    clusters: [{ name: 'lab', ssh: { privateKeyPath: 'k', knownHostsPath: 'kh' }, nodes: [{ name: 'node1', role: 'worker', host: '10.0.0.1' }] }],
    ...extra,
  };
}

function problems(d: unknown): string[] {
  try {
    parseConfig(d, { resolvePath });
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

describe('policy: circuit breaker', () => {
  test('defaults: 3 failed runs within 1h', () => {
    const cfg = parseConfig(doc(), { resolvePath });
    expect(cfg.policy.maxFailures).toBe(3);
    expect(cfg.policy.failureWindow).toBe(3_600_000);
  });

  test('set: 5 within 30m; 0 turns it off', () => {
    expect(parseConfig(doc({ policy: { maxFailures: 5, failureWindow: '30m' } }), { resolvePath }).policy).toMatchObject({ maxFailures: 5, failureWindow: 1_800_000, maxUnavailable: 1 });
    expect(parseConfig(doc({ policy: { maxFailures: 0 } }), { resolvePath }).policy.maxFailures).toBe(0);
  });

  test.each([
    [{ maxFailures: -1 }, /^policy\.maxFailures: /],
    [{ maxFailures: 1.5 }, /^policy\.maxFailures: /],
    [{ maxFailures: '3' }, /^policy\.maxFailures: /],
    [{ maxFailures: 101 }, /^policy\.maxFailures: /],
    [{ failureWindow: 'an hour' }, /^policy\.failureWindow: must be a duration/],
    [{ failureWindow: '500ms' }, /^policy\.failureWindow: must be between 1s and/],
    [{ failureWindow: '9999h' }, /^policy\.failureWindow: must be between/],
    [{ maxFailure: 3 }, /^policy: .*maxFailure/],
  ])('policy %j is refused naming the field', (policy, message) => {
    const p = problems(doc({ policy }));
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(message);
  });
});

describe('notifications.webhook', () => {
  test('absent by default', () => {
    expect(parseConfig(doc(), { resolvePath }).notifications).toEqual({});
  });

  test('url, with the defaults for timeout and attempts', () => {
    expect(parseConfig(doc({ notifications: { webhook: { url: SECRET } } }), { resolvePath }).notifications.webhook).toEqual({ url: SECRET, timeout: 5000, attempts: 3 });
  });

  test('urlFile is resolved against the config directory; urlEnv is a variable name', () => {
    expect(parseConfig(doc({ notifications: { webhook: { urlFile: 'secrets/slack-url', timeout: '2s', attempts: 1 } } }), { resolvePath }).notifications.webhook).toEqual({ urlFile: '/etc/kubemend/secrets/slack-url', timeout: 2000, attempts: 1 });
    expect(parseConfig(doc({ notifications: { webhook: { urlEnv: 'KUBEMEND_WEBHOOK_URL' } } }), { resolvePath }).notifications.webhook?.urlEnv).toBe('KUBEMEND_WEBHOOK_URL');
  });

  test.each([
    [{}, /^notifications\.webhook: set exactly one of url, urlFile, urlEnv$/],
    [{ url: SECRET, urlEnv: 'X' }, /^notifications\.webhook: set exactly one of url, urlFile, urlEnv \(got url, urlEnv\)$/],
    [{ url: 'ftp://example.com/x' }, /^notifications\.webhook\.url: must be an http/],
    [{ url: 'https://user:pw@example.com/x' }, /^notifications\.webhook\.url: must be an http/],
    [{ url: 'hooks.slack.com/services/x' }, /^notifications\.webhook\.url: must be an http/],
    [{ urlEnv: 'NOT-A-NAME' }, /^notifications\.webhook\.urlEnv: must be an environment variable name/],
    [{ urlFile: 'a\nb' }, /^notifications\.webhook\.urlFile: must not contain/],
    [{ url: SECRET, timeout: '10m' }, /^notifications\.webhook\.timeout: must be between 100ms and 1m/],
    [{ url: SECRET, attempts: 0 }, /^notifications\.webhook\.attempts: /],
    [{ url: SECRET, attempts: 6 }, /^notifications\.webhook\.attempts: /],
    [{ url: SECRET, channel: '#ops' }, /^notifications\.webhook: .*channel/],
  ])('webhook %j is refused naming the field', (webhook, message) => {
    const p = problems(doc({ notifications: { webhook } }));
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(message);
  });

  test('an unknown key under notifications is refused', () => {
    expect(problems(doc({ notifications: { email: {} } }))[0]).toMatch(/^notifications: .*email/);
  });

  test('an error about a bad URL never shows the URL', () => {
    const bad = 'http://user:SuperSecretToken123@hooks.example/x';
    const p = problems(doc({ notifications: { webhook: { url: bad } } }));
    expect(p.join('\n')).not.toContain('SuperSecretToken123');
    expect(p.join('\n')).not.toContain('hooks.example');
  });
});
