/**
 * Prints figures, asserts nothing: time and memory to bring N lab nodes up (default 50)
 * and down. Needs root. Run: npm run build && node dist/scripts/bench-lab.js [nodes]
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { down, labProcesses, up } from '../test/lab/lab';
import { REPO_ROOT } from '../worker/paths';

const memAvailableMiB = () => Number(/MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))![1]) / 1024;

function rssOfLab(dir: string): number {
  // Marked processes plus everything in the nodes' namespaces (sshd) is what the lab costs.
  let kib = 0;
  const pids = new Set(labProcesses(dir).map((p) => p.pid));
  for (const pid of pids) {
    try {
      kib += Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      // exited
    }
  }
  return kib / 1024;
}

async function main(): Promise<void> {
  const nodes = Number(process.argv[2] ?? 50);
  const dir = join(REPO_ROOT, '.lab-bench');
  const memBefore = memAvailableMiB();
  let t = Date.now();
  await up({ dir, nodes });
  const upMs = Date.now() - t;
  const memUp = memAvailableMiB();
  console.log(`lab up, ${nodes} nodes: ${(upMs / 1000).toFixed(1)} s (every sshd answering through its forwarder)`);
  console.log(`memory: MemAvailable fell by ${(memBefore - memUp).toFixed(0)} MiB; RSS of marked lab processes (holders, hub, forwarders) ${rssOfLab(dir).toFixed(0)} MiB`);
  t = Date.now();
  const { killed } = await down(dir);
  console.log(`lab down: ${((Date.now() - t) / 1000).toFixed(1)} s, ${killed} processes stopped; MemAvailable back within ${(memBefore - memAvailableMiB()).toFixed(0)} MiB of the start`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
