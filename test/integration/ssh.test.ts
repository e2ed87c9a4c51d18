/**
 * The SSH wrapper against a real sshd: structured results, the no-throw mode, hostile
 * arguments, and the failure modes node-ssh leaves to its caller (timeouts, a session
 * killed mid-command, cancellation); and connection reuse, counted by a loopback relay
 * in front of the sshd that sees every TCP connection made.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApplicationFailure } from '@temporalio/common';
import { SshConnector, type SshConnectorOptions, type SshSession } from '../../activities/ssh';
import type { NodeTarget } from '../../lib/config';
import { LocalSshd } from '../lab/sshd';

let sshd: LocalSshd;
let target: NodeTarget;
const connector = new SshConnector({ connectTimeoutMs: 5000, commandTimeoutMs: 10_000 });

beforeAll(async () => {
  sshd = await LocalSshd.start();
  target = { cluster: 'c', name: 'n1', role: 'worker', host: sshd.host, port: sshd.port, user: 'root', privateKeyPath: sshd.clientKeyPath, knownHostsPath: sshd.knownHostsPath };
});
afterAll(async () => {
  connector.close();
  await sshd?.stop();
});

async function failureOf(p: Promise<unknown>): Promise<ApplicationFailure> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApplicationFailure) return err;
    throw err;
  }
  throw new Error('expected a failure');
}

test('a command returns a structured result', async () => {
  const r = await connector.withSession(target, (s) => s.run(['sh', '-c', 'echo out; echo err >&2; exit 0']));
  expect(r).toMatchObject({ command: "sh -c 'echo out; echo err >&2; exit 0'", exitCode: 0, signal: null, stdout: 'out', stderr: 'err' });
  expect(r.durationMs).toBeGreaterThanOrEqual(0);
});

test('hostile arguments arrive as single arguments, byte for byte', async () => {
  const nasty = ["$(touch /tmp/kubemend-pwned)", "'; reboot; '", 'a b\tc', '`id`'];
  const r = await connector.withSession(target, (s) => s.run(['printf', '%s|', ...nasty]));
  expect(r.stdout).toBe(`${nasty.join('|')}|`);
  expect(existsSync('/tmp/kubemend-pwned')).toBe(false);
});

test('stdin: the command reads what the caller gives, then end of file; without it, end of file at once', async () => {
  const secret = 'abcdef.0123456789abcdef\nsecond line';
  const r = await connector.withSession(target, (s) => s.run(['sh', '-c', 'cat; echo "|$(ps -o args= -p $$)"'], { stdin: secret }));
  expect(r.stdout).toBe(`${secret}|sh -c cat; echo "|$(ps -o args= -p $$)"`);
  expect((await connector.withSession(target, (s) => s.run(['sh', '-c', 'wc -c']))).stdout).toBe('0');
});

test('non-zero exit: CommandFailed (with stderr) by default, a result with check: false', async () => {
  await connector.withSession(target, async (s: SshSession) => {
    const f = await failureOf(s.run(['cat', '/nonexistent/kubemend']));
    expect(f.type).toBe('CommandFailed');
    expect(f.nonRetryable).toBe(true);
    expect(f.message).toMatch(/^cat \/nonexistent\/kubemend on n1 exited 1: cat: \/nonexistent\/kubemend: No such file or directory/);
    const r = await s.run(['cat', '/nonexistent/kubemend'], { check: false });
    expect(r.exitCode).toBe(1);
  });
});

test('a command that outlives its timeout is a transient failure, and the session is closed', async () => {
  const t0 = Date.now();
  await connector.withSession(target, async (s) => {
    const f = await failureOf(s.run(['sleep', '30'], { timeoutMs: 300 }));
    expect(f.type).toBe('SshTransient');
    expect(f.message).toBe('sleep 30 on n1 did not finish within 300 ms');
    const again = await failureOf(s.run(['true']));
    expect(again.message).toMatch(/connection to n1 is gone/);
  });
  expect(Date.now() - t0).toBeLessThan(5000);
});

test('a session killed mid-command is reported as dropped, not as success, and nothing crashes', async () => {
  // Kills the sshd process serving this session: the channel closes with no exit status.
  const f = await failureOf(connector.withSession(target, (s) => s.run(['sh', '-c', 'kill -9 $PPID; sleep 5'])));
  expect(f.type).toBe('SshTransient');
  expect(f.message).toMatch(/dropped while running|is gone/);
  // The connector still works afterwards.
  const r = await connector.withSession(target, (s) => s.run(['true']));
  expect(r.exitCode).toBe(0);
});

test('cancellation stops a running command at once', async () => {
  const ac = new AbortController();
  const t0 = Date.now();
  setTimeout(() => ac.abort(new Error('cancelled by test')), 200);
  await expect(connector.withSession(target, (s) => s.run(['sleep', '30']), ac.signal)).rejects.toThrow('cancelled by test');
  expect(Date.now() - t0).toBeLessThan(5000);
});

test('an unreadable private key is a non-retryable credential failure', async () => {
  const f = await failureOf(connector.withSession({ ...target, privateKeyPath: '/nonexistent/key' }, (s) => s.run(['true'])));
  expect(f).toMatchObject({ type: 'CredentialUnavailable', nonRetryable: true, message: 'cannot read private key /nonexistent/key: ENOENT' });
});

/**
 * A TCP relay on loopback in front of an sshd: counts the connections it accepts, and can
 * reset them (a TCP RST, as from a node that rebooted) or freeze them (nothing passes
 * either way, as with a node that died without a word: a half-open connection).
 */
