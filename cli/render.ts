/** Terminal output: live per-node progress and the probe report, as text for people. */
import type { MachineIdPlan } from '../lib/machine-id';
import type { ProbeNodeReport, ProbeReport } from '../lib/probe';
import type { MachineIdResult } from '../lib/remediation-input';
import type { DefaultRouteResult } from '../workflows/default-route';
import type { IpamGcResult } from '../workflows/ipam-gc';
import type { StaleCniResult } from '../workflows/stale-cni';
import type { CalicoOrphansResult } from '../workflows/calico-orphans';
import type { NodeAddressResult } from '../workflows/node-address';
import { type IpamGcPlan, type IpamGcRestoreResult, RESULT_CANDIDATES_MAX } from '../lib/ipam-gc-plan';
import type { RunStatus } from '../lib/run-status';
import type { RunbookPlan } from '../lib/runbook';
import type { IpRoute } from '../lib/node-facts';

export interface ProgressSink {
  update(s: RunStatus): void;
  done(): void;
}

/** Plain lines, one per change: for logs, pipes and CI. */
export class LineProgress implements ProgressSink {
  private last = new Map<string, string>();
  constructor(private readonly out: NodeJS.WritableStream) {}
  update(s: RunStatus): void {
    const rows: Array<[string, string]> = [['run', s.phase], ...Object.entries(s.nodes).map(([n, st]): [string, string] => [n, `${st.phase}${st.detail ? ` (${st.detail})` : ''}`])];
    for (const [k, v] of rows) {
      if (this.last.get(k) === v) continue;
      this.last.set(k, v);
      this.out.write(`${k === 'run' ? `${s.remediation} ${s.cluster}` : `  ${k}`}: ${v}\n`);
    }
  }
  done(): void {}
}

/** A block redrawn in place on a terminal. */
export class TtyProgress implements ProgressSink {
  private drawn = 0;
  constructor(private readonly out: NodeJS.WriteStream) {}
  update(s: RunStatus): void {
    const width = this.out.columns || 100;
    const lines = [`${s.remediation} ${s.cluster}: ${s.phase}`, ...Object.entries(s.nodes).map(([n, st]) => `  ${n.padEnd(24)} ${st.phase}${st.detail ? `  ${st.detail}` : ''}`)].map((l) => l.slice(0, width - 1));
    if (this.drawn) this.out.write(`\x1b[${this.drawn}A`);
    for (const l of lines) this.out.write(`\x1b[2K${l}\n`);
    this.drawn = lines.length;
  }
  done(): void {}
}

export function progressFor(stream: NodeJS.WriteStream): ProgressSink {
  return stream.isTTY ? new TtyProgress(stream) : new LineProgress(stream);
}

function route(r: IpRoute | null): string {
  if (!r) return 'none';
  return ['default', r.gateway && `via ${r.gateway}`, r.dev && `dev ${r.dev}`, r.metric !== undefined && `metric ${r.metric}`].filter(Boolean).join(' ');
}

function nodeBlock(n: ProbeNodeReport): string {
  const lines = [`${n.name}${n.error ? '  [ERROR]' : ''}`];
  if (n.error) {
    lines.push(`  error            ${n.error}`);
  } else {
    lines.push(`  machine-id       ${n.machineId ?? '-'}`);
    lines.push(`  dbus machine-id  ${n.dbusMachineId ?? '-'}`);
    lines.push(`  boot id          ${n.bootId ?? '-'}`);
    lines.push(`  default route    ${route(n.defaultRoute)}`);
    for (const l of n.links) {
      lines.push(`  link ${String(l.ifname).padEnd(16)}${String(l.operstate ?? '').padEnd(9)}${l.address ?? ''}`);
    }
  }
  const k = n.kubernetes;
  if (k) {
    lines.push(`  Node object      Ready=${k.ready ?? '-'}${k.unschedulable ? ' SchedulingDisabled' : ''}${k.controlPlane ? ' control-plane' : ''}${k.excluded ? ' EXCLUDED' : ''}`);
    lines.push(`    InternalIP     ${k.internalIPs.join(', ') || '-'}   podCIDR ${k.podCIDRs.join(', ') || '-'}`);
    lines.push(`    kubelet        ${k.kubeletVersion ?? '-'}, machine-id ${k.machineId ?? '-'}, boot id ${k.bootId ?? '-'}`);
  } else if (k === null) {
    lines.push('  Node object      none');
  }
  for (const p of n.problems) lines.push(`  problem          ${p}`);
  return lines.join('\n');
}

