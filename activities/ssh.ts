/**
 * kubemend's one SSH client. node-ssh makes the connection and ssh2 (underneath it) runs
 * the commands, wrapped here, once, because on their own they
 *  - leave no 'error' listener on the connection after connect(): a TCP reset would
 *    crash the worker process;
 *  - resolve a command whose connection dropped with `code: null`, which looks like
 *    success to a careless caller;
 *  - have no command timeout.
 * Host keys are always verified against the node's known_hosts file; an unknown host is
 * refused like a changed key (no trust on first use). Commands are argv arrays, quoted
 * by lib/shell.
 *
 * Connections are reused: one per node within a worker process, kept open for
 * `idleTimeoutMs` after its last session ends, closed by close() at worker shutdown.
 *  - The host key is verified at every connect, the first and every reconnect.
 *  - A connection that dies (reboot, sshd restart, TCP reset) leaves the pool; the next
 *    command to the node connects again.
 *  - A command is never run twice by this layer. Once the exec request has gone out, a
 *    connection that drops is reported as "dropped while running" (the reboot step counts
 *    that as the reboot). Only a command that never left, because the pooled connection it
 *    was to run on turned out dead when its channel was opened, is sent once more, on a new
 *    connection.
 *  - A command that times out or is cancelled closes its channel and retires its
 *    connection: no new session uses it, and it closes when its other sessions end.
 */
import { readFile } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { ApplicationFailure } from '@temporalio/common';
import { NodeSSH } from 'node-ssh';
import type { Client, ClientChannel } from 'ssh2';
import type { NodeTarget } from '../lib/config';
import { Failure } from '../lib/failures';
import { entriesForHost, hostKeyAlgorithms, hostLookupName, type HostKeyVerdict, parseKnownHosts, verifyHostKey } from '../lib/known-hosts';
import { commandLine } from '../lib/shell';

export interface CommandResult {
  command: string;
  exitCode: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export interface RunOptions {
  /** Overrides the connector's default command timeout. */
  timeoutMs?: number;
  /** Throw on a non-zero exit (default). With false the caller inspects exitCode. */
  check?: boolean;
  /**
   * Written to the command's stdin, then end of file (default: nothing). The way to hand a
   * command a secret: stdin is not in the node's process list, argv is.
   */
  stdin?: string;
}

export interface SshSession {
  readonly target: NodeTarget;
  run(argv: readonly string[], opts?: RunOptions): Promise<CommandResult>;
  close(): void;
}

/** The narrow port activities depend on. */
export interface SshPort {
  withSession<T>(target: NodeTarget, fn: (s: SshSession) => Promise<T>, signal?: AbortSignal): Promise<T>;
}

export interface SshConnectorOptions {
  /** Bounds the TCP connect and the SSH handshake each, and the opening of a session channel. */
  connectTimeoutMs: number;
  commandTimeoutMs: number;
  /**
   * How long a connection with no session on it stays open for the next command to the same
   * node (default DEFAULT_SSH_IDLE_TIMEOUT_MS). 0: no reuse, a connection per session.
   */
  idleTimeoutMs?: number;
}

export const DEFAULT_SSH_IDLE_TIMEOUT_MS = 30_000;

/** Sessions one connection carries at once before another is opened; OpenSSH's MaxSessions defaults to 10. */
const SESSIONS_PER_CONNECTION = 8;

function fail(type: string, message: string, nonRetryable: boolean): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable });
}

const transient = (m: string) => fail(Failure.SshTransient, m, false);

function describeVerdict(v: HostKeyVerdict, t: NodeTarget): ApplicationFailure {
  const where = `${t.name} (${hostLookupName(t.host, t.port)})`;
  switch (v.verdict) {
    case 'mismatch':
      return fail(Failure.HostKeyMismatch, `host key of ${where} does not match ${t.knownHostsPath} (lines ${v.lines.join(', ')}); refusing to connect. If the node was reinstalled, verify its new key out of band and update known_hosts.`, true);
    case 'revoked':
      return fail(Failure.HostKeyMismatch, `host key of ${where} is marked @revoked in ${t.knownHostsPath} line ${v.line}; refusing to connect`, true);
    case 'unknown':
      return fail(Failure.HostKeyUnknown, `${where} has no entry in ${t.knownHostsPath}; kubemend never trusts a host key on first use. Add the node's key (ssh-keyscan, verified out of band).`, true);
    default:
      return fail(Failure.HostKeyMismatch, `host key of ${where} was not accepted`, true);
  }
}

