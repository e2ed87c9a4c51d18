/** Locations inside a kubemend checkout, valid from sources (ts) and from dist/ alike. */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

function findRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'kubemend') return dir;
    if (dirname(dir) === dir) throw new Error(`not inside a kubemend checkout: ${from}`);
  }
}

export const REPO_ROOT = findRoot(__dirname);
/** Binaries built by scripts/build-tools.sh. */
export const TOOLS_BIN = join(REPO_ROOT, '.tools', 'bin');
