/**
 * kubemend's one SSH client. node-ssh is wrapped here, once, because on its own it
 *  - leaves no 'error' listener on the connection after connect(): a TCP reset would
 *    crash the worker process;
 *  - resolves a command whose connection dropped with `code: null`, which looks like
 *    success to a careless caller;
 *  - has no command timeout.
 * Host keys are always verified against the node's known_hosts file; an unknown host is
 * refused like a changed key (no trust on first use). Commands are argv arrays, quoted
 * by lib/shell.
 */
import { readFile } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { ApplicationFailure } from '@temporalio/common';
import { NodeSSH } from 'node-ssh';
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
  connectTimeoutMs: number;
  commandTimeoutMs: number;
}

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

export class SshConnector implements SshPort {
  constructor(private readonly opts: SshConnectorOptions) {}

  async withSession<T>(target: NodeTarget, fn: (s: SshSession) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const session = await this.open(target, signal);
    try {
      return await fn(session);
    } finally {
      session.close();
    }
  }

  async open(target: NodeTarget, signal?: AbortSignal): Promise<SshSession> {
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
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal!.reason ?? new Error('aborted'));
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    try {
      await Promise.race([connecting, aborted]);
    } catch (err) {
      sock.destroy();
      ssh.dispose();
      connecting.catch(() => undefined);
      if (signal?.aborted) throw err;
      if (verdict && verdict.verdict !== 'ok') throw describeVerdict(verdict, target);
      throw classifyConnectError(err, target);
    } finally {
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
    return new Session(ssh, sock, target, this.opts.commandTimeoutMs, signal);
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

class Session implements SshSession {
  private dead: Error | undefined;
  private readonly onAbort = () => this.close();
  /** Settles once, when the activity is cancelled; every command races it. */
  private readonly aborted: Promise<'aborted'>;

  constructor(
    private readonly ssh: NodeSSH,
    private readonly sock: Socket,
    readonly target: NodeTarget,
    private readonly defaultTimeoutMs: number,
    private readonly signal?: AbortSignal,
  ) {
    // Without this listener a reset connection is an uncaught 'error' event.
    ssh.connection?.on('error', (err: Error) => {
      this.dead = err;
    });
    ssh.connection?.on('close', () => {
      this.dead ??= new Error('connection closed');
    });
    signal?.addEventListener('abort', this.onAbort, { once: true });
    this.aborted = new Promise((resolve) => signal?.addEventListener('abort', () => resolve('aborted'), { once: true }));
  }

  async run(argv: readonly string[], opts: RunOptions = {}): Promise<CommandResult> {
    const command = commandLine(argv);
    this.signal?.throwIfAborted();
    if (this.dead) throw transient(`SSH connection to ${this.target.name} is gone (${this.dead.message}); cannot run ${command}`);
    const timeoutMs = opts.timeoutMs ?? this.defaultTimeoutMs;
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    try {
      const r = await Promise.race([this.ssh.execCommand(command), timedOut, this.aborted]);
      if (r === 'timeout') {
        this.close(); // the only sure way to stop a remote command whose channel we cannot signal
        throw transient(`${command} on ${this.target.name} did not finish within ${timeoutMs} ms`);
      }
      if (r === 'aborted') throw this.signal!.reason ?? new Error('aborted');
      const result: CommandResult = {
        command,
        exitCode: r.code,
        signal: r.signal ?? null,
        stdout: r.stdout,
        stderr: r.stderr,
        durationMs: Date.now() - started,
      };
      if (result.exitCode === null && result.signal === null) {
        throw transient(`connection to ${this.target.name} dropped while running ${command}${this.dead ? ` (${(this.dead as Error).message})` : ''}`);
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

  close(): void {
    this.signal?.removeEventListener('abort', this.onAbort);
    this.dead ??= new Error('session closed');
    this.ssh.dispose();
    this.sock.destroy();
  }
}
