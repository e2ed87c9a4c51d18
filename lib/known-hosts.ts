/**
 * OpenSSH known_hosts matching (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"): plain and hashed
 * host names, [host]:port for non-22 ports, wildcards, negation, and @revoked. kubemend
 * never adds keys to the file: an unknown host is refused exactly like a changed key.
 */
import { createHmac } from 'node:crypto';

export interface KnownHostEntry {
  marker?: '@revoked' | '@cert-authority';
  patterns: string;
  keyType: string;
  keyBase64: string;
  line: number;
}

export type HostKeyVerdict =
  | { verdict: 'ok'; line: number }
  | { verdict: 'mismatch'; knownTypes: string[]; lines: number[] }
  | { verdict: 'unknown' }
  | { verdict: 'revoked'; line: number };

export function parseKnownHosts(text: string): KnownHostEntry[] {
  const out: KnownHostEntry[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const fields = line.split(/\s+/);
    let marker: KnownHostEntry['marker'];
    if (fields[0] === '@revoked' || fields[0] === '@cert-authority') marker = fields.shift() as KnownHostEntry['marker'];
    if (fields.length < 3) return;
    out.push({ marker, patterns: fields[0], keyType: fields[1], keyBase64: fields[2], line: i + 1 });
  });
  return out;
}

/** The name OpenSSH looks up: "host" on port 22, "[host]:port" otherwise. */
export function hostLookupName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'i');
  return re.test(name);
}

function hashedMatch(pattern: string, name: string): boolean {
  const parts = pattern.split('|'); // ['', '1', salt, hash]
  if (parts.length !== 4 || parts[1] !== '1') return false;
  const salt = Buffer.from(parts[2], 'base64');
  const digest = createHmac('sha1', salt).update(name).digest('base64');
  return digest === parts[3];
}

/** Does a comma-separated pattern list match? A matching negated pattern wins. */
export function patternsMatch(patterns: string, name: string): boolean {
  if (patterns.startsWith('|')) return hashedMatch(patterns, name);
  let matched = false;
  for (const p of patterns.split(',')) {
    if (p.startsWith('!')) {
      if (globMatch(p.slice(1), name)) return false;
    } else if (globMatch(p, name)) {
      matched = true;
    }
  }
  return matched;
}

export function entriesForHost(entries: KnownHostEntry[], host: string, port: number): KnownHostEntry[] {
  const name = hostLookupName(host, port);
  return entries.filter((e) => patternsMatch(e.patterns, name));
}

/** Compares the key blob the server presented with the entries for that host. */
export function verifyHostKey(entries: KnownHostEntry[], host: string, port: number, presentedKey: Buffer): HostKeyVerdict {
  const presented = presentedKey.toString('base64');
  const mine = entriesForHost(entries, host, port);
  const revoked = entries.find((e) => e.marker === '@revoked' && e.keyBase64 === presented);
  if (revoked) return { verdict: 'revoked', line: revoked.line };
  const plain = mine.filter((e) => e.marker === undefined);
  const hit = plain.find((e) => e.keyBase64 === presented);
  if (hit) return { verdict: 'ok', line: hit.line };
  if (plain.length) return { verdict: 'mismatch', knownTypes: [...new Set(plain.map((e) => e.keyType))], lines: plain.map((e) => e.line) };
  return { verdict: 'unknown' };
}

/**
 * Host key algorithms to offer for a host: only the types known_hosts has for it, so a
 * server with several host keys presents the one we can check (as OpenSSH does).
 */
/** Host key types the SSH client (ssh2) can verify; other known_hosts lines cannot be used. */
export const SUPPORTED_HOST_KEY_TYPES: ReadonlySet<string> = new Set(['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'ssh-rsa']);

export function hostKeyAlgorithms(keyTypes: string[]): string[] {
  const out: string[] = [];
  for (const t of keyTypes.filter((k) => SUPPORTED_HOST_KEY_TYPES.has(k))) {
    if (t === 'ssh-rsa') out.push('rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa');
    else out.push(t);
  }
  return [...new Set(out)];
}