class Relay {
  accepted = 0;
  private readonly pairs = new Set<{ client: Socket; server: Socket }>();
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(to: () => number): Promise<Relay> {
    let relay!: Relay;
    const server = createServer((client) => {
      relay.accepted++;
      const upstream = createConnection({ host: '127.0.0.1', port: to() });
      const pair = { client, server: upstream };
      relay.pairs.add(pair);
      const drop = () => {
        relay.pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    relay = new Relay(server, (server.address() as { port: number }).port);
    return relay;
  }

  /** Connections open now. */
  get open(): number {
    return this.pairs.size;
  }

  reset(): void {
    for (const p of [...this.pairs]) {
      this.pairs.delete(p);
      p.client.resetAndDestroy();
      p.server.destroy();
    }
  }

  freeze(): void {
    for (const p of this.pairs) {
      // Read on and drop everything, so a close from either end still ends the pair.
      p.client.unpipe(p.server);
      p.server.unpipe(p.client);
      p.client.on('data', () => undefined).resume();
      p.server.on('data', () => undefined).resume();
    }
  }

  async waitUntilOpen(n: number, what: string): Promise<void> {
    for (let i = 0; i < 300 && this.open !== n; i++) await sleep(50);
    if (this.open !== n) throw new Error(`${what}: ${this.open} connection(s) open, expected ${n}`);
  }

  async close(): Promise<void> {
    for (const p of this.pairs) {
      p.client.destroy();
      p.server.destroy();
    }
    await new Promise((r) => this.server.close(r));
  }
}

describe('connection reuse', () => {
  const base = mkdtempSync(join(tmpdir(), 'kubemend-ssh-pool-'));
  const sshdDir = join(base, 'sshd');
  let node: LocalSshd;
  let relay: Relay;
  let pooled: NodeTarget;
  const connectors: SshConnector[] = [];
  const knownHosts = join(base, 'known_hosts');
  /** known_hosts for the relay's port with the sshd's current host key. */
  const trustCurrentKey = () => {
    const [type, key] = node.hostPublicKey.split(/\s+/);
    writeFileSync(knownHosts, `[127.0.0.1]:${relay.port} ${type} ${key}\n`);
  };
  const connectorWith = (o: Partial<SshConnectorOptions> = {}) => {
    const c = new SshConnector({ connectTimeoutMs: 2000, commandTimeoutMs: 10_000, ...o });
    connectors.push(c);
    return c;
  };
  const echo = (c: SshConnector, text: string) => c.withSession(pooled, async (s) => (await s.run(['echo', text])).stdout);
  /** A node that went down and came back: every sshd process gone, a new one on the same port (same keys unless told). */
  const restartNode = async (keepKeys: boolean) => {
    await node.stop({ sessions: true });
    node = await LocalSshd.start({ dir: sshdDir, port: node.port, keepKeys });
  };

  beforeAll(async () => {
    node = await LocalSshd.start({ dir: sshdDir });
    relay = await Relay.start(() => node.port);
    pooled = { cluster: 'c', name: 'n2', role: 'worker', host: '127.0.0.1', port: relay.port, user: 'root', privateKeyPath: node.clientKeyPath, knownHostsPath: knownHosts };
  });
  beforeEach(() => {
    relay.accepted = 0;
    trustCurrentKey();
  });
  afterEach(async () => {
    for (const c of connectors.splice(0)) c.close();
    await relay.waitUntilOpen(0, 'after the test');
  });
  afterAll(async () => {
    await relay?.close();
    await node?.stop({ sessions: true });
    rmSync(base, { recursive: true, force: true });
  });

  test('commands to one node share one connection: in sequence, in one session, and started together', async () => {
    const c = connectorWith();
    for (let i = 0; i < 5; i++) expect(await echo(c, `one-${i}`)).toBe(`one-${i}`);
    await c.withSession(pooled, async (s) => {
      for (let i = 0; i < 3; i++) expect((await s.run(['echo', `two-${i}`])).stdout).toBe(`two-${i}`);
    });
    expect(await Promise.all([1, 2, 3, 4].map((i) => echo(c, `three-${i}`)))).toEqual(['three-1', 'three-2', 'three-3', 'three-4']);
    expect(relay.accepted).toBe(1);
    expect(relay.open).toBe(1);
    c.close(); // as at worker shutdown
    await relay.waitUntilOpen(0, 'after close()');
  });

  test('a connection closes when idle, and the next command connects again; idleTimeoutMs 0 is a connection per session', async () => {
    const c = connectorWith({ idleTimeoutMs: 300 });
    expect(await echo(c, 'a')).toBe('a');
    await relay.waitUntilOpen(0, 'after the idle time');
    expect(await echo(c, 'b')).toBe('b');
    expect(relay.accepted).toBe(2);

    const each = connectorWith({ idleTimeoutMs: 0 });
    for (const t of ['x', 'y', 'z']) {
      expect(await echo(each, t)).toBe(t);
      await relay.waitUntilOpen(0, 'after a session without reuse');
    }
    expect(relay.accepted).toBe(5);
  });

  test('a reset connection leaves the pool; the next command connects again', async () => {
    const c = connectorWith();
    expect(await echo(c, 'before')).toBe('before');
    relay.reset();
    expect(await echo(c, 'after')).toBe('after');
    expect(relay.accepted).toBe(2);
  });

  test('after the node went down and sshd is back, the next command reconnects, verifying the host key again', async () => {
    const c = connectorWith();
    expect(await echo(c, 'before')).toBe('before');
    await restartNode(true);
    expect(await echo(c, 'after')).toBe('after');
    expect(relay.accepted).toBe(2);
  });

  test('a pooled connection found dead when a command opens its channel is replaced once, and the command runs once', async () => {
    const c = connectorWith({ connectTimeoutMs: 1000 });
    const runs = join(base, 'runs-frozen');
    expect(await echo(c, 'before')).toBe('before');
    relay.freeze(); // the node died without closing the connection
    const r = await c.withSession(pooled, (s) => s.run(['sh', '-c', 'echo run >> "$1"; echo ok', 'sh', runs]));
    expect(r.stdout).toBe('ok');
    expect(readFileSync(runs, 'utf8')).toBe('run\n');
    expect(relay.accepted).toBe(2);
  });

  test('a command cut off by a dropped connection is reported as dropped and is not run again', async () => {
    const c = connectorWith();
    const runs = join(base, 'runs-dropped');
    expect(await echo(c, 'before')).toBe('before');
    // Kills the sshd process serving the connection, as a node going down under the command.
    const f = await failureOf(c.withSession(pooled, (s) => s.run(['sh', '-c', 'echo run >> "$1"; kill -9 $PPID; sleep 5', 'sh', runs])));
    expect(f.type).toBe('SshTransient');
    expect(f.message).toMatch(/^connection to n2 dropped while running sh -c/);
    expect(relay.accepted).toBe(1); // no reconnect to run it again
    expect(readFileSync(runs, 'utf8')).toBe('run\n');
    expect(await echo(c, 'next')).toBe('next'); // the next command connects again
    expect(relay.accepted).toBe(2);
  });

  test('cancel mid-command stops it at once; the connection is retired and the next command runs on a new one', async () => {
    const c = connectorWith();
    expect(await echo(c, 'before')).toBe('before');
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('cancelled by test')), 200);
    await expect(c.withSession(pooled, (s) => s.run(['sleep', '30']), ac.signal)).rejects.toThrow('cancelled by test');
    await relay.waitUntilOpen(0, 'after the cancel');
    expect(await echo(c, 'after')).toBe('after');
    expect(relay.accepted).toBe(2);
  });

  test('a changed host key on reconnect is refused, and nothing is pooled', async () => {
    const c = connectorWith();
    expect(await echo(c, 'before')).toBe('before');
    await restartNode(false); // reinstalled: new host key; known_hosts still has the old one
    const f = await failureOf(echo(c, 'after'));
    expect(f).toMatchObject({ type: 'HostKeyMismatch', nonRetryable: true });
    expect(f.message).toMatch(/^host key of n2 \(\[127\.0\.0\.1\]:\d+\) does not match/);
    const again = await failureOf(echo(c, 'again'));
    expect(again.type).toBe('HostKeyMismatch');
    expect(relay.accepted).toBe(3);
  });
});
