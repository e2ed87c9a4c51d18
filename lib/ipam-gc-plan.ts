/**
 * ipam-gc on the shared runbook (seed 003's leaked host-local addresses), the pure part: the
 * findings, the plan and the checks after the release, over the listings of the selected
 * nodes (lib/ipam-gc.ts decides each file; this module only arranges those decisions for the
 * runbook). No I/O, no clock: each listing carries its node's own clock.
 *
 * In service: no cordon, no drain, no reboot. A released file belongs to a sandbox that is
 * gone; nothing a running pod uses changes (its own file is never a candidate, and the
 * release re-checks that under host-local's lock).
 */
import type { Finding } from './findings';
import { decideNode, type FileDecision, type NetworkSummary, type NodeIpamDecision, type NodeIpamListing, QUARANTINE_DIR, type QuarantineRun, type ReleaseCandidate } from './ipam-gc';
export { QUARANTINE_DIR };
import { RELEASE_BATCH } from './ipam-gc-scripts';
import { type PlannedNode, planId, type RunbookPlan } from './runbook';

/** One node's listing as the gather step read it, or why it could not be read. */
export type NodeListing = { node: string; listing: NodeIpamListing } | { node: string; error: string };

export interface IpamGcFacts {
  nodes: NodeListing[];
}

/** A file of a live sandbox, as the listing saw it: verify checks it is still as it was. */
export interface LiveFile {
  network: string;
  ip: string;
  containerId: string;
  mtime: number;
}

export interface IpamGcNode extends PlannedNode {
  /** The node's clock at the listing: a candidate's age is now - mtime. */
  now: number;
  networks: NetworkSummary[];
  /** Per network, the candidates in address order (the release's input). */
  candidates: Record<string, ReleaseCandidate[]>;
  live: LiveFile[];
  /** Files set aside as host-local's own or unreadable: never touched (reported). */
  unparsable: Array<{ network: string; name: string; problem: string }>;
  /** Earlier runs' quarantines past the retention: deleted after the release (absent in plans made before the purge existed). */
  purge?: QuarantineRun[];
  /** In a run's result only: candidates and live files left out of the lists above to keep the result small (planForResult). */
  omitted?: { candidates: number; live: number };
}

/** Candidates a run's result lists in full, over all nodes; past it, the result gives counts (the audit records list every address). */
export const RESULT_CANDIDATES_MAX = 1000;

/**
 * The plan as a run's result carries it. Temporal refuses a result over 2 MB, and a plan of
 * 50 nodes with full ranges is about 1.6 MB of candidates: past RESULT_CANDIDATES_MAX the
 * lists are cut (in plan order) and each node says how many it left out. Live files are only
 * for verify: the result counts them.
 */
export function planForResult(plan: IpamGcPlan, max = RESULT_CANDIDATES_MAX): IpamGcPlan {
  let room = max;
  const nodes = plan.nodes.map((n) => {
    const candidates: Record<string, ReleaseCandidate[]> = {};
    let cut = 0;
    for (const [net, list] of Object.entries(n.candidates)) {
      const kept = list.slice(0, Math.max(0, room));
      room -= kept.length;
      cut += list.length - kept.length;
      candidates[net] = kept;
    }
    return { ...n, candidates, live: [], omitted: { candidates: cut, live: n.live.length } };
  });
  return { ...plan, nodes };
}

export interface IpamGcPlan extends RunbookPlan {
  nodes: IpamGcNode[];
  graceS: number;
  /** Per node and network, for the dry run and the nodes not fixed: capacity, in use, leaked, candidates. */
  pools: Array<{ node: string } & NetworkSummary>;
}

/** Below this an on-demand grace period is allowed but warned about: a sandbox being created may not be recorded yet. */
export const GRACE_WARN_S = 60;

export const NO_DRAIN_WHY =
  'no cordon or drain: a released file is the reservation of a sandbox that is gone, so nothing a running pod uses changes (a live sandbox\'s file is never a candidate, and the release checks that again under host-local\'s own lock); no reboot';

function decisions(facts: IpamGcFacts, graceS: number): Array<{ node: string; decision: NodeIpamDecision } | { node: string; error: string }> {
  return facts.nodes.map((n) => ('listing' in n ? { node: n.node, decision: decideNode(n.listing, { graceS }) } : { node: n.node, error: n.error }));
}

