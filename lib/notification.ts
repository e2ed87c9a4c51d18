/**
 * What kubemend posts to a webhook about a run (pure). Slack-compatible: `text` carries the
 * whole message (it is what Slack shows in notifications and what other receivers read),
 * and `blocks` lay the same facts out for Slack. No secret is ever part of it: the input
 * carries names, ids and a summary, never credentials or the webhook's URL.
 */
import { z } from 'zod';
import { clusterName, nodeName } from './patterns';

export const NOTIFY_EVENTS = ['awaiting-approval', 'fixed', 'failed', 'compensated'] as const;
export type NotifyEvent = (typeof NOTIFY_EVENTS)[number];

export const NotifyInput = z
  .object({
    cluster: clusterName,
    remediation: z.string().regex(/^[a-z][a-z0-9-]{0,62}$/, 'must be a remediation name such as machine-id'),
    runId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$/, 'must be a kubemend run ID'),
    event: z.enum(NOTIFY_EVENTS),
    /** Free text (often an error message): control characters become spaces and it is cut at 20,000, never refused. */
    summary: z.string().transform((v) => v.replace(/[\0-\x08\x0b-\x1f\x7f]/g, ' ').slice(0, 20_000)),
    nodes: z.array(nodeName).max(10_000),
    approveCommand: z.string().max(1000).refine((v) => !/[\0-\x1f\x7f]/.test(v), 'must be one line without control characters').optional(),
    planId: z.string().regex(/^[0-9a-f]{16}$/, 'must be a 16-hex-digit plan id').optional(),
  })
  .strict();
export type NotifyInput = z.input<typeof NotifyInput>;

const HEADLINE: Record<NotifyEvent, string> = {
  'awaiting-approval': 'is waiting for approval',
  fixed: 'fixed its nodes',
  failed: 'FAILED',
  compensated: 'failed and undid its steps (compensated)',
};

/** Slack's mrkdwn needs these three escaped; everything else is shown as written. */
export const slackEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

const clip = (s: string, max: number) => (s.length > max ? `${s.slice(0, max - 1)}…` : s);

function nodeList(nodes: readonly string[], max: number): string {
  if (nodes.length === 0) return '(none)';
  return nodes.length > max ? `${nodes.slice(0, max).join(', ')} and ${nodes.length - max} more` : nodes.join(', ');
}

/** The approve command a person can paste: the caller's, or one naming the run and its plan. */
export function approveCommandFor(n: z.output<typeof NotifyInput>): string | undefined {
  if (n.event !== 'awaiting-approval') return n.approveCommand;
  return n.approveCommand ?? `kubemend approve ${n.runId}${n.planId ? ` --plan ${n.planId}` : ''}`;
}

export interface SlackMessage {
  text: string;
  blocks: Array<Record<string, unknown>>;
}

/**
 * The message for one event of one run. `text` holds, in this order, the headline, the
 * event, run, cluster and nodes, the approve command, then the summary (clipped last, so the
 * command always survives): under 4,000 characters, as Slack advises for `text`.
 */
export function notificationMessage(n: z.output<typeof NotifyInput>): SlackMessage {
  const headline = `kubemend: ${n.remediation} on cluster ${n.cluster} ${HEADLINE[n.event]}`;
  const approve = approveCommandFor(n);
  const head = [
    headline,
    `event: ${n.event}`,
    `run: ${n.runId}`,
    `cluster: ${n.cluster}`,
    `nodes: ${nodeList(n.nodes, 50)}`,
    ...(approve ? [`approve: ${approve}`] : []),
  ].join('\n');
  const room = 3900 - head.length - 1;
  const text = slackEscape(n.summary.trim() ? `${head}\n${clip(n.summary.trim(), room)}` : head);
  const blocks: Array<Record<string, unknown>> = [
    { type: 'section', text: { type: 'mrkdwn', text: `*${slackEscape(headline)}*` } },
    {
      type: 'section',
      fields: [
        { type: 'mrkdwn', text: `*Run*\n${slackEscape(n.runId)}` },
        { type: 'mrkdwn', text: `*Event*\n${n.event}` },
        { type: 'mrkdwn', text: `*Cluster*\n${slackEscape(n.cluster)}` },
        { type: 'mrkdwn', text: `*Nodes*\n${clip(nodeList(n.nodes, 20), 1900)}` },
      ],
    },
  ];
  if (approve) blocks.push({ type: 'section', text: { type: 'mrkdwn', text: `*Approve with*\n\`\`\`${slackEscape(approve)}\`\`\`` } });
  if (n.summary.trim()) blocks.push({ type: 'section', text: { type: 'mrkdwn', text: slackEscape(clip(n.summary.trim(), 2800)) } });
  return { text, blocks };
}
