/**
 * Prints figures, asserts nothing: time and memory to bring N lab nodes up (default 50)
 * and down. Needs root. Run: npm run bench:lab -- [nodes] [scenario,...|all] [--real-flannel]
 * With --real-flannel the lab has its control plane, the real flanneld runs as every node's
 * kube-flannel pod, and every Deployment pod gets a real sandbox: up returns once each
 * flannel pod is Ready (or crash-looping) and each Deployment pod has run or failed in one.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { down, labProcesses, parseScenarios, SCENARIOS, up } from '../test/lab/lab';
import { REPO_ROOT } from '../worker/paths';

const memAvailableMiB = () => Number(/MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))![1]) / 1024;

const netns = (pid: number | string) => {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
};

/**
 * What the lab's processes cost: the marked ones (holders, hub, forwarders) and everything
 * in the nodes' network namespaces (sshd). PSS, so pages the processes share (the same
 * sshd and socat binaries 50 times over) are counted once, not 50 times as RSS would.
 */
function labMemory(dir: string): { processes: number; pssMiB: number; rssMiB: number } {
  const marked = labProcesses(dir).map((p) => p.pid);
  const nets = new Set(marked.map(netns).filter((n) => n && n !== netns(process.pid)));
  const pids = new Set(marked);
  for (const e of readdirSync('/proc')) if (/^\d+$/.test(e) && nets.has(netns(e))) pids.add(Number(e));
  let pss = 0;
  let rss = 0;
  for (const pid of pids) {
    try {
      const roll = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
      pss += Number(/^Pss:\s+(\d+)/m.exec(roll)?.[1] ?? 0);
      rss += Number(/^Rss:\s+(\d+)/m.exec(roll)?.[1] ?? 0);
    } catch {
      // exited, or a kernel thread
    }
  }
  return { processes: pids.size, pssMiB: pss / 1024, rssMiB: rss / 1024 };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const realFlannel = args.includes('--real-flannel');
  const [nodesArg, scenariosArg] = args.filter((a) => a !== '--real-flannel');
  const nodes = Number(nodesArg ?? 50);
  if (!Number.isInteger(nodes) || nodes < 1) throw new Error(`nodes: a positive whole number, got ${JSON.stringify(nodesArg)}`);
  const scenarios = parseScenarios(scenariosArg === 'all' ? Object.keys(SCENARIOS).join(',') : scenariosArg);
  const dir = join(REPO_ROOT, '.lab-bench');
  const memBefore = memAvailableMiB();
  let t = Date.now();
  await up({ dir, nodes, scenarios, ...(realFlannel ? { controlPlane: true, realFlannel: true } : {}) });
  const upMs = Date.now() - t;
  const memUp = memAvailableMiB();
  const what = realFlannel ? 'every sshd answering, the control plane up, every kube-flannel pod Ready or crash-looping, every Deployment pod run or failed in a real sandbox' : 'every sshd answering through its forwarder';
  console.log(`lab up, ${nodes} nodes${scenarios.length ? ` with ${scenarios.join(', ')}` : ''}${realFlannel ? ', --real-flannel' : ''}: ${(upMs / 1000).toFixed(1)} s (${what})`);
  if (realFlannel) {
    const { flannelPods } = await import('../test/lab/flannel-kubelet');
    const { labKubeletPods, isRunning } = await import('../test/lab/pod-kubelet');
    const fp = await flannelPods(dir);
    const pods = await labKubeletPods(dir);
    console.log(`kube-flannel pods Ready: ${fp.filter((p) => p.ready).length} of ${fp.length}; Deployment pods Running in a real sandbox: ${pods.filter(isRunning).length} of ${pods.length}`);
  }
  const m = labMemory(dir);
  console.log(`memory: ${m.processes} lab processes (holders, hub, forwarders, sshd${realFlannel ? ', flanneld, the control plane, the lab daemon' : ''}), PSS ${m.pssMiB.toFixed(0)} MiB (RSS summed ${m.rssMiB.toFixed(0)} MiB); MemAvailable fell by ${(memBefore - memUp).toFixed(0)} MiB (page cache and kernel objects too: noisy)`);
  t = Date.now();
  const { killed } = await down(dir);
  const delta = memAvailableMiB() - memBefore;
  console.log(`lab down: ${((Date.now() - t) / 1000).toFixed(1)} s, ${killed} processes stopped; MemAvailable vs. before up: ${delta >= 0 ? '+' : ''}${delta.toFixed(0)} MiB (page cache makes this noisy)`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
