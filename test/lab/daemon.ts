/**
 * The lab daemon (one per lab, argv[0] "kmlab-daemon <dir>"): carries out what nodes ask
 * for through their control directory, today reboots. It is the only writer of state.json
 * after `up`. Stopped by `down` like every other lab process.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { readState, rebootNode } from './lab';

async function main(dir: string): Promise<void> {
  const busy = new Set<string>();
  for (;;) {
    const state = readState(dir);
    if (!state) return; // the lab is gone
    for (const n of state.nodes) {
      const request = join(dir, 'nodes', n.name, 'control', 'request');
      if (busy.has(n.name) || !existsSync(request)) continue;
      const what = readFileSync(request, 'utf8').trim();
      rmSync(request, { force: true });
      if (what !== 'reboot') continue;
      busy.add(n.name);
      // Reboots of different nodes may overlap; state writes are whole-file renames.
      rebootNode(dir, n.name)
        .catch((err) => console.error(`lab daemon: reboot of ${n.name} failed: ${(err as Error).message}`))
        .finally(() => busy.delete(n.name));
    }
    await sleep(100);
  }
}

main(process.argv[2]).catch((err) => {
  console.error(err);
  process.exit(1);
});
