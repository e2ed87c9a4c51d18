/**
 * Bundles workflows/ once at build time into dist/workflow-bundle.js, so the worker starts
 * without loading webpack (faster start, less memory). Part of `npm run build`.
 */
import { writeFileSync } from 'node:fs';
import { bundleWorkflowCode } from '@temporalio/worker';
import { PREBUILT_BUNDLE, WORKFLOWS_PATH } from '../worker/bundle';

bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH }).then(
  ({ code }) => {
    writeFileSync(PREBUILT_BUNDLE, code);
    console.error(`bundled workflows into ${PREBUILT_BUNDLE} (${(code.length / 1024).toFixed(0)} KiB)`);
  },
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
