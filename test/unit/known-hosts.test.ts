import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostKeyAlgorithms, parseKnownHosts, patternsMatch, verifyHostKey } from '../../lib/known-hosts';

// Two real keys from ssh-keygen, so blobs are what a server would present.
const dir = mkdtempSync(join(tmpdir(), 'kubemend-kh-'));
const key = (name: string, type = 'ed25519') => {
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-f', join(dir, name)]);
  const [t, b64] = readFileSync(join(dir, `${name}.pub`), 'utf8').trim().split(/\s+/);
  return { type: t, b64, blob: Buffer.from(b64, 'base64') };
};
const a = key('a');
const b = key('b');
const r = key('r', 'ecdsa');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('verifyHostKey', () => {
  const kh = parseKnownHosts(
    [
      '# comment',
      `[127.0.0.1]:2222 ${a.type} ${a.b64}`,
      `node1,192.178.33.110 ${a.type} ${a.b64} root@node1`,
      `*.lab,!bad.lab ${b.type} ${b.b64}`,
      `@revoked * ${r.type} ${r.b64}`,
      `@cert-authority *.ca.example ${b.type} ${b.b64}`,
      'malformed-line',
    ].join('\n'),
  );

  test('accepts the recorded key, with [host]:port for non-22 ports', () => {
    expect(verifyHostKey(kh, '127.0.0.1', 2222, a.blob)).toEqual({ verdict: 'ok', line: 2 });
    expect(verifyHostKey(kh, 'node1', 22, a.blob).verdict).toBe('ok');
    expect(verifyHostKey(kh, '192.178.33.110', 22, a.blob).verdict).toBe('ok');
  });
  test('a different key for a known host is a mismatch naming the lines', () => {
    expect(verifyHostKey(kh, '127.0.0.1', 2222, b.blob)).toEqual({ verdict: 'mismatch', knownTypes: ['ssh-ed25519'], lines: [2] });
  });
  test('the port is part of the name', () => {
    expect(verifyHostKey(kh, '127.0.0.1', 22, a.blob)).toEqual({ verdict: 'unknown' });
    expect(verifyHostKey(kh, 'node1', 2222, a.blob)).toEqual({ verdict: 'unknown' });
  });
  test('wildcards and negation', () => {
    expect(verifyHostKey(kh, 'w1.lab', 22, b.blob).verdict).toBe('ok');
    expect(verifyHostKey(kh, 'bad.lab', 22, b.blob)).toEqual({ verdict: 'unknown' });
  });
  test('@revoked wins even where the host is otherwise unknown', () => {
    expect(verifyHostKey(kh, 'anything', 22, r.blob)).toEqual({ verdict: 'revoked', line: 5 });
  });
  test('@cert-authority lines are never taken as host keys', () => {
    expect(verifyHostKey(kh, 'x.ca.example', 22, b.blob)).toEqual({ verdict: 'unknown' });
  });
});

describe('hashed known_hosts (ssh-keygen -H)', () => {
  test('matches names hashed by the real ssh-keygen', () => {
    const file = join(dir, 'hashed');
    writeFileSync(file, `[10.0.2.15]:2201 ${a.type} ${a.b64}\nnode2 ${b.type} ${b.b64}\n`);
    execFileSync('ssh-keygen', ['-q', '-H', '-f', file], { stdio: 'ignore' });
    const text = readFileSync(file, 'utf8');
    expect(text).not.toContain('10.0.2.15');
    const kh = parseKnownHosts(text);
    expect(kh.every((e) => e.patterns.startsWith('|1|'))).toBe(true);
    expect(verifyHostKey(kh, '10.0.2.15', 2201, a.blob).verdict).toBe('ok');
    expect(verifyHostKey(kh, '10.0.2.15', 2201, b.blob).verdict).toBe('mismatch');
    expect(verifyHostKey(kh, 'node2', 22, b.blob).verdict).toBe('ok');
    expect(verifyHostKey(kh, 'node3', 22, b.blob).verdict).toBe('unknown');
  });
});

test('patternsMatch is case-insensitive like OpenSSH and anchors the pattern', () => {
  expect(patternsMatch('Node1', 'node1')).toBe(true);
  expect(patternsMatch('node1', 'node10')).toBe(false);
  expect(patternsMatch('node?', 'node7')).toBe(true);
});

test('hostKeyAlgorithms offers RSA with its SHA-2 signatures', () => {
  expect(hostKeyAlgorithms(['ssh-rsa', 'ssh-ed25519'])).toEqual(['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa', 'ssh-ed25519']);
});
