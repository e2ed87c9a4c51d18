// workflows/ runs in Temporal's deterministic sandbox. This walks every module a workflow
// file reaches and fails on a Node built-in or an I/O library, the rule the
// samples-typescript lint config enforces with no-restricted-imports.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

const root = resolve(__dirname, '..', '..');
const ALLOWED_PACKAGES = ['@temporalio/workflow', '@temporalio/common', 'zod'];
const IMPORT = /(?:^|\n)\s*(import|export)\s+(type\s+)?[^'"]*?from\s+['"]([^'"]+)['"]/g;

function imports(file: string): Array<{ spec: string; typeOnly: boolean }> {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(IMPORT)].map((m) => ({ spec: m[3], typeOnly: Boolean(m[2]) }));
}

function reachable(): Map<string, Array<{ spec: string; typeOnly: boolean }>> {
  const seen = new Map<string, Array<{ spec: string; typeOnly: boolean }>>();
  const queue = readdirSync(join(root, 'workflows')).filter((f) => f.endsWith('.ts')).map((f) => join(root, 'workflows', f));
  while (queue.length) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    const deps = imports(file);
    seen.set(file, deps);
    for (const d of deps) if (d.spec.startsWith('.') && !d.typeOnly) queue.push(`${resolve(dirname(file), d.spec)}.ts`);
  }
  return seen;
}

test('workflow code reaches no Node built-in or I/O library', () => {
  const bad: string[] = [];
  const files = reachable();
  for (const [file, deps] of files) {
    for (const d of deps) {
      if (d.typeOnly || d.spec.startsWith('.')) continue;
      if (!ALLOWED_PACKAGES.includes(d.spec)) bad.push(`${file.slice(root.length + 1)} imports ${d.spec}`);
    }
  }
  expect(files.size).toBeGreaterThan(2);
  expect(bad).toEqual([]);
});

test('workflows import activities by type only', () => {
  for (const [file, deps] of reachable()) {
    for (const d of deps) {
      if (/activities/.test(d.spec)) expect({ file, ...d }).toEqual({ file, spec: d.spec, typeOnly: true });
    }
  }
});
