/**
 * calico-orphans' activities (seed 004): read Calico's IPAM and the pods, read a node's cali
 * veths, netns and sandboxes; release a leaked handle (the IPAMBlock written with its
 * resourceVersion, then the IPAMHandle deleted with its resourceVersion); delete orphan veths;
 * evict pods that have no veth and wait for their successors. Every change is checked again
 * against a fresh read right before it, does nothing already done, and writes its audit record.
 * The decisions are lib/calico-orphans.ts's, the parsing lib/calico-orphans-read.ts's.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiException, CustomObjectsApi } from '@kubernetes/client-node';
import { ApplicationFailure } from '@temporalio/common';
import { AuditReason } from '../lib/audit-reasons';
import {
  allocationVerdict,
  type BlockSpec,
  type CalicoApiFacts,
  type HandleRelease,
  type NodeCalicoFacts,
  ordinalsOfHandle,
  type PodRestart,
  releaseFromBlock,
  type VethDelete,
  vethVerdict,
} from '../lib/calico-orphans';
import { calicoBlockOf, calicoHandleOf, calicoPodOf, parseInspectp, parseNetnsIds, parseVeths } from '../lib/calico-orphans-read';
import type { NodeTarget } from '../lib/config';
import { Failure } from '../lib/failures';
import type { AuditContext } from '../lib/remediation-input';
import type { Recorder } from './audit';
import { whileHeartbeating } from './heartbeat';
import { evictPod, type KubeCluster, kubeFailure } from './kube';
import { pollDelay } from './node-lifecycle';
import type { SshPort, SshSession } from './ssh';

const CALICO = { group: 'crd.projectcalico.org', version: 'v1' };
const fail = (type: string, message: string) => ApplicationFailure.create({ type, message, nonRetryable: true });

/** Calico's veth names: only these are ever passed to `ip link delete`. */
export const CALI_VETH = /^cali[0-9a-f]{11}$/;
/** A sandbox id as crictl prints it (`crictl pods -q`). */
const SANDBOX_ID = /^[0-9a-f]{12,64}$/;
/** Writes of one block that lose to a concurrent change are tried again this many times, each after a fresh read. */
const CAS_TRIES = 5;

interface Deps {
  ssh: SshPort;
  target(cluster: string, node: string): NodeTarget;
  kube(cluster: string): KubeCluster;
  record: Recorder;
}

/**
 * The node's cali veths, named netns and sandboxes, read in one SSH session (read-only). The
 * netns and the runtime (one `crictl inspectp` per sandbox) are read only when some cali veth
 * is not in `knownVeths` (the veths of the pods the API places on the node): a veth a pod owns
 * needs neither. `vethsOnly` reads links and routes alone (a wait for a veth, a check after).
 */
export async function readNode(s: SshSession, node: string, opts: { vethsOnly?: boolean; knownVeths?: readonly string[] } = {}): Promise<NodeCalicoFacts> {
  const links = await s.run(['ip', '-j', '-d', 'link', 'show', 'type', 'veth']);
  const routes = await s.run(['ip', '-j', 'route', 'show']);
  let veths;
  try {
    veths = parseVeths(links.stdout, routes.stdout);
  } catch (err) {
    throw fail(Failure.NodeStateUnexpected, `${node}: cannot parse ip's JSON: ${(err as Error).message}`);
  }
  const known = opts.knownVeths ? new Set(opts.knownVeths) : null;
  if (opts.vethsOnly || (known && veths.every((v) => known.has(v.name)))) return { node, veths, netns: [], sandboxes: [], runtimeRead: false };
  const netns = await s.run(['ip', '-j', 'netns', 'list-id']);
  const ids = await s.run(['crictl', 'pods', '-q']);
  const sandboxes = [];
  for (const id of ids.stdout.split('\n').map((l) => l.trim()).filter(Boolean)) {
    if (!SANDBOX_ID.test(id)) throw fail(Failure.NodeStateUnexpected, `${node}: crictl pods -q printed ${JSON.stringify(id.slice(0, 80))}, not a sandbox id`);
    const r = await s.run(['crictl', 'inspectp', '-o', 'json', id], { check: false });
    if (r.exitCode !== 0) continue; // removed between the listing and now
    try {
      sandboxes.push(parseInspectp(r.stdout));
    } catch (err) {
      throw fail(Failure.NodeStateUnexpected, `${node}: cannot parse crictl inspectp ${id}: ${(err as Error).message}`);
    }
  }
  try {
    return { node, veths, netns: parseNetnsIds(netns.stdout), sandboxes, runtimeRead: true };
  } catch (err) {
    throw fail(Failure.NodeStateUnexpected, `${node}: cannot parse ip's JSON: ${(err as Error).message}`);
  }
}