export function probeText(r: ProbeReport): string {
  const errors = r.nodes.filter((n) => n.error).length;
  const api = r.api === undefined ? '' : `, Kubernetes API: ${r.api}`;
  return `probe of cluster ${r.cluster}: ${r.nodes.length} node(s), ${errors} could not be probed${api}\n\n${r.nodes.map(nodeBlock).join('\n\n')}\n`;
}

/** The plan, as the approver reads it before `kubemend approve`. */
export function planText(p: RunbookPlan): string {
  const lines = [`plan ${p.id}`];
  for (const l of p.summary ?? []) lines.push(`  ${l}`);
  // machine-id's plan: the shared groups and the member of each kept as it is.
  const mid = p as Partial<MachineIdPlan>;
  for (const g of mid.groups ?? []) lines.push(`  shared: ${g.nodes.join(', ')} (${g.shared.join('; ')})`);
  if (mid.keepers?.length) lines.push(`  kept as they are: ${mid.keepers.join(', ')}`);
  for (const s of p.skipped) lines.push(`  skipped: ${s.name} (${s.reason})`);
  p.nodes.forEach((n, i) => {
    const m = n as Partial<MachineIdPlan['nodes'][number]>;
    const ids = 'machineId' in m ? `, machine-id ${m.machineId ?? '-'}, weave MAC ${m.weaveMac ?? '-'}` : '';
    lines.push(`  ${i + 1}. ${n.name} (${n.role}${ids})`);
    for (const s of n.steps) lines.push(`       ${s}`);
  });
  if (p.cluster?.length) {
    lines.push(`  ${p.nodes.length + 1}. the whole cluster, after the nodes`);
    for (const s of p.cluster) lines.push(`       ${s}`);
  }
  if (p.nodes.length === 0 && !p.cluster?.length) lines.push('  nothing to fix');
  return `${lines.join('\n')}\n`;
}

export function defaultRouteText(r: DefaultRouteResult): string {
  const lines = [`default-route on cluster ${r.cluster}: ${r.outcome}${r.approvedBy ? ` (approved by ${r.approvedBy})` : ''}`];
  if (r.outcome !== 'fixed' && r.plan) lines.push(planText(r.plan).trimEnd());
  for (const n of r.nodes) {
    lines.push(`  ${n.name}: ${n.command}; default route via ${n.defaultRoute.gateway} dev ${n.defaultRoute.dev} (gateway ping ${n.gatewayPingMs ?? '?'} ms)${n.restartedPods.length ? `; restarted ${n.restartedPods.join(', ')} -> ${n.newPods.join(', ')}` : ''}${n.flannelSubnet ? `; flannel subnet ${n.flannelSubnet}` : ''}; probe pod got ${n.probeIp}${n.resumed.length ? ` (found done on retry: ${n.resumed.join(', ')})` : ''}`);
    for (const w of n.willRecur) lines.push(`    will happen again: ${w}`);
  }
  for (const x of r.remaining) lines.push(`  still without a default route: ${x}`);
  return `${lines.join('\n')}\n`;
}

