/** Where the worker gets its workflow code: the bundle built by `npm run build`, unless it is stale. */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './paths';

export const WORKFLOWS_PATH = require.resolve('../workflows');
export const PREBUILT_BUNDLE = join(REPO_ROOT, 'dist', 'workflow-bundle.js');

function newestMtime(dirs: string[]): number {
  let newest = 0;
  for (const d of dirs) {
    if (!existsSync(d)) continue;
    for (const f of readdirSync(d)) newest = Math.max(newest, statSync(join(d, f)).mtimeMs);
  }
  return newest;
}

/**
 * The prebuilt bundle if it is newer than every file it could have been built from
 * (workflows/ and lib/, as sources and as compiled output), else undefined: the worker
 * then bundles at start. A stale bundle never runs.
 */
export function prebuiltBundle(): { codePath: string } | undefined {
  if (!existsSync(PREBUILT_BUNDLE)) return undefined;
  const dirs = ['workflows', 'lib'].flatMap((d) => [join(REPO_ROOT, d), join(REPO_ROOT, 'dist', d)]);
  const sources = newestMtime(dirs);
  return statSync(PREBUILT_BUNDLE).mtimeMs >= sources ? { codePath: PREBUILT_BUNDLE } : undefined;
}
