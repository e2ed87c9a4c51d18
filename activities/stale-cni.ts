/**
 * stale-cni's own activity (seed 003, light level): the verify-then-act delete of the node's
 * stale CNI devices. Restarting flannel, waiting for it and the probe sandbox are
 * default-route's activities (restartCniPods, waitForCniPods, probePodNetwork), reused.
 * The script and its parser are in lib/stale-cni-scripts.ts, the decisions in lib/stale-cni.ts.
 */
import { ApplicationFailure } from '@temporalio/common';
import { AuditReason } from '../lib/audit-reasons';
import type { NodeTarget } from '../lib/config';
import { Failure } from '../lib/failures';
import type { AuditContext } from '../lib/remediation-input';
import { commandLine } from '../lib/shell';
import { deleteOutcome, type DeviceDelete, isIpv4Cidr } from '../lib/stale-cni';
import { nodeObjectFacts } from '../lib/node-object';
import { BACKUP_FAILED, backupArgv, DELETE_FAILED, deleteStaleDeviceArgv, isStaleDevice, moveLeftoversArgv, parseBackupOutput, parseDeleteOutput, parseMoveOutput, parseResetOutput, RESET_FAILED, RESET_NO_BACKUP, RESET_NO_KUBEADM, resetArgv } from '../lib/stale-cni-scripts';
import type { Recorder } from './audit';
import { whileHeartbeating } from './heartbeat';
import { type KubeCluster, kubeFailure } from './kube';
import { pollUntil, type Poll } from './poll';
import type { SshPort } from './ssh';

const fail = (type: string, message: string) => ApplicationFailure.create({ type, message, nonRetryable: true });

interface Deps {
  ssh: SshPort;
  target(cluster: string, node: string): NodeTarget;
  kube(cluster: string): KubeCluster;
  record: Recorder;
}

/** The last lines of a command's output, for an audit record or an error. */
const tail = (lines: string[], n = 30) => lines.slice(-n);

