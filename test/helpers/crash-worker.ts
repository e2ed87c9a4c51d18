/**
 * A kubemend worker for crash tests: it SIGKILLs itself right after the first execution of
 * each activity type completes, before the result reaches Temporal, so the step's side
 * effect is done but its completion is not recorded. The test restarts it until the run
 * closes; each retried step must see its own work and not repeat it.
 *
 * Usage: node dist/test/helpers/crash-worker.js <config.yaml> <crash-log>
 * The crash log lists the activity types crashed after, one per line.
 */
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { loadConfigFile } from '../../worker/config-file';
import { createWorker } from '../../worker/worker';
import { AuditStore } from '../../activities/audit-store';

const [configPath, crashLog] = process.argv.slice(2);
const crashedAfter = () => new Set(existsSync(crashLog) ? readFileSync(crashLog, 'utf8').split('\n').filter(Boolean) : []);

async function main(): Promise<void> {
  const cfg = loadConfigFile(configPath);
  const audit = await AuditStore.open(cfg.audit);
  const worker = await createWorker(cfg, {
    audit,
    stickyQueueScheduleToStartTimeoutMs: 1000, // a crashed worker's workflow tasks move on after 1 s
    interceptors: {
      activity: [
        (ctx) => ({
          inbound: {
            async execute(input, next) {
              const result = await next(input);
              const type = ctx.info.activityType;
              if (!crashedAfter().has(type)) {
                appendFileSync(crashLog, `${type}\n`);
                process.kill(process.pid, 'SIGKILL');
              }
              return result;
            },
          },
        }),
      ],
    },
  });
  await worker.run();
  await audit.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
