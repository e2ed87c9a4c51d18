/**
 * node-address's own activities (seed 001): the kubelet's --node-ip in the node's own file
 * (verify-then-act, with a copy first), the kubelet restart and the wait for the Node's new
 * InternalIP, their undo; calico-node's IP_AUTODETECTION_METHOD on its DaemonSet, the wait for
 * its rollout, and the undo that puts the template back exactly as it was. The scripts and
 * parsers are in lib/node-address-scripts.ts, the decisions in lib/node-address.ts.
 */
import { createHash } from 'node:crypto';
import { AppsV1Api, type V1DaemonSet, type V1Pod } from '@kubernetes/client-node';
import { ApplicationFailure } from '@temporalio/common';
import { AuditReason } from '../lib/audit-reasons';
import type { NodeTarget } from '../lib/config';
import { Failure } from '../lib/failures';
import { isCalicoMethod, isIpv4, JOIN_TOKEN_TTL } from '../lib/node-address';
import { nodeObjectFacts } from '../lib/node-object';
import { JOIN_ARGV, JOINED_ARGV, joinConfiguration, parseArgsLineOutput, parseJoinCommand, redactToken, restoreArgsLineArgv, SCRIPT_NO_COPY, setArgsLineArgv, tokenCreateArgv, tokenDeleteArgv } from '../lib/node-address-scripts';
import type { AuditContext } from '../lib/remediation-input';
import { commandLine } from '../lib/shell';
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

export const AUTODETECT_ENV = 'IP_AUTODETECTION_METHOD';
/** The annotation calico-node writes with the address it detected. */
export const CALICO_ADDRESS_ANNOTATION = 'projectcalico.org/IPv4Address';
const RESTART_KUBELET = ['systemctl', 'restart', 'kubelet'];

/** A digest of a DaemonSet's pod template as the API returns it: the undo proves it put back the same bytes. */
export const templateDigest = (ds: V1DaemonSet) => createHash('sha256').update(JSON.stringify(ds.spec?.template ?? null)).digest('hex');

/** The container that carries the autodetection setting: the one with the env entry, else the one named calico-node. */
function autodetectContainer(ds: V1DaemonSet) {
  const cs = ds.spec?.template?.spec?.containers ?? [];
  return cs.find((c) => (c.env ?? []).some((e) => e.name === AUTODETECT_ENV)) ?? cs.find((c) => c.name === 'calico-node') ?? null;
}
const methodOf = (ds: V1DaemonSet): string | null => autodetectContainer(ds)?.env?.find((e) => e.name === AUTODETECT_ENV)?.value ?? null;

/** Sets (or with null removes) the env entry in place: a new entry goes last, an existing one keeps its place. */
function setMethod(ds: V1DaemonSet, method: string | null): void {
  const container = autodetectContainer(ds);
  if (!container) throw fail(Failure.NodeStateUnexpected, `${ds.metadata?.namespace}/${ds.metadata?.name} has no calico-node container`);
  const env = container.env ?? [];
  const entry = env.find((e) => e.name === AUTODETECT_ENV);
  if (method === null) container.env = env.filter((e) => e.name !== AUTODETECT_ENV);
  else if (entry) entry.value = method;
  else container.env = [...env, { name: AUTODETECT_ENV, value: method }];
}