export function createStaleCniActivities(d: Deps) {
  const runOnNode = (cluster: string, node: string, argv: string[]) => whileHeartbeating((signal) => d.ssh.withSession(d.target(cluster, node), (s) => s.run(argv, { check: false, timeoutMs: 600_000 }), signal));
  const argvOr = (make: () => string[]) => {
    try {
      return make();
    } catch (err) {
      throw fail(Failure.BadInput, (err as Error).message);
    }
  };
  return {
    /**
     * The full level's first step: a copy of what kubeadm reset deletes (/etc/kubernetes, the
     * kubelet's flags, config and pki), of /etc/cni/net.d, and of the node's addresses and
     * routes, into /var/lib/kubemend/backup/<run>/stale-cni on the node, once. Changes nothing
     * else, so it needs no undo; the copy is kept (the way back by hand after a reset).
     */
    async backupBeforeReset(input: { cluster: string; node: string; runTag: string; audit: AuditContext }): Promise<{ outcome: 'made' | 'already'; dir: string }> {
      const argv = argvOr(() => backupArgv(input.runTag));
      const dir = argv[argv.length - 1];
      const base = { cluster: input.cluster, node: input.node, step: `${input.node}/backup`, action: `copy /etc/kubernetes, /var/lib/kubelet's kubeadm-flags.env, config.yaml, instance-config.yaml and pki, /etc/cni/net.d, ip addr and ip route into ${dir}` };
      const r = await runOnNode(input.cluster, input.node, argv);
      const parsed = r.exitCode === 0 ? parseBackupOutput(r.stdout) : null;
      if (!parsed || 'problem' in parsed) {
        const why = `backup into ${dir}: exit ${r.exitCode}${r.stderr.trim() ? `: ${r.stderr.trim().slice(0, 300)}` : ''}${parsed ? `; ${parsed.problem}` : ''}`;
        await d.record(input.audit, { ...base, outcome: 'failed', error: why });
        throw fail(r.exitCode === BACKUP_FAILED ? Failure.CommandFailed : Failure.NodeStateUnexpected, `${input.node}: ${why}; nothing was reset`);
      }
      await d.record(input.audit, { ...base, after: { dir, kubeadmFlags: parsed.kubeadmFlags.trim() || null }, outcome: parsed.state === 'made' ? 'applied' : 'already-done' });
      return { outcome: parsed.state, dir };
    },

    /**
     * `kubeadm reset -f` on the node, once per run, only after the backup (the script checks
     * it). Its output goes into the audit record. No undo: reset deleted the node's
     * credentials and kubelet configuration (the backup keeps them for a way back by hand).
     * Returns when reset finished on the node's clock (seconds since the epoch).
     */
    async kubeadmReset(input: { cluster: string; node: string; runTag: string; audit: AuditContext }): Promise<{ outcome: 'reset' | 'already'; at: number; output: string[] }> {
      const argv = argvOr(() => resetArgv(input.runTag));
      const base = { cluster: input.cluster, node: input.node, step: `${input.node}/kubeadm-reset`, action: 'kubeadm reset -f' };
      const r = await runOnNode(input.cluster, input.node, argv);
      const parsed = r.exitCode === 0 ? parseResetOutput(r.stdout) : null;
      if (!parsed || 'problem' in parsed) {
        const output = tail(r.stdout.split('\n').map((l) => l.trimEnd()).filter(Boolean));
        const why =
          r.exitCode === RESET_NO_BACKUP || r.exitCode === RESET_NO_KUBEADM
            ? `kubeadm reset not run: ${r.stderr.trim().slice(0, 300)}`
            : r.exitCode === RESET_FAILED
              ? `kubeadm reset -f failed (${output[0] ?? ''}): ${output.slice(1).slice(-3).join(' | ').slice(0, 600)}`
              : `kubeadm reset -f: exit ${r.exitCode}${r.stderr.trim() ? `: ${r.stderr.trim().slice(0, 300)}` : ''}${parsed ? `; ${parsed.problem}` : ''}`;
        await d.record(input.audit, { ...base, after: { output }, outcome: 'failed', error: why });
        throw fail(r.exitCode === RESET_NO_BACKUP ? Failure.NodeStateUnexpected : Failure.CommandFailed, `${input.node}: ${why}`);
      }
      await d.record(input.audit, {
        ...base,
        after: { output: tail(parsed.output, 60), finishedAt: new Date(parsed.at * 1000).toISOString() },
        outcome: parsed.state === 'reset' ? 'applied' : 'already-done',
        ...(parsed.state === 'reset' ? { event: { reason: AuditReason.NodeReset, message: `kubemend ran kubeadm reset -f on ${input.node} (stale CNI state the light level could not fix, or --full); the node's old configuration is in /var/lib/kubemend/backup on the node` } } : {}),
      });
      return { outcome: parsed.state, at: parsed.at, output: tail(parsed.output, 60) };
    },

    /**
     * Moves CNI leftovers (config files that are not the installed CNI's, host-local
     * directories of networks no remaining config names) into the run's backup: moved, not
     * deleted, so the way back is a `mv`. Gone already counts as done.
     */
    async moveCniLeftovers(input: { cluster: string; node: string; runTag: string; configs: string[]; networks: string[]; audit: AuditContext }): Promise<{ moved: string[]; gone: string[] }> {
      const argv = argvOr(() => moveLeftoversArgv(input.runTag, input.configs, input.networks));
      const items = input.configs.length + input.networks.length;
      const base = { cluster: input.cluster, node: input.node, step: `${input.node}/move-cni-leftovers`, action: `move ${[...input.configs, ...input.networks.map((n) => `/var/lib/cni/networks/${n}`)].join(', ')} into the run's backup`, before: { configs: input.configs, networks: input.networks } };
      const r = await runOnNode(input.cluster, input.node, argv);
      const parsed = r.exitCode === 0 ? parseMoveOutput(r.stdout, items) : null;
      if (!parsed || 'problem' in parsed) {
        const why = `moving CNI leftovers: exit ${r.exitCode}${r.stderr.trim() ? `: ${r.stderr.trim().slice(0, 300)}` : ''}${parsed ? `; ${parsed.problem}` : ''}`;
        await d.record(input.audit, { ...base, outcome: 'failed', error: why });
        throw fail(Failure.CommandFailed, `${input.node}: ${why}`);
      }
      await d.record(input.audit, {
        ...base,
        after: parsed,
        outcome: parsed.moved.length ? 'applied' : 'already-done',
        ...(parsed.moved.length ? { event: { reason: AuditReason.CniLeftoversMoved, message: `moved ${parsed.moved.join(', ')} into /var/lib/kubemend/backup on ${input.node}` } } : {}),
      });
      return parsed;
    },

    /**
     * Waits until the Node is no longer Ready after `kubeadm reset` stopped its kubelet: the
     * node lifecycle controller marks it so after its grace period (40 to 50 s by default).
     * `kubeadm join` refuses a name whose Node is Ready ("a Node with name ... and status
     * "Ready" already exists in the cluster"); kubemend keeps the Node object (its podCIDR,
     * labels and taints) rather than deleting it, so it waits. A Node that is gone counts too.
     */
    async waitForNodeNotReady(input: { cluster: string; node: string; timeoutMs: number }): Promise<{ ready: string | null }> {
      return pollUntil(input.timeoutMs, (seen) => `${input.node}: its Node still Ready ${Math.round(input.timeoutMs / 1000)} s after kubeadm reset stopped the kubelet (last seen: ${seen}); kubeadm join refuses a Ready Node's name`, async (): Promise<Poll<{ ready: string | null }>> => {
        let node;
        try {
          node = await d.kube(input.cluster).core.readNode({ name: input.node });
        } catch (err) {
          if ((err as { code?: number }).code === 404) return { ok: { ready: null } };
          return { seen: kubeFailure(err, `reading Node ${input.node}`).message };
        }
        const n = nodeObjectFacts(node);
        if (n.ready !== 'True') return { ok: { ready: n.ready } };
        return { seen: 'Ready True' };
      });
    },

    /**
     * Waits for a re-joined node: its Node Ready, with a heartbeat after `since` (the reset's
     * end on the node's own clock, the clock its kubelet stamps heartbeats with), so an old
     * Ready from before the reset does not count.
     */
    async waitForRejoinedNode(input: { cluster: string; node: string; since: number; timeoutMs: number }): Promise<{ heartbeat: string }> {
      return pollUntil(input.timeoutMs, (seen) => `${input.node}: not Ready with a kubelet heartbeat after the re-join within ${Math.round(input.timeoutMs / 1000)} s (last seen: ${seen})`, async (): Promise<Poll<{ heartbeat: string }>> => {
        let node;
        try {
          node = await d.kube(input.cluster).core.readNode({ name: input.node });
        } catch (err) {
          const f = kubeFailure(err, `reading Node ${input.node}`);
          return { seen: f.message };
        }
        const n = nodeObjectFacts(node);
        const ready = node.status?.conditions?.find((c) => c.type === 'Ready');
        const beat = ready?.lastHeartbeatTime ? new Date(ready.lastHeartbeatTime as unknown as string).getTime() : NaN;
        if (n.ready === 'True' && beat >= input.since * 1000) return { ok: { heartbeat: new Date(beat).toISOString() } };
        return { seen: `Ready ${n.ready ?? 'unknown'}${n.readyReason ? ` (${n.readyReason})` : ''}, last heartbeat ${Number.isNaN(beat) ? 'none' : new Date(beat).toISOString()}` };
      });
    },

    /**
     * Deletes each device in order (cni0, then flannel.1), each only if it still carries
     * exactly the stale addresses the plan named: the script re-reads them in the same
     * command. Gone, or carrying only the right address (the CNI made it again), counts as
     * done; anything else stops here with nothing more changed (NodeStateUnexpected). One
     * audit record per device. No undo: the CNI makes the device again with the podCIDR's
     * address; putting the old address back would be the fault.
     */
    async deleteStaleDevices(input: { cluster: string; node: string; devices: DeviceDelete[]; audit: AuditContext }): Promise<{ deleted: string[]; already: string[] }> {
      for (const dev of input.devices) {
        if (!isStaleDevice(dev.dev) || !isIpv4Cidr(dev.expected) || dev.stale.length === 0 || !dev.stale.every(isIpv4Cidr)) throw fail(Failure.BadInput, `not a stale device to delete: ${JSON.stringify(dev).slice(0, 300)}`);
      }
      const deleted: string[] = [];
      const already: string[] = [];
      await whileHeartbeating((signal) =>
        d.ssh.withSession(
          d.target(input.cluster, input.node),
          async (s) => {
            for (const dev of input.devices) {
              const argv = deleteStaleDeviceArgv(dev.dev, dev.stale);
              const action = `ip link delete ${dev.dev} if it carries exactly ${dev.stale.join(' ')}`;
              const step = `${input.node}/delete-${dev.dev}`;
              const base = { cluster: input.cluster, node: input.node, step, action, before: { dev: dev.dev, stale: dev.stale, expected: dev.expected } };
              const r = await s.run(argv, { check: false });
              const parsed = r.exitCode === 0 ? parseDeleteOutput(r.stdout) : null;
              if (!parsed || 'problem' in parsed) {
                const why = `${commandLine(['ip', 'link', 'delete', dev.dev])}: exit ${r.exitCode}${r.stderr.trim() ? `: ${r.stderr.trim().slice(0, 300)}` : ''}${parsed ? `; ${parsed.problem}` : ''}`;
                await d.record(input.audit, { ...base, outcome: 'failed', error: why });
                throw fail(r.exitCode === DELETE_FAILED ? Failure.CommandFailed : Failure.NodeStateUnexpected, `${input.node}: ${why}`);
              }
              const verdict = deleteOutcome(dev, parsed);
              if ('refusal' in verdict) {
                await d.record(input.audit, { ...base, after: { found: parsed }, outcome: 'refused', error: `${Failure.NodeStateUnexpected}: ${verdict.refusal}` });
                throw fail(Failure.NodeStateUnexpected, `${input.node}: ${verdict.refusal}`);
              }
              if (verdict.outcome === 'already-done') {
                already.push(dev.dev);
                await d.record(input.audit, { ...base, after: { found: parsed }, outcome: 'already-done' });
                continue;
              }
              deleted.push(dev.dev);
              await d.record(input.audit, {
                ...base,
                after: { deleted: true, carried: parsed.state === 'deleted' ? parsed.addresses : [] },
                outcome: 'applied',
                event: { reason: AuditReason.InterfaceDeleted, message: `deleted ${dev.dev} (it carried ${dev.stale.join(' ')}, a lease from before kubeadm reset; the CNI makes it again with ${dev.expected})` },
              });
            }
          },
          signal,
        ),
      );
      return { deleted, already };
    },
  };
}
