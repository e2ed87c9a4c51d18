/**
 * `crictl runp / inspectp / stopp / rmp` on lab nodes. The crictl stand-in on a node cannot
 * run the CNI plugins (they and flannel's delegation live on the host side, cni.ts), so it
 * hands each of these commands to the lab daemon through the node's control directory and
 * prints what the daemon answers. Here is the daemon's side:
 *  - the request channel (`serveCriRequests`): one directory per request, named by a random
 *    id, so concurrent requests on a node never meet;
 *  - crictl itself: its argument parsing, the pod config it loads, its output (`crictl`);
 *  - the runtime's work is cni.ts's (runSandbox, stopSandbox, removeSandbox): containerd's
 *    RunPodSandbox, StopPodSandbox and RemovePodSandbox over the real plugins.
 *
 * Output is crictl v1.34's against containerd 2.x (cri-tools cmd/crictl, cri-client): the
 * sandbox id on stdout; an RPC failure as cri-client's klog error line, then crictl's
 * logrus fatal line ("FATA[0000] ..." on a terminal, `time=... level=fatal msg="..."` when
 * stderr is not one, as over `ssh node cmd`), exit status 1.
 *
 * The request protocol (the node writes, the daemon answers; files under control/cri/):
 *   <id>/argv     the command line after `crictl`, each argument NUL-terminated
 *   <id>/config   runp: the first 64 KiB + 1 byte of the pod config file, if it is a file
 *   <id>/boot     the node's boot id when it asked; <id>/pid its pid; <id>/tty if stderr is a terminal
 * The node makes the directory under a dot name and renames it to <id> when complete. The
 * daemon claims it by renaming it to <id>.run (so it is taken once, and a node that gives up
 * can withdraw an untaken request by renaming it away), then writes stdout, stderr and last
 * `status` (the exit code, renamed into place). Everything read is checked here: sizes,
 * regular files only (never a symlink the node planted), the boot id, the arguments.
 */
import { randomUUID } from 'node:crypto';
import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { CniPluginError, type NetworkEntry, runSandbox, SandboxNameReservedError, SandboxNetworkError, type SandboxRecord, removeSandbox, sandboxConfig, sandboxRecords, stopSandbox } from './cni';
import { LabError } from './lab';

// ---------------------------------------------------------------------------------------
// crictl's command line (the lab's subset), parsed as urfave/cli v2 parses it: flags before
// the first argument, `--` ends them.

export type CrictlCall = { op: 'runp'; file: string } | { op: 'inspectp'; id: string } | { op: 'stopp'; id: string } | { op: 'rmp'; id: string; force: boolean } | { op: 'help'; text: string };

/** A command line the lab does not simulate: exit 1 with its reason. */
export class CrictlNotSimulated extends LabError {}

const HELP: Record<string, [string, string]> = {
  runp: ['Run a new pod', '[command options] pod-config.[json|yaml]'],
  inspectp: ['Display the status of one or more pods', '[command options] POD-ID [POD-ID...]'],
  stopp: ['Stop one or more running pods', 'POD-ID [POD-ID...]'],
  rmp: ['Remove one or more pods', '[command options] POD-ID [POD-ID...]'],
};
const help = (op: string) => ({ op: 'help' as const, text: `NAME:\n   crictl ${op} - ${HELP[op][0]}\n\nUSAGE:\n   crictl ${op} ${HELP[op][1]}\n` });

/** The flags each command takes here: name -> whether it takes a value; aliases map to it. */
const FLAGS: Record<string, { flags: Record<string, boolean>; aliases: Record<string, string> }> = {
  runp: { flags: {}, aliases: {} },
  inspectp: { flags: { output: true, quiet: false }, aliases: { o: 'output', q: 'quiet' } },
  stopp: { flags: {}, aliases: {} },
  rmp: { flags: { force: false }, aliases: { f: 'force' } },
};

