/**
 * default-route's node commands (seed 002), as argv and constant scripts, with their
 * parsers. The only variable parts are arguments ("$1", "$2"), validated here and quoted
 * by lib/shell.ts: never pasted into a script.
 */
import { z } from 'zod';
import { IFNAME } from './patterns';
import { type IpLink, type IpRoute, parseDefaultRoute, parseIpLinkJson } from './node-facts';

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export const ROUTE_ARGV = ['ip', '-j', 'route', 'show', 'default'] as const;
export const LINKS_ARGV = ['ip', '-j', 'link'] as const;

/** Whether the tool is on the node's PATH: `sh -c 'command -v "$1"'`, the tool an argument. */
export function toolCheckArgv(tool: string): string[] {
  if (!/^[a-z][a-z0-9-]{0,30}$/.test(tool)) throw new Error(`not a tool name: ${JSON.stringify(tool)}`);
  return ['sh', '-c', 'command -v "$1"', 'kubemend-tool-check', tool];
}

/** One ping of the gateway from the node, two seconds to answer. */
export function pingArgv(gateway: string): string[] {
  if (!IPV4.test(gateway)) throw new Error(`not an IPv4 gateway: ${JSON.stringify(gateway)}`);
  return ['ping', '-n', '-c', '1', '-W', '2', gateway];
}

/** The round trip of a ping that was answered ("time=0.042 ms"), or null. */
export function parsePingMs(stdout: string): number | null {
  const m = /time[=<]([\d.]+) ?ms/.exec(stdout);
  return m ? Number(m[1]) : null;
}

/** A link as the audit trail keeps it: name, state and whether it is up. */
export interface LinkState {
  ifname: string;
  operstate: string | null;
  up: boolean;
}

export function linkStates(text: string): LinkState[] | { problem: string } {
  const r = parseIpLinkJson(text);
  if (!r.ok) return { problem: r.problem };
  return r.value.map((l: IpLink) => ({ ifname: l.ifname, operstate: l.operstate ?? null, up: (l.flags ?? []).includes('UP') }));
}

export interface DefaultRouteState {
  dev: string | null;
  gateway: string | null;
}

export function defaultRoute(text: string): DefaultRouteState | null | { problem: string } {
  const r = parseDefaultRoute(text);
  if (!r.ok) return { problem: r.problem };
  const route: IpRoute | null = r.value;
  if (!route) return null;
  return { dev: route.dev && IFNAME.test(route.dev) ? route.dev : null, gateway: route.gateway && IPV4.test(route.gateway) ? route.gateway : null };
}

/**
 * A probe sandbox, made and removed the way an SRE checks a node's pod network by hand:
 * `crictl runp` (the runtime makes the sandbox and runs the CNI ADD), `crictl inspectp`
 * (its address), `crictl stopp` (CNI DEL) and `crictl rmp`. $1 is the sandbox config
 * (JSON, from probeSandboxConfig), $2 the run tag. The id of a sandbox this run made is kept
 * in /var/lib/kubemend/probe-<run>.id until it is removed, so a retry after a worker crash
 * removes the earlier attempt's sandbox first. Exit 10: runp failed (its stderr says why);
 * 12: stopp or rmp failed.
 */
export const PROBE_SANDBOX_SCRIPT = [
  'set -u',
  'state="/var/lib/kubemend/probe-$2.id"',
  'mkdir -p /var/lib/kubemend || exit 1',
  'if [ -s "$state" ]; then old=$(cat "$state"); crictl stopp "$old" >/dev/null 2>&1; crictl rmp "$old" >/dev/null 2>&1; rm -f "$state"; fi',
  'f=$(mktemp /tmp/kubemend-probe.XXXXXX) || exit 1',
  'printf "%s" "$1" > "$f"',
  'id=$(crictl runp "$f"); rc=$?',
  'rm -f "$f"',
  '[ $rc -eq 0 ] || exit 10',
  'id=$(printf "%s" "$id" | tr -d "[:space:]")',
  'case "$id" in ""|*[!0-9a-f]*) echo "crictl runp printed no sandbox id" >&2; exit 11 ;; esac',
  'printf "%s\\n" "$id" > "$state"',
  'printf "sandbox %s\\n" "$id"',
  'crictl inspectp --output json "$id"; rc=$?',
  'if crictl stopp "$id" >/dev/null && crictl rmp "$id" >/dev/null; then rm -f "$state"; elif [ $rc -eq 0 ]; then rc=12; fi',
  'exit $rc',
].join('\n');

export const PROBE_RUNP_FAILED = 10;
/** The sandbox was made and read, but stopping or removing it failed (it is retried on the next attempt). */
export const PROBE_CLEANUP_FAILED = 12;

export function probeSandboxArgv(config: string, runTag: string): string[] {
  if (!/^[A-Za-z0-9-]{1,100}$/.test(runTag)) throw new Error(`not a run tag: ${JSON.stringify(runTag)}`);
  JSON.parse(config); // a config that is not JSON never leaves the worker
  return ['sh', '-c', PROBE_SANDBOX_SCRIPT, 'kubemend-probe-sandbox', config, runTag];
}

const Inspect = z.looseObject({
  status: z.looseObject({
    id: z.string(),
    state: z.string().optional(),
    network: z.looseObject({ ip: z.string().optional() }).optional(),
  }),
});

/** The probe's sandbox id and address from its output ("sandbox <id>", then inspectp's JSON). */
export function parseProbeSandbox(stdout: string): { id: string; ip: string | null; state: string | null } | { problem: string } {
  const m = /^sandbox ([0-9a-f]+)\n([\s\S]*)$/.exec(stdout);
  if (!m) return { problem: `unexpected output: ${JSON.stringify(stdout.slice(0, 120))}` };
  let doc: unknown;
  try {
    doc = JSON.parse(m[2]);
  } catch {
    return { problem: `crictl inspectp did not print JSON: ${JSON.stringify(m[2].slice(0, 120))}` };
  }
  const r = Inspect.safeParse(doc);
  if (!r.success) return { problem: `crictl inspectp printed unexpected JSON: ${r.error.issues[0]?.message ?? 'invalid'}` };
  const ip = r.data.status.network?.ip ?? '';
  return { id: m[1], ip: IPV4.test(ip) ? ip : null, state: r.data.status.state ?? null };
}