async function readLocal(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw fail(Failure.CredentialUnavailable, `cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, true);
  }
}

const TRANSIENT_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EPIPE', 'ECONNABORTED', 'EAI_AGAIN']);

/** Everything that makes two targets the same connection: a changed key path or known_hosts file is a new one. */
const poolKey = (t: NodeTarget) => JSON.stringify([t.cluster, t.name, t.host, t.port, t.user, t.privateKeyPath ?? null, t.agent ?? null, t.knownHostsPath]);

/** Rejects with the signal's reason as soon as it aborts; the promise itself runs on. */
function abortable<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason ?? new Error('aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

interface Dial {
  promise: Promise<Connection>;
  /** Sessions waiting for it. */
  waiting: number;
  abort(why: unknown): void;
}

export class SshConnector implements SshPort {
  private readonly idleTimeoutMs: number;
  /** Open connections by target; a dead or closed one leaves at once. */
  private readonly pool = new Map<string, Connection[]>();
  /** Connects in progress by target, so sessions that start together share one. */
  private readonly dialing = new Map<string, Dial>();

  constructor(private readonly opts: SshConnectorOptions) {
    this.idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_SSH_IDLE_TIMEOUT_MS;
  }

  async withSession<T>(target: NodeTarget, fn: (s: SshSession) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const session = await this.open(target, signal);
    try {
      return await fn(session);
    } finally {
      session.close();
    }
  }

  /** A session on a verified connection to the node; the caller closes it. */
  async open(target: NodeTarget, signal?: AbortSignal): Promise<SshSession> {
    return new Session(this, await this.acquire(target, signal), target, this.opts.commandTimeoutMs, this.opts.connectTimeoutMs, signal);
  }

  /** Closes every connection (worker shutdown). The connector stays usable: a later session connects again. */
  close(): void {
    for (const conns of [...this.pool.values()]) for (const c of [...conns]) c.destroy(new Error('the SSH connector was closed'));
    this.pool.clear();
  }

  /** A live connection to the target with a lease taken on it: the pooled one, or a new one. */
  async acquire(target: NodeTarget, signal?: AbortSignal): Promise<Connection> {
    signal?.throwIfAborted();
    if (this.idleTimeoutMs === 0) return (await this.connect(target, signal)).lease();
    const key = poolKey(target);
    for (;;) {
      const conn = await this.pooledOrNew(key, target, signal);
      if (conn.dead) throw transient(`SSH connection to ${target.user}@${hostLookupName(target.host, target.port)} (${target.name}) closed as soon as it was made (${conn.dead.message})`);
      if (conn.leases < SESSIONS_PER_CONNECTION) return conn.lease();
      // Full: the sessions that waited for it with this one took it. Look again (another is made).
    }
  }

  private async pooledOrNew(key: string, target: NodeTarget, signal?: AbortSignal): Promise<Connection> {
    const ready = this.pool.get(key)?.find((c) => c.usable && c.leases < SESSIONS_PER_CONNECTION);
    if (ready) return ready;
    let dial = this.dialing.get(key);
    if (!dial) {
      // Shared by every session that waits for it; abandoned (its socket destroyed) only
      // when all of them have been cancelled.
      const ac = new AbortController();
      const promise = this.connect(target, ac.signal).then((c) => {
        this.pool.set(key, [...(this.pool.get(key) ?? []), c]);
        return c;
      });
      const d: Dial = { promise, waiting: 0, abort: (why) => ac.abort(why) };
      const settled = () => this.dialing.get(key) === d && this.dialing.delete(key);
      promise.then(settled, settled);
      this.dialing.set(key, d);
      dial = d;
    }
    dial.waiting++;
    try {
      return await abortable(dial.promise, signal);
    } finally {
      dial.waiting--;
      if (dial.waiting === 0 && signal?.aborted) dial.abort(signal.reason);
    }
  }

  private forget(conn: Connection): void {
    const left = (this.pool.get(conn.key) ?? []).filter((c) => c !== conn);
    if (left.length) this.pool.set(conn.key, left);
    else this.pool.delete(conn.key);
  }

  /** A new connection, its host key verified against known_hosts, as for every connect. */
  private async connect(target: NodeTarget, signal?: AbortSignal): Promise<Connection> {
    signal?.throwIfAborted();
    const known = parseKnownHosts(await readLocal(target.knownHostsPath, 'known_hosts file'));
    const mine = entriesForHost(known, target.host, target.port).filter((e) => e.marker === undefined);
    if (mine.length === 0) throw describeVerdict({ verdict: 'unknown' }, target);
    if (hostKeyAlgorithms(mine.map((e) => e.keyType)).length === 0) {
      throw fail(Failure.HostKeyUnknown, `${target.knownHostsPath} records only key types kubemend cannot verify for ${target.name} (${[...new Set(mine.map((e) => e.keyType))].join(', ')}); add an ed25519, ecdsa or rsa host key`, true);
    }
    const privateKey = target.privateKeyPath ? await readLocal(target.privateKeyPath, 'private key') : undefined;

    // The TCP connection is ours: abort, timeout and close can destroy it at any stage. (node-ssh
    // exposes its client only once the handshake is done, too late to cancel a hanging one.)
    const sock = await dial(target, this.opts.connectTimeoutMs, signal);
    let verdict: HostKeyVerdict | undefined;
    const ssh = new NodeSSH();
    const connecting = ssh.connect({
      sock,
      host: target.host,
      port: target.port,
      username: target.user,
      privateKey,
      agent: target.agent,
      readyTimeout: this.opts.connectTimeoutMs,
      keepaliveInterval: 5000,
      keepaliveCountMax: 3,
      algorithms: { serverHostKey: hostKeyAlgorithms(mine.map((e) => e.keyType)) as never },
      hostVerifier: (key: Buffer) => {
        verdict = verifyHostKey(known, target.host, target.port, key);
        return verdict.verdict === 'ok';
      },
    });
    try {
      await abortable(connecting, signal);
    } catch (err) {
      sock.destroy();
      ssh.dispose();
      connecting.catch(() => undefined);
      if (signal?.aborted) throw err;
      if (verdict && verdict.verdict !== 'ok') throw describeVerdict(verdict, target);
      throw classifyConnectError(err, target);
    }
    // Taken now: node-ssh forgets its client when the connection ends.
    const client = ssh.connection;
    if (!client) {
      sock.destroy();
      throw transient(`SSH connection to ${target.user}@${hostLookupName(target.host, target.port)} (${target.name}) closed as soon as it was made`);
    }
    return new Connection(poolKey(target), ssh, client, sock, this.idleTimeoutMs, (c) => this.forget(c));
  }
}

/** Opens the TCP connection to the node, bounded by the connect timeout and the abort signal. */
function dial(t: NodeTarget, timeoutMs: number, signal?: AbortSignal): Promise<Socket> {
  const where = `${t.user}@${hostLookupName(t.host, t.port)} (${t.name})`;
  return new Promise((resolve, reject) => {
    const sock = createConnection({ host: t.host, port: t.port });
    const done = (err?: unknown) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      sock.removeListener('error', onError);
      if (err) {
        sock.destroy();
        reject(err);
      } else resolve(sock);
    };
    const onAbort = () => done(signal!.reason ?? new Error('aborted'));
    const onError = (e: NodeJS.ErrnoException) => done(transient(`cannot connect to ${where}: ${e.code ?? e.message}`));
    const timer = setTimeout(() => done(transient(`cannot connect to ${where}: no answer within ${timeoutMs} ms`)), timeoutMs);
    sock.once('connect', () => done());
    sock.once('error', onError);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function classifyConnectError(err: unknown, t: NodeTarget): ApplicationFailure {
  const e = err as Error & { level?: string; code?: string };
  const where = `${t.user}@${hostLookupName(t.host, t.port)} (${t.name})`;
  if (e.level === 'client-authentication') {
    return fail(Failure.SshAuthFailed, `SSH authentication to ${where} failed: the server accepted none of our keys`, true);
  }
  if (e.level === 'client-timeout') return transient(`SSH handshake with ${where} timed out`);
  // The server offers none of the key types known_hosts has for it (e.g. reinstalled with
  // new keys): the host key cannot be verified, which retrying will not change.
  if (/no matching host key format/i.test(e.message ?? '')) {
    return fail(Failure.HostKeyMismatch, `${where} offers no host key of the types ${t.knownHostsPath} records for it; refusing to connect`, true);
  }
  if (e.code && TRANSIENT_CODES.has(e.code)) return transient(`cannot connect to ${where}: ${e.code}`);
  if (/Cannot parse privateKey|Encrypted private key/i.test(e.message ?? '')) {
    return fail(Failure.CredentialUnavailable, `private key ${t.privateKeyPath} cannot be used: ${e.message}`, true);
  }
  return transient(`SSH connection to ${where} failed: ${e.message ?? String(err)}`);
}

/** One SSH connection to a node, shared by the sessions that lease it. */
class Connection {
  leases = 0;
  /** Why the connection is gone (error, close, or closed by us); it never comes back. */
  dead: Error | undefined;
  /** No new sessions: it closes when its last lease ends. */
  private retired = false;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly key: string,
    private readonly ssh: NodeSSH,
    readonly client: Client,
    private readonly sock: Socket,
    private readonly idleTimeoutMs: number,
    private readonly onGone: (c: Connection) => void,
  ) {
    // Without an 'error' listener a reset connection is an uncaught 'error' event.
    client.on('error', (err: Error) => this.destroy(err));
    client.on('close', () => this.destroy(new Error('connection closed')));
  }

  get usable(): boolean {
    return !this.dead && !this.retired;
  }

  lease(): this {
    clearTimeout(this.idleTimer);
    this.leases++;
    return this;
  }

  release(): void {
    this.leases--;
    if (this.leases > 0 || this.dead) return;
    if (this.retired || this.idleTimeoutMs === 0) {
      this.destroy(new Error('session closed'));
      return;
    }
    this.idleTimer = setTimeout(() => this.destroy(new Error(`idle for ${this.idleTimeoutMs} ms`)), this.idleTimeoutMs);
    this.idleTimer.unref();
  }

  /** After a timeout or cancel: its health is unknown and the server may still hold the abandoned session. */
  retire(): void {
    this.retired = true;
  }

  destroy(why: Error): void {
    if (this.dead) return;
    this.dead = why;
    clearTimeout(this.idleTimer);
    this.onGone(this);
    this.ssh.dispose();
    this.sock.destroy();
  }
}

/** The command never reached the node: safe to send once more on a new connection. */
class NotSent extends Error {
  constructor(
    message: string,
    readonly connectionDead: boolean,
  ) {
    super(message);
  }
}

/** A command whose exec request went out; `exited` settles when its channel closes. */
interface Started {
  exited: Promise<Exited>;
}

interface Exited {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

class Session implements SshSession {
  /** Set once the session is over (closed, timed out, cancelled): no command runs on it. */
  private over: Error | undefined;
  private conn: Connection | undefined;
  private readonly channels = new Set<ClientChannel>();
  private readonly onAbort = () => this.end('cancelled', true);
  /** Settles once, when the activity is cancelled; every command races it. */
  private readonly aborted: Promise<'aborted'>;

  constructor(
    private readonly connector: SshConnector,
    conn: Connection,
    readonly target: NodeTarget,
    private readonly defaultTimeoutMs: number,
    private readonly openTimeoutMs: number,
    private readonly signal?: AbortSignal,
  ) {
    this.conn = conn;
    signal?.addEventListener('abort', this.onAbort, { once: true });
    this.aborted = new Promise((resolve) => signal?.addEventListener('abort', () => resolve('aborted'), { once: true }));
  }

  async run(argv: readonly string[], opts: RunOptions = {}): Promise<CommandResult> {
    const command = commandLine(argv);
    this.signal?.throwIfAborted();
    if (this.over) throw transient(`SSH connection to ${this.target.name} is gone (${this.over.message}); cannot run ${command}`);
    const timeoutMs = opts.timeoutMs ?? this.defaultTimeoutMs;
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    try {
      const r = await Promise.race([this.execute(command, opts.stdin), timedOut, this.aborted]);
      if (r === 'timeout') {
        this.end('timed out', true);
        throw transient(`${command} on ${this.target.name} did not finish within ${timeoutMs} ms`);
      }
      if (r === 'aborted') throw this.signal!.reason ?? new Error('aborted');
      const result: CommandResult = { command, exitCode: r.code, signal: r.signal, stdout: r.stdout, stderr: r.stderr, durationMs: Date.now() - started };
      if (result.exitCode === null && result.signal === null) {
        const why = this.conn?.dead ?? this.over;
        throw transient(`connection to ${this.target.name} dropped while running ${command}${why ? ` (${why.message})` : ''}`);
      }
      if ((opts.check ?? true) && result.exitCode !== 0) {
        throw ApplicationFailure.create({
          type: Failure.CommandFailed,
          message: `${command} on ${this.target.name} exited ${result.exitCode ?? `by signal ${result.signal}`}: ${result.stderr.trim().slice(0, 500)}`,
          nonRetryable: true,
          details: [result],
        });
      }
      return result;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Runs the command on the session's connection; if that was found dead before the command left, once on a new one. */
  private async execute(command: string, stdin?: string): Promise<Exited> {
    let started: Started;
    try {
      started = await this.openChannel(command, stdin);
    } catch (err) {
      if (!(err instanceof NotSent)) throw err;
      if (!err.connectionDead) throw transient(`cannot open an SSH session on ${this.target.name} to run ${command}: ${err.message}`);
      this.conn?.release();
      this.conn = undefined;
      this.conn = await this.connector.acquire(this.target, this.signal);
      if (this.over) {
        // Cancelled or timed out while reconnecting: give the new lease back, run nothing.
        this.conn.release();
        this.conn = undefined;
        throw transient(`SSH connection to ${this.target.name} is gone (${this.over.message}); cannot run ${command}`);
      }
      try {
        started = await this.openChannel(command, stdin);
      } catch (again) {
        if (again instanceof NotSent) throw transient(`cannot open an SSH session on ${this.target.name} to run ${command}, after connecting again: ${again.message}`);
        throw again;
      }
    }
    return started.exited;
  }

  /**
   * Opens a session channel and sends the exec request. Fails with NotSent while the
   * request has not gone out. A connection that does not answer the channel open within
   * the open timeout is taken for dead (a half-open TCP connection after a crash): closing
   * it makes ssh2 report which phase the request was in.
   */
  private openChannel(command: string, stdin?: string): Promise<Started> {
    const conn = this.conn;
    if (!conn || conn.dead) return Promise.reject(new NotSent(`connection is gone (${conn?.dead?.message ?? 'no connection'})`, true));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => conn.destroy(new Error(`no answer to a session request within ${this.openTimeoutMs} ms`)), this.openTimeoutMs);
      const onExec = (err: Error | undefined, channel: ClientChannel) => {
        clearTimeout(timer);
        if (!err) {
          if (this.over) {
            channel.close(); // the session ended meanwhile; run() has already returned
            reject(new Error('session over'));
          } else resolve({ exited: this.collect(channel, stdin) }); // listeners now: ssh2 may emit 'exit' before the next microtask
          return;
        }
        // ssh2 1.x: these come only before the exec request is written (open refused, or the
        // connection closed while the open was pending). "Unable to exec" comes after it.
        if (/^\(SSH\) Channel open failure|^No response from server$|^No free channels available$|^Channel is not open$/.test(err.message)) {
          reject(new NotSent(conn.dead ? `${err.message} (${conn.dead.message})` : err.message, !!conn.dead || err.message === 'No response from server'));
        } else if (conn.dead) {
          resolve({ exited: Promise.resolve({ code: null, signal: null, stdout: '', stderr: '' }) }); // the request went out: whether it ran is unknown
        } else {
          reject(transient(`${this.target.name} refused to run ${command}: ${err.message}`));
        }
      };
      try {
        conn.client.exec(command, onExec);
      } catch (err) {
        clearTimeout(timer); // "Not connected": the socket is already closed
        conn.destroy(err as Error);
        reject(new NotSent((err as Error).message, true));
      }
    });
  }

  private collect(channel: ClientChannel, stdin?: string): Promise<Exited> {
    this.channels.add(channel);
    return new Promise((resolve) => {
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let code: number | null = null;
      let signal: string | null = null;
      channel.on('data', (d: Buffer) => out.push(d));
      channel.stderr.on('data', (d: Buffer) => err.push(d));
      channel.on('exit', (c: number | null, s?: string) => {
        code = c ?? null;
        signal = s ?? null;
      });
      channel.on('close', () => {
        this.channels.delete(channel);
        resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8').trim(), stderr: Buffer.concat(err).toString('utf8').trim() });
      });
      if (stdin === undefined) channel.end(); // no stdin
      else channel.end(stdin);
    });
  }

  close(): void {
    this.end('session closed', false);
  }

  /**
   * Ends the session: its channels are closed and its lease given back. `retire`: after a
   * timeout or cancel, the connection takes no new sessions and closes once the others end
   * (the server may still hold the abandoned command's session).
   */
  private end(why: string, retire: boolean): void {
    if (this.over) return;
    this.over = new Error(why);
    this.signal?.removeEventListener('abort', this.onAbort);
    for (const ch of this.channels) ch.close();
    if (retire) this.conn?.retire();
    this.conn?.release();
    this.conn = undefined;
  }
}
