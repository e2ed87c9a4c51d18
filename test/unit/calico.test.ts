import { execFileSync } from 'node:child_process';
import { calicoVethName } from '../../lib/calico';

test.each([
  ['kube-system', 'coredns-78fcd69978-775zr'],
  ['XXXXX-system', 'XXXXX-0'],
  ['default', 'my-nginx-1948696469-7p4nn'],
])('%s/%s matches sha1sum, 15 characters', (ns, pod) => {
  const oracle = execFileSync('sh', ['-c', 'printf %s "$1" | sha1sum', 'sh', `${ns}.${pod}`], { encoding: 'utf8' }).slice(0, 11);
  const name = calicoVethName(ns, pod);
  expect(name).toBe(`cali${oracle}`);
  expect(name).toHaveLength(15);
});

test('namespace and pod are not interchangeable', () => {
  expect(calicoVethName('a', 'b.c')).toBe(calicoVethName('a.b', 'c')); // sha1 input is the same string
  expect(calicoVethName('a', 'b')).not.toBe(calicoVethName('b', 'a'));
});
