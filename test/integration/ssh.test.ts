/**
 * The SSH wrapper against a real sshd: structured results, the no-throw mode, hostile
 * arguments, and the failure modes node-ssh leaves to its caller (timeouts, a session
 * killed mid-command, cancellation).
 */
import { existsSync } from 'node:fs';
import { ApplicationFailure } from '@temporalio/common';
import { SshConnector, type SshSession } from '../../activities/ssh';
import type { NodeTarget } from '../../lib/config';
import { LocalSshd } from '../lab/sshd';

let sshd: LocalSshd;
let target: NodeTarget;
const connector = new SshConnector({ connectTimeoutMs: 5000, commandTimeoutMs: 10_000 });

beforeAll(async () => {
  sshd = await LocalSshd.start();
  target = { cluster: 'c', name: 'n1', role: 'worker', host: sshd.host, port: sshd.port, user: 'root', privateKeyPath: sshd.clientKeyPath, knownHostsPath: sshd.knownHostsPath };
});
afterAll(() => sshd?.stop());

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
