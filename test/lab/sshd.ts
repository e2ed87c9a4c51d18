/**
 * A private sshd on loopback (Debian's openssh-server) with its own host key, client key
 * and known_hosts, in a directory of its own. It never touches the host's SSH config or
 * keys. Tests use one per suite; the demo uses one as its "local node".
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';

export const SSHD = process.env.KUBEMEND_SSHD ?? '/usr/sbin/sshd';

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * A free port below 32768. Temporal's SQL schema keeps membership ports in a smallint,
 * so its ports must fit in 15 bits; the kernel's ephemeral range (port 0) does not.
 */
export async function freeLowPort(host = '127.0.0.1'): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const ok = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, host, () => srv.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error('no free port in 20000-32000');
}

/**
 * `n` distinct free ports below 32768, all held until every one is found: outside the
 * kernel's ephemeral range, so no outgoing connection takes one before its server binds it.
 */
export async function freeLowPorts(n: number, host = '127.0.0.1'): Promise<number[]> {
  const held: Array<{ port: number; srv: ReturnType<typeof createServer> }> = [];
  try {
    for (let i = 0; i < 400 && held.length < n; i++) {
      const port = 20000 + Math.floor(Math.random() * 12000);
      if (held.some((h) => h.port === port)) continue;
      const srv = createServer();
      const ok = await new Promise<boolean>((resolve) => {
        srv.once('error', () => resolve(false));
        srv.listen(port, host, () => resolve(true));
      });
      if (ok) held.push({ port, srv });
    }
    if (held.length < n) throw new Error(`no ${n} free ports in 20000-32000`);
    return held.map((h) => h.port);
  } finally {
    await Promise.all(held.map((h) => new Promise((r) => h.srv.close(r))));
  }
}

/**
 * sshd_config for kubemend's test sshds (loopback and lab nodes): keys only, root by key,
 * no PAM. StrictModes is off because test directories live under /tmp and .lab/, which a
 * real node's key files never do.
 */
export function sshdConfig(o: { listen: string; hostKey: string; authorizedKeys: string; pidFile: string }): string {
  return [
    `ListenAddress ${o.listen}`,
    `HostKey ${o.hostKey}`,
    `AuthorizedKeysFile ${o.authorizedKeys}`,
    `PidFile ${o.pidFile}`,
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PermitRootLogin prohibit-password',
    'UsePAM no',
    'StrictModes no',
    'LogLevel ERROR',
    '',
  ].join('\n');
}

export function keygen(path: string, type = 'ed25519'): string {
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', 'kubemend-test', '-f', path], { stdio: 'ignore' });
  return readFileSync(`${path}.pub`, 'utf8').trim();
}

/** Resolves once the port speaks SSH (the server sends its banner first). */
async function waitForBanner(host: string, port: number, deadlineMs: number, child: ChildProcess): Promise<void> {
  const until = Date.now() + deadlineMs;
  let lastErr = '';
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`sshd exited with code ${child.exitCode}`);
    const banner = await new Promise<string>((resolve) => {
      const sock = createConnection({ host, port });
      let data = '';
      sock.setTimeout(1000);
      sock.on('data', (d) => {
        data += d.toString();
        sock.destroy();
      });
      sock.on('close', () => resolve(data));
      sock.on('timeout', () => sock.destroy());
      sock.on('error', (e) => {
        lastErr = e.message;
        resolve('');
      });
    });
    if (banner.startsWith('SSH-2.0-')) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`sshd on ${host}:${port} did not come up: ${lastErr}`);
}

export interface LocalSshdOptions {
  dir?: string;
  host?: string;
  port?: number;
  hostKeyType?: 'ed25519' | 'ecdsa' | 'rsa';
  /** Extra sshd_config lines, e.g. a ForceCommand. */
  extraConfig?: string[];
  /** Keep the host and client keys already in `dir` (an sshd restarted, as after a reboot); default: new keys. */
  keepKeys?: boolean;
}

export class LocalSshd {
  private stderr = '';
  private constructor(
    readonly dir: string,
    readonly host: string,
    readonly port: number,
    readonly hostPublicKey: string,
    readonly clientKeyPath: string,
    readonly knownHostsPath: string,
    private readonly child: ChildProcess,
    private readonly ownsDir: boolean,
  ) {
    child.stderr?.on('data', (d) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
  }

  static async start(opts: LocalSshdOptions = {}): Promise<LocalSshd> {
    const ownsDir = !opts.dir;
    const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'kubemend-sshd-'));
    mkdirSync(dir, { recursive: true });
    const host = opts.host ?? '127.0.0.1';
    const hostKey = join(dir, `ssh_host_${opts.hostKeyType ?? 'ed25519'}_key`);
    const clientKey = join(dir, 'client_ed25519');
    const keep = opts.keepKeys && existsSync(hostKey) && existsSync(clientKey);
    if (!keep) {
      rmSync(hostKey, { force: true });
      rmSync(`${hostKey}.pub`, { force: true });
      rmSync(clientKey, { force: true });
      rmSync(`${clientKey}.pub`, { force: true });
    }
    const hostPub = keep ? readFileSync(`${hostKey}.pub`, 'utf8').trim() : keygen(hostKey, opts.hostKeyType ?? 'ed25519');
    const clientPub = keep ? readFileSync(`${clientKey}.pub`, 'utf8').trim() : keygen(clientKey);
    writeFileSync(join(dir, 'authorized_keys'), `${clientPub}\n`, { mode: 0o600 });
    mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }); // sshd's privilege-separation directory

    for (let attempt = 0; ; attempt++) {
      const port = opts.port ?? (await freePort(host));
      const cfg = join(dir, 'sshd_config');
      writeFileSync(
        cfg,
        sshdConfig({ listen: `${host}:${port}`, hostKey, authorizedKeys: join(dir, 'authorized_keys'), pidFile: join(dir, 'sshd.pid') }) + (opts.extraConfig ?? []).map((l) => `${l}\n`).join(''),
      );
      const knownHosts = join(dir, 'known_hosts');
      const [type, key] = hostPub.split(/\s+/);
      writeFileSync(knownHosts, `[${host}]:${port} ${type} ${key}\n`);
      const child = spawn(SSHD, ['-D', '-e', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
      const sshd = new LocalSshd(dir, host, port, hostPub, clientKey, knownHosts, child, ownsDir);
      try {
        await waitForBanner(host, port, 10_000, child);
        return sshd;
      } catch (err) {
        await sshd.stop();
        if (attempt >= 2 || opts.port) throw new Error(`${(err as Error).message}\n${sshd.stderr}`);
      }
    }
  }

  /** A known_hosts line for this server in OpenSSH's format. */
  knownHostsLine(): string {
    const [type, key] = this.hostPublicKey.split(/\s+/);
    return `[${this.host}]:${this.port} ${type} ${key}`;
  }

  /**
   * Stops the listener. Its connections live on, as they do when a real sshd restarts,
   * unless `sessions` is set: then they are killed too, as when the node goes down.
   */
  async stop(opts: { sessions?: boolean } = {}): Promise<void> {
    if (opts.sessions && this.child.pid !== undefined) {
      for (const pid of childPids(this.child.pid)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
    }
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.kill('SIGTERM');
      await Promise.race([exited, sleep(3000, undefined, { ref: false })]);
      if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    }
    if (this.ownsDir) rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Processes whose parent is `parent` (an sshd's per-connection processes), from /proc. */
function childPids(parent: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after the last ')'.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === parent) out.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}
