import { type Config, ConfigError, nodeTarget, parseConfig, selectNodes } from '../../lib/config';
import { parseDuration } from '../../lib/duration';
import { configPathResolver } from '../../worker/config-file';

const resolvePath = (p: string) => (p.startsWith('/') ? p : `/etc/kubemend/${p}`);

function base(): Record<string, any> {
  return {
    clusters: [
      {
        name: 'lab',
        ssh: { user: 'root', privateKeyPath: 'id_ed25519', knownHostsPath: 'known_hosts' },
        nodes: [
          { name: 'node1', role: 'control-plane', host: '192.178.33.110' },
          { name: 'node2', role: 'worker', host: 'worker1.example.internal', port: 2222, user: 'vagrant' },
        ],
      },
    ],
  };
}

function problems(doc: unknown): string[] {
  try {
    parseConfig(doc, { resolvePath });
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

describe('parseConfig', () => {
  test('applies defaults and resolves relative paths against the config directory', () => {
    const cfg: Config = parseConfig(base(), { resolvePath });
    expect(cfg.temporal).toEqual({ address: '127.0.0.1:7233', namespace: 'default', taskQueue: 'kubemend' });
    expect(cfg.policy).toEqual({ maxUnavailable: 1, approvalRequired: true, approvalTimeout: 3_600_000, drainTimeout: 600_000, maxFailures: 3, failureWindow: 3_600_000 });
    expect(cfg.notifications).toEqual({});
    expect(cfg.ssh).toEqual({ connectTimeout: 10_000, commandTimeout: 60_000, idleTimeout: 30_000 });
    expect(cfg.clusters[0].ssh?.privateKeyPath).toBe('/etc/kubemend/id_ed25519');
    expect(cfg.server.dbFile).toBe('/etc/kubemend/.kubemend/temporal.db');
  });

  test('node SSH settings override the cluster defaults', () => {
    const cfg = parseConfig(base(), { resolvePath });
    expect(nodeTarget(cfg.clusters[0], 'node2')).toEqual({
      cluster: 'lab', name: 'node2', role: 'worker', host: 'worker1.example.internal', port: 2222, user: 'vagrant',
      privateKeyPath: '/etc/kubemend/id_ed25519', agent: undefined, knownHostsPath: '/etc/kubemend/known_hosts',
    });
    expect(nodeTarget(cfg.clusters[0], 'node1')?.port).toBe(22);
    expect(nodeTarget(cfg.clusters[0], 'nope')).toBeUndefined();
  });

  test.each([
    ['n1; rm -rf /', 'clusters[0].nodes[0].name'],
    ['$(reboot)', 'clusters[0].nodes[0].name'],
    ['Node1', 'clusters[0].nodes[0].name'],
    ['-node', 'clusters[0].nodes[0].name'],
  ])('rejects node name %j at %s', (name, path) => {
    const doc = base();
    doc.clusters[0].nodes[0].name = name;
    const p = problems(doc);
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(new RegExp(`^${path.replace(/[[\].]/g, '\\$&')}: must be a Kubernetes node name`));
    expect(p[0]).toContain(JSON.stringify(name));
  });

  test.each(['10.0.2.15; reboot', '$(reboot)', 'host name', '999.1.1.1', '-oProxyCommand=x'])('rejects host %j', (host) => {
    const doc = base();
    doc.clusters[0].nodes[1].host = host;
    expect(problems(doc)).toEqual([expect.stringMatching(/^clusters\[0\]\.nodes\[1\]\.host: must be a hostname, an IPv4 or an IPv6 address/)]);
  });

  test.each(['10.0.2.15', 'fe80::a00:27ff:fe4e:66a1', 'node-1.lab', 'localhost'])('accepts host %j', (host) => {
    const doc = base();
    doc.clusters[0].nodes[1].host = host;
    expect(problems(doc)).toEqual([]);
  });

  test('ssh.idleTimeout: a duration up to 1h; 0 turns connection reuse off', () => {
    const at = (idleTimeout: unknown) => ({ ...base(), ssh: { idleTimeout } });
    expect(parseConfig(at('2m'), { resolvePath }).ssh.idleTimeout).toBe(120_000);
    expect(parseConfig(at(0), { resolvePath }).ssh.idleTimeout).toBe(0);
    expect(problems(at('forever'))).toEqual([expect.stringMatching(/^ssh\.idleTimeout: must be a duration/)]);
    expect(problems(at('2h'))).toEqual([expect.stringMatching(/^ssh\.idleTimeout: must be between 0ms and 1h, got 2h/)]);
  });

  test('names every problem, with its field path', () => {
    const doc = base();
    doc.clusters[0].nodes[1].role = 'master';
    doc.clusters[0].nodes[1].port = 70000;
    doc.policy = { drainTimeout: 'soon' };
    doc.extra = 1;
    const p = problems(doc);
    expect(p).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^clusters\[0\]\.nodes\[1\]\.role: /),
        expect.stringMatching(/^clusters\[0\]\.nodes\[1\]\.port: /),
        expect.stringMatching(/^policy\.drainTimeout: must be a duration/),
        expect.stringMatching(/extra/),
      ]),
    );
  });

  test('requires host-key verification and a credential for every node', () => {
    const doc = base();
    delete doc.clusters[0].ssh.knownHostsPath;
    delete doc.clusters[0].ssh.privateKeyPath;
    const p = problems(doc);
    expect(p).toEqual(
      expect.arrayContaining([
        'clusters[0].nodes[0]: no knownHostsPath: host keys are always verified, so a known_hosts file is required',
        expect.stringMatching(/^clusters\[0\]\.nodes\[0\]: no SSH credential/),
      ]),
    );
  });

  test('agent: true needs SSH_AUTH_SOCK', () => {
    const doc = base();
    doc.clusters[0].ssh = { agent: true, knownHostsPath: 'kh' };
    expect(problems(doc)).toEqual(['clusters[0].ssh.agent: agent is true but SSH_AUTH_SOCK is not set']);
    const cfg = parseConfig(doc, { resolvePath, env: { SSH_AUTH_SOCK: '/run/agent.sock' } });
    expect(nodeTarget(cfg.clusters[0], 'node1', { SSH_AUTH_SOCK: '/run/agent.sock' })?.agent).toBe('/run/agent.sock');
  });

  test('rejects duplicate node and cluster names', () => {
    const doc = base();
    doc.clusters[0].nodes[1].name = 'node1';
    doc.clusters.push({ ...doc.clusters[0], nodes: [doc.clusters[0].nodes[0]] });
    const p = problems(doc);
    expect(p).toEqual(expect.arrayContaining([expect.stringMatching(/^clusters\[0\]\.nodes\[1\]\.name: duplicate node name "node1" \(also nodes\[0\]\)/), expect.stringMatching(/^clusters\[1\]\.name: duplicate cluster name/)]));
  });

  test('an empty document says what is missing', () => {
    expect(problems(null)).toEqual([expect.stringMatching(/^clusters: /)]);
  });
});

