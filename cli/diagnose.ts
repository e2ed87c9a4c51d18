/**
 * `kubemend diagnose`: which seed's failure is on which node, with the evidence and the
 * command that fixes it. Read-only, takes no lock. Exit 0 healthy, 4 findings, 1 a node or
 * the API could not be read, 2 bad input.
 */
import { z } from 'zod';
import type { Config } from '../lib/config';
import type { DiagnoseInput, DiagnoseReport } from '../lib/diagnose';
import { ExitCode } from '../lib/failures';
import { fixCommand } from '../lib/findings';
import { clusterName, freeText, nodeName } from '../lib/patterns';
import { connectClient } from './connect';
import { actorName, endedBadly, newRunId, parseArgs, startRun } from './runs';
import { pickNodes } from './targets';

const DiagnoseArgs = z.object({
  cluster: clusterName,
  node: z.array(nodeName).default([]),
  reason: freeText(2000).optional(),
  json: z.boolean().default(false),
});

/** The exit code a report means: unreadable parts first (the diagnosis is incomplete), then findings. */
export function diagnoseExitCode(r: DiagnoseReport): number {
  if (r.nodes.some((n) => n.error) || (r.api !== 'read' && r.api !== 'not configured')) return ExitCode.RemediationFailed;
  return r.findings.length ? ExitCode.FindingsFound : ExitCode.Ok;
}

export function diagnoseText(r: DiagnoseReport): string {
  const lines: string[] = [];
  const read = r.nodes.filter((n) => !n.error).length;
  lines.push(`diagnose ${r.cluster}: ${read} of ${r.nodes.length} node(s) read; API: ${r.api}`);
  for (const n of r.nodes) {
    if (n.error) lines.push(`  ${n.name}: could not be read: ${n.error}`);
    for (const p of n.problems) lines.push(`  ${n.name}: not read: ${p}`);
  }
  if (r.findings.length === 0) {
    lines.push('', r.nodes.every((n) => !n.error) ? 'no findings: none of the five seeds\' failures is on these nodes' : 'no findings on the nodes that could be read');
    return `${lines.join('\n')}\n`;
  }
  for (const f of r.findings) {
    lines.push('', `[seed ${f.seed}] ${f.node || '(cluster)'}: ${f.signature}`);
    for (const e of f.evidence) lines.push(`    ${e}`);
    lines.push(`  fix: ${fixCommand(f, r.cluster)}`);
  }
  const nodes = new Set(r.findings.map((f) => f.node || '(cluster)'));
  lines.push('', `${r.findings.length} finding(s) on ${nodes.size} node(s)`);
  return `${lines.join('\n')}\n`;
}

export async function diagnoseCommand(cfg: Config, raw: Record<string, unknown>, out: NodeJS.WritableStream): Promise<number> {
  const args = parseArgs(DiagnoseArgs, raw);
  const nodes = pickNodes(cfg, args.cluster, args.node);
  const input: DiagnoseInput = { cluster: args.cluster, nodes: args.node, requestedBy: actorName(), reason: args.reason };

  const { client, connection } = await connectClient(cfg);
  try {
    const workflowId = newRunId('diagnose', args.cluster);
    const handle = await startRun(client, cfg, { type: 'diagnose', workflowId, input, cluster: args.cluster, nodes, remediation: 'diagnose', requestedBy: input.requestedBy, reason: args.reason });
    let report: DiagnoseReport;
    try {
      report = await handle.result();
    } catch (err) {
      throw endedBadly(err);
    }
    out.write(args.json ? `${JSON.stringify(report)}\n` : diagnoseText(report));
    return diagnoseExitCode(report);
  } finally {
    await connection.close();
  }
}
