/**
 * `kubemend server` with no config file starts the embedded dev server on the defaults, as
 * `temporal server start-dev` does: 127.0.0.1:7233, its database in ./.kubemend/.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { waitForFrontend } from '../../worker/temporal-setup';
import { CLI, tempDir } from '../helpers/harness';

test('with no config file it starts on 127.0.0.1:7233 with its database under ./.kubemend, registers the search attributes, and stops cleanly on SIGTERM', async () => {
  const cwd = tempDir('server-defaults');
  const env = { ...process.env };
  delete env.KUBEMEND_CONFIG;
  const child = spawn(process.execPath, [CLI, 'server'], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    await waitForFrontend('127.0.0.1:7233', child, 90_000, () => log);
    expect(log).toContain('kubemend server: no config file (--config or $KUBEMEND_CONFIG): using the defaults');
    expect(log).toContain(`data in ${join(cwd, '.kubemend', 'temporal.db')}`);
    expect(existsSync(join(cwd, '.kubemend', 'temporal.db'))).toBe(true);
    const connection = await Connection.connect({ address: '127.0.0.1:7233' });
    try {
      const client = new Client({ connection, namespace: 'default' });
      const attrs = await client.connection.operatorService.listSearchAttributes({ namespace: 'default' });
      expect(Object.keys(attrs.customAttributes ?? {})).toEqual(expect.arrayContaining(['KubemendCluster', 'KubemendNode', 'KubemendRemediation']));
    } finally {
      await connection.close();
    }
  } finally {
    child.kill('SIGTERM');
  }
  expect(await exited).toBe(0);
}, 150_000);
