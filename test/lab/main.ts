/**
 * npm run lab -- up --nodes N [--real-flannel] | status | reboot <node> | pod add|del <node> <ns>/<name> | flanneld start|stop <node>
 *   | fault kubelet-start <node> [--starts N] [--message M] | fault kubelet-credentials <node> | down
 * Exit codes as kubemend's: 0 ok, 1 failed, 2 bad input (including "not root").
 */
import { Command, CommanderError } from 'commander';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { REPO_ROOT } from '../../worker/paths';
import { parseDuration } from '../../lib/duration';
import { controlPlaneInfo, ControlPlaneError } from './control-plane';
import { CniInputError, parsePodRef, podAdd, podDel } from './cni';
import { FlannelInputError, flanneldCommand } from './flannel';
import { down, LabError, MAX_NODES, parseScenarios, nodeIsUp, readState, requestReboot, requireRoot, SCENARIOS, up } from './lab';

const DIR = resolve(process.env.KUBEMEND_LAB_DIR ?? join(REPO_ROOT, '.lab'));

async function main(argv: string[]): Promise<number> {
  let code = 0;
  const program = new Command('lab').description(`kubemend's proving ground: lab nodes in namespaces on this machine (state in ${DIR})`).exitOverride();
  program
    .command('up')
    .description('bring the lab up (a lab already up is taken down first)')
    .option('--nodes <n>', `number of nodes, 1-${MAX_NODES}`, '3')
    .option('--reboot-downtime <duration>', 'how long a rebooting node stays down', '1s')
    .option('--scenario <list>', `comma-separated failure states to inject: ${Object.keys(SCENARIOS).join(', ')}`)
    .option('--no-control-plane', 'nodes only: no etcd, kube-apiserver, controllers or kwok (they need scripts/build-k8s.sh)')
    .option('--real-flannel', "each node's kubelet runs its kube-flannel pod as the real flanneld and reports it in the pod's status (needs the control plane and a lab that runs flannel)")
    .addHelpText('after', `\nScenarios:\n${Object.entries(SCENARIOS).map(([k, v]) => `  ${k.padEnd(18)} ${v}`).join('\n')}`)
    .action(async (o: { nodes: string; rebootDowntime: string; scenario?: string; controlPlane: boolean; realFlannel?: boolean }) => {
      const scenarios = parseScenarios(o.scenario);
      if (!/^\d+$/.test(o.nodes)) throw new LabError(`--nodes must be an integer from 1 to ${MAX_NODES}, got ${JSON.stringify(o.nodes)}`);
      const downtime = parseDuration(o.rebootDowntime);
      if (downtime === undefined || downtime > 600_000) throw new LabError(`--reboot-downtime must be a duration up to 10m, got ${JSON.stringify(o.rebootDowntime)}`);
      const t0 = Date.now();
      const state = await up({ dir: DIR, nodes: Number(o.nodes), rebootDowntimeMs: downtime, scenarios, controlPlane: o.controlPlane, realFlannel: !!o.realFlannel });
      console.log(`lab up: ${state.nodes.length} node(s) in ${((Date.now() - t0) / 1000).toFixed(1)} s${scenarios.length ? `, scenarios: ${scenarios.join(', ')}` : ''}${state.realFlannel ? ', real flanneld in kube-flannel pods' : ''}`);
      for (const n of state.nodes) console.log(`  ${n.name.padEnd(8)} ${n.role.padEnd(14)} ${n.address.padEnd(13)} ssh via 127.0.0.1:${n.port}`);
      const cp = controlPlaneInfo(DIR);
      if (cp) console.log(`control plane: ${cp.server}\n  kubectl --kubeconfig ${cp.adminKubeconfig} get nodes   (admin)\n  worker kubeconfig ${cp.workerKubeconfig} (deploy/rbac.yaml's ClusterRole only)`);
      console.log(`kubemend config: ${join(DIR, 'kubemend.yaml')} (cluster "lab")`);
    });
  program
    .command('status')
    .description('show the nodes and whether their processes are alive')
    .action(() => {
      requireRoot();
      const state = readState(DIR);
      if (!state) {
        console.log('lab is down');
        return;
      }
      for (const n of state.nodes) {
        const up = nodeIsUp(DIR, n.name);
        if (!up) code = 1;
        console.log(`${n.name.padEnd(8)} ${up ? 'up  ' : 'DOWN'} ${n.address.padEnd(13)} 127.0.0.1:${n.port}`);
      }
    });
  program
    .command('reboot')
    .description('reboot a node as `reboot` on it would, and wait until it is back')
    .argument('<node>', 'node name')
    .action(async (name: string) => {
      requireRoot();
      const t0 = Date.now();
      const n = await requestReboot(DIR, name);
      console.log(`${name} rebooted in ${((Date.now() - t0) / 1000).toFixed(1)} s (boot ${n.boots}, boot id ${n.bootId})`);
    });
  program
    .command('pod')
    .description("a real CNI ADD or DEL of a pod sandbox on a node, as its kubelet's runtime would (prints the address or the plugin's error)")
    .argument('<action>', 'add or del')
    .argument('<node>', 'node name')
    .argument('<pod>', '<namespace>/<name>')
    .action(async (action: string, node: string, ref: string) => {
      requireRoot();
      if (action !== 'add' && action !== 'del') throw new CniInputError(`<action>: must be add or del, got ${JSON.stringify(action)}`);
      const pod = parsePodRef(ref);
      if (action === 'add') {
        const r = await podAdd(DIR, node, pod);
        console.log(`${ref} on ${node}: ${r.address}${r.gateway ? ` via ${r.gateway}` : ''} (sandbox ${r.id.slice(0, 13)}, netns ${r.netns})`);
        for (const s of r.skipped) console.log(`  skipped ${s}`);
      } else {
        const s = await podDel(DIR, node, pod);
        console.log(`${ref} on ${node}: deleted (sandbox ${s.id.slice(0, 13)})`);
      }
    });
  program
    .command('flanneld')
    .description("start the real flanneld in a node (prints its subnet, or its exit status and last log lines) or stop it")
    .argument('<action>', 'start or stop')
    .argument('<node>', 'node name')
    .option('--iface <name>', "flanneld's --iface (default: none, as kube-flannel.yml)")
    .action(async (action: string, node: string, o: { iface?: string }) => {
      requireRoot();
      code = await flanneldCommand(DIR, action, node, o.iface);
    });
  program
    .command('fault')
    .description("inject a fault: `kubelet-start <node>` makes the node's next kubelet start fail (the kubelet exits with the message; later starts work); `kubelet-credentials <node>` gives the node's kubelet a previous cluster's kubelet.conf and client certificate and restarts it (TLS to the API server fails, the Node goes NotReady; kubeadm reset -f and a join fix it)")
    .argument('<kind>', 'kubelet-start or kubelet-credentials')
    .argument('<node>', 'node name')
    .option('--message <text>', "the kubelet's error (default: containerd not answering)")
    .option('--starts <n>', 'how many starts fail, systemd\'s automatic restarts included', '1')
    .action(async (kind: string, node: string, o: { message?: string; starts: string }) => {
      requireRoot();
      if (kind === 'kubelet-credentials') {
        const { previousClusterCredentials } = await import('./kubeadm-cluster');
        await previousClusterCredentials(DIR, node);
        console.log(`${node}: its kubelet restarted with a previous cluster's credentials`);
        return;
      }
      if (kind !== 'kubelet-start') throw new LabError(`fault: <kind> must be kubelet-start or kubelet-credentials, got ${JSON.stringify(kind)}`);
      if (!/^\d+$/.test(o.starts)) throw new LabError(`fault: --starts must be a positive integer, got ${JSON.stringify(o.starts)}`);
      const { failNextKubeletStart } = await import('./kubelet');
      failNextKubeletStart(DIR, node, o.message, Number(o.starts));
      console.log(`${node}: the next ${o.starts === '1' ? 'kubelet start fails' : `${o.starts} kubelet starts fail`}`);
    });
  program
    .command('down')
    .description('stop and remove everything the lab created (safe to repeat)')
    .action(async () => {
      const t0 = Date.now();
      const had = existsSync(DIR);
      const { killed } = await down(DIR);
      console.log(had || killed ? `lab down: ${killed} process(es) stopped in ${((Date.now() - t0) / 1000).toFixed(1)} s` : 'lab was already down');
    });
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    console.error(`lab: ${(e as Error).message}`);
    if (e instanceof CniInputError || e instanceof FlannelInputError) return 2;
    return e instanceof ControlPlaneError && /^missing /.test(e.message) ? 2 : e instanceof LabError && /needs root|--nodes|--reboot-downtime|--scenario|--real-flannel|no lab node|lab directory|refusing|^fault:|starts must/.test(e.message) ? 2 : 1;
  }
  return code;
}

main(process.argv.slice(2)).then((c) => process.exit(c));
