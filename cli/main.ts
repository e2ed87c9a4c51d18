/**
 * The operator's entry point. Exit codes: 0 success, 1 the remediation failed,
 * 2 bad input or config, 3 refused by a safety rule, 4 diagnose found a failure.
 */
import { Command, CommanderError, Option } from 'commander';
import { ConfigError } from '../lib/config';
import { ExitCode } from '../lib/failures';
import { type GlobalOptions, loadConfig } from './connect';
import { CliError } from './errors';
import { approveCommand, cancelCommand, ipamGcRestoreCommand, listCommand, REMEDIATIONS, runCommand, statusCommand } from './runs';
import { serverCommand, serverDefaults } from './server';
import { auditListCommand, auditShowCommand, auditVerifyCommand } from './audit';
import { breakerResetCommand, breakerStatusCommand } from './breaker';
import { diagnoseCommand } from './diagnose';
import { scheduleChangeCommand, scheduleCreateCommand, scheduleDescribeCommand, scheduleListCommand } from './schedule';
import { SCHEDULABLE } from '../lib/schedule';

const EXIT_CODES_HELP = `
Exit codes:
  0  success
  1  the remediation failed (or a node could not be probed)
  2  bad input or config: nothing was started or changed
  3  refused by a safety rule (node lock held, disruption budget exhausted, circuit breaker open)
  4  diagnose found at least one seed's failure (and read every node)

Config: --config FILE or $KUBEMEND_CONFIG (YAML).`;

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function buildProgram(out: NodeJS.WritableStream = process.stdout): { program: Command; exitCode: () => number } {
  let exitCode: number = ExitCode.Ok;
  // Commander ignores an action's return value: keep the exit code the command decided on.
  const act =
    <A extends unknown[]>(fn: (...a: A) => Promise<number>) =>
    async (...a: A) => {
      exitCode = await fn(...a);
    };
  const program = new Command('kubemend')
    .description('Remediation workflows for broken node networking on kubeadm-built Kubernetes clusters')
    .option('-c, --config <file>', 'config file (default: $KUBEMEND_CONFIG)')
    .addHelpText('after', EXIT_CODES_HELP)
    .showHelpAfterError(false)
    .exitOverride();
  const globals = (): GlobalOptions => program.opts<GlobalOptions>();

  program
    .command('server')
    .description('start the embedded Temporal dev server (SQLite on disk, Web UI)')
    .action(act(async () => {
      // Like `temporal server start-dev`: no config file needed; the defaults apply.
      if (globals().config === undefined && !process.env.KUBEMEND_CONFIG) {
        process.stderr.write('kubemend server: no config file (--config or $KUBEMEND_CONFIG): using the defaults\n');
        return serverCommand(serverDefaults());
      }
      return serverCommand(loadConfig(globals()));
    }));

  program
    .command('worker')
    .description('run the kubemend Temporal worker until SIGINT/SIGTERM')
    .action(act(async () => {
      // Loaded on demand: the worker's native bridge and bundler are not needed by other commands.
      const { runWorker } = await import('../worker/worker');
      await runWorker(loadConfig(globals()));
      return ExitCode.Ok;
    }));

  program
    .command('run')
    .description(`start a remediation run and follow it (remediations: ${REMEDIATIONS.join(', ')})`)
    .argument('<remediation>', `one of: ${REMEDIATIONS.join(', ')}`)
    .requiredOption('--cluster <name>', 'cluster from the config')
    .option('--node <name>', 'target node (repeatable; default: every node of the cluster)', collect, [])
    .option('--dry-run', 'plan only: print what would change and change nothing', false)
    .option('--auto-approve', 'do not wait for `kubemend approve`', false)
    .option('--reason <text>', 'why this run is being done (ticket, incident)')
    .option('--actor <name>', 'who asked for it (default: your OS user)')
    .option('--include-keeper', 'machine-id: fix every node of a group, the keeper too', false)
    .option('--drain-timeout <duration>', 'give up a drain after this long (default: policy.drainTimeout)')
    .option('--reboot-timeout <duration>', 'a rebooted node must be back (SSH, Node Ready) within this (default 10m)')
    .option('--route-timeout <duration>', "default-route: wait this long for the default route after re-applying the node's configuration (default 2m)")
    .option('--pod-timeout <duration>', "default-route, stale-cni: wait this long for the node's new CNI pod Ready and subnet.env; calico-orphans: for a restarted pod's successor Running with its veth (default 5m)")
    .option('--grace <duration>', 'ipam-gc: a host-local file must be at least this old to be released; calico-orphans: a leaked allocation whose node exists is released no earlier than this after detection (default 15m; 0s on demand)')
    .option('--parallel <n>', 'ipam-gc, calico-orphans: work on up to this many nodes at once (default 4; 1 to 64)')
    .option('--retention <duration>', "ipam-gc: keep a run's quarantine this long after its last change, then a later run deletes it (default 168h)")
    .option('--network <cidr>', "node-address: the nodes' own network (default: found, the one where every node has its own address)")
    .option('--interface <name>', "node-address: the nodes' own interface (its address is each node's; Calico gets interface=<name>)")
    .option('--calico-method <method>', "node-address: calico-node's IP_AUTODETECTION_METHOD exactly as given (default can-reach=<control plane>, or interface=/cidr= with --interface/--network)")
    .option('--kubelet-timeout <duration>', 'node-address: a restarted kubelet must be Ready with its new InternalIP within this (default 3m)')
    .option('--rollout-timeout <duration>', 'node-address: every calico-node pod must be Ready with the new method within this, else the DaemonSet is rolled back (default 5m)')
    .option('--full', 'stale-cni: the full level on every planned node: back up, kubeadm reset -f, clear the CNI leftovers, re-join with a fresh token', false)
    .option('--escalate', "stale-cni: a node whose light fix does not verify (or that it cannot fix) goes on to the full level; the plan says so", false)
    .option('--join-timeout <duration>', 'stale-cni full level: a re-joined node must be Ready within this (default 5m)')
    .option('--delete-emptydir-data', 'drain: evict pods with emptyDir volumes (their data is lost), as kubectl drain', false)
    .option('--force', 'drain: evict pods no controller manages, as kubectl drain --force', false)
    .option('--detach', 'print the run ID and return without following', false)
    .option('--json', 'machine-readable output only', false)
    .addHelpText('after', EXIT_CODES_HELP)
    .action(act(async (remediation: string, o: Record<string, unknown>) => runCommand(loadConfig(globals()), { ...o, remediation }, out)));

  program
    .command('diagnose')
    .description("read-only: which seed's failure is on which node, its evidence, and the command that fixes it (takes no lock)")
    .requiredOption('--cluster <name>', 'cluster from the config')
    .option('--node <name>', 'report on this node (repeatable; default: every node). Every node is still read', collect, [])
    .option('--reason <text>', 'why (ticket, incident)')
    .option('--json', 'machine-readable output only', false)
    .addHelpText('after', '\nExit codes: 0 healthy, 4 findings, 1 a node or the API could not be read, 2 bad input.')
    .action(act(async (o: Record<string, unknown>) => diagnoseCommand(loadConfig(globals()), o, out)));

  program
    .command('status')
    .description('show a run: its phase, each node\'s phase, and its result')
    .argument('<run>', 'run ID')
    .option('--json', 'machine-readable output', false)
    .action(act(async (run: string, o: { json?: boolean }) => statusCommand(loadConfig(globals()), run, o, out)));

  program
    .command('list')
    .description('list kubemend runs, newest first')
    .option('--cluster <name>', 'only runs on this cluster')
    .option('--node <name>', 'only runs that touched this node')
    .addOption(new Option('--remediation <name>', 'only this remediation').choices([...REMEDIATIONS]))
    .option('--limit <n>', 'at most this many', '20')
    .option('--json', 'machine-readable output', false)
    .action(act(async (o: Record<string, unknown>) => listCommand(loadConfig(globals()), o, out)));

  program
    .command('approve')
    .description('approve a run that waits for approval')
    .argument('<run>', 'run ID')
    .option('--actor <name>', 'who approves (default: your OS user)')
    .option('--comment <text>', 'recorded with the approval')
    .option('--plan <id>', 'the plan id you reviewed (`kubemend status`); refused if the run\'s plan differs (default: the plan the run shows now)')
    .action(act(async (run: string, o: { actor?: string; comment?: string; plan?: string }) => approveCommand(loadConfig(globals()), run, o, out)));

  program
    .command('cancel')
    .description('cancel a running run; its compensations (undo steps) still run')
    .argument('<run>', 'run ID')
    .action(act(async (run: string) => cancelCommand(loadConfig(globals()), run, out)));

  const ipamGc = program.command('ipam-gc').description("ipam-gc's quarantine of released host-local files");
  ipamGc
    .command('restore')
    .description('put the files an ipam-gc run released back, under host-local\'s lock (an address in use again is refused)')
    .argument('<run>', 'the ipam-gc run ID')
    .option('--node <name>', 'only on this node (repeatable; default: the nodes of the run)', collect, [])
    .option('--cluster <name>', "the run's cluster (default: from the run)")
    .option('--reason <text>', 'why (ticket, incident)')
    .option('--actor <name>', 'who asked for it (default: your OS user)')
    .option('--json', 'machine-readable output only', false)
    .action(act(async (run: string, o: Record<string, unknown>) => ipamGcRestoreCommand(loadConfig(globals()), { ...o, run }, out)));

  const schedule = program.command('schedule').description('remediations on a Temporal Schedule (overlap SKIP; creating one approves its runs)');
  schedule
    .command('create')
    .description('run a remediation on a schedule; its runs are approved by this creation, recorded with who created it')
    .argument('<remediation>', `what to run (${SCHEDULABLE.join(', ')})`)
    .requiredOption('--cluster <name>', 'cluster from the config')
    .requiredOption('--every <duration>', 'interval between runs (1m to 168h, e.g. 1h)')
    .option('--name <name>', 'a suffix for the schedule ID, for a second schedule of the same remediation and cluster')
    .option('--node <name>', 'target node (repeatable; default: every node of the cluster at each run)', collect, [])
    .option('--grace <duration>', 'ipam-gc: a host-local file must be at least this old to be released; calico-orphans: a leak waits this long after detection (default 15m; at least 1m on a schedule)')
    .option('--parallel <n>', 'ipam-gc, calico-orphans: work on up to this many nodes at once (default 4)')
    .option('--retention <duration>', "ipam-gc: keep a run's quarantine this long after its last change (default 168h)")
    .option('--window-days <days>', "maintenance window: days, as kured's --reboot-days (e.g. mon-fri or sat,sun; default every day)")
    .option('--window-start <HH:MM>', 'maintenance window: opens at this time of day (default 00:00)')
    .option('--window-end <HH:MM>', 'maintenance window: closes at this time of day; before the start means overnight (default: same as the start, all day)')
    .option('--time-zone <tz>', 'maintenance window: IANA time zone (default UTC)')
    .option('--paused', 'create it paused', false)
    .option('--reason <text>', 'why (ticket, incident); recorded with every run')
    .option('--actor <name>', 'who creates it (default: your OS user)')
    .option('--json', 'machine-readable output only', false)
    .action(act(async (remediation: string, o: Record<string, unknown>) => scheduleCreateCommand(loadConfig(globals()), { ...o, remediation }, out)));
  schedule
    .command('list')
    .description("kubemend's schedules")
    .option('--cluster <name>', 'only this cluster')
    .option('--json', 'machine-readable output', false)
    .action(act(async (o: { cluster?: string; json?: boolean }) => scheduleListCommand(loadConfig(globals()), o, out)));
  schedule
    .command('describe')
    .description('a schedule: its runs, the next ones, those skipped because one was still going')
    .argument('<schedule>', 'schedule ID')
    .option('--json', 'machine-readable output', false)
    .action(act(async (id: string, o: { json?: boolean }) => scheduleDescribeCommand(loadConfig(globals()), id, o, out)));
  for (const [what, text] of [
    ['pause', 'stop starting runs (a run already going finishes)'],
    ['unpause', 'start runs again'],
    ['trigger', 'start a run now (skipped if one is still going)'],
    ['delete', 'delete the schedule (a run already going is not stopped)'],
  ] as const) {
    schedule
      .command(what)
      .description(text)
      .argument('<schedule>', 'schedule ID')
      .option('--note <text>', "kept in the schedule's state and the audit trail")
      .option('--reason <text>', 'why (ticket, incident)')
      .option('--actor <name>', 'who does it (default: your OS user)')
      .action(act(async (id: string, o: Record<string, unknown>) => scheduleChangeCommand(loadConfig(globals()), what, id, o, out)));
  }

  const audit = program.command('audit').description('the audit trail of applied fixes (what changed, where, when, why, by whom)');
  audit
    .command('list')
    .description('records, oldest first (the newest --limit of them)')
    .option('--cluster <name>', 'only this cluster')
    .option('--node <name>', 'only this node')
    .option('--remediation <name>', 'only this remediation')
    .option('--since <when>', 'ISO date/time, or a duration back from now (24h, 7d)')
    .option('--limit <n>', 'at most this many', '200')
    .option('--json', 'JSON array', false)
    .option('--csv', 'CSV with a header row', false)
    .action(act(async (o: Record<string, unknown>) => auditListCommand(loadConfig(globals()), o, out)));
  audit
    .command('show')
    .description("one run's records with before and after state")
    .argument('<run>', 'run ID')
    .option('--json', 'JSON array', false)
    .option('--csv', 'CSV with a header row', false)
    .action(act(async (run: string, o: { json?: boolean; csv?: boolean }) => auditShowCommand(loadConfig(globals()), run, o, out)));
  audit
    .command('verify')
    .description('check the hash chain; exit 1 naming the first record where it breaks')
    .option('--json', 'machine-readable output', false)
    .action(act(async (o: { json?: boolean }) => auditVerifyCommand(loadConfig(globals()), o, out)));

  const breaker = program
    .command('breaker')
    .description("a cluster's circuit breaker: after policy.maxFailures failed runs within policy.failureWindow, new runs are refused until a reset");
  breaker
    .command('status')
    .description('open or closed, the failed runs that count, the last reset (exit 0 either way)')
    .requiredOption('--cluster <name>', 'cluster from the config')
    .option('--json', 'machine-readable output', false)
    .action(act(async (o: Record<string, unknown>) => breakerStatusCommand(loadConfig(globals()), o, out)));
  breaker
    .command('reset')
    .description('let runs start again on a cluster (recorded in the audit trail); earlier failures no longer count')
    .requiredOption('--cluster <name>', 'cluster from the config')
    .option('--actor <name>', 'who resets it (default: your OS user)')
    .option('--reason <text>', 'why (what was found and fixed)')
    .action(act(async (o: Record<string, unknown>) => breakerResetCommand(loadConfig(globals()), o, out)));

  return { program, exitCode: () => exitCode };
}

/** Parses argv, runs the command, and returns the exit code; never throws. */
export async function main(argv: string[], err: NodeJS.WritableStream = process.stderr): Promise<number> {
  const { program, exitCode } = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version exit 0; every other parse problem is bad input.
      return e.exitCode === 0 ? ExitCode.Ok : ExitCode.BadInput;
    }
    if (e instanceof ConfigError) {
      err.write(`kubemend: ${e.message}\n`);
      return ExitCode.BadInput;
    }
    if (e instanceof CliError) {
      err.write(`kubemend: ${e.message}\n`);
      return e.exitCode;
    }
    err.write(`kubemend: ${(e as Error).message ?? String(e)}\n`);
    if (process.env.KUBEMEND_DEBUG) err.write(`${(e as Error).stack}\n`);
    return ExitCode.RemediationFailed;
  }
  return exitCode();
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    () => process.exit(ExitCode.RemediationFailed),
  );
}
