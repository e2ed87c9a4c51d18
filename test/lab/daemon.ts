/**
 * The lab daemon (one per lab, argv[0] "kmlab-daemon <dir>"): carries out what nodes ask
 * for through their control directory: reboots, the kubelet starting or stopping
 * (kubeadm join/init/reset) when the lab has a control plane, and crictl's pod sandbox
 * commands (cri.ts). It is the only writer of state.json
 * after `up`. Stopped by `down` like every other lab process.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { kubeletStarted, setKubelet } from './control-plane';
import { runCalicoKubelets } from './calico-kubelet';
import { serveCriRequests } from './cri';
import { runFlannelKubelets } from './flannel-kubelet';
import { readState, rebootNode } from './lab';

async function main(dir: string): Promise<void> {
  const busy = new Set<string>();
  // With --real-flannel, the nodes' kubelets run kube-flannel's pods as the real flanneld, beside the requests below.
  if (readState(dir)?.realFlannel) void runFlannelKubelets(dir).catch((err) => console.error(`lab daemon: flannel kubelets stopped: ${(err as Error).stack}`));
  // With orphan-calico and the control plane, the nodes' kubelets run seed 004's pods (Calico-style sandboxes).
  const st = readState(dir);
  if (st?.controlPlane && st.scenarios.includes('orphan-calico')) void runCalicoKubelets(dir).catch((err) => console.error(`lab daemon: calico kubelets stopped: ${(err as Error).stack}`));
  for (;;) {
    const state = readState(dir);
    if (!state) return; // the lab is gone
    for (const n of state.nodes) {
      serveCriRequests(dir, n.name); // crictl runp/inspectp/stopp/rmp, one directory per request, concurrent (cri.ts)
      const request = join(dir, 'nodes', n.name, 'control', 'request');
      if (busy.has(n.name) || !existsSync(request)) continue;
      const what = readFileSync(request, 'utf8').trim();
      rmSync(request, { force: true });
      let work: Promise<unknown>;
      if (what === 'reboot') work = rebootNode(dir, n.name); // reboots of different nodes may overlap; state writes are whole-file renames
      else if (what === 'kubelet-start' && state.controlPlane) work = kubeletStarted(state, n.name);
      else if (what === 'kubelet-stop' && state.controlPlane) work = setKubelet(dir, n.name, false);
      else continue;
      busy.add(n.name);
      work
        .catch((err) => console.error(`lab daemon: ${what} on ${n.name} failed: ${(err as Error).message}`))
        .finally(() => busy.delete(n.name));
    }
    await sleep(100);
  }
}

main(process.argv[2]).catch((err) => {
  console.error(err);
  process.exit(1);
});