export function parseCrictlArgs(argv: readonly string[]): CrictlCall {
  const [op, ...rest] = argv;
  if (!op || !(op in FLAGS)) throw new CrictlNotSimulated(`crictl: the kubemend lab simulates runp, inspectp, stopp and rmp through its daemon (and pods, ps on the node), not ${JSON.stringify(op ?? '')}`);
  const spec = FLAGS[op];
  const values: Record<string, string | true> = {};
  const args: string[] = [];
  for (let k = 0; k < rest.length; k++) {
    const a = rest[k];
    if (args.length || a === '-' || !a.startsWith('-')) {
      args.push(a);
      continue;
    }
    if (a === '--') {
      args.push(...rest.slice(k + 1));
      break;
    }
    const body = a.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const given = eq < 0 ? body : body.slice(0, eq);
    const name = spec.aliases[given] ?? given;
    if (!(name in spec.flags)) throw new CrictlNotSimulated(`crictl: the kubemend lab does not simulate option ${a.slice(0, 64)} of crictl ${op}`);
    if (spec.flags[name]) {
      const value = eq >= 0 ? body.slice(eq + 1) : rest[++k];
      if (value === undefined) throw new CrictlNotSimulated(`crictl: flag needs an argument: ${a}`);
      values[name] = value;
    } else if (eq >= 0 && body.slice(eq + 1) !== 'true') {
      throw new CrictlNotSimulated(`crictl: the kubemend lab does not simulate ${a.slice(0, 64)}`);
    } else values[name] = true;
  }
  if (op === 'runp') return args.length === 1 ? { op, file: args[0] } : help(op);
  if (!args.length) {
    if (op === 'inspectp') throw new CrictlNotSimulated('crictl: the kubemend lab simulates inspectp of one POD-ID (without one crictl inspects every pod matching its filters)');
    return help(op);
  }
  if (args.length > 1) throw new CrictlNotSimulated(`crictl: the kubemend lab simulates ${op} of one POD-ID at a time, got ${args.length}`);
  const id = args[0];
  if (op === 'inspectp') {
    const output = values.output === undefined ? 'json' : String(values.output);
    if (output !== 'json') throw new CrictlNotSimulated(`crictl: the kubemend lab simulates inspectp --output json only, not ${JSON.stringify(output)}`);
    return { op, id };
  }
  if (op === 'rmp') return { op, id, force: values.force === true };
  return { op: 'stopp', id };
}

// ---------------------------------------------------------------------------------------
// The pod config: a CRI PodSandboxConfig in JSON, field names as crictl's decoder takes them
// (the Go structs' json tags: snake_case). Checked field by field; a field real crictl knows
// but the lab does not simulate is refused, and so is an unknown one (real crictl drops
// unknown fields silently; here a misspelt one would hide a mistake).

export interface PodSandboxConfig {
  metadata: { name: string; namespace: string; uid: string; attempt: number };
  hostname?: string;
  log_directory?: string;
  dns_config?: { servers?: string[]; searches?: string[]; options?: string[] };
  port_mappings?: [];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: {
    cgroup_parent?: string;
    sysctls?: Record<string, string>;
    security_context?: { namespace_options?: { network?: number; pid?: number; ipc?: number; target_id?: string } };
  };
}

/** A pod config refused: crictl reports it as `load podSandboxConfig: <message>`. */
export class CriConfigError extends LabError {}

/** The largest pod config read, in bytes. */
export const MAX_CONFIG_BYTES = 64 * 1024;

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** A pod uid: Kubernetes' are UUIDs; crictl examples use any word. It goes into CNI_ARGS and the runtime's record. */
const UID = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$/;

/** Fields of PodSandboxConfig that real crictl takes and the lab does not simulate. */
const NOT_SIMULATED: Record<string, string> = {
  windows: 'Windows sandboxes are not simulated',
  'linux.overhead': 'pod overhead is not simulated',
  'linux.resources': 'pod resources are not simulated',
  'linux.security_context.namespace_options.userns_options': 'user namespaces are not simulated',
};
for (const f of ['selinux_options', 'run_as_user', 'run_as_group', 'readonly_rootfs', 'supplemental_groups', 'supplemental_groups_policy', 'privileged', 'seccomp', 'apparmor', 'seccomp_profile_path']) {
  NOT_SIMULATED[`linux.security_context.${f}`] = 'sandbox security settings are not simulated (the lab runs no pause container)';
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const kind = (v: Json | undefined) => (v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v === 'object' ? 'an object' : typeof v === 'string' ? `a string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)}` : `${typeof v} ${String(v)}`);

/** The object at `path`, its keys checked against `known`; null or absent is undefined, as Go's decoder leaves it. */
function object(v: Json | undefined, path: string, known: readonly string[]): { [k: string]: Json } | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw new CriConfigError(`${path}: want an object, got ${kind(v)}`);
  for (const k of Object.keys(v)) {
    const full = path ? `${path}.${k}` : k;
    if (NOT_SIMULATED[full]) throw new CriConfigError(`${full}: ${NOT_SIMULATED[full]} by the kubemend lab`);
    if (!known.includes(k)) throw new CriConfigError(`unknown field ${JSON.stringify(full.slice(0, 200))} (real crictl drops unknown fields silently; the kubemend lab refuses them; fields are snake_case, e.g. log_directory)`);
  }
  return v;
}