export function createCalicoOrphansActivities(d: Deps) {
  const custom = (cluster: string) => d.kube(cluster).kubeConfig.makeApiClient(CustomObjectsApi);
  const api = async <T>(what: string, call: () => Promise<T>): Promise<T> => {
    try {
      return await call();
    } catch (err) {
      throw kubeFailure(err, what);
    }
  };
  const getOr404 = async <T>(what: string, call: () => Promise<T>): Promise<T | null> => {
    try {
      return await call();
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return null;
      throw kubeFailure(err, what);
    }
  };
  const listCrd = async (cluster: string, plural: string) =>
    ((await api(`listing ${plural}.${CALICO.group}`, () => custom(cluster).listClusterCustomObject({ ...CALICO, plural }))) as { items?: unknown[] }).items ?? [];

  return {
    /** Calico's IPAM, its pools, the Nodes and the pods, in one go (read-only). */
    async readCalicoState(input: { cluster: string }): Promise<CalicoApiFacts> {
      const kube = d.kube(input.cluster);
      return whileHeartbeating(async () => {
        const [nodes, pods, pools, blocks, handles] = await Promise.all([
          api('listing the Nodes', () => kube.core.listNode({})),
          api('listing the pods', () => kube.core.listPodForAllNamespaces({})),
          listCrd(input.cluster, 'ippools'),
          listCrd(input.cluster, 'ipamblocks'),
          listCrd(input.cluster, 'ipamhandles'),
        ]);
        return {
          nodes: nodes.items.map((n) => n.metadata?.name ?? '').filter(Boolean),
          // Every pod, scheduled or not: an allocation's pod that exists but is Pending is not gone (Calico's rules).
          pods: pods.items.map(calicoPodOf),
          pools: (pools as Array<{ spec?: { cidr?: string } }>).map((p) => p.spec?.cidr ?? '').filter(Boolean),
          blocks: (blocks as Parameters<typeof calicoBlockOf>[0][]).map(calicoBlockOf),
          handles: (handles as Parameters<typeof calicoHandleOf>[0][]).map(calicoHandleOf),
        };
      });
    },

    /** One node's cali veths (with their peers' netns ids and routes), named netns and sandboxes (read-only). */
    async readCalicoNode(input: { cluster: string; node: string; knownVeths?: string[]; vethsOnly?: boolean }): Promise<NodeCalicoFacts> {
      return whileHeartbeating((signal) => d.ssh.withSession(d.target(input.cluster, input.node), (s) => readNode(s, input.node, input), signal));
    },

    /**
     * Releases one leaked handle, all or none. First every allocation is judged again against a
     * fresh read of its pod and its Node (Calico's rules): one that is valid now keeps the whole
     * handle. Then each IPAMBlock is read, the handle's ordinals freed (an ordinal now under
     * another handle is kept) and the block written with the resourceVersion it was read at: a
     * concurrent change by Calico fails the write (409) and the block is read and judged again.
     * Last the IPAMHandle is deleted with its resourceVersion, if no block still holds an
     * address under it. A retry finds the ordinals free and the handle gone: already done.
     */
    async releaseCalicoHandle(input: { cluster: string; node: string; release: HandleRelease; audit: AuditContext }): Promise<{ handleID: string; outcome: 'released' | 'already-done' | 'kept'; why: string; released: string[]; reused: string[] }> {
      const kube = d.kube(input.cluster);
      const c = custom(input.cluster);
      const r = input.release;
      const step = `${input.node}/release/${r.handleID}`;
      return whileHeartbeating(async () => {
        // 1. Still leaked? (fresh pod and Node; the allocation as the block has it now)
        for (const a of r.allocations) {
          const [ns, pod] = a.pod.split('/');
          const p = ns && pod ? await getOr404(`reading pod ${a.pod}`, () => kube.core.readNamespacedPod({ namespace: ns, name: pod })) : null;
          const nodeExists = a.node ? (await getOr404(`reading Node ${a.node}`, () => kube.core.readNode({ name: a.node }))) !== null : true;
          const v = allocationVerdict({ ordinal: a.ordinal, ip: a.ip, handle: r.handleID, namespace: ns || null, pod: pod || null, node: a.node || null, type: null }, p ? calicoPodOf(p) : undefined, nodeExists);
          if (!v.leaked) {
            const why = `${a.ip}: ${v.why} (checked right before the release)`;
            await d.record(input.audit, { cluster: input.cluster, node: input.node, step, action: `none: keep handle ${r.handleID}`, before: { release: r }, after: { kept: why }, outcome: 'skipped' });
            return { handleID: r.handleID, outcome: 'kept' as const, why, released: [], reused: [] };
          }
        }
        // 2. The blocks, each written with the resourceVersion it was read at.
        const released: string[] = [];
        const reused: string[] = [];
        const before: Record<string, unknown> = {};
        const byBlock = new Map<string, number[]>();
        for (const a of r.allocations) byBlock.set(a.block, [...(byBlock.get(a.block) ?? []), a.ordinal]);
        for (const [block, ordinals] of byBlock) {
          for (let tryNo = 1; ; tryNo++) {
            const obj = (await getOr404(`reading IPAMBlock ${block}`, () => c.getClusterCustomObject({ ...CALICO, plural: 'ipamblocks', name: block }))) as { metadata?: { resourceVersion?: string }; spec?: BlockSpec } | null;
            if (!obj?.spec) break; // the block is gone: nothing of it to release
            before[block] ??= obj;
            const out = releaseFromBlock(obj.spec, r.handleID, ordinals);
            if ('problem' in out) throw fail(Failure.NodeStateUnexpected, `IPAMBlock ${block}: ${out.problem}`);
            for (const x of out.reused) reused.push(`${block}#${x.ordinal} (now ${x.handle ?? 'no handle'})`);
            if (out.released.length === 0) break;
            try {
              await c.replaceClusterCustomObject({ ...CALICO, plural: 'ipamblocks', name: block, body: { ...obj, spec: out.spec } });
              released.push(...out.released.map((o) => `${block}#${o}`));
              break;
            } catch (err) {
              if (err instanceof ApiException && err.code === 409 && tryNo < CAS_TRIES) continue; // changed since the read: read and judge again
              throw kubeFailure(err, `writing IPAMBlock ${block}`);
            }
          }
        }
        // 3. The handle, once no block holds an address under it.
        const handleName = r.handleID.toLowerCase();
        const handle = (await getOr404(`reading IPAMHandle ${handleName}`, () => c.getClusterCustomObject({ ...CALICO, plural: 'ipamhandles', name: handleName }))) as { metadata?: { resourceVersion?: string }; spec?: { block?: Record<string, number> } } | null;
        let handleDeleted = false;
        if (handle) {
          before[`handle ${handleName}`] = handle;
          const still: string[] = [];
          for (const cidr of Object.keys(handle.spec?.block ?? {})) {
            const name = cidr.replace(/[.:/]/g, '-');
            const b = (await getOr404(`reading IPAMBlock ${name}`, () => c.getClusterCustomObject({ ...CALICO, plural: 'ipamblocks', name }))) as { spec?: BlockSpec } | null;
            if (b?.spec && ordinalsOfHandle(b.spec, r.handleID).length) still.push(cidr);
          }
          if (still.length === 0) {
            try {
              await c.deleteClusterCustomObject({ ...CALICO, plural: 'ipamhandles', name: handleName, body: { preconditions: { resourceVersion: handle.metadata?.resourceVersion } } });
              handleDeleted = true;
            } catch (err) {
              // 404: deleted meanwhile (done); 409: changed since it was read, a retried error (read and judged again).
              if (!(err instanceof ApiException && err.code === 404)) throw kubeFailure(err, `deleting IPAMHandle ${handleName}`);
            }
          } else {
            reused.push(`handle ${r.handleID} still has addresses in ${still.join(', ')}: kept`);
          }
        }
        const outcome = released.length || handleDeleted ? ('released' as const) : ('already-done' as const);
        await d.record(input.audit, {
          cluster: input.cluster,
          node: input.node,
          step,
          action: `release Calico IPAM handle ${r.handleID}: ${r.allocations.map((a) => `${a.ip} (${a.why})`).join(', ')}`,
          // As they were: a released allocation has no undo once its address is given again; this is the record of it.
          before: { blocks: before, release: r },
          after: { released, reused, handleDeleted },
          outcome: outcome === 'released' ? 'applied' : 'already-done',
          ...(outcome === 'released' ? { event: { reason: AuditReason.LeakedIPsReleased, message: `released Calico IPAM handle ${r.handleID} (${r.allocations.map((a) => a.ip).join(', ')}): ${r.allocations[0].why}` } } : {}),
        });
        return { handleID: r.handleID, outcome, why: r.allocations.map((a) => a.why).join('; '), released, reused };
      });
    },

    /**
     * Deletes the plan's orphan veths, each only if, read again now, it is the same link
     * (ifindex) and still an orphan by the same rule (no pod or sandbox of its name, its peer
     * in no live sandbox's netns). No undo: its peer was in no live sandbox, so it carried no
     * pod's traffic; a pod that later wants the name gets a new veth from its CNI ADD.
     */
    async deleteOrphanVeths(input: { cluster: string; node: string; veths: VethDelete[]; audit: AuditContext }): Promise<{ deleted: string[]; gone: string[]; kept: string[] }> {
      for (const v of input.veths) if (!CALI_VETH.test(v.name)) throw fail(Failure.BadInput, `not a Calico veth name: ${JSON.stringify(v.name)}`);
      const kube = d.kube(input.cluster);
      return whileHeartbeating((signal) =>
        d.ssh.withSession(
          d.target(input.cluster, input.node),
          async (s) => {
            const deleted: string[] = [];
            const gone: string[] = [];
            const kept: string[] = [];
            // Read once, right before the deletes: the pods the API places on the node, and the node.
            const pods = (await api(`listing the pods on ${input.node}`, () => kube.core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${input.node}` }))).items.map(calicoPodOf);
            const now = await readNode(s, input.node);
            for (const v of input.veths) {
              const step = `${input.node}/delete-veth/${v.name}`;
              const link = now.veths.find((x) => x.name === v.name);
              if (!link || link.ifindex !== v.ifindex) {
                gone.push(v.name);
                await d.record(input.audit, { cluster: input.cluster, node: input.node, step, action: `ip link delete ${v.name}`, before: { veth: v }, after: { found: link ?? null }, outcome: 'already-done' });
                continue;
              }
              const verdict = vethVerdict(link, now, pods);
              if (!verdict.orphan) {
                kept.push(`${v.name}: ${verdict.why}`);
                await d.record(input.audit, { cluster: input.cluster, node: input.node, step, action: `none: keep ${v.name}`, before: { veth: v }, after: { kept: verdict.why }, outcome: 'skipped' });
                continue;
              }
              await s.run(['ip', 'link', 'delete', v.name]);
              deleted.push(v.name);
              await d.record(input.audit, {
                cluster: input.cluster,
                node: input.node,
                step,
                action: `ip link delete ${v.name}`,
                before: { veth: link, why: verdict.why },
                after: { deleted: true, undo: 'none: its peer was in no live sandbox, it carried no traffic' },
                outcome: 'applied',
                event: { reason: AuditReason.InterfaceDeleted, message: `deleted orphan Calico veth ${v.name} (${verdict.why})` },
              });
            }
            return { deleted, gone, kept };
          },
          signal,
        ),
      );
    },

    /**
     * Evicts each pod that has no veth, through the Eviction API (a PodDisruptionBudget still
     * holds: 429 is retried), only if it is still the pod the plan saw (uid precondition) and,
     * read again now, still Running without its veth. Gone or replaced counts as done. No undo:
     * its controller recreates it, with a CNI ADD that makes its veth.
     */
    async evictPodsWithoutVeth(input: { cluster: string; node: string; pods: PodRestart[]; audit: AuditContext }): Promise<{ evicted: string[]; already: string[]; kept: string[] }> {
      for (const p of input.pods) if (!CALI_VETH.test(p.veth)) throw fail(Failure.BadInput, `not a Calico veth name: ${JSON.stringify(p.veth)}`);
      const kube = d.kube(input.cluster);
      const now = await whileHeartbeating((signal) => d.ssh.withSession(d.target(input.cluster, input.node), (s) => readNode(s, input.node, { vethsOnly: true }), signal));
      const evicted: string[] = [];
      const already: string[] = [];
      const kept: string[] = [];
      for (const p of input.pods) {
        const ref = `${p.namespace}/${p.name}`;
        const step = `${input.node}/evict/${ref}`;
        if (now.veths.some((v) => v.name === p.veth)) {
          kept.push(`${ref}: has ${p.veth} now`);
          await d.record(input.audit, { cluster: input.cluster, node: input.node, step, action: `none: keep pod ${ref}`, before: { pod: p }, after: { kept: `${p.veth} is there now` }, outcome: 'skipped' });
          continue;
        }
        if ((await evictPod(kube.core, p)) === 'already') {
          already.push(ref);
          await d.record(input.audit, { cluster: input.cluster, node: input.node, step, action: `evict pod ${ref}`, before: { pod: p }, outcome: 'already-done' });
          continue;
        }
        evicted.push(ref);
        await d.record(input.audit, {
          cluster: input.cluster,
          node: input.node,
          step,
          action: `evict pod ${ref} (uid ${p.uid})`,
          before: { pod: p, veth: `${p.veth} missing` },
          after: { evicted: true, undo: `none: its ${p.controller.kind} ${p.controller.name} recreates it` },
          outcome: 'applied',
          event: { reason: AuditReason.PodEvicted, message: `evicted ${ref}: Running without its Calico veth ${p.veth}; its ${p.controller.kind} recreates it with a CNI ADD` },
        });
      }
      return { evicted, already, kept };
    },

    /**
     * Waits until each restarted pod has a successor of the same controller (another uid),
     * Running, and, on this node, with its veth. Read-only.
     */
    async waitForPodSuccessors(input: { cluster: string; node: string; pods: PodRestart[]; timeoutMs: number }): Promise<{ pods: string[] }> {
      const kube = d.kube(input.cluster);
      const deadline = Date.now() + input.timeoutMs;
      return whileHeartbeating(async (signal) => {
        let seen = 'nothing read yet';
        for (let round = 0; ; round++) {
          signal.throwIfAborted();
          const all = (await api('listing the pods', () => kube.core.listPodForAllNamespaces({}))).items.map(calicoPodOf);
          const node = await d.ssh.withSession(d.target(input.cluster, input.node), (s) => readNode(s, input.node, { vethsOnly: true }), signal);
          const ready: string[] = [];
          const waiting: string[] = [];
          for (const old of input.pods) {
            const next = all.find((p) => p.namespace === old.namespace && p.controller?.uid === old.controller.uid && p.uid !== old.uid && !p.deleting && (p.name === old.name || p.node === input.node) && p.phase === 'Running');
            if (!next) waiting.push(`${old.namespace}/${old.name}: no Running successor yet`);
            else if (next.node === input.node && !node.veths.some((v) => v.name === next.veth)) waiting.push(`${next.namespace}/${next.name}: Running without ${next.veth}`);
            else ready.push(`${next.namespace}/${next.name} (${next.node}, ${next.ips.join(', ')})`);
          }
          if (waiting.length === 0) return { pods: ready };
          seen = waiting.join('; ');
          if (Date.now() > deadline) throw fail(Failure.VerificationFailed, `${input.node}: the restarted pods did not come back with their veths within ${Math.round(input.timeoutMs / 1000)} s (last seen: ${seen})`);
          await sleep(pollDelay(round, 1000), undefined, { signal }).catch(() => undefined);
        }
      });
    },
  };
}
