/**
 * Recorded histories (test/histories/*.json, exported by `temporal workflow show -o json`)
 * replayed through today's workflow code: a change that is not deterministic fails here
 * before it can break runs that are in flight. Re-record with
 * KUBEMEND_RECORD_HISTORIES=1 npx jest test/integration/probe test/integration/lab-machine-id
 * (after an intended, versioned change).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker } from '@temporalio/worker';

const dir = join(__dirname, '..', 'histories');
const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
const histories = () => files.map((f) => ({ workflowId: f, history: JSON.parse(readFileSync(join(dir, f), 'utf8')) }));

beforeAll(() => {
  try {
    Runtime.install({ logger: new DefaultLogger('ERROR') });
  } catch {
    // installed by another test file in this process
  }
});

test('there is a recorded history for every workflow kubemend registers', async () => {
  const workflows = await import('../../workflows');
  const registered = Object.entries(workflows).filter(([, v]) => typeof v === 'function').map(([k]) => k).sort();
  const recorded = [...new Set(histories().map((h) => h.history.events[0].workflowExecutionStartedEventAttributes.workflowType.name as string))].sort();
  expect(recorded).toEqual(registered);
});

test('every recorded history replays on the current workflow code', async () => {
  const results = [];
  for await (const r of Worker.runReplayHistories({ workflowBundle: { codePath: process.env.KUBEMEND_TEST_BUNDLE! } }, histories())) {
    results.push({ workflowId: r.workflowId, error: r.error ? String(r.error) : null });
  }
  expect(results.length).toBeGreaterThanOrEqual(2);
  expect(results).toEqual(files.map((f) => ({ workflowId: f, error: null })));
});

test('a workflow that reorders its activities fails replay (the guard can fail)', async () => {
  const { code } = await bundleWorkflowCode({ workflowsPath: require.resolve('../fixtures/nondeterministic'), logger: new DefaultLogger('ERROR') });
  const results = [];
  // The control reorders probe's activities; it has no other workflow.
  const probes = histories().filter((h) => h.history.events[0].workflowExecutionStartedEventAttributes.workflowType.name === 'probe');
  for await (const r of Worker.runReplayHistories({ workflowBundle: { code } }, probes)) results.push(r);
  expect(results).toHaveLength(probes.length);
  expect(probes.length).toBeGreaterThanOrEqual(2);
  for (const r of results) expect(String(r.error)).toMatch(/DeterminismViolation|Nondeterminism|nondeterminism/i);
});