function string(v: Json | undefined, path: string, max: number): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new CriConfigError(`${path}: want a string, got ${kind(v)}`);
  if (v.length > max) throw new CriConfigError(`${path}: longer than ${max} characters`);
  return v;
}

function stringMap(v: Json | undefined, path: string): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw new CriConfigError(`${path}: want an object of strings, got ${kind(v)}`);
  const entries = Object.entries(v);
  if (entries.length > 64) throw new CriConfigError(`${path}: more than 64 entries`);
  return Object.fromEntries(entries.map(([k, x]) => [k, string(x, `${path}[${JSON.stringify(k.slice(0, 64))}]`, 4096) ?? '']));
}

function stringList(v: Json | undefined, path: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw new CriConfigError(`${path}: want an array of strings, got ${kind(v)}`);
  if (v.length > 32) throw new CriConfigError(`${path}: more than 32 entries`);
  return v.map((x, k) => string(x, `${path}[${k}]`, 253) ?? '');
}

function uint(v: Json | undefined, path: string, max: number): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw new CriConfigError(`${path}: want an integer from 0 to ${max}, got ${kind(v)}`);
  return v;
}

/**
 * The pod config file's text, checked; uid is '' where the file has none (crictl then makes
 * one). Throws CriConfigError saying what is wrong.
 */
