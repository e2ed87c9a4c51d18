/**
 * machine-id's own activities (seed 000): read the nodes' identities, and regenerate one
 * node's machine-id once per run. The scripts are constants in lib/node-scripts.ts.
 */
import { randomBytes } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import { AuditReason } from '../lib/audit';
import type { NodeTarget } from '../lib/config';
import { Failure } from '../lib/failures';
import { identityArgv, type NodeIdentityReading, parseIdentity, parseRegenerate, regenerateArgv, UNEXPECTED_STATE_EXIT } from '../lib/node-scripts';
import type { AuditContext } from '../lib/remediation-input';
import type { Recorder } from './audit';
import { whileHeartbeating } from './heartbeat';
import type { SshPort } from './ssh';

const fail = (type: string, message: string) => ApplicationFailure.create({ type, message, nonRetryable: true });

/** How many nodes readIdentities reads at once. */
const READ_CONCURRENCY = 16;

export function createMachineIdActivities(rc: { ssh: SshPort; target(cluster: string, node: string): NodeTarget; record: Recorder }) {
  async function identity(cluster: string, node: string, signal?: AbortSignal): Promise<NodeIdentityReading> {
    const marker = randomBytes(16).toString('hex');
    const r = await rc.ssh.withSession(rc.target(cluster, node), (s) => s.run(identityArgv(marker)), signal);
    const parsed = parseIdentity(r.stdout, marker);
    if ('error' in parsed) throw fail(Failure.ProbeNoOutput, `${node}: ${parsed.error}`);
    return parsed;
  }

  return {
    /** Ids, boot id, weave MAC and weave's collision count of one node (read-only; the frozen v1 workflow's read). */
    async readIdentity(input: { cluster: string; node: string }): Promise<NodeIdentityReading> {
      return whileHeartbeating((signal) => identity(input.cluster, input.node, signal));
    },

    /**
     * The same for many nodes in one activity, in input order (read-only). Any node that
     * cannot be read fails the whole read: a plan or a verification must see every node.
     */
    async readIdentities(input: { cluster: string; nodes: string[] }): Promise<NodeIdentityReading[]> {
      return whileHeartbeating(async (signal) => {
        const out = new Array<NodeIdentityReading>(input.nodes.length);
        let next = 0;
        const lane = async () => {
          while (next < input.nodes.length) {
            const i = next++;
            out[i] = await identity(input.cluster, input.nodes[i], signal);
          }
        };
        await Promise.all(Array.from({ length: Math.min(READ_CONCURRENCY, input.nodes.length) }, lane));
        return out;
      });
    },

    /**
     * Regenerates the node's machine-id once per run (see REGENERATE_SCRIPT): old id backed
     * up, both files removed, systemd-machine-id-setup, dbus copy made to agree.
     */
    async regenerateMachineId(input: { cluster: string; node: string; runTag: string; oldId: string; audit: AuditContext }): Promise<{ newId: string; already: boolean }> {
      return whileHeartbeating(async (signal) => {
        const r = await rc.ssh.withSession(rc.target(input.cluster, input.node), (s) => s.run(regenerateArgv(input.runTag, input.oldId), { check: false }), signal);
        if (r.exitCode === UNEXPECTED_STATE_EXIT) throw fail(Failure.NodeStateUnexpected, `${input.node}: ${r.stderr.trim()}`);
        const parsed = r.exitCode === 0 ? parseRegenerate(r.stdout) : undefined;
        if (!parsed) throw fail(Failure.CommandFailed, `regenerating the machine-id on ${input.node} failed (exit ${r.exitCode}): ${r.stderr.trim().slice(0, 500)}`);
        await rc.record(input.audit, {
          cluster: input.cluster,
          node: input.node,
          step: `${input.node}/machine-id`,
          action: r.command,
          before: { machineId: input.oldId, backup: `/var/lib/kubemend/machine-id/etc-machine-id.${input.runTag}` },
          after: { machineId: parsed.newId },
          outcome: parsed.already ? 'already-done' : 'applied',
          event: { reason: AuditReason.MachineIdRegenerated, message: `machine-id regenerated: ${input.oldId} -> ${parsed.newId}` },
        });
        return parsed;
      });
    },
  };
}