const isReady = (p: V1Pod) => (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');

/** Why a calico-node pod is not Ready, as the kubelet reported it. */
function podTrouble(p: V1Pod): string {
  const cs = p.status?.containerStatuses?.[0];
  const waiting = cs?.state?.waiting;
  const last = cs?.lastState?.terminated?.message?.trim().split('\n').pop();
  const cond = (p.status?.conditions ?? []).find((c) => c.type === 'Ready');
  return [`${p.metadata?.name} on ${p.spec?.nodeName ?? '?'} not Ready`, waiting?.reason, waiting?.message, last, cond?.message].filter(Boolean).join(': ');
}

export function createNodeAddressActivities(d: Deps) {
  const apps = (cluster: string) => d.kube(cluster).kubeConfig.makeApiClient(AppsV1Api);
  const readDs = async (cluster: string, namespace: string, name: string) => {
    try {
      return await apps(cluster).readNamespacedDaemonSet({ namespace, name });
    } catch (err) {
      throw kubeFailure(err, `reading DaemonSet ${namespace}/${name}`);
    }
  };
  const replaceDs = async (cluster: string, ds: V1DaemonSet) => {
    try {
      return await apps(cluster).replaceNamespacedDaemonSet({ namespace: ds.metadata!.namespace!, name: ds.metadata!.name!, body: ds });
    } catch (err) {
      throw kubeFailure(err, `updating DaemonSet ${ds.metadata?.namespace}/${ds.metadata?.name}`);
    }
  };
  const runOnNode = (cluster: string, node: string, argv: string[]) => whileHeartbeating((signal) => d.ssh.withSession(d.target(cluster, node), (s) => s.run(argv, { check: false }), signal));

  /** The Node's readiness and InternalIPs, as the rest of kubemend reads them (lib/node-object.ts). */
  const nodeFacts = async (cluster: string, node: string) => {
    try {
      return nodeObjectFacts(await d.kube(cluster).core.readNode({ name: node }));
    } catch (err) {
      throw kubeFailure(err, `reading Node ${node}`);
    }
  };
  const hasExactly = (ips: string[], want: string[]) => ips.length === want.length && ips.every((ip, i) => ip === want[i]);

  /** Polls the Node until it is Ready and reports exactly `want` as its InternalIPs. */
  const waitForNode = (cluster: string, node: string, want: string[], timeoutMs: number, what: string) =>
    pollUntil(timeoutMs, (seen) => `${node}: ${what} within ${Math.round(timeoutMs / 1000)} s (last seen: ${seen})`, async (): Promise<Poll<{ internalIPs: string[] }>> => {
      const n = await nodeFacts(cluster, node);
      if (n.ready === 'True' && hasExactly(n.internalIPs, want)) return { ok: { internalIPs: n.internalIPs } };
      return { seen: `Ready ${n.ready ?? 'unknown'}${n.readyReason ? ` (${n.readyReason})` : ''}, InternalIP ${n.internalIPs.join(', ') || 'none'}` };
    });

  return {
    /**
     * Writes the kubelet's new argument line, only if the line is still the one the plan read
     * (or already the new one: done before). The file is copied first, once. The undo is
     * restoreKubeletNodeIp.
     */
    async writeKubeletNodeIp(input: { cluster: string; node: string; file: string; lineBefore: string | null; lineAfter: string; runTag: string; audit: AuditContext }): Promise<{ outcome: 'written' | 'already' }> {
      let argv: string[];
      try {
        argv = setArgsLineArgv(input.file, input.lineBefore, input.lineAfter, input.runTag);
      } catch (err) {
        throw fail(Failure.BadInput, (err as Error).message);
      }
      const step = `${input.node}/kubelet-node-ip`;
      const action = `${input.file}: ${input.lineBefore ?? '(no line)'} -> ${input.lineAfter}`;
      const base = { cluster: input.cluster, node: input.node, step, action, before: { file: input.file, line: input.lineBefore } };
      const r = await runOnNode(input.cluster, input.node, argv);
      const parsed = r.exitCode === 0 ? parseArgsLineOutput(r.stdout) : null;
      if (!parsed || 'problem' in parsed) {
        const why = `writing ${input.file}: exit ${r.exitCode}${r.stderr.trim() ? `: ${r.stderr.trim().slice(0, 300)}` : ''}${parsed && 'problem' in parsed ? `; ${parsed.problem}` : ''}`;
        await d.record(input.audit, { ...base, outcome: 'failed', error: why });
        throw fail(Failure.CommandFailed, `${input.node}: ${why}`);
      }
      if (parsed.state === 'differs') {
        const why = `${input.file} changed since the plan: its ${input.lineAfter.split('=')[0]} line is now ${JSON.stringify(parsed.line)}, the plan read ${JSON.stringify(input.lineBefore)}; nothing was changed`;
        await d.record(input.audit, { ...base, outcome: 'refused', error: `${Failure.NodeStateUnexpected}: ${why}` });
        throw fail(Failure.NodeStateUnexpected, `${input.node}: ${why}`);
      }
      const outcome = parsed.state === 'already' ? 'already' : 'written';
      await d.record(input.audit, { ...base, after: { line: input.lineAfter, copy: `/var/lib/kubemend/backup/${input.runTag}` }, outcome: outcome === 'already' ? 'already-done' : 'applied' });
      return { outcome };
    },

    /**
     * Joins a node that never joined: a join token made on the control plane (short-lived,
     * deleted after), checked to name the planned endpoint, handed to `kubeadm join --config` on
     * the node through stdin, with --node-ip in the JoinConfiguration so the kubelet registers
     * the right address from the start. The token never leaves this activity: not in its input
     * or result, not in an error, a log or the audit record (redacted everywhere). A node that
     * already has a kubelet.conf counts as joined (a retry after the join went through).
     * No undo (see the plan): undoing a join is `kubeadm reset -f`.
     */
    async joinNode(input: { cluster: string; node: string; controlPlane: string; endpoint?: string; nodeIp: string | null; name?: string; audit: AuditContext }): Promise<{ outcome: 'joined' | 'already'; output: string[] }> {
      if ((input.nodeIp !== null && !isIpv4(input.nodeIp)) || (input.endpoint !== undefined && !/^\d{1,3}(\.\d{1,3}){3}:\d{1,5}$/.test(input.endpoint))) throw fail(Failure.BadInput, `not a join kubemend makes: ${JSON.stringify({ endpoint: input.endpoint, nodeIp: input.nodeIp })}`);
      const step = `${input.node}/join`;
      const action = `kubeadm join ${input.endpoint ?? "<the control plane's endpoint>"} --token <redacted> (a ${JOIN_TOKEN_TTL} token made on ${input.controlPlane}, deleted after)${input.nodeIp ? ` with node-ip ${input.nodeIp}` : ''}`;
      const base = { cluster: input.cluster, node: input.node, step, action };
      if ((await runOnNode(input.cluster, input.node, JOINED_ARGV)).exitCode === 0) {
        await d.record(input.audit, { ...base, after: { found: '/etc/kubernetes/kubelet.conf' }, outcome: 'already-done' });
        return { outcome: 'already', output: [] };
      }
      const made = await runOnNode(input.cluster, input.controlPlane, tokenCreateArgv(JOIN_TOKEN_TTL));
      const join = made.exitCode === 0 ? parseJoinCommand(made.stdout) : null;
      if (!join || 'problem' in join) {
        // Nothing of stdout goes further: it may hold a token.
        const why = `kubeadm token create on ${input.controlPlane}: exit ${made.exitCode}${join && 'problem' in join ? `; its output: ${join.problem}` : made.stderr.trim() ? `: ${made.stderr.trim().slice(0, 300)}` : ''}`;
        await d.record(input.audit, { ...base, outcome: 'failed', error: why });
        throw fail(Failure.CommandFailed, `${input.node}: ${why}`);
      }
      const redact = (t: string) => redactToken(t, join.token);
      let deleted = 'not attempted';
      try {
        if (input.endpoint !== undefined && join.endpoint !== input.endpoint) {
          const why = `the control plane's join command names ${join.endpoint}, not ${input.endpoint}: its advertise address changed since the plan; nothing was joined`;
          await d.record(input.audit, { ...base, outcome: 'refused', error: `${Failure.NodeStateUnexpected}: ${why}` });
          throw fail(Failure.NodeStateUnexpected, `${input.node}: ${why}`);
        }
        const r = await whileHeartbeating((signal) => d.ssh.withSession(d.target(input.cluster, input.node), (s) => s.run(JOIN_ARGV, { check: false, stdin: joinConfiguration(join, input.nodeIp, input.name), timeoutMs: 300_000 }), signal));
        // kubeadm's preflight colours its system verification lines: the audit keeps the words.
        const output = redact(`${r.stdout}\n${r.stderr}`).replace(/\x1b\[[0-9;]*m/g, '').split('\n').map((l) => l.trimEnd()).filter(Boolean).slice(-20);
        if (r.exitCode !== 0) {
          const why = `kubeadm join on ${input.node}: exit ${r.exitCode}: ${redact(r.stderr.trim()).split('\n').filter((l) => !/^To see the stack trace/.test(l)).slice(-3).join(' ').slice(0, 600)}`;
          await d.record(input.audit, { ...base, after: { output }, outcome: 'failed', error: why });
          throw fail(Failure.CommandFailed, `${input.node}: ${why}`);
        }
        await d.record(input.audit, { ...base, after: { output, caHash: join.caHash }, outcome: 'applied', event: { reason: AuditReason.NodeJoined, message: `kubemend joined ${input.node} to ${join.endpoint}${input.nodeIp ? ` with node-ip ${input.nodeIp}` : ''}` } });
        return { outcome: 'joined', output };
      } finally {
        // The token is spent (or not needed): it goes, whatever happened.
        const del = await runOnNode(input.cluster, input.controlPlane, tokenDeleteArgv(join.tokenId)).catch((e: Error) => ({ exitCode: -1, stdout: '', stderr: e.message }));
        deleted = del.exitCode === 0 ? 'deleted' : `not deleted (exit ${del.exitCode}: ${redact(del.stderr.trim()).slice(0, 200)}); it expires within ${JOIN_TOKEN_TTL}`;
        await d.record(input.audit, { cluster: input.cluster, node: input.controlPlane, step: `${input.node}/join-token-delete`, action: `kubeadm token delete ${join.tokenId} on ${input.controlPlane}`, after: { token: deleted }, outcome: del.exitCode === 0 ? 'applied' : 'failed' });
      }
    },

    /**
     * `systemctl restart kubelet`: the kubelet re-reads its flags; running pods keep running.
     * With `unlessAddress`, a Node already Ready with exactly that InternalIP shows the restart
     * done (a retry after it went through): nothing is restarted again.
     */
    async restartKubelet(input: { cluster: string; node: string; why: string; audit: AuditContext; step: string; unlessAddress?: string }): Promise<{ outcome: 'applied' | 'already' }> {
      const base = { cluster: input.cluster, node: input.node, step: `${input.node}/${input.step}`, action: `${commandLine(RESTART_KUBELET)} (${input.why})` };
      if (input.unlessAddress !== undefined) {
        const n = await nodeFacts(input.cluster, input.node);
        if (n.ready === 'True' && hasExactly(n.internalIPs, [input.unlessAddress])) {
          await d.record(input.audit, { ...base, after: { internalIPs: n.internalIPs }, outcome: 'already-done' });
          return { outcome: 'already' };
        }
      }
      const r = await runOnNode(input.cluster, input.node, RESTART_KUBELET);
      if (r.exitCode !== 0) {
        const why = `${commandLine(RESTART_KUBELET)}: exit ${r.exitCode}: ${r.stderr.trim().slice(0, 300)}`;
        await d.record(input.audit, { ...base, outcome: 'failed', error: why });
        throw fail(Failure.CommandFailed, `${input.node}: ${why}`);
      }
      await d.record(input.audit, { ...base, outcome: 'applied', event: { reason: AuditReason.KubeletRestarted, message: `kubemend restarted the kubelet: ${input.why}` } });
      return { outcome: 'applied' };
    },

    /** Waits until the Node is Ready and reports `address` as its one InternalIP (a restarted kubelet registered it). */
    async waitForNodeAddress(input: { cluster: string; node: string; address: string; timeoutMs: number }): Promise<{ internalIPs: string[] }> {
      if (!isIpv4(input.address)) throw fail(Failure.BadInput, `not an IPv4 address: ${JSON.stringify(input.address)}`);
      return waitForNode(input.cluster, input.node, [input.address], input.timeoutMs, `the kubelet did not come back Ready with InternalIP ${input.address}`);
    },

    /**
     * The undo of writeKubeletNodeIp and its restart: puts the file back from the copy (only if
     * it still holds the line the run wrote), restarts the kubelet, and waits for the Node to
     * be Ready with its InternalIPs as before. Returns what it did, in words.
     */
    async restoreKubeletNodeIp(input: { cluster: string; node: string; file: string; lineWritten: string; runTag: string; internalIpsBefore: string[]; timeoutMs: number; audit: AuditContext }): Promise<string> {
      let argv: string[];
      try {
        argv = restoreArgsLineArgv(input.file, input.lineWritten, input.runTag);
      } catch (err) {
        throw fail(Failure.BadInput, (err as Error).message);
      }
      const step = `${input.node}/undo-kubelet-node-ip`;
      const base = { cluster: input.cluster, node: input.node, step, action: `restore ${input.file} from /var/lib/kubemend/backup/${input.runTag}, restart the kubelet` };
      const r = await runOnNode(input.cluster, input.node, argv);
      if (r.exitCode === SCRIPT_NO_COPY) return `${input.file} was never changed (no copy)`;
      const parsed = r.exitCode === 0 ? parseArgsLineOutput(r.stdout) : null;
      if (!parsed || 'problem' in parsed) {
        const why = `restoring ${input.file}: exit ${r.exitCode}: ${r.stderr.trim().slice(0, 300)}`;
        await d.record(input.audit, { ...base, outcome: 'failed', error: why });
        throw fail(Failure.CommandFailed, `${input.node}: ${why}`);
      }
      if (parsed.state === 'differs') {
        const why = `${input.file} was changed by someone else since the run wrote it (now ${JSON.stringify(parsed.line)}): left as it is`;
        await d.record(input.audit, { ...base, outcome: 'refused', error: why });
        return why;
      }
      const restart = await runOnNode(input.cluster, input.node, RESTART_KUBELET);
      if (restart.exitCode !== 0) throw fail(Failure.CommandFailed, `${input.node}: ${commandLine(RESTART_KUBELET)} after restoring ${input.file}: exit ${restart.exitCode}: ${restart.stderr.trim().slice(0, 300)}`);
      const back = await waitForNode(input.cluster, input.node, input.internalIpsBefore, input.timeoutMs, `after the undo, the kubelet did not come back Ready with InternalIP ${input.internalIpsBefore.join(', ')}`);
      await d.record(input.audit, { ...base, after: { restored: parsed.state, internalIPs: back.internalIPs }, outcome: 'applied', event: { reason: AuditReason.Compensated, message: `kubemend restored ${input.file} and restarted the kubelet`, warning: true } });
      return `${input.file} ${parsed.state === 'already' ? 'was already as before' : 'restored'}; kubelet restarted, Node Ready with InternalIP ${back.internalIPs.join(', ')}`;
    },

    /**
     * Sets calico-node's IP_AUTODETECTION_METHOD to `to`, only if it is still `from` (null: unset)
     * or already `to` (done before). An update with the resourceVersion it read, so a change made
     * in between is a conflict, not overwritten. Returns the template's digest before the change
     * (what the undo must give back).
     */
    async setCalicoAutodetection(input: { cluster: string; namespace: string; name: string; from: string | null; to: string; audit: AuditContext }): Promise<{ outcome: 'applied' | 'already'; digestBefore: string }> {
      if (!isCalicoMethod(input.to) || (input.from !== null && input.from.length > 300)) throw fail(Failure.BadInput, `not an autodetection method: ${JSON.stringify(input.to)}`);
      const ds = await readDs(input.cluster, input.namespace, input.name);
      const now = methodOf(ds);
      const step = 'calico-autodetection';
      const base = { cluster: input.cluster, node: '', step, action: `${input.namespace}/${input.name} ${AUTODETECT_ENV}: ${input.from ?? '(unset)'} -> ${input.to}` };
      if (now === input.to) {
        // Done before (a retry whose first answer was lost): the template before is this one with the entry as it was.
        const before = structuredClone(ds);
        setMethod(before, input.from);
        await d.record(input.audit, { ...base, outcome: 'already-done' });
        return { outcome: 'already', digestBefore: templateDigest(before) };
      }
      if (now !== input.from) {
        const why = `${input.namespace}/${input.name} ${AUTODETECT_ENV} is now ${now ?? '(unset)'}, the plan read ${input.from ?? '(unset)'}: nothing was changed`;
        await d.record(input.audit, { ...base, outcome: 'refused', error: `${Failure.NodeStateUnexpected}: ${why}` });
        throw fail(Failure.NodeStateUnexpected, why);
      }
      const digestBefore = templateDigest(ds);
      setMethod(ds, input.to);
      const updated = await replaceDs(input.cluster, ds);
      await d.record(input.audit, { ...base, before: { method: input.from, templateDigest: digestBefore }, after: { method: input.to, generation: updated.metadata?.generation }, outcome: 'applied' });
      return { outcome: 'applied', digestBefore };
    },

    /**
     * Waits for calico-node's rollout: the controller saw the new template, every scheduled
     * pod runs it and is Ready. Returns the address each node's calico-node detected.
     */
    async waitForCalicoRollout(input: { cluster: string; namespace: string; name: string; method: string; timeoutMs: number }): Promise<{ ready: string[]; addresses: Record<string, string> }> {
      const kube = d.kube(input.cluster);
      return pollUntil(input.timeoutMs, (seen) => `calico-node did not become Ready on every node with ${AUTODETECT_ENV}=${input.method} within ${Math.round(input.timeoutMs / 1000)} s: ${seen}`, async (): Promise<Poll<{ ready: string[]; addresses: Record<string, string> }>> => {
        const ds = await readDs(input.cluster, input.namespace, input.name);
        if (methodOf(ds) !== input.method) throw fail(Failure.NodeStateUnexpected, `${input.namespace}/${input.name} ${AUTODETECT_ENV} is now ${methodOf(ds) ?? '(unset)'}, not ${input.method}: changed by someone else during the rollout`);
        const st = ds.status;
        if ((st?.observedGeneration ?? 0) < (ds.metadata?.generation ?? 0)) return { seen: 'the DaemonSet controller has not seen the new template yet' };
        const selector = Object.entries(ds.spec?.selector?.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`).join(',');
        let pods: V1Pod[];
        try {
          pods = (await kube.core.listNamespacedPod({ namespace: input.namespace, labelSelector: selector })).items.filter((p) => !p.metadata?.deletionTimestamp);
        } catch (err) {
          throw kubeFailure(err, `listing ${input.namespace}/${input.name}'s pods`);
        }
        const stale = pods.filter((p) => (p.spec?.containers ?? []).every((c) => (c.env ?? []).find((e) => e.name === AUTODETECT_ENV)?.value !== input.method));
        const notReady = pods.filter((p) => !isReady(p));
        const desired = st?.desiredNumberScheduled ?? 0;
        if (stale.length || notReady.length || pods.length < desired || (st?.updatedNumberScheduled ?? 0) < desired) {
          return { seen: [`${st?.updatedNumberScheduled ?? 0}/${desired} updated, ${st?.numberReady ?? 0} ready`, ...stale.map((p) => `${p.metadata?.name} still has the old template`), ...notReady.filter((p) => !stale.includes(p)).map(podTrouble)].join('; ') };
        }
        const addresses: Record<string, string> = {};
        for (const p of pods) {
          const node = p.spec?.nodeName ?? '';
          try {
            const n = await kube.core.readNode({ name: node });
            addresses[node] = n.metadata?.annotations?.[CALICO_ADDRESS_ANNOTATION] ?? '';
          } catch (err) {
            throw kubeFailure(err, `reading Node ${node}`);
          }
        }
        return { ok: { ready: pods.map((p) => `${p.metadata?.name} on ${p.spec?.nodeName}`), addresses } };
      });
    },

    /**
     * The undo of setCalicoAutodetection: puts the env entry back as it was (removed if it was
     * unset), only if it still holds `to`, and checks that the template is byte for byte the one
     * before the change (its digest). The DaemonSet controller then rolls the pods back.
     */
    async restoreCalicoAutodetection(input: { cluster: string; namespace: string; name: string; from: string | null; to: string; digestBefore: string; audit: AuditContext }): Promise<string> {
      const ds = await readDs(input.cluster, input.namespace, input.name);
      const now = methodOf(ds);
      const base = { cluster: input.cluster, node: '', step: 'undo-calico-autodetection', action: `${input.namespace}/${input.name} ${AUTODETECT_ENV}: ${input.to} -> ${input.from ?? '(unset)'}` };
      if (now !== input.to && now !== input.from) {
        const why = `${AUTODETECT_ENV} is now ${now ?? '(unset)'}, set by someone else since: left as it is`;
        await d.record(input.audit, { ...base, outcome: 'refused', error: why });
        return why;
      }
      if (now === input.to) {
        setMethod(ds, input.from);
        await replaceDs(input.cluster, ds);
      }
      const after = await readDs(input.cluster, input.namespace, input.name);
      const identical = templateDigest(after) === input.digestBefore;
      await d.record(input.audit, { ...base, after: { templateDigest: templateDigest(after), identical }, outcome: identical ? 'applied' : 'failed', ...(identical ? {} : { error: 'the template differs from the one before the change' }), event: { reason: AuditReason.Compensated, message: `kubemend rolled ${input.namespace}/${input.name} back to ${AUTODETECT_ENV}=${input.from ?? '(unset)'}`, warning: true } });
      if (!identical) throw fail(Failure.VerificationFailed, `${input.namespace}/${input.name}: after the rollback its pod template is not the one before the change (digest ${templateDigest(after).slice(0, 12)}, was ${input.digestBefore.slice(0, 12)})`);
      return `${input.namespace}/${input.name} rolled back to ${AUTODETECT_ENV}=${input.from ?? '(unset)'}: pod template identical to the one before (sha256 ${input.digestBefore.slice(0, 12)})`;
    },
  };
}
