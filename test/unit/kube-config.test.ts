// KubeClients loads each cluster's kubeconfig once and picks its context the way kubectl
// does (--context, else current-context); a wrong file or context is a config error.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { KubeClients } from '../../activities/kube';
import { type Config, ConfigError, parseConfig } from '../../lib/config';

const dir = mkdtempSync(join(tmpdir(), 'kubemend-kc-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const kubeconfig = join(dir, 'kubeconfig');
writeFileSync(
  kubeconfig,
  stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'lab', cluster: { server: 'https://127.0.0.1:6443' } }, { name: 'prod', cluster: { server: 'https://127.0.0.2:6443' } }],
    users: [{ name: 'kubemend', user: { token: 'not-a-real-token' } }],
    contexts: [{ name: 'lab-ctx', context: { cluster: 'lab', user: 'kubemend' } }, { name: 'prod-ctx', context: { cluster: 'prod', user: 'kubemend' } }],
    'current-context': 'lab-ctx',
  }),
);

function config(cluster: Record<string, unknown>): Config {
  return parseConfig(
    { clusters: [{ name: 'c1', ssh: { privateKeyPath: '/k', knownHostsPath: '/kh' }, nodes: [{ name: 'n1', role: 'worker', host: '127.0.0.1' }], ...cluster }] },
    { resolvePath: (p) => p },
  );
}

test('uses current-context when none is given', () => {
  const k = new KubeClients(config({ kubeconfig }));
  expect(k.cluster('c1')?.context).toBe('lab-ctx');
  expect(k.cluster('c1')?.kubeConfig.getCurrentCluster()?.server).toBe('https://127.0.0.1:6443');
});

test('an explicit context wins', () => {
  const k = new KubeClients(config({ kubeconfig, context: 'prod-ctx' }));
  expect(k.cluster('c1')?.kubeConfig.getCurrentCluster()?.server).toBe('https://127.0.0.2:6443');
});

test('a cluster without kubeconfig has no API client (never a guess at ~/.kube/config)', () => {
  expect(new KubeClients(config({})).cluster('c1')).toBeUndefined();
});

test('an unknown context names the field and the contexts the file has', () => {
  expect(() => new KubeClients(config({ kubeconfig, context: 'staging' }))).toThrow(ConfigError);
  try {
    new KubeClients(config({ kubeconfig, context: 'staging' }));
  } catch (e) {
    expect((e as ConfigError).problems).toEqual([`clusters[0].context: ${kubeconfig} has no context "staging" (it has: lab-ctx, prod-ctx)`]);
  }
});

test('a missing kubeconfig file is a config error naming the field', () => {
  expect(() => new KubeClients(config({ kubeconfig: join(dir, 'nope') }))).toThrow(/clusters\[0\]\.kubeconfig: cannot load/);
});
