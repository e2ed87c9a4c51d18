/**
 * ipam-gc's activities (seed 003): list a node's host-local files and sandboxes once, move
 * the leaked files of one network into the run's quarantine under host-local's own lock, and
 * put a run's quarantined files back. The scripts and their parsers are in
 * lib/ipam-gc-scripts.ts, the decisions in lib/ipam-gc.ts and lib/ipam-gc-plan.ts.
 *
 * Each is safe to retry: the listing is read-only; the release moves a file only if it is
 * still the same leaked file, and says `already` for what an earlier attempt of the run moved;
 * the restore says `missing` for what is back already. Each change writes one audit record.
 */
import { randomBytes } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import { AuditReason } from '../lib/audit-reasons';
import type { NodeTarget } from '../lib/config';
import { Failure } from '../lib/failures';
import { CONTAINER_ID, isAddressName, NETWORK_NAME, type NodeIpamListing, QUARANTINE_DIR, type ReleaseCandidate, RUN_TAG } from '../lib/ipam-gc';
import type { NetworkRelease, QuarantinePurge } from '../lib/ipam-gc-plan';
import {
  IpamScriptExit,
  listingArgv,
  LOCK_WAIT_S,
  parseListing,
  parsePurge,
  parseQuarantineList,
  parseRelease,
  purgeArgv,
  parseRestore,
  quarantineListArgv,
  RELEASE_BATCH,
  releaseArgv,
  restoreArgv,
  RUNTIME_WAIT_S,
} from '../lib/ipam-gc-scripts';
import type { AuditContext } from '../lib/remediation-input';
import type { Recorder } from './audit';
import { whileHeartbeating } from './heartbeat';
import type { CommandResult, SshPort } from './ssh';

const fail = (type: string, message: string) => ApplicationFailure.create({ type, message, nonRetryable: true });

interface Deps {
  ssh: SshPort;
  target(cluster: string, node: string): NodeTarget;
  record: Recorder;
}

/** A script that waits for the lock, then asks crictl twice: its exec may take this long. */
const SCRIPT_TIMEOUT_MS = (LOCK_WAIT_S + 2 * RUNTIME_WAIT_S + 60) * 1000;

/** A failed exec of the release or restore, as a typed failure. */
function scriptFailure(node: string, what: string, r: CommandResult): ApplicationFailure {
  const err = r.stderr.trim().slice(0, 400);
  switch (r.exitCode) {
    case IpamScriptExit.RuntimeUnavailable:
      return fail(Failure.NodeStateUnexpected, `${node}: ${what}: ${err || 'the container runtime could not be asked'} (inside host-local's lock; nothing was released there)`);
    case IpamScriptExit.LockBusy:
      return ApplicationFailure.create({ type: Failure.HostLocalLockBusy, message: `${node}: ${what}: ${err}` });
    case IpamScriptExit.NotHostLocal:
      return fail(Failure.NodeStateUnexpected, `${node}: ${what}: ${err}`);
    case IpamScriptExit.BadInput:
      return fail(Failure.BadInput, `${node}: ${what}: ${err}`);
    default:
      return fail(Failure.CommandFailed, `${node}: ${what} failed (exit ${r.exitCode ?? r.signal}): ${err}`);
  }
}

function checkNames(network: string, runTag: string): void {
  if (!NETWORK_NAME.test(network)) throw fail(Failure.BadInput, `not a CNI network name: ${JSON.stringify(network)}`);
  if (!RUN_TAG.test(runTag)) throw fail(Failure.BadInput, `not a run tag: ${JSON.stringify(runTag)}`);
}

