/** Facts from the raw lab captures in test/fixtures/diagnose/ (made by capture.ts), parsed as the worker parses them. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { apiFacts, type RawApi } from '../../lib/diagnose-api';
import { diagnoseFacts, parseDiagnoseOutput } from '../../lib/diagnose-script';
import type { DiagnoseFacts } from '../../lib/detect/index';

export interface Capture {
  marker: string;
  scenarios: string[];
  nodes: Record<string, string>;
  api: RawApi | null;
}

export function capture(label: string): Capture {
  return JSON.parse(readFileSync(join(__dirname, '..', 'fixtures', 'diagnose', `${label}.json`), 'utf8')) as Capture;
}

export function factsOf(label: string): DiagnoseFacts {
  const c = capture(label);
  return {
    cluster: 'lab',
    configured: Object.keys(c.nodes),
    nodes: Object.entries(c.nodes).map(([name, out]) => diagnoseFacts(name, parseDiagnoseOutput(out, c.marker), c.marker)),
    api: c.api ? apiFacts(c.api) : null,
  };
}
