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
import { DELETE_FAILED, deleteStaleDeviceArgv, isStaleDevice, parseDeleteOutput } from '../lib/stale-cni-scripts';
import type { Recorder } from './audit';
import { whileHeartbeating } from './heartbeat';
import type { SshPort } from './ssh';

const fail = (type: string, message: string) => ApplicationFailure.create({ type, message, nonRetryable: true });

interface Deps {
  ssh: SshPort;
  target(cluster: string, node: string): NodeTarget;
  record: Recorder;
}

export function createStaleCniActivities(d: Deps) {
  return {
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