export function parsePodSandboxConfig(text: string): PodSandboxConfig {
  if (Buffer.byteLength(text) > MAX_CONFIG_BYTES) throw new CriConfigError(`the pod config is larger than ${MAX_CONFIG_BYTES} bytes`);
  let doc: Json;
  try {
    doc = JSON.parse(text) as Json;
  } catch (err) {
    throw new CriConfigError(`not JSON (${(err as Error).message}); the kubemend lab's crictl reads JSON pod configs only`);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new CriConfigError(`a pod config is a JSON object, got ${kind(doc)}`);
  const top = object(doc, '', ['metadata', 'hostname', 'log_directory', 'dns_config', 'port_mappings', 'labels', 'annotations', 'linux'])!;
  const meta = object(top.metadata, 'metadata', ['name', 'namespace', 'uid', 'attempt']);
  if (!meta) throw new CriConfigError('metadata is not set');
  const name = string(meta.name, 'metadata.name', 253) ?? '';
  const namespace = string(meta.namespace, 'metadata.namespace', 63) ?? '';
  if (!name || !namespace) throw new CriConfigError(`name or namespace is not in metadata ${JSON.stringify(meta).slice(0, 300)}`);
  if (!DNS1123_SUBDOMAIN.test(name)) throw new CriConfigError(`metadata.name ${JSON.stringify(name)}: the kubemend lab takes a DNS-1123 subdomain (lower-case letters, digits, '-', '.'), as the kubelet does`);
  if (!DNS1123_LABEL.test(namespace)) throw new CriConfigError(`metadata.namespace ${JSON.stringify(namespace)}: the kubemend lab takes a DNS-1123 label (lower-case letters, digits, '-'), as the kubelet does`);
  const uid = string(meta.uid, 'metadata.uid', 128) ?? '';
  if (uid && !UID.test(uid)) throw new CriConfigError(`metadata.uid ${JSON.stringify(uid)}: the kubemend lab takes letters, digits, '.', '_' and '-' (a UUID, as the kubelet's)`);
  const config: PodSandboxConfig = { metadata: { name, namespace, uid, attempt: uint(meta.attempt, 'metadata.attempt', 4294967295) ?? 0 } };

  const hostname = string(top.hostname, 'hostname', 253);
  if (hostname !== undefined) config.hostname = hostname;
  const logDirectory = string(top.log_directory, 'log_directory', 4096);
  if (logDirectory !== undefined) config.log_directory = logDirectory;
  const dns = object(top.dns_config, 'dns_config', ['servers', 'searches', 'options']);
  if (dns) {
    config.dns_config = {};
    for (const k of ['servers', 'searches', 'options'] as const) {
      const list = stringList(dns[k], `dns_config.${k}`);
      if (list) config.dns_config[k] = list;
    }
  }
  if (top.port_mappings !== undefined && top.port_mappings !== null) {
    if (!Array.isArray(top.port_mappings)) throw new CriConfigError(`port_mappings: want an array, got ${kind(top.port_mappings)}`);
    if (top.port_mappings.length) throw new CriConfigError('port_mappings: host ports are not simulated by the kubemend lab (its portmap plugin is not built)');
    config.port_mappings = [];
  }
  for (const k of ['labels', 'annotations'] as const) {
    const map = stringMap(top[k], k);
    if (map) config[k] = map;
  }
  const linux = object(top.linux, 'linux', ['cgroup_parent', 'security_context', 'sysctls']);
  if (linux) {
    config.linux = {};
    const cgroupParent = string(linux.cgroup_parent, 'linux.cgroup_parent', 4096);
    if (cgroupParent !== undefined) config.linux.cgroup_parent = cgroupParent;
    const sysctls = stringMap(linux.sysctls, 'linux.sysctls');
    if (sysctls) config.linux.sysctls = sysctls;
    const sc = object(linux.security_context, 'linux.security_context', ['namespace_options']);
    if (sc) {
      config.linux.security_context = {};
      const ns = object(sc.namespace_options, 'linux.security_context.namespace_options', ['network', 'pid', 'ipc', 'target_id']);
      if (ns) {
        const opts: NonNullable<NonNullable<PodSandboxConfig['linux']>['security_context']>['namespace_options'] = {};
        const network = uint(ns.network, 'linux.security_context.namespace_options.network', 3);
        if (network !== undefined && network !== 0) throw new CriConfigError(`linux.security_context.namespace_options.network: only POD (0) is simulated by the kubemend lab: a sandbox in the node's network (NODE, 2) gets no CNI ADD, got ${network}`);
        if (network !== undefined) opts.network = network;
        for (const k of ['pid', 'ipc'] as const) {
          const v = uint(ns[k], `linux.security_context.namespace_options.${k}`, 3);
          if (v !== undefined) opts[k] = v;
        }
        const target = string(ns.target_id, 'linux.security_context.namespace_options.target_id', 64);
        if (target !== undefined) opts.target_id = target;
        config.linux.security_context.namespace_options = opts;
      }
    }
  }
  return config;
}

// ---------------------------------------------------------------------------------------
// crictl's output.

/** Go's strconv.Quote, as klog and logrus (%q) quote values. */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else if (c >= 0x80 && c <= 0x9f) out += `\\u00${c.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

const pad = (n: number, w = 2) => String(n).padStart(w, '0');

/** Go's time.Format with RFC3339 (or RFC3339Nano: trailing zeros of the fraction dropped), local time. */
export function rfc3339(ms: number, nano = false): string {
  const d = new Date(ms);
  const off = -d.getTimezoneOffset();
  const frac = nano && d.getMilliseconds() ? `.${pad(d.getMilliseconds(), 3).replace(/0+$/, '')}` : '';
  const zone = off === 0 ? 'Z' : `${off > 0 ? '+' : '-'}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}${frac}${zone}`;
}

/**
 * cri-client's error line (klog's text format, through crictl's klog.Background() logger; the
 * call site is cri-client's internal/log.go:32): `E0114 09:50:18.822738 3887719 log.go:32] "msg" err="..." key="..."`.
 */
export function klogError(ms: number, pid: number, msg: string, err: string, kv: Record<string, string> = {}): string {
  const d = new Date(ms);
  const head = `E${pad(d.getMonth() + 1)}${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds() * 1000, 6)} ${String(pid).padStart(7)} log.go:32]`;
  return `${head} ${goQuote(msg)} err=${goQuote(err)}${Object.entries(kv).map(([k, v]) => ` ${k}=${goQuote(v)}`).join('')}\n`;
}

/**
 * crictl's last word, logrus.Fatal(err): coloured `FATA[0000] msg` on a terminal (seconds
 * since crictl started, the message padded to 44), else logrus's text format.
 */
export function fatalLine(ms: number, elapsedMs: number, tty: boolean, msg: string): string {
  if (tty) return `\x1b[31mFATA\x1b[0m[${pad(Math.floor(elapsedMs / 1000), 4)}] ${msg.padEnd(44)} \n`;
  return `time=${goQuote(rfc3339(ms))} level=fatal msg=${goQuote(msg)}\n`;
}

/** Go's encoding/json of a map: keys sorted, '<', '>', '&', U+2028/9 escaped; json.Indent with two spaces. */
export function goJson(v: unknown, indent = ''): string {
  const inner = `${indent}  `;
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return JSON.stringify(v).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (typeof v === 'number' || typeof v === 'boolean') return JSON.stringify(v);
  if (Array.isArray(v)) return v.length ? `[\n${v.map((x) => `${inner}${goJson(x, inner)}`).join(',\n')}\n${indent}]` : '[]';
  const keys = Object.keys(v as object).sort();
  if (!keys.length) return '{}';
  return `{\n${keys.map((k) => `${inner}${goJson(k)}: ${goJson((v as Record<string, unknown>)[k], inner)}`).join(',\n')}\n${indent}}`;
}

/** CRI's NamespaceMode names (protojson writes enums by name). */
const NAMESPACE_MODES = ['POD', 'CONTAINER', 'NODE', 'TARGET'];

/** The config as containerd's sandbox info carries it: Go's omitempty drops zero scalars and empty lists and maps. */
function omitEmpty(config: PodSandboxConfig): unknown {
  const MAPS = new Set(['labels', 'annotations', 'sysctls']);
  const walk = (v: unknown, key = ''): unknown => {
    if (Array.isArray(v)) return v.length ? v : undefined;
    if (v && typeof v === 'object') {
      const entries = Object.entries(v).map(([k, x]) => [k, walk(x, k)] as const).filter(([, x]) => x !== undefined);
      return MAPS.has(key) && !entries.length ? undefined : Object.fromEntries(entries);
    }
    return v === '' || v === 0 || v === false ? undefined : v;
  };
  return walk(config);
}

/**
 * The part of the pause container's OCI runtime spec that containerd's sandbox info carries
 * and the lab simulates: linux.namespaces in containerd's default order (pid, ipc, uts, mount,
 * network), the network entry with the sandbox's netns path (a tool maps a sandbox to its
 * netns with it). The rest of the spec (process, root, mounts, cgroups) is not simulated.
 */
export function sandboxRuntimeSpec(r: Pick<SandboxRecord, 'netns'>): { linux: { namespaces: Array<{ type: string; path?: string }> } } {
  return { linux: { namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network', path: r.netns }] } };
}

/**
 * `crictl inspectp -o json`: crictl marshals {"info", "status"} through Go maps, so every
 * object's keys come out sorted. status is the CRI PodSandboxStatus as protojson writes it
 * with defaults; info is containerd's sandbox info, of which the lab has the config, whether
 * the netns is closed, and the runtime spec's namespaces (sandboxRuntimeSpec).
 */
export function inspectpJson(r: SandboxRecord, config: PodSandboxConfig | undefined): string {
  const ns = config?.linux?.security_context?.namespace_options;
  const status = {
    annotations: config?.annotations ?? {},
    createdAt: rfc3339(r.createdAtMs ?? 0, true),
    id: r.id,
    labels: config?.labels ?? {},
    linux: { namespaces: ns ? { options: { ipc: NAMESPACE_MODES[ns.ipc ?? 0], network: NAMESPACE_MODES[ns.network ?? 0], pid: NAMESPACE_MODES[ns.pid ?? 0], targetId: ns.target_id ?? '' } } : {} },
    metadata: { attempt: r.attempt, name: r.pod.name, namespace: r.pod.namespace, uid: r.uid },
    network: { additionalIps: [], ip: r.state === 'SANDBOX_READY' ? r.ip : '' },
    runtimeHandler: '',
    state: r.state,
  };
  const info: Record<string, unknown> = { netNamespaceClosed: r.state !== 'SANDBOX_READY', runtimeSpec: sandboxRuntimeSpec(r) };
  if (config) info.config = omitEmpty(config);
  return `${goJson({ info, status })}\n`;
}

/** containerd's sandbox store lookup: the full id or a unique prefix of one. */
export function resolveSandbox(records: readonly SandboxRecord[], id: string): SandboxRecord | 'not found' | 'ambiguous' {
  const exact = records.find((r) => r.id === id);
  if (exact) return exact;
  const matches = id ? records.filter((r) => r.id.startsWith(id)) : [];
  return matches.length === 1 ? matches[0] : matches.length ? 'ambiguous' : 'not found';
}

/** libcni's words for a plugin's failure: `plugin type="flannel" failed (add): <msg>[; <details>]`. */
export function cniFailure(err: Error, verb: 'add' | 'delete'): string {
  if (!(err instanceof CniPluginError)) return err.message;
  const e: NetworkEntry = err.entry;
  return `plugin type=${goQuote(e.type)}${e.name ? ` name=${goQuote(e.name)}` : ''} failed (${verb}): ${err.msg}${err.details ? `; ${err.details}` : ''}`;
}

// ---------------------------------------------------------------------------------------
// The commands.

export interface CriRequest {
  argv: string[];
  /** The pod config file's bytes (runp), if the node found a file there. */
  config?: Buffer;
  tty: boolean;
  pid: number;
}

export interface CriResponse {
  stdout: string;
  stderr: string;
  code: number;
}

/** Runs one crictl command line for `node`; `startMs` is when it was asked (logrus counts from there). */
export async function crictl(dir: string, node: string, req: CriRequest, startMs = Date.now()): Promise<CriResponse> {
  const res: CriResponse = { stdout: '', stderr: '', code: 0 };
  const fatal = (msg: string): CriResponse => {
    res.stderr += fatalLine(Date.now(), Date.now() - startMs, req.tty, msg);
    res.code = 1;
    return res;
  };
  /** A failed RPC: cri-client's error line (if it logs that RPC), then crictl's. */
  const rpcFailed = (rpc: string | undefined, code: 'Unknown' | 'NotFound', desc: string, context: string, kv: Record<string, string> = {}): CriResponse => {
    const err = `rpc error: code = ${code} desc = ${desc}`;
    if (rpc) res.stderr += klogError(Date.now(), req.pid, `${rpc} from runtime service failed`, err, kv);
    return fatal(`${context}: ${err}`);
  };

  let call: CrictlCall;
  try {
    call = parseCrictlArgs(req.argv);
  } catch (err) {
    if (!(err instanceof CrictlNotSimulated)) throw err;
    return { stdout: '', stderr: `${err.message}\n`, code: 1 };
  }
  if (call.op === 'help') return { stdout: call.text, stderr: '', code: 0 };

  if (call.op === 'runp') {
    if (req.config === undefined) return fatal(`load podSandboxConfig: config at ${call.file} not found`);
    let config: PodSandboxConfig;
    try {
      if (req.config.length > MAX_CONFIG_BYTES) throw new CriConfigError(`the pod config is larger than ${MAX_CONFIG_BYTES} bytes`);
      config = parsePodSandboxConfig(req.config.toString('utf8'));
    } catch (err) {
      if (!(err instanceof CriConfigError)) throw err;
      return fatal(`load podSandboxConfig: ${err.message}`);
    }
    if (!config.metadata.uid) config.metadata.uid = randomUUID(); // crictl's own, before it asks the runtime
    const { name, namespace, uid, attempt } = config.metadata;
    try {
      const r = await runSandbox(dir, node, { pod: { name, namespace }, uid, attempt, config });
      res.stdout = `${r.id}\n`;
      return res;
    } catch (err) {
      if (err instanceof SandboxNameReservedError) return rpcFailed('RunPodSandbox', 'Unknown', err.message, 'run pod sandbox');
      if (err instanceof SandboxNetworkError) return rpcFailed('RunPodSandbox', 'Unknown', `failed to setup network for sandbox ${goQuote(err.sandboxId)}: ${cniFailure(err.failure, 'add')}`, 'run pod sandbox');
      throw err;
    }
  }

  const found = resolveSandbox(await sandboxRecords(dir, node), call.id);
  const lookupFailure = found === 'ambiguous' ? `Multiple IDs found with provided prefix: ${call.id}` : 'not found';
  const stop = async (r: SandboxRecord, context: string): Promise<CriResponse | undefined> => {
    try {
      await stopSandbox(dir, node, r.id);
    } catch (err) {
      if (!(err instanceof SandboxNetworkError)) throw err;
      return rpcFailed('StopPodSandbox', 'Unknown', `failed to destroy network for sandbox ${goQuote(r.id)}: ${cniFailure(err.failure, 'delete')}`, context, { podSandboxID: call.id });
    }
    res.stdout += `Stopped sandbox ${call.id}\n`;
    return undefined;
  };

  switch (call.op) {
    case 'inspectp':
      if (typeof found === 'string') return rpcFailed(undefined, found === 'ambiguous' ? 'Unknown' : 'NotFound', `an error occurred when try to find sandbox: ${lookupFailure}`, 'get the status of pod sandboxes: get pod sandbox status');
      res.stdout = inspectpJson(found, (await sandboxConfig(dir, node, found.id)) as PodSandboxConfig | undefined);
      return res;
    case 'stopp':
      // StopPodSandbox of an unknown sandbox succeeds: the RPC is idempotent.
      if (found === 'not found') {
        res.stdout = `Stopped sandbox ${call.id}\n`;
        return res;
      }
      if (found === 'ambiguous') return rpcFailed('StopPodSandbox', 'Unknown', `an error occurred when try to find sandbox ${goQuote(call.id)}: ${lookupFailure}`, `stopping the pod sandbox ${goQuote(call.id)}`, { podSandboxID: call.id });
      return (await stop(found, `stopping the pod sandbox ${goQuote(call.id)}`)) ?? res;
    case 'rmp': {
      // crictl asks for the status first, stops a ready sandbox only when forced, then removes.
      if (typeof found === 'string') return rpcFailed(undefined, found === 'ambiguous' ? 'Unknown' : 'NotFound', `an error occurred when try to find sandbox: ${lookupFailure}`, `getting sandbox status of pod ${goQuote(call.id)}`);
      if (found.state === 'SANDBOX_READY') {
        if (!call.force) return fatal(`pod sandbox ${goQuote(call.id)} is running, please stop it first`);
        const failed = await stop(found, `stopping the pod sandbox ${goQuote(call.id)} failed`);
        if (failed) return failed;
      }
      await removeSandbox(dir, node, found.id);
      res.stdout += `Removed sandbox ${call.id}\n`;
      return res;
    }
  }
}

// ---------------------------------------------------------------------------------------
// The request channel, the daemon's side.

/** Under a node's control directory (the node's /run/kmlab). */
export const CRI_REQUEST_DIR = 'cri';
const REQUEST = /^[0-9a-f]{32}$/;
const CLAIMED = /^([0-9a-f]{32})\.run$/;
/** Requests carried out at once, over all nodes: each is a few execs into a node. */
const MAX_IN_FLIGHT = 4;
/** An answered request nobody collected (its crictl was killed) is swept after this long. */
const ANSWER_KEPT_MS = 60 * 60_000;

let inFlight = 0;

/**
 * Takes the node's new crictl requests and carries them out (not awaited: the daemon's loop
 * goes on). Synchronous and cheap when there are none. Called from the daemon's loop.
 */
export function serveCriRequests(dir: string, node: string): void {
  const base = join(dir, 'nodes', node, 'control', CRI_REQUEST_DIR);
  let entries: string[];
  try {
    if (!lstatSync(base).isDirectory()) return;
    entries = readdirSync(base);
  } catch {
    return; // no request was ever made on this node
  }
  for (const e of entries) {
    if (REQUEST.test(e)) {
      if (inFlight >= MAX_IN_FLIGHT) continue; // taken on a later pass
      const claimed = join(base, `${e}.run`);
      try {
        renameSync(join(base, e), claimed);
      } catch {
        continue; // withdrawn by its crictl meanwhile
      }
      inFlight++;
      void answer(dir, node, e, claimed)
        .catch((err) => console.error(`lab daemon: crictl request ${e} on ${node}: ${(err as Error).stack}`)) // never a rejection that would end the daemon
        .finally(() => inFlight--);
    } else if (CLAIMED.test(e)) sweep(join(base, e));
  }
}

async function answer(dir: string, node: string, id: string, path: string): Promise<void> {
  const t0 = Date.now();
  let res: CriResponse;
  try {
    if (!lstatSync(path).isDirectory()) {
      rmSync(path, { force: true }); // not a request the stand-in made: a symlink goes, nothing behind it
      return;
    }
    res = await crictl(dir, node, readRequest(dir, node, path), t0);
  } catch (err) {
    res = { stdout: '', stderr: `crictl: kubemend lab daemon: ${(err as Error).message}\n`, code: 1 };
  }
  try {
    writeResponse(path, res);
  } catch (err) {
    console.error(`lab daemon: crictl request ${id} on ${node}: cannot answer: ${(err as Error).message}`);
  }
}

/** A file of the request: a regular file (never followed through a symlink), at most `max` bytes. */
function readRequestFile(path: string, max: number): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new LabError(`request file ${path.split('/').pop()}: ${(err as NodeJS.ErrnoException).code === 'ELOOP' ? 'a symlink' : (err as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new LabError(`request file ${path.split('/').pop()} is not a regular file`);
    if (st.size > max) throw new LabError(`request file ${path.split('/').pop()} is larger than ${max} bytes`);
    const buf = Buffer.alloc(st.size);
    let n = 0;
    while (n < buf.length) {
      const k = readSync(fd, buf, n, buf.length - n, n);
      if (k === 0) break;
      n += k;
    }
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** The request, checked: its arguments, the boot it came from, its config's size. */
export function readRequest(dir: string, node: string, path: string): CriRequest {
  const argvBytes = readRequestFile(join(path, 'argv'), 16 * 1024);
  if (argvBytes === undefined) throw new LabError('the request has no argv');
  const text = argvBytes.toString('utf8');
  if (!text.endsWith('\0')) throw new LabError('the request argv is not NUL-terminated');
  const argv = text.slice(0, -1).split('\0');
  if (argv.length > 32) throw new LabError(`the request has ${argv.length} arguments; crictl here takes at most 32`);
  // A request from before the node's last reboot is not carried out: whoever asked is gone.
  const boot = readRequestFile(join(path, 'boot'), 64)?.toString('utf8').trim();
  const current = readFileSync(join(dir, 'nodes', node, 'boot_id'), 'utf8').trim();
  if (boot !== current) throw new LabError(`the request is from ${boot ? `boot ${JSON.stringify(boot.slice(0, 40))}` : 'an unknown boot'}, the node is at boot ${current}; not carried out`);
  const pidText = readRequestFile(join(path, 'pid'), 16)?.toString('utf8').trim() ?? '';
  const config = readRequestFile(join(path, 'config'), MAX_CONFIG_BYTES + 1);
  return { argv, config, tty: readRequestFile(join(path, 'tty'), 0) !== undefined, pid: /^\d{1,7}$/.test(pidText) ? Number(pidText) : 0 };
}

function writeNew(path: string, text: string): void {
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  try {
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
}

/** stdout and stderr, then the exit status renamed into place: the node reads nothing half-written. */
function writeResponse(path: string, res: CriResponse): void {
  if (!lstatSync(path).isDirectory()) throw new LabError('the request directory was replaced');
  writeNew(join(path, 'stdout'), res.stdout);
  writeNew(join(path, 'stderr'), res.stderr);
  writeNew(join(path, 'status.tmp'), `${res.code}\n`);
  renameSync(join(path, 'status.tmp'), join(path, 'status'));
}

function sweep(path: string): void {
  try {
    if (Date.now() - lstatSync(join(path, 'status')).mtimeMs > ANSWER_KEPT_MS) rmSync(path, { recursive: true, force: true });
  } catch {
    // not answered yet, or collected meanwhile
  }
}