export function createIpamGcActivities(d: Deps) {
  return {
    /**
     * One node's host-local files, sandboxes and ranges, in one exec (read-only). Returns what
     * the parser keeps: per file its name, container id, ifname and mtime, never more.
     */
    async listHostLocal(input: { cluster: string; node: string }): Promise<NodeIpamListing> {
      const marker = randomBytes(16).toString('hex');
      const r = await whileHeartbeating((signal) => d.ssh.withSession(d.target(input.cluster, input.node), (s) => s.run(listingArgv(marker), { check: false }), signal));
      const listing = parseListing(r.stdout, marker);
      if ('error' in listing) throw fail(Failure.ProbeNoOutput, `${input.node}: ${listing.error}${r.stderr.trim() ? `; stderr: ${r.stderr.trim().slice(0, 200)}` : ''}`);
      return listing;
    },

    /**
     * Moves one network's candidates into the run's quarantine, RELEASE_BATCH per exec, each
     * exec under host-local's lock with the sandboxes listed again inside it. One audit record
     * for the network: every address moved, with its container id and its age at the listing.
     * The runtime not answering inside the lock is NodeStateUnexpected (nothing released by
     * that exec); a busy lock is retried.
     */
    async releaseLeakedIps(input: { cluster: string; node: string; network: string; runTag: string; now: number; candidates: ReleaseCandidate[]; audit: AuditContext }): Promise<NetworkRelease> {
      checkNames(input.network, input.runTag);
      for (const c of input.candidates) {
        if (!isAddressName(c.ip) || !CONTAINER_ID.test(c.containerId) || !Number.isSafeInteger(c.mtime)) throw fail(Failure.BadInput, `not a release candidate: ${JSON.stringify(c)}`);
      }
      const age = new Map(input.candidates.map((c) => [c.ip, input.now - c.mtime]));
      const out: NetworkRelease = { network: input.network, released: [], already: [], kept: [], gone: [] };
      const step = `${input.node}/release/${input.network}`;
      const quarantine = `${QUARANTINE_DIR}/${input.runTag}/${input.network}`;
      const record = (outcome: 'applied' | 'already-done' | 'failed', error?: string) =>
        d.record(input.audit, {
          cluster: input.cluster,
          node: input.node,
          step,
          action: `move leaked host-local files of ${input.network} into ${quarantine} under host-local's lock`,
          before: { candidates: input.candidates.length, listedAt: input.now },
          after: { releasedCount: out.released.length + out.already.length, released: [...out.released, ...out.already], kept: out.kept, gone: out.gone },
          outcome,
          ...(error ? { error } : {}),
          ...(outcome === 'applied' ? { event: { reason: AuditReason.LeakedIPsReleased, message: `${out.released.length + out.already.length} leaked address(es) of ${input.network} released into ${quarantine}` } } : {}),
        });
      await whileHeartbeating((signal) =>
        d.ssh.withSession(
          d.target(input.cluster, input.node),
          async (s) => {
            for (let i = 0; i < input.candidates.length; i += RELEASE_BATCH) {
              const batch = input.candidates.slice(i, i + RELEASE_BATCH);
              const r = await s.run(releaseArgv({ network: input.network, runTag: input.runTag, candidates: batch }), { check: false, timeoutMs: SCRIPT_TIMEOUT_MS });
              if (r.exitCode !== 0) {
                const f = scriptFailure(input.node, `releasing ${input.network}`, r);
                // A retry records it; anything else ends here, with what the earlier batches moved.
                if (f.nonRetryable) await record('failed', `${f.type}: ${f.message}`);
                throw f;
              }
              const report = parseRelease(r.stdout, input.network, batch);
              for (const o of report.outcomes) {
                if (o.result === 'released') out.released.push({ ip: o.ip, containerId: o.containerId, ageS: age.get(o.ip)! });
                else if (o.result === 'already') out.already.push({ ip: o.ip, containerId: o.containerId, ageS: age.get(o.ip)! });
                else if (o.result === 'kept') out.kept.push({ ip: o.ip, containerId: o.containerId, reason: o.reason });
                else if (o.result === 'gone') out.gone.push(o.ip);
              }
              const failed = report.outcomes.filter((o) => o.result === 'failed');
              if (failed.length || !report.complete) {
                const why = failed.length ? `${failed.length} file(s) could not be moved (e.g. ${failed[0].ip}): ${r.stderr.trim().slice(0, 300)}` : report.problems.join('; ');
                await record('failed', why);
                throw fail(Failure.CommandFailed, `${input.node}: releasing ${input.network}: ${why}`);
              }
            }
          },
          signal,
        ),
      );
      await record(out.released.length === 0 && out.already.length > 0 ? 'already-done' : 'applied');
      return out;
    },

    /**
     * Deletes earlier runs' quarantines past the retention, each only if unchanged since the
     * listing and still old enough on the node's clock. One audit record for the node, naming
     * every run's directory and its file count. No undo: the files were leaked reservations,
     * kept this long so an operator could put them back.
     */
    async purgeQuarantine(input: { cluster: string; node: string; retentionS: number; runs: Array<{ runTag: string; mtime: number; files: number }>; audit: AuditContext }): Promise<QuarantinePurge> {
      let argv: string[];
      try {
        argv = purgeArgv(input.retentionS, input.runs);
      } catch (err) {
        throw fail(Failure.BadInput, (err as Error).message);
      }
      const r = await whileHeartbeating((signal) => d.ssh.withSession(d.target(input.cluster, input.node), (s) => s.run(argv, { check: false }), signal));
      const report = r.exitCode === 0 ? parsePurge(r.stdout, input.runs) : null;
      const out: QuarantinePurge = { purged: [], gone: [], kept: [] };
      for (const o of report?.outcomes ?? []) {
        if (o.result === 'purged') out.purged.push({ runTag: o.runTag, files: o.files });
        else if (o.result === 'gone') out.gone.push(o.runTag);
        else if (o.result === 'kept') out.kept.push({ runTag: o.runTag, reason: o.reason });
      }
      const failed = report?.outcomes.filter((o) => o.result === 'failed') ?? [];
      const problem = !report ? `exit ${r.exitCode ?? r.signal}: ${r.stderr.trim().slice(0, 300)}` : failed.length ? `${failed.map((f) => f.runTag).join(', ')} could not be deleted: ${r.stderr.trim().slice(0, 300)}` : report.complete ? null : report.problems.join('; ');
      await d.record(input.audit, {
        cluster: input.cluster,
        node: input.node,
        step: `${input.node}/purge-quarantine`,
        action: `delete quarantines kept past the retention (${input.retentionS} s), each only if unchanged: ${input.runs.map((q) => `${QUARANTINE_DIR}/${q.runTag}`).join(', ')}`,
        before: { runs: input.runs },
        after: out,
        outcome: problem ? 'failed' : out.purged.length ? 'applied' : 'already-done',
        ...(problem ? { error: problem } : {}),
      });
      if (problem) throw fail(r.exitCode === IpamScriptExit.BadInput ? Failure.BadInput : Failure.CommandFailed, `${input.node}: purging the quarantine: ${problem}`);
      return out;
    },

    /** The networks a run quarantined files of on a node, and how many are still there (read-only). */
    async listQuarantine(input: { cluster: string; node: string; runTag: string }): Promise<Array<{ network: string; files: number }>> {
      if (!RUN_TAG.test(input.runTag)) throw fail(Failure.BadInput, `not a run tag: ${JSON.stringify(input.runTag)}`);
      const r = await whileHeartbeating((signal) => d.ssh.withSession(d.target(input.cluster, input.node), (s) => s.run(quarantineListArgv(input.runTag), { check: false }), signal));
      if (r.exitCode !== 0) throw fail(Failure.CommandFailed, `${input.node}: listing ${QUARANTINE_DIR}/${input.runTag} failed (exit ${r.exitCode}): ${r.stderr.trim().slice(0, 300)}`);
      const parsed = parseQuarantineList(r.stdout);
      if ('error' in parsed) throw fail(Failure.CommandFailed, `${input.node}: ${parsed.error}`);
      return parsed.networks;
    },

    /**
     * Puts a run's quarantined files of one network back, under host-local's lock, refusing an
     * address that has a file again (given to a pod since). One audit record for the network.
     */
    async restoreQuarantine(input: { cluster: string; node: string; network: string; runTag: string; audit: AuditContext }): Promise<{ network: string; restored: Array<{ ip: string; containerId: string }>; refused: Array<{ ip: string; containerId: string; holder: string }>; missing: number }> {
      checkNames(input.network, input.runTag);
      const r = await whileHeartbeating((signal) => d.ssh.withSession(d.target(input.cluster, input.node), (s) => s.run(restoreArgv({ network: input.network, runTag: input.runTag }), { check: false, timeoutMs: SCRIPT_TIMEOUT_MS }), signal));
      if (r.exitCode !== 0) throw scriptFailure(input.node, `restoring ${input.network}`, r);
      const report = parseRestore(r.stdout, input.network);
      const restored = report.outcomes.flatMap((o) => (o.result === 'restored' ? [{ ip: o.ip, containerId: o.containerId }] : []));
      const refused = report.outcomes.flatMap((o) => (o.result === 'refused' ? [{ ip: o.ip, containerId: o.containerId, holder: o.holder }] : []));
      const missing = report.outcomes.filter((o) => o.result === 'missing').length;
      const failed = report.outcomes.filter((o) => o.result === 'failed');
      const problem = failed.length ? `${failed.length} file(s) could not be moved back (e.g. ${failed[0].ip}): ${r.stderr.trim().slice(0, 300)}` : report.complete ? null : report.problems.join('; ');
      await d.record(input.audit, {
        cluster: input.cluster,
        node: input.node,
        step: `${input.node}/restore/${input.network}`,
        action: `move ${QUARANTINE_DIR}/${input.runTag}/${input.network}/* back into /var/lib/cni/networks/${input.network} under host-local's lock`,
        after: { restoredCount: restored.length, restored, refused },
        outcome: problem ? 'failed' : restored.length ? 'applied' : 'already-done',
        ...(problem ? { error: problem } : {}),
      });
      if (problem) throw fail(Failure.CommandFailed, `${input.node}: restoring ${input.network}: ${problem}`);
      return { network: input.network, restored, refused, missing };
    },
  };
}
