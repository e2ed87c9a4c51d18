/** Loading config and reaching Temporal, with the errors an operator can act on. */
import { Client, Connection } from '@temporalio/client';
import type { Config } from '../lib/config';
import { ExitCode } from '../lib/failures';
import { configPath, loadConfigFile } from '../worker/config-file';
import { CliError } from './errors';

export interface GlobalOptions {
  config?: string;
  json?: boolean;
}

export function loadConfig(opts: GlobalOptions): Config {
  return loadConfigFile(configPath(opts.config));
}

export async function connectClient(cfg: Config): Promise<{ client: Client; connection: Connection }> {
  let connection: Connection;
  try {
    connection = await Connection.connect({ address: cfg.temporal.address, connectTimeout: 5000 });
  } catch (err) {
    throw new CliError(`cannot reach Temporal at ${cfg.temporal.address}: ${(err as Error).message}. Is it running? (kubemend server)`, ExitCode.RemediationFailed);
  }
  return { client: new Client({ connection, namespace: cfg.temporal.namespace }), connection };
}
