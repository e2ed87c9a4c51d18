/**
 * A production-shaped Temporal: the real temporal-server (v1.29.1, built from Go modules)
 * persisting to the PostgreSQL server on this machine, schema installed by the server's
 * own temporal-sql-tool from the versioned schema in the server module.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { REPO_ROOT } from '../../worker/paths';
import { stringify } from 'yaml';
import { freeLowPort } from '../lab/sshd';
import { toolPath, waitForFrontend } from './temporal-dev';

export const PG = { host: process.env.KUBEMEND_TEST_PGHOST ?? '127.0.0.1', port: Number(process.env.KUBEMEND_TEST_PGPORT ?? 5432), user: process.env.KUBEMEND_TEST_PGUSER ?? 'postgres' };
const SCHEMA = join(REPO_ROOT, '.tools', 'schema', 'postgresql');

export function psql(db: string, sql: string): string {
  return execFileSync('psql', ['-h', PG.host, '-p', String(PG.port), '-U', PG.user, '-d', db, '-v', 'ON_ERROR_STOP=1', '-tAc', sql], { encoding: 'utf8' }).trim();
}

function sqlTool(db: string, ...args: string[]): void {
  execFileSync(toolPath('temporal-sql-tool'), ['--plugin', 'postgres12', '--ep', PG.host, '-p', String(PG.port), '-u', PG.user, '--db', db, ...args], { stdio: 'pipe' });
}

export interface PostgresTemporal {
  address: string;
  db: string;
  visibilityDb: string;
  process: ChildProcess;
  log(): string;
  /** Stops the server and drops both databases. */
  destroy(): Promise<void>;
}

export async function startPostgresTemporal(dir: string): Promise<PostgresTemporal> {
  const db = `kubemend_test_${randomBytes(4).toString('hex')}`;
  const visibilityDb = `${db}_visibility`;
  for (const [name, schema] of [[db, 'temporal'], [visibilityDb, 'visibility']] as const) {
    sqlTool(name, 'create-database');
    sqlTool(name, 'setup-schema', '-v', '0.0');
    sqlTool(name, 'update-schema', '-d', join(SCHEMA, schema, 'versioned'));
  }

  const ports: number[] = [];
  while (ports.length < 10) {
    const p = await freeLowPort();
    if (!ports.includes(p)) ports.push(p);
  }
  const [fe, feMember, feHttp, hist, histMember, match, matchMember, wk, wkMember, metrics] = ports;
  const sqlStore = (name: string) => ({
    sql: { pluginName: 'postgres12', databaseName: name, connectAddr: `${PG.host}:${PG.port}`, connectProtocol: 'tcp', user: PG.user, password: '', maxConns: 10, maxIdleConns: 10, maxConnLifetime: '1h' },
  });
  const svc = (grpcPort: number, membershipPort: number, extra: object = {}) => ({ rpc: { grpcPort, membershipPort, bindOnLocalHost: true, ...extra } });
  mkdirSync(join(dir, 'config', 'dynamicconfig'), { recursive: true });
  // Search attributes added at run time are usable at once, as tests need.
  writeFileSync(join(dir, 'config', 'dynamicconfig', 'test.yaml'), stringify({ 'system.forceSearchAttributesCacheRefreshOnRead': [{ value: true, constraints: {} }] }));
  writeFileSync(
    join(dir, 'config', 'development.yaml'),
    stringify({
      log: { stdout: true, level: 'warn' },
      persistence: { defaultStore: 'pg', visibilityStore: 'pgvis', numHistoryShards: 4, datastores: { pg: sqlStore(db), pgvis: sqlStore(visibilityDb) } },
      global: { membership: { maxJoinDuration: '30s', broadcastAddress: '127.0.0.1' }, metrics: { prometheus: { framework: 'tally', timerType: 'histogram', listenAddress: `127.0.0.1:${metrics}` } } },
      services: {
        frontend: svc(fe, feMember, { httpPort: feHttp }),
        history: svc(hist, histMember),
        matching: svc(match, matchMember),
        worker: svc(wk, wkMember),
      },
      clusterMetadata: {
        enableGlobalNamespace: false,
        failoverVersionIncrement: 10,
        masterClusterName: 'active',
        currentClusterName: 'active',
        clusterInformation: { active: { enabled: true, initialFailoverVersion: 1, rpcName: 'frontend', rpcAddress: `127.0.0.1:${fe}` } },
      },
      dcRedirectionPolicy: { policy: 'noop' },
      dynamicConfigClient: { filepath: join(dir, 'config', 'dynamicconfig', 'test.yaml'), pollInterval: '10s' },
    }),
  );

  let log = '';
  const proc = spawn(toolPath('temporal-server'), ['--root', dir, '--config', 'config', '--env', 'development', '--allow-no-auth', 'start'], { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout!.on('data', (d) => (log = (log + d).slice(-8000)));
  proc.stderr!.on('data', (d) => (log = (log + d).slice(-8000)));
  const address = `127.0.0.1:${fe}`;
  const destroy = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await Promise.race([exited, sleep(15_000, undefined, { ref: false })]);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    }
    for (const name of [db, visibilityDb]) psql('postgres', `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  };
  try {
    await waitForFrontend(address, proc, 120_000, () => log);
    // The frontend answers before the system namespace's workers settle; a namespace is what we need.
    execFileSync(toolPath('temporal'), ['operator', 'namespace', 'create', '--address', address, '--namespace', 'default', '--retention', '24h'], { stdio: 'pipe' });
  } catch (err) {
    await destroy();
    throw err;
  }
  return { address, db, visibilityDb, process: proc, log: () => log, destroy };
}
