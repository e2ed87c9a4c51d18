/**
 * docker-compose.yml cannot be started here (no Docker engine), so it is checked offline:
 * Debian's docker-compose parses and validates it, and its pins and wiring are compared
 * with what the tests run against.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { loadConfigFile } from '../../worker/config-file';
import { REPO } from '../helpers/harness';

const compose = (args: string[], env: NodeJS.ProcessEnv = { POSTGRES_PASSWORD: 'example-only' }) =>
  execFileSync('docker-compose', ['-f', join(REPO, 'docker-compose.yml'), ...args], { encoding: 'utf8', env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });

test('docker-compose validates the file', () => {
  expect(() => compose(['config', '-q'])).not.toThrow();
});

test('the database password must come from the environment, never the file', () => {
  expect(() => compose(['config', '-q'], { POSTGRES_PASSWORD: '' })).toThrow(/set POSTGRES_PASSWORD/);
});

test('services: Temporal on PostgreSQL at the version the tests build, its UI, and the worker', () => {
  const cfg = parse(compose(['config']));
  expect(Object.keys(cfg.services).sort()).toEqual(['kubemend-worker', 'postgresql', 'temporal', 'temporal-namespace', 'temporal-schema', 'temporal-ui']);
  const pinned = /TEMPORAL_SERVER_VERSION=v(\S+)/.exec(readFileSync(join(REPO, 'scripts', 'build-tools.sh'), 'utf8'))![1];
  expect(cfg.services.temporal.image).toBe(`temporalio/server:${pinned}`);
  expect(cfg.services.temporal.environment.DB).toBe('postgres12');
  expect(cfg.services['temporal-ui'].environment.TEMPORAL_ADDRESS).toBe('temporal:7233');
  const worker = cfg.services['kubemend-worker'];
  expect(existsSync(join(worker.build.context, 'Dockerfile'))).toBe(true);
  expect(worker.environment.KUBEMEND_CONFIG).toBe('/etc/kubemend/kubemend.yaml');
  expect(worker.environment.PGPASSWORD).toBe('example-only'); // the audit store's password, from the environment
  expect(cfg.services['temporal-schema'].command.join(' ')).toMatch(/--db kubemend_audit create-database/);
  expect(worker.volumes.every((v: { read_only?: boolean } | string) => (typeof v === 'string' ? v.endsWith(':ro') : v.read_only))).toBe(true);
});

test('the worker config shipped for compose is valid kubemend config pointing at the compose Temporal', () => {
  const cfg = loadConfigFile(join(REPO, 'deploy', 'kubemend.yaml'));
  expect(cfg.temporal.address).toBe('temporal:7233');
  expect(cfg.audit).toEqual({ store: 'postgres', url: 'postgres://temporal@postgresql:5432/kubemend_audit' }); // no password in the file
  expect(cfg.clusters[0].ssh?.knownHostsPath).toBe(join(REPO, 'deploy', 'secrets', 'known_hosts'));
});

test('the Dockerfile builds what the worker needs and runs as a non-root user', () => {
  const df = readFileSync(join(REPO, 'Dockerfile'), 'utf8');
  for (const dir of ['lib', 'workflows', 'activities', 'worker', 'cli']) expect(df).toContain(`COPY ${dir} ${dir}`);
  expect(df).toMatch(/^USER node$/m);
  expect(df).toMatch(/ENTRYPOINT \["node", "bin\/kubemend"\]/);
});
