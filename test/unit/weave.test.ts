import { execFileSync } from 'node:child_process';
import { weavePeerMac } from '../../lib/weave';

/** The same derivation by coreutils, as an independent oracle. */
function oracle(input: string): string {
  const hex = execFileSync('sh', ['-c', 'printf %s "$1" | sha256sum', 'sh', `9oBJ0Jmip-${input}`], { encoding: 'utf8' }).slice(0, 12);
  const b0 = (parseInt(hex.slice(0, 2), 16) & 0xfe) | 0x02;
  return [b0.toString(16).padStart(2, '0'), ...hex.slice(2).match(/../g)!].join(':');
}

test.each([
  ['3d1219c7c4c5404aaa1f6d2a48adfda4\n', ''],
  ['3d1219c7c4c5404aaa1f6d2a48adfda4\n', '4C4C4544-0042-3010-8057-B3C04F4E4B32\n'],
  ['0123456789abcdef0123456789abcdef\n', ''],
])('matches sha256sum for machine-id %j + product_uuid %j', (mid, uuid) => {
  expect(weavePeerMac(mid, uuid)).toBe(oracle(mid + uuid));
});

test('unicast and locally administered, like every weave MAC', () => {
  for (let i = 0; i < 50; i++) {
    const b0 = parseInt(weavePeerMac(`${i.toString(16).padStart(32, '0')}\n`).slice(0, 2), 16);
    expect(b0 & 0x01).toBe(0);
    expect(b0 & 0x02).toBe(2);
  }
});

test('the newline is part of the input (weave reads the file raw)', () => {
  expect(weavePeerMac('3d1219c7c4c5404aaa1f6d2a48adfda4\n')).not.toBe(weavePeerMac('3d1219c7c4c5404aaa1f6d2a48adfda4'));
});

test('cloned machine-ids give the same MAC; a new machine-id gives another', () => {
  const clone = '3d1219c7c4c5404aaa1f6d2a48adfda4\n';
  expect(weavePeerMac(clone)).toBe(weavePeerMac(clone));
  expect(weavePeerMac(clone)).not.toBe(weavePeerMac('9f0e6f1d8a1b4c2d9e3f4a5b6c7d8e9f\n'));
});
