// The worker uses dist/workflow-bundle.js only while it is newer than the compiled
// workflow code; a stale bundle must never run. `npm test` builds both first.
import { statSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { PREBUILT_BUNDLE, prebuiltBundle } from '../../worker/bundle';
import { REPO_ROOT } from '../../worker/paths';

test.each([
  ['a compiled workflow file', join(REPO_ROOT, 'dist', 'workflows', 'probe.js')],
  ['a workflow source file', join(REPO_ROOT, 'workflows', 'probe.ts')],
  ['a lib source file', join(REPO_ROOT, 'lib', 'probe.ts')],
])('a bundle older than %s is not used', (_what, file) => {
  const now = Date.now() / 1000;
  const { mtimeMs } = statSync(file);
  try {
    utimesSync(file, now - 10, now - 10);
    utimesSync(PREBUILT_BUNDLE, now - 5, now - 5);
    expect(prebuiltBundle()).toEqual({ codePath: PREBUILT_BUNDLE });
    utimesSync(file, now, now); // changed after the bundle was built
    expect(prebuiltBundle()).toBeUndefined();
  } finally {
    utimesSync(file, mtimeMs / 1000, mtimeMs / 1000);
    utimesSync(PREBUILT_BUNDLE, now + 1, now + 1);
  }
  expect(prebuiltBundle()).toEqual({ codePath: PREBUILT_BUNDLE });
});