describe('selectNodes', () => {
  const cluster = parseConfig(base(), { resolvePath }).clusters[0];
  test('defaults to every node', () => expect(selectNodes(cluster, [])).toEqual({ nodes: ['node1', 'node2'] }));
  test('dedupes', () => expect(selectNodes(cluster, ['node2', 'node2'])).toEqual({ nodes: ['node2'] }));
  test('names unknown nodes and lists the known ones', () =>
    expect(selectNodes(cluster, ['node3'])).toEqual({ error: 'cluster lab has no node "node3" (it has: node1, node2)' }));
});

describe('parseDuration', () => {
  test.each([
    ['500ms', 500], ['30s', 30_000], ['10m', 600_000], ['2h', 7_200_000], ['1.5s', 1500], ['45', 45_000],
  ])('%s = %d ms', (text, ms) => expect(parseDuration(text)).toBe(ms));
  test.each(['', 'soon', '10 minutes', '-1s', '1d'])('%j is not a duration', (text) => expect(parseDuration(text)).toBeUndefined());
});

describe('configPathResolver', () => {
  const r = configPathResolver('/etc/kubemend', '/home/sre');
  test.each([
    ['keys/id', '/etc/kubemend/keys/id'],
    ['../shared/kh', '/etc/shared/kh'],
    ['/abs/kh', '/abs/kh'],
    ['~/.kube/lab.conf', '/home/sre/.kube/lab.conf'],
    ['~other/x', '/etc/kubemend/~other/x'],
  ])('%s -> %s', (p, want) => expect(r(p)).toBe(want));
});

describe('IPv6 hosts', () => {
  // The host schema is what every node's `host` goes through.
  const hostOk = (h: string) => {
    const doc = { clusters: [{ name: 'c', ssh: { privateKeyPath: '/k', knownHostsPath: '/kh' }, nodes: [{ name: 'n', role: 'worker', host: h }] }] };
    try {
      parseConfig(doc, { resolvePath });
      return true;
    } catch {
      return false;
    }
  };
  test.each(['::1', 'fe80::a00:27ff:fe4e:66a1', '2001:db8::', '::', '2001:db8:0:0:0:0:0:1', '::ffff:10.0.2.15'])('accepts %s', (h) => expect(hostOk(h)).toBe(true));
  test.each(['10.0.0.5:2222', ':::', '1:2', '2001:db8::1::2', '12345::1', 'fe80::1%eth0', '1:2:3:4:5:6:7:8:9'])('rejects %s', (h) => expect(hostOk(h)).toBe(false));
});