export function staleCniText(r: StaleCniResult): string {
  const lines = [`stale-cni on cluster ${r.cluster}: ${r.outcome}${r.approvedBy ? ` (approved by ${r.approvedBy})` : ''}`];
  if (r.outcome !== 'fixed' && r.plan) lines.push(planText(r.plan).trimEnd());
  for (const n of r.nodes) {
    const gone = [...n.deleted.map((d) => `deleted ${d}`), ...n.alreadyGone.map((d) => `${d} already gone`)];
    const full = n.level === 'full' ? `full level${n.escalatedBecause ? ` (escalated: ${n.escalatedBecause})` : ''}: kubeadm reset ${n.reset === 'already' ? 'found done' : 'run'}, ${n.moved?.length ? `moved ${n.moved.join(', ')}, ` : ''}${n.joined === 'already' ? 'found joined' : 're-joined'}; ` : '';
    lines.push(`  ${n.name}: ${full}${gone.join(', ') || 'no device deleted'}${n.restartedPods.length ? `; restarted ${n.restartedPods.join(', ')} -> ${n.newPods.join(', ')}` : ''}; cni0 ${n.cni0?.join(' ') ?? '-'}, flannel.1 ${n.flannel1?.join(' ') ?? '-'}, subnet ${n.flannelSubnet ?? '-'}; probe pod got ${n.probeIp} (podCIDR ${n.podCidr})${n.uncordoned ? ', uncordoned' : ''}${n.resumed.length ? ` (found done on retry: ${n.resumed.join(', ')})` : ''}`);
  }
  for (const x of r.remaining) lines.push(`  still stale: ${x}`);
  return `${lines.join('\n')}\n`;
}

export function calicoOrphansText(r: CalicoOrphansResult): string {
  const lines = [`calico-orphans on cluster ${r.cluster}: ${r.outcome}${r.approvedBy ? ` (approved by ${r.approvedBy})` : ''}`];
  if (r.outcome !== 'fixed' && r.plan) lines.push(planText(r.plan).trimEnd());
  for (const n of r.nodes) {
    const parts = [
      `released ${n.released.length} handle(s)${n.released.length ? ` (${n.released.join(', ')})` : ''}`,
      `deleted ${n.vethsDeleted.length} veth(s)${n.vethsDeleted.length ? ` (${n.vethsDeleted.join(', ')})` : ''}`,
      ...(n.restarted.length ? [`restarted ${n.restarted.join(', ')} -> ${n.newPods.join(', ')}`] : []),
      ...n.keptAtRelease.map((k) => `kept ${k}`),
      ...n.vethsKept.map((k) => `kept ${k}`),
      ...n.reported.map((x) => `reported: ${x}`),
    ];
    lines.push(`  ${n.name}: ${parts.join('; ')}${n.resumed.length ? ` (found done on retry: ${n.resumed.join(', ')})` : ''}`);
  }
  for (const x of r.remaining) lines.push(`  still orphaned: ${x}`);
  return `${lines.join('\n')}\n`;
}

export function nodeAddressText(r: NodeAddressResult): string {
  const lines = [`node-address on cluster ${r.cluster}: ${r.outcome}${r.approvedBy ? ` (approved by ${r.approvedBy})` : ''}`];
  if (r.outcome !== 'fixed' && r.plan) lines.push(planText(r.plan).trimEnd());
  for (const n of r.nodes) {
    lines.push(`  ${n.name}: InternalIP ${n.internalIpsBefore.join(', ') || 'none'} -> ${n.internalIps.join(', ')}; ${n.joined ? `joined (--node-ip in ${n.file ?? 'its flags'})` : `${n.file}: ${n.lineAfter}`}${n.resumed.length ? ` (found done on retry: ${n.resumed.join(', ')})` : ''}`);
  }
  const calico = (r.clusterChange as { calico?: { daemonSet: string; from: string | null; to: string; addresses: Record<string, string> } | string } | undefined)?.calico;
  if (calico && typeof calico === 'object') lines.push(`  ${calico.daemonSet}: IP_AUTODETECTION_METHOD ${calico.from ?? '(unset)'} -> ${calico.to}; every pod Ready; detected ${Object.entries(calico.addresses).map(([n, a]) => `${n} ${a}`).join(', ')}`);
  for (const x of r.remaining) lines.push(`  still to do: ${x}`);
  return `${lines.join('\n')}\n`;
}