const pct = (n: number, of: number | null) => (of ? ` (${Math.round((100 * n) / of)}%)` : '');

/** One finding per node and network holding leaked files (at the run's grace period). */
export function detectLeaks(facts: IpamGcFacts, graceS: number): Finding[] {
  const out: Finding[] = [];
  for (const d of decisions(facts, graceS)) {
    if (!('decision' in d)) continue;
    for (const s of d.decision.networks) {
      if (s.leaked === 0) continue;
      const full = s.capacity !== null && s.inUse >= s.capacity;
      out.push({
        seed: '003',
        remediation: 'ipam-gc',
        node: d.node,
        signature: full ? `no IP addresses available in network: ${s.network}` : `host-local IPs leaked in network ${s.network} (sandboxes gone)`,
        evidence: [
          `${s.leaked} of ${s.inUse} files in /var/lib/cni/networks/${s.network} name a container no live sandbox has${pct(s.leaked, s.inUse)}: ${s.candidates} older than the grace period (${graceS} s), ${s.tooYoung} younger`,
          s.capacity === null ? 'the range is not known (no host-local config or subnet.env)' : `capacity ${s.capacity}, in use ${s.inUse}, free ${s.free}`,
          ...(d.decision.blocked ? [d.decision.blocked] : []),
        ],
        fixable: true,
      });
    }
  }
  return out;
}

export interface PlanOptions {
  graceS: number;
  selected: readonly string[];
  excluded: readonly string[];
  controlPlane: readonly string[];
  /** The run's tag: the quarantine directory on each node. */
  runTag: string;
  /** Nodes collected at once (default 1). */
  parallel?: number;
  /** Seconds a run's quarantine is kept after its last change; older ones are deleted. Absent: none is. */
  retentionS?: number;
}

/** The quarantines of earlier runs that are at least the retention old on the node's clock. */
export function expiredQuarantines(listing: NodeIpamListing, retentionS: number, ownTag: string): QuarantineRun[] {
  return (listing.quarantine ?? []).filter((q) => q.runTag !== ownTag && listing.now - q.mtime >= retentionS);
}

const days = (s: number) => (s % 86_400 === 0 ? `${s / 86_400} d` : s % 3600 === 0 ? `${s / 3600} h` : `${s} s`);

const secs = (s: number) => (s % 60 === 0 && s > 0 ? `${s / 60} min` : `${s} s`);

