/** The webhook message (pure): what `text` and the Slack blocks carry for each event. */
import { notificationMessage, NotifyInput, slackEscape } from '../../lib/notification';

const input = (over: Partial<NotifyInput> = {}) =>
  NotifyInput.parse({
    cluster: 'lab',
    remediation: 'machine-id',
    runId: 'machine-id-lab-20261125T200000Z-abc123',
    event: 'fixed',
    summary: 'machine-id on lab: fixed node2, node3',
    nodes: ['node2', 'node3'],
    ...over,
  });

describe('notificationMessage', () => {
  test('text carries run, cluster, nodes and event; blocks say the same', () => {
    const m = notificationMessage(input());
    for (const s of ['machine-id-lab-20261125T200000Z-abc123', 'cluster lab', 'node2, node3', 'event: fixed', 'fixed its nodes', 'fixed node2, node3']) expect(m.text).toContain(s);
    expect(m.text).not.toContain('approve');
    const blocks = JSON.stringify(m.blocks);
    for (const s of ['machine-id-lab-20261125T200000Z-abc123', 'lab', 'node2, node3', 'fixed']) expect(blocks).toContain(s);
  });

  test.each([
    ['awaiting-approval', 'is waiting for approval'],
    ['fixed', 'fixed its nodes'],
    ['failed', 'FAILED'],
    ['compensated', 'failed and undid its steps (compensated)'],
  ] as const)('%s has its headline', (event, words) => {
    const m = notificationMessage(input({ event }));
    expect(m.text.split('\n')[0]).toBe(`kubemend: machine-id on cluster lab ${words}`);
  });

  test('awaiting approval: the approve command, given or built from run and plan', () => {
    const given = notificationMessage(input({ event: 'awaiting-approval', approveCommand: 'kubemend approve R --plan 0123456789abcdef', planId: '0123456789abcdef' }));
    expect(given.text).toContain('approve: kubemend approve R --plan 0123456789abcdef');
    expect(JSON.stringify(given.blocks)).toContain('kubemend approve R --plan 0123456789abcdef');
    const built = notificationMessage(input({ event: 'awaiting-approval', planId: 'fedcba9876543210' }));
    expect(built.text).toContain('approve: kubemend approve machine-id-lab-20261125T200000Z-abc123 --plan fedcba9876543210');
  });

  test('a long summary is clipped, the approve command never', () => {
    const m = notificationMessage(input({ event: 'awaiting-approval', planId: '0123456789abcdef', summary: 'x'.repeat(50_000).slice(0, 20_000) }));
    expect(m.text.length).toBeLessThan(4000);
    expect(m.text).toContain('--plan 0123456789abcdef');
    expect(m.text.endsWith('…')).toBe(true);
    for (const b of m.blocks) if ((b.text as { text?: string } | undefined)?.text) expect((b.text as { text: string }).text.length).toBeLessThanOrEqual(3000);
  });

  test('many nodes are listed with a count of the rest', () => {
    const nodes = Array.from({ length: 80 }, (_, i) => `node${i}`);
    const m = notificationMessage(input({ nodes }));
    expect(m.text).toContain('node49 and 30 more');
    expect(JSON.stringify(m.blocks)).toContain('node19 and 60 more');
  });

  test("Slack's control characters in a summary are escaped", () => {
    const m = notificationMessage(input({ summary: 'weave: <!channel> a & b > c' }));
    expect(m.text).toContain('weave: &lt;!channel&gt; a &amp; b &gt; c');
    expect(m.text).not.toContain('<!channel>');
    expect(slackEscape('<@U1>&')).toBe('&lt;@U1&gt;&amp;');
  });

  test('a summary with control characters (an error from a node) is cleaned, not refused', () => {
    const m = notificationMessage(input({ summary: 'CommandFailed: exit 1\r\n\u001b[31mboom\u0000' }));
    expect(m.text).toContain('CommandFailed: exit 1 \n [31mboom');
    expect(m.text).not.toMatch(/[\0\r\u001b]/);
  });

  test.each([
    [{ event: 'rebooted' }, 'event'],
    [{ runId: 'a b' }, 'runId'],
    [{ nodes: ['Node;1'] }, 'nodes.0'],
    [{ planId: 'xyz' }, 'planId'],
    [{ approveCommand: 'kubemend approve R\nrm -rf /' }, 'approveCommand'],
  ])('input %j is refused at %s', (over, path) => {
    const r = NotifyInput.safeParse({ cluster: 'lab', remediation: 'machine-id', runId: 'r1', event: 'fixed', summary: '', nodes: [], ...over });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0].path.join('.')).toBe(path);
  });
});