export function machineIdText(r: MachineIdResult): string {
  const lines = [`machine-id on cluster ${r.cluster}: ${r.outcome}${r.approvedBy ? ` (approved by ${r.approvedBy})` : ''}`];
  if (r.outcome !== 'fixed' && r.plan) lines.push(planText(r.plan).trimEnd());
  for (const n of r.nodes) {
    lines.push(`  ${n.name}: machine-id ${n.oldMachineId ?? '-'} -> ${n.newMachineId}, weave MAC ${n.oldWeaveMac ?? '-'} -> ${n.newWeaveMac ?? '-'}, boot ${n.bootIdBefore.slice(0, 8)} -> ${n.bootIdAfter.slice(0, 8)}${n.uncordoned ? ', uncordoned' : ''}${n.resumed.length ? ` (found done on retry: ${n.resumed.join(', ')})` : ''}`);
  }
  for (const x of r.remaining) lines.push(`  still shared: ${x}`);
  return `${lines.join('\n')}\n`;
}

/** Per node and network: capacity, in use, leaked, candidates; with --dry-run every candidate too. */
export function ipamGcText(r: IpamGcResult, runId: string): string {
  const lines = [`ipam-gc on cluster ${r.cluster}: ${r.outcome}${r.approvedBy ? ` (approved by ${r.approvedBy})` : ''}`];
  const plan = r.plan as IpamGcPlan | null;
  if (plan) {
    lines.push(`  ${'NODE'.padEnd(16)} ${'NETWORK'.padEnd(12)} ${'CAPACITY'.padStart(8)} ${'IN USE'.padStart(7)} ${'LEAKED'.padStart(7)} ${'CANDIDATES'.padStart(10)}`);
    for (const p of plan.pools) lines.push(`  ${p.node.padEnd(16)} ${p.network.padEnd(12)} ${String(p.capacity ?? '?').padStart(8)} ${String(p.inUse).padStart(7)} ${String(p.leaked).padStart(7)} ${String(p.candidates).padStart(10)}`);
  }
  if (r.outcome !== 'fixed' && plan) {
    lines.push(planText(plan).trimEnd());
    for (const n of plan.nodes) {
      for (const [net, cands] of Object.entries(n.candidates)) {
        lines.push(`  candidates on ${n.name} ${net} (${cands.length}):`);
        for (const c of cands) lines.push(`    ${c.ip.padEnd(16)} container ${c.containerId.slice(0, 12)}  age ${n.now - c.mtime} s`);
      }
      if (n.omitted?.candidates) lines.push(`  ${n.omitted.candidates} more candidate(s) on ${n.name} not listed: a run's result lists at most ${RESULT_CANDIDATES_MAX} (the pools above count them all; run with fewer --node to list them)`);
    }
  }
  for (const n of r.nodes) {
    lines.push(`  ${n.name}: released ${n.releasedCount} address(es) into ${n.quarantine}${n.resumed.length ? ` (found done on retry: ${n.resumed.join(', ')})` : ''}`);
    for (const x of n.networks) lines.push(`    ${x.network}: released ${x.releasedCount}, kept ${x.keptCount}${x.keptCount ? ` (${[...new Set(x.kept.map((k) => k.reason))].join(', ')})` : ''}, gone meanwhile ${x.goneCount}`);
    if (n.purged) lines.push(`    quarantine past the retention: deleted ${n.purged.purged.map((p) => `${p.runTag} (${p.files} file(s))`).join(', ') || 'none'}${n.purged.kept.length ? `; kept ${n.purged.kept.map((k) => `${k.runTag} (${k.reason})`).join(', ')}` : ''}`);
  }
  if (r.nodes.length) lines.push(`  to put them back: kubemend ipam-gc restore ${runId}`);
  for (const x of r.remaining) lines.push(`  still leaked: ${x}`);
  return `${lines.join('\n')}\n`;
}

export function ipamGcRestoreText(r: IpamGcRestoreResult): string {
  const lines = [`ipam-gc restore of ${r.gcRunId} on cluster ${r.cluster}`];
  for (const n of r.nodes) {
    if ('error' in n) {
      lines.push(`  ${n.name}: ERROR ${n.error}`);
      continue;
    }
    if (n.networks.length === 0) lines.push(`  ${n.name}: nothing in the quarantine`);
    for (const x of n.networks) {
      lines.push(`  ${n.name} ${x.network}: restored ${x.restored.length}, refused ${x.refused.length} (in use again)`);
      for (const f of x.refused) lines.push(`    refused ${f.ip}: held by ${f.holder === '?' ? 'an unreadable file' : `container ${f.holder.slice(0, 12)}`}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