export function planIpamGc(facts: IpamGcFacts, opts: PlanOptions): IpamGcPlan {
  const nodes: IpamGcNode[] = [];
  const skipped: Array<{ name: string; reason: string }> = [];
  const pools: IpamGcPlan['pools'] = [];
  const listings = new Map(facts.nodes.flatMap((n) => ('listing' in n ? [[n.node, n.listing] as const] : [])));
  for (const d of decisions(facts, opts.graceS)) {
    if (!opts.selected.includes(d.node)) continue; // only selected nodes are read
    if (!('decision' in d)) {
      skipped.push({ name: d.node, reason: `unreachable: ${d.error}` });
      continue;
    }
    const dec = d.decision;
    pools.push(...dec.networks.map((s) => ({ node: d.node, ...s })));
    const count = Object.values(dec.candidates).reduce((a, c) => a + c.length, 0);
    const purge = opts.retentionS === undefined ? [] : expiredQuarantines(listings.get(d.node)!, opts.retentionS, opts.runTag);
    if (opts.excluded.includes(d.node)) {
      if (count || purge.length) skipped.push({ name: d.node, reason: 'labelled kubemend.io/exclude=true' });
      continue;
    }
    if (dec.blocked) {
      skipped.push({ name: d.node, reason: dec.blocked });
      continue;
    }
    if (count === 0 && purge.length === 0) continue;
    const live: LiveFile[] = dec.files.filter((f) => f.verdict.kind === 'live').map((f) => ({ network: f.network, ip: f.name, containerId: f.containerId!, mtime: f.mtime! }));
    const unparsable = dec.files.filter((f): f is FileDecision & { verdict: { kind: 'unparsable'; problem: string } } => f.verdict.kind === 'unparsable').map((f) => ({ network: f.network, name: f.name, problem: f.verdict.problem }));
    const steps = Object.entries(dec.candidates).map(([net, c]) => {
      const batches = Math.ceil(c.length / RELEASE_BATCH);
      return `network ${net}: under host-local's lock (flock /var/lib/cni/networks/${net}/lock), list the sandboxes again and move each of ${c.length} candidate file(s) that still names the same gone container with the same mtime into ${QUARANTINE_DIR}/${opts.runTag}/${net}/ (${batches} exec${batches === 1 ? '' : 's'})`;
    });
    if (purge.length) {
      const files = purge.reduce((a, q) => a + q.files, 0);
      steps.push(`delete ${purge.length} earlier run(s)' quarantine kept past the retention (${days(opts.retentionS!)}; ${files} file(s)), each only if unchanged since this listing: ${purge.map((q) => `rm -r ${QUARANTINE_DIR}/${q.runTag} (${q.files} file(s), last changed ${days(dec.now - q.mtime)} ago)`).join('; ')}`);
    }
    steps.push(`list the node again: every released address is free or held by a live sandbox, and the ${live.length} live sandbox file(s) are as they were`);
    nodes.push({ name: d.node, role: opts.controlPlane.includes(d.node) ? 'control-plane' : 'worker', steps, now: dec.now, networks: dec.networks, candidates: dec.candidates, live, unparsable, ...(purge.length ? { purge } : {}) });
  }
  const summary = [
    `Grace period ${secs(opts.graceS)}: a file is a candidate when no live sandbox or container has its id and it was written at least that long ago; it is released only if it is still one under host-local's lock.`,
    ...(opts.graceS < GRACE_WARN_S ? [`WARNING: a grace period under ${GRACE_WARN_S} s can release the file of a sandbox whose CNI ADD has returned but which the runtime has not recorded yet: use it only on a node that is not starting pods.`] : []),
    `No cordon or drain: ${NO_DRAIN_WHY.replace(/^no cordon or drain: /, '')}.`,
    `Released files are moved, not deleted: kubemend ipam-gc restore <run> puts them back${opts.retentionS === undefined ? '' : ` within the retention (${days(opts.retentionS)} after the run's last change; then a later run deletes them, which has no undo)`}.`,
    ...(nodes.length > 1 ? [`Up to ${Math.min(opts.parallel ?? 1, nodes.length)} node(s) at once; after a node fails, no other node starts.`] : []),
    ...pools.map((p) => `${p.node} ${p.network}: capacity ${p.capacity ?? '?'}, in use ${p.inUse}, leaked ${p.leaked}, candidates ${p.candidates}${p.unparsable ? `, ${p.unparsable} unreadable (left alone)` : ''}`),
  ];
  const content = { graceS: opts.graceS, nodes: nodes.map((n) => (n.purge ? [n.name, n.candidates, n.purge] : [n.name, n.candidates])), skipped };
  return { id: planId(content), nodes, skipped, summary, graceS: opts.graceS, pools };
}

/** Faults the facts show, as lines: per node and network, the leaked files. */
export function leakLines(facts: IpamGcFacts, graceS: number, only?: ReadonlySet<string>): string[] {
  return detectLeaks(facts, graceS)
    .filter((f) => !only || only.has(f.node!))
    .map((f) => `${f.node}: ${f.evidence[0]}`);
}

/** What the release did to one network, as the activity reports it. */
export interface NetworkRelease {
  network: string;
  released: Array<{ ip: string; containerId: string; ageS: number }>;
  /** Moved by an earlier attempt of this run (found in the run's quarantine). */
  already: Array<{ ip: string; containerId: string; ageS: number }>;
  kept: Array<{ ip: string; containerId: string; reason: string }>;
  gone: string[];
}

/**
 * What is wrong with a node after its release, from a fresh listing; empty when all is well:
 *  - every released address is free, or its file names a live sandbox (re-used since);
 *  - every live sandbox's file the plan saw is still there, as it was, while its sandbox lives.
 */
export function problemsAfterRelease(planned: Pick<IpamGcNode, 'name' | 'live'>, releases: readonly NetworkRelease[], after: NodeIpamListing): string[] {
  const out: string[] = [];
  const dec = decideNode(after, { graceS: 0 });
  const byKey = new Map(dec.files.map((f) => [`${f.network}/${f.name}`, f]));
  for (const r of releases) {
    for (const x of [...r.released, ...r.already]) {
      const f = byKey.get(`${r.network}/${x.ip}`);
      if (!f) continue;
      if (f.verdict.kind === 'live' && f.containerId !== x.containerId) continue; // re-used by a new sandbox
      out.push(`${r.network} ${x.ip}: released, but its file is there again${f.containerId === x.containerId ? ` naming the same gone container ${x.containerId.slice(0, 12)}` : ` (${f.verdict.kind}, container ${f.containerId ?? '?'})`}`);
    }
  }
  if (after.sandboxes !== null && after.containers !== null) {
    const stillLive = new Set(dec.files.filter((f) => f.verdict.kind === 'live').map((f) => f.containerId));
    const liveIds = new Set([...after.sandboxes, ...after.containers]);
    for (const l of planned.live) {
      const f = byKey.get(`${l.network}/${l.ip}`);
      const sandboxLives = liveIds.has(l.containerId) || stillLive.has(l.containerId);
      if (!sandboxLives) continue; // its sandbox went away meanwhile (a DEL took its file): not ours
      if (!f) out.push(`${l.network} ${l.ip}: the file of live sandbox ${l.containerId.slice(0, 12)} is gone`);
      else if (f.containerId !== l.containerId || f.mtime !== l.mtime) out.push(`${l.network} ${l.ip}: the file of live sandbox ${l.containerId.slice(0, 12)} changed`);
    }
  } else out.push(`${planned.name}: the runtime could not be asked after the release, so the live sandboxes' files cannot be checked`);
  return out;
}

/** A run's tag in node paths (its quarantine directory), as the runbook derives it from the run's workflow ID. */
export function runTagOf(runId: string): string {
  return runId.replace(/[^A-Za-z0-9-]/g, '-');
}

/** A node ipam-gc fixed, as the run's result shows it. */
export interface IpamGcFixed {
  name: string;
  /** Addresses moved into the quarantine by this run (with those an earlier attempt moved). */
  releasedCount: number;
  quarantine: string;
  /** Per network, counts: the addresses themselves are in the network's audit record (a result has a size limit). */
  networks: NetworkOutcome[];
  /** Earlier runs' quarantines deleted past the retention (absent when none was). */
  purged?: QuarantinePurge;
}

/** A network's release as a run's result gives it. */
export interface NetworkOutcome {
  network: string;
  /** Moved into the quarantine by this run (with those an earlier attempt moved). */
  releasedCount: number;
  /** Of those, moved by an earlier attempt (found in the quarantine on a retry). */
  alreadyCount: number;
  /** Candidates the release kept (live again, changed, ...), the first KEPT_IN_RESULT of them. */
  kept: Array<{ ip: string; containerId: string; reason: string }>;
  keptCount: number;
  /** Files gone before the release (host-local's own DEL). */
  goneCount: number;
}

const KEPT_IN_RESULT = 50;

export function networkOutcome(r: NetworkRelease): NetworkOutcome {
  return { network: r.network, releasedCount: r.released.length + r.already.length, alreadyCount: r.already.length, kept: r.kept.slice(0, KEPT_IN_RESULT), keptCount: r.kept.length, goneCount: r.gone.length };
}

/** What the retention purge did on a node. */
export interface QuarantinePurge {
  purged: Array<{ runTag: string; files: number }>;
  /** Deleted by an earlier attempt of this run. */
  gone: string[];
  kept: Array<{ runTag: string; reason: string }>;
}

/** What is wrong after the purge, from a fresh listing: a purged run's quarantine still there. */
export function problemsAfterPurge(p: QuarantinePurge, after: NodeIpamListing): string[] {
  const left = new Set((after.quarantine ?? []).map((q) => q.runTag));
  return [...p.purged.map((x) => x.runTag), ...p.gone].filter((t) => left.has(t)).map((t) => `${QUARANTINE_DIR}/${t}: purged, but it is still there`);
}

/** What `kubemend ipam-gc restore` did on each node. */
export interface IpamGcRestoreResult {
  cluster: string;
  gcRunId: string;
  nodes: Array<
    | { name: string; networks: Array<{ network: string; restored: Array<{ ip: string; containerId: string }>; refused: Array<{ ip: string; containerId: string; holder: string }>; missing: number }> }
    | { name: string; error: string }
  >;
}
