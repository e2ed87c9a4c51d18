import { execFileSync } from 'node:child_process';
import { commandLine, quote } from '../../lib/shell';

// Each value must reach the program as exactly one argument, byte for byte, however hostile.
const NASTY = [
  'n1; rm -rf /',
  '$(reboot)',
  '`reboot`',
  "it's",
  "'; reboot; '",
  'a b\tc\nd',
  '',
  '*',
  '~root',
  '--',
  '-rf',
  '\\',
  '"$HOME"',
  '!!',
  'x>y<z|w&v',
  'ünïcødé',
  "'''",
];

describe('quote', () => {
  test.each(NASTY)('round-trips %j through a real POSIX shell', (value) => {
    const out = execFileSync('/bin/sh', ['-c', `printf '%s' ${quote(value)}`], { encoding: 'utf8' });
    expect(out).toBe(value);
  });

  test('leaves plain words readable', () => {
    expect(quote('/etc/machine-id')).toBe('/etc/machine-id');
    expect(quote('10.0.2.15/24')).toBe('10.0.2.15/24');
    expect(quote('enp0s3')).toBe('enp0s3');
  });

  test('refuses NUL, which no shell argument can carry', () => {
    expect(() => quote('a\0b')).toThrow(/NUL/);
  });
});

describe('commandLine', () => {
  test('keeps argv boundaries', () => {
    const argv = ['printf', '%s|', 'a b', "c'd", '$(id)'];
    const out = execFileSync('/bin/sh', ['-c', commandLine(argv)], { encoding: 'utf8' });
    expect(out).toBe("a b|c'd|$(id)|");
  });

  test('refuses an empty command', () => {
    expect(() => commandLine([])).toThrow(/empty/);
  });
});
