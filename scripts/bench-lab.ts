/**
 * Prints figures, asserts nothing: time and memory to bring N lab nodes up (default 50)
 * and down. Needs root. Run: npm run build && node dist/scripts/bench-lab.js [nodes] [scenario,...]
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { down, labProcesses, parseScenarios, up } from '../test/lab/lab';
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
  const scenarios = parseScenarios(process.argv[3]);
  const dir = join(REPO_ROOT, '.lab-bench');
  const memBefore = memAvailableMiB();
  let t = Date.now();
  await up({ dir, nodes, scenarios });
  const upMs = Date.now() - t;
  const memUp = memAvailableMiB();
  console.log(`lab up, ${nodes} nodes${scenarios.length ? ` with ${scenarios.join(', ')}` : ''}: ${(upMs / 1000).toFixed(1)} s (every sshd answering through its forwarder)`);
  console.log(`memory: MemAvailable fell by ${(memBefore - memUp).toFixed(0)} MiB; RSS of marked lab processes (holders, hub, forwarders) ${rssOfLab(dir).toFixed(0)} MiB`);
  t = Date.now();
  const { killed } = await down(dir);
  const delta = memAvailableMiB() - memBefore;
  console.log(`lab down: ${((Date.now() - t) / 1000).toFixed(1)} s, ${killed} processes stopped; MemAvailable vs. before up: ${delta >= 0 ? '+' : ''}${delta.toFixed(0)} MiB (page cache makes this noisy)`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
