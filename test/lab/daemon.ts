/**
 * The lab daemon (one per lab, argv[0] "kmlab-daemon <dir>"): carries out what nodes ask
 * for through their control directory: reboots, the kubelet starting, restarting or
 * stopping (kubeadm join/init/reset, systemctl start|restart|stop kubelet: kubelet.ts), and crictl's pod sandbox
 * commands (cri.ts). It is the only writer of state.json
 * after `up`. Stopped by `down` like every other lab process.
 */
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runPodKubelets } from './pod-kubelet';
import { runCalicoNodes } from './calico-node';
import { kubeletRequest } from './kubelet';
import { labRunsCalicoNode } from './manifests';
import { serveCriRequests } from './cri';
import { runFlannelKubelets } from './flannel-kubelet';
import { readState, rebootNode } from './lab';

async function main(dir: string): Promise<void> {
  const busy = new Set<string>();
  // With --real-flannel, the nodes' kubelets run kube-flannel's pods as the real flanneld, beside the requests below.
  if (readState(dir)?.realFlannel) void runFlannelKubelets(dir).catch((err) => console.error(`lab daemon: flannel kubelets stopped: ${(err as Error).stack}`));
  // The nodes' kubelets for the labelled pods: with orphan-calico, seed 004's pods (Calico-style sandboxes);
  // with --real-flannel, every pod the lab's Deployments place (sandboxes by the real CNI plugins).
  const st = readState(dir);
  if (st?.controlPlane && (st.scenarios.includes('orphan-calico') || st.realFlannel)) void runPodKubelets(dir).catch((err) => console.error(`lab daemon: pod kubelets stopped: ${(err as Error).stack}`));
  // With seed 001's scenarios and the control plane, the nodes' kubelets run calico-node's pods (its IP autodetection and BIRD's peering).
  if (st?.controlPlane && labRunsCalicoNode(st.scenarios)) void runCalicoNodes(dir).catch((err) => console.error(`lab daemon: calico-node kubelets stopped: ${(err as Error).stack}`));
  for (;;) {
    const state = readState(dir);
    if (!state) return; // the lab is gone
    for (const n of state.nodes) {
      serveCriRequests(dir, n.name); // crictl runp/inspectp/stopp/rmp, one directory per request, concurrent (cri.ts)
      const request = join(dir, 'nodes', n.name, 'control', 'request');
      if (busy.has(n.name) || !existsSync(request)) continue;
      const what = readFileSync(request, 'utf8').trim();
      rmSync(request, { force: true });
      // "<verb>[ <token>]": systemctl's requests carry a token, written back once the daemon has acted.
      const [verb, token] = what.split(/\s+/);
      let work: Promise<unknown>;
      if (verb === 'reboot') work = rebootNode(dir, n.name); // reboots of different nodes may overlap; state writes are whole-file renames
      else if (verb === 'kubelet-start' || verb === 'kubelet-restart' || verb === 'kubelet-stop') work = kubeletRequest(dir, n.name, verb.slice('kubelet-'.length) as 'start' | 'restart' | 'stop');
      else continue;
      busy.add(n.name);
      const control = join(dir, 'nodes', n.name, 'control');
      work
        .catch((err) => console.error(`lab daemon: ${what} on ${n.name} failed: ${(err as Error).message}`))
        .finally(() => {
          busy.delete(n.name);
          if (token && /^[0-9a-f]{1,64}$/.test(token)) {
            writeFileSync(join(control, 'kubelet-done.tmp'), `${token}\n`);
            renameSync(join(control, 'kubelet-done.tmp'), join(control, 'kubelet-done'));
          }
        });
    }
    await sleep(100);
  }
}

main(process.argv[2]).catch((err) => {
  console.error(err);
  process.exit(1);
});
