/**
 * `kubemend diagnose`'s read of a node: everything the five seeds' detectors need, in one
 * SSH exec. The script is the probe's (lib/probe-script.ts: same sections, same markers)
 * plus more read-only sections; the only variable part, the random marker, is "$1".
 * Nothing here writes: cat, ip -j, stat, grep, `weave status`, `crictl pods|ps`.
 *
 * Network-config files can hold Wi-Fi passwords and keys: lines naming a password, psk,
 * secret or private key are dropped on the node, and the parser keeps only interface names
 * and whether they carry the default route, so no secret reaches the worker's results.
 */
import { type IpLink, type IpRoute, isMac } from './node-facts';
import { parseSections, PROBE_SCRIPT, PROBE_SECTIONS, probeFacts, sectionScriptArgv, type SectionOutput } from './probe-script';
import { z } from 'zod';

/** Sections beyond the probe's, and what each runs (for problems and the README). */
export const DIAGNOSE_SECTIONS = {
  ...PROBE_SECTIONS,
  now: 'date +%s',
  weaveMac: '/sys/class/net/weave/address',
  weaveConnections: 'weave status connections',
  addrs: 'ip -j addr',
  routes: 'ip -j route',
  subnetEnv: '/run/flannel/subnet.env',
  cniConf: '/etc/cni/net.d/*',
  hostLocal: '/var/lib/cni/networks/*/*',
  hostLocalMtime: 'stat /var/lib/cni/networks/*/*',
  sandboxes: 'crictl pods -q',
  containers: 'crictl ps -a -q',
  netplan: '/etc/netplan/*.yaml',
  ifupdown: '/etc/network/interfaces',
  networkManager: '/etc/NetworkManager/system-connections/*',
  kubeletArgs: '/etc/default/kubelet, /var/lib/kubelet/kubeadm-flags.env',
  apiserverAdvertise: '/etc/kubernetes/manifests/kube-apiserver.yaml',
  kubeletConf: '/etc/kubernetes/kubelet.conf',
} as const;
export type DiagnoseSection = keyof typeof DIAGNOSE_SECTIONS;

const SECRET_LINES = 'password|psk|secret|private';

export const DIAGNOSE_SCRIPT = [
  PROBE_SCRIPT,
  // Files of a directory, each behind a "<marker> file <path>" line, secret-looking lines dropped.
  `dump() { for f in "$@"; do [ -f "$f" ] || continue; printf "%s file %s\\n" "$m" "$f"; grep -v -i -E '${SECRET_LINES}' -- "$f"; printf "\\n"; done; return 0; }`,
  // host-local's files: path, then the first line (the container id), read by the shell itself.
  'hl() { for f in /var/lib/cni/networks/*/*; do [ -f "$f" ] || continue; first=; IFS= read -r first < "$f" || true; printf "%s\\t%s\\n" "$f" "$first"; done; return 0; }',
  'hlm() { set -- /var/lib/cni/networks/*/*; [ -e "$1" ] || return 0; stat -c "%Y %n" -- "$@"; }',
  'section now date +%s',
  'section weaveMac cat -- /sys/class/net/weave/address',
  'section weaveConnections weave status connections',
  'section addrs ip -j addr',
  'section routes ip -j route',
  'section subnetEnv cat -- /run/flannel/subnet.env',
  'section cniConf dump /etc/cni/net.d/*',
  'section hostLocal hl',
  'section hostLocalMtime hlm',
  'section sandboxes crictl pods -q',
  'section containers crictl ps -a -q',
  'section netplan dump /etc/netplan/*.yaml /etc/netplan/*.yml',
  'section ifupdown dump /etc/network/interfaces /etc/network/interfaces.d/*',
  'section networkManager dump /etc/NetworkManager/system-connections/*',
  'section kubeletArgs dump /etc/default/kubelet /var/lib/kubelet/kubeadm-flags.env',
  "section apiserverAdvertise grep -h -o -e '--advertise-address=[^ \"]*' -- /etc/kubernetes/manifests/kube-apiserver.yaml",
  "section kubeletConf grep -h -E '^[[:space:]]*server:' -- /etc/kubernetes/kubelet.conf",
].join('\n');

export function diagnoseArgv(marker: string): string[] {
  return sectionScriptArgv(DIAGNOSE_SCRIPT, 'kubemend-diagnose', marker);
}

export type Section = SectionOutput;
export type DiagnoseSections = Partial<Record<DiagnoseSection, Section>>;

/** Splits the script's output into its sections; one that never ended is absent. */
export function parseDiagnoseOutput(stdout: string, marker: string): DiagnoseSections {
  return parseSections(stdout, marker, DIAGNOSE_SECTIONS);
}

/** An interface's IPv4 addresses as `ip -j addr` gives them, as "a.b.c.d/len". */
export interface AddrFacts {
  ifname: string;
  operstate: string | null;
  up: boolean;
  ipv4: string[];
}

export interface CniConfigFacts {
  file: string;
  /** The network name ("cbr0" for flannel's), or null if the file is not JSON. */
  network: string | null;
  /** Plugin types in order ("flannel", "portmap"; "calico"; "weave-net"). */
  types: string[];
}

export interface HostLocalFile {
  network: string;
  /** The address the file reserves (its name). */
  ip: string;
  /** The first line: the container (sandbox) id the address was given to. */
  containerId: string;
  /** Modification time, seconds since the epoch on the node's clock; null if unknown. */
  mtime: number | null;
}

export interface NetConfigFacts {
  file: string;
  kind: 'netplan' | 'ifupdown' | 'networkmanager';
  /** Interfaces the file configures. */
  interfaces: string[];
  /** Of those, the ones it gives the default route (DHCP, a gateway, a default route). */
  defaultRouteInterfaces: string[];
  /**
   * Why the file may leave an interface down at boot: netplan's `activation-mode: manual|off`,
   * an ifupdown stanza with no `auto`/`allow-hotplug` line, NetworkManager's
   * `autoconnect=false`. Interface -> the setting, as written.
   */
  notAtBoot?: Record<string, string>;
  /** Wi-Fi interfaces (netplan `wifis:`, NetworkManager type=wifi): up only once the radio associates. */
  wifi?: string[];
  /** netplan `optional: true`: boot does not wait for these links. */
  optional?: string[];
}

export interface DiagnoseNodeFacts {
  name: string;
  /** The node's clock (seconds since the epoch) when it was read. */
  now: number | null;
  machineId: string | null;
  dbusMachineId: string | null;
  bootId: string | null;
  weaveMac: string | null;
  /** Lines of `weave status connections` refused for a peer-name collision; null without weave. */
  weaveCollisions: string[] | null;
  links: IpLink[];
  addrs: AddrFacts[];
  defaultRoute: IpRoute | null;
  routes: IpRoute[];
  /** /run/flannel/subnet.env as key=value; null when it does not exist. */
  subnetEnv: Record<string, string> | null;
  cniConfigs: CniConfigFacts[];
  hostLocal: HostLocalFile[];
  /** Live sandbox and container ids (`crictl pods -q`, `crictl ps -a -q`); null if crictl failed. */
  sandboxes: string[] | null;
  containers: string[] | null;
  netConfig: NetConfigFacts[];
  /** KUBELET_EXTRA_ARGS / KUBELET_KUBEADM_ARGS lines as written. */
  kubeletArgs: string[];
  /** --advertise-address of the kube-apiserver manifest on this node, if it has one. */
  apiserverAdvertise: string | null;
  /** The API server the kubelet talks to (kubelet.conf); null when the node has no kubelet.conf (not joined). */
  kubeletServer: string | null;
  /** Sections that could not be read or parsed, in words. */
  problems: string[];
}

const AddrJson = z.array(
  z.looseObject({
    ifname: z.string(),
    operstate: z.string().optional(),
    flags: z.array(z.string()).optional(),
    addr_info: z.array(z.looseObject({ family: z.string().optional(), local: z.string().optional(), prefixlen: z.number().optional() })).optional(),
  }),
);
const RoutesJson = z.array(z.looseObject({ dst: z.string(), gateway: z.string().optional(), dev: z.string().optional() }));

const PASSWORDY = new RegExp(SECRET_LINES, 'i');

/** Files of a `dump` section: path and text. */
export function dumpedFiles(text: string, marker: string): Array<{ file: string; text: string }> {
  const out: Array<{ file: string; text: string }> = [];
  const head = `${marker} file `;
  for (const line of text.split('\n')) {
    if (line.startsWith(head)) out.push({ file: line.slice(head.length), text: '' });
    else if (out.length) out[out.length - 1].text += `${line}\n`;
  }
  // dump() prints a newline after each file; the split's last element adds one more.
  return out.map((f) => ({ file: f.file, text: f.text.replace(/\n\n$/, '\n').replace(/\n$/, '') }));
}

function json(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export function parseCniConfig(file: string, text: string): CniConfigFacts {
  const doc = json(text) as { name?: unknown; type?: unknown; plugins?: Array<{ type?: unknown }> } | undefined;
  if (!doc || typeof doc !== 'object') return { file, network: null, types: [] };
  const types = Array.isArray(doc.plugins) ? doc.plugins.map((p) => String(p?.type ?? '')) : typeof doc.type === 'string' ? [doc.type] : [];
  return { file, network: typeof doc.name === 'string' ? doc.name : null, types };
}

/**
 * Which interfaces a netplan file configures and gives the default route. A line-based
 * reading of netplan's YAML: interface keys under ethernets/wifis/bonds/bridges/vlans, and
 * `dhcp4: true`, `gateway4:`, or a route `to: default` / `to: 0.0.0.0/0` inside one.
 */
export function parseNetplan(file: string, text: string): NetConfigFacts {
  const interfaces: string[] = [];
  const withDefault = new Set<string>();
  let section: number | null = null; // indent of ethernets:/wifis:...
  let ifIndent: number | null = null;
  let current: string | null = null;
  let sectionName = '';
  const notAtBoot: Record<string, string> = {};
  const wifi: string[] = [];
  const optional: string[] = [];
  for (const raw of text.split('\n')) {
    if (/^\s*(#|$)/.test(raw)) continue;
    const indent = raw.length - raw.trimStart().length;
    const line = raw.trim();
    const sec = /^(ethernets|wifis|bonds|bridges|vlans):\s*$/.exec(line);
    if (sec) {
      section = indent;
      sectionName = sec[1];
      ifIndent = null;
      current = null;
      continue;
    }
    if (section !== null && indent <= section) {
      section = null;
      current = null;
    }
    if (section === null) continue;
    const key = /^([A-Za-z0-9_.-]+):\s*$/.exec(line) ?? /^"([^"]+)":\s*$/.exec(line);
    if (key && (ifIndent === null || indent === ifIndent)) {
      ifIndent = indent;
      current = key[1];
      interfaces.push(current);
      if (sectionName === 'wifis') wifi.push(current);
      continue;
    }
    if (!current) continue;
    if (/^dhcp4:\s*(true|yes|on)\s*$/i.test(line) || /^gateway4:/.test(line) || /^-?\s*to:\s*("?default"?|"?0\.0\.0\.0\/0"?)\s*$/.test(line)) withDefault.add(current);
    const mode = /^activation-mode:\s*"?(manual|off)"?\s*$/.exec(line);
    if (mode) notAtBoot[current] = `activation-mode: ${mode[1]}`;
    if (/^optional:\s*(true|yes|on)\s*$/i.test(line)) optional.push(current);
  }
  return { file, kind: 'netplan', interfaces, defaultRouteInterfaces: interfaces.filter((i) => withDefault.has(i)), notAtBoot, wifi, optional };
}

/** ifupdown: `iface X inet dhcp`, or a `gateway` line in X's stanza, gives X the default route. */
export function parseIfupdown(file: string, text: string): NetConfigFacts {
  const interfaces: string[] = [];
  const withDefault = new Set<string>();
  let current: string | null = null;
  const atBoot = new Set<string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const auto = /^(auto|allow-auto|allow-hotplug)\s+(.+)$/.exec(line);
    if (auto) for (const i of auto[2].split(/\s+/)) atBoot.add(i);
    const iface = /^iface\s+(\S+)\s+inet\s+(\S+)/.exec(line);
    if (iface) {
      current = iface[1];
      if (current !== 'lo' && !interfaces.includes(current)) interfaces.push(current);
      if (iface[2] === 'dhcp' && current !== 'lo') withDefault.add(current);
      continue;
    }
    if (/^(auto|allow-|source|mapping|iface)/.test(line)) current = /^iface/.test(line) ? current : null;
    if (current && /^gateway\s+\S+/.test(line)) withDefault.add(current);
  }
  const notAtBoot = Object.fromEntries(interfaces.filter((i) => !atBoot.has(i)).map((i) => [i, `no "auto ${i}" or "allow-hotplug ${i}" line`]));
  return { file, kind: 'ifupdown', interfaces, defaultRouteInterfaces: interfaces.filter((i) => withDefault.has(i)), notAtBoot };
}

/** A NetworkManager keyfile: interface-name=, and [ipv4] method=auto|manual without never-default=true. */
export function parseNmKeyfile(file: string, text: string): NetConfigFacts {
  let group = '';
  let ifname: string | null = null;
  let method: string | null = null;
  let neverDefault = false;
  let autoconnect = true;
  let type = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const g = /^\[(.+)\]$/.exec(line);
    if (g) {
      group = g[1];
      continue;
    }
    const kv = /^([^=]+)=(.*)$/.exec(line);
    if (!kv) continue;
    if (group === 'connection' && kv[1] === 'interface-name') ifname = kv[2];
    if (group === 'ipv4' && kv[1] === 'method') method = kv[2];
    if (group === 'ipv4' && kv[1] === 'never-default') neverDefault = kv[2] === 'true';
    if (group === 'connection' && kv[1] === 'autoconnect') autoconnect = !/^(false|no|0)$/i.test(kv[2].trim());
    if (group === 'connection' && kv[1] === 'type') type = kv[2].trim();
  }
  const interfaces = ifname ? [ifname] : [];
  return {
    file,
    kind: 'networkmanager',
    interfaces,
    defaultRouteInterfaces: ifname && (method === 'auto' || method === 'manual') && !neverDefault ? [ifname] : [],
    notAtBoot: ifname && !autoconnect ? { [ifname]: 'autoconnect=false' } : {},
    wifi: ifname && (type === 'wifi' || type === '802-11-wireless') ? [ifname] : [],
  };
}

const ID_LINE = /^[0-9a-f]{12,128}$/;

/** Turns the script's sections into facts; anything odd becomes a problem, not an exception. */
export function diagnoseFacts(name: string, sections: DiagnoseSections, marker: string): DiagnoseNodeFacts {
  const problems: string[] = [];
  const sec = (key: DiagnoseSection): Section | undefined => {
    const s = sections[key];
    if (!s) problems.push(`${DIAGNOSE_SECTIONS[key]}: no output (the script was cut short)`);
    return s;
  };
  const ok = (key: DiagnoseSection): string | undefined => {
    const s = sec(key);
    if (!s) return undefined;
    if (s.exitCode !== 0) {
      problems.push(`${DIAGNOSE_SECTIONS[key]}: ${s.text.trim().slice(0, 200) || `exit ${s.exitCode}`}`);
      return undefined;
    }
    return s.text;
  };
  /** A file that may legitimately be absent: undefined text when it is. */
  const optional = (key: DiagnoseSection): { text?: string } => {
    const s = sections[key];
    if (!s) {
      problems.push(`${DIAGNOSE_SECTIONS[key]}: no output (the script was cut short)`);
      return {};
    }
    return s.exitCode === 0 ? { text: s.text } : {};
  };
  // The probe's part of the script, read exactly as the probe reads it.
  const base = probeFacts(name, sections);
  problems.push(...base.problems);

  const nowText = ok('now');
  const now = nowText !== undefined && /^\d+$/.test(nowText.trim()) ? Number(nowText.trim()) : null;

  const mac = (optional('weaveMac').text ?? '').trim().toLowerCase();
  const weave = sections.weaveConnections;
  const weaveCollisions = weave && weave.exitCode === 0 ? weave.text.split('\n').filter((l) => /peer names collision/.test(l)).map((l) => l.trim()) : null;

  const addrsText = ok('addrs');
  let addrs: AddrFacts[] = [];
  if (addrsText !== undefined) {
    const r = AddrJson.safeParse(json(addrsText.trim() || '[]'));
    if (r.success) {
      addrs = r.data.map((a) => ({
        ifname: a.ifname,
        operstate: a.operstate ?? null,
        up: (a.flags ?? []).includes('UP'),
        ipv4: (a.addr_info ?? []).filter((i) => i.family === 'inet' && i.local).map((i) => `${i.local}/${i.prefixlen ?? 32}`),
      }));
    } else problems.push('ip -j addr printed unexpected JSON');
  }
  const routesText = ok('routes');
  let routes: IpRoute[] = [];
  if (routesText !== undefined) {
    const r = RoutesJson.safeParse(json(routesText.trim() || '[]'));
    if (r.success) routes = r.data as IpRoute[];
    else problems.push('ip -j route printed unexpected JSON');
  }

  const envText = optional('subnetEnv').text;
  const subnetEnv = envText === undefined ? null : Object.fromEntries(envText.split('\n').map((l) => /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(l.trim())).filter((m): m is RegExpExecArray => !!m).map((m) => [m[1], m[2]]));

  const cniConfigs = dumpedFiles(ok('cniConf') ?? '', marker).map((f) => parseCniConfig(f.file, f.text));

  const mtimes = new Map<string, number>();
  for (const line of (ok('hostLocalMtime') ?? '').split('\n')) {
    const m = /^(\d+) (.+)$/.exec(line);
    if (m) mtimes.set(m[2], Number(m[1]));
  }
  const hostLocal: HostLocalFile[] = [];
  for (const line of (ok('hostLocal') ?? '').split('\n')) {
    const [path, first] = line.split('\t');
    const m = /^\/var\/lib\/cni\/networks\/([^/]+)\/([0-9a-fA-F.:]+)$/.exec(path ?? '');
    // last_reserved_ip.0 and lock are host-local's bookkeeping, not reservations.
    if (!m || !(/^\d+\.\d+\.\d+\.\d+$/.test(m[2]) || m[2].includes(':'))) continue;
    hostLocal.push({ network: m[1], ip: m[2], containerId: (first ?? '').replace(/\r$/, '').trim(), mtime: mtimes.get(path) ?? null });
  }

  const ids = (key: 'sandboxes' | 'containers'): string[] | null => {
    const text = ok(key);
    return text === undefined ? null : text.split('\n').map((l) => l.trim()).filter((l) => ID_LINE.test(l));
  };

  const netConfig: NetConfigFacts[] = [
    ...dumpedFiles(ok('netplan') ?? '', marker).map((f) => parseNetplan(f.file, f.text)),
    ...dumpedFiles(ok('ifupdown') ?? '', marker).map((f) => parseIfupdown(f.file, f.text)),
    ...dumpedFiles(ok('networkManager') ?? '', marker).map((f) => parseNmKeyfile(f.file, f.text)),
  ];
  const kubeletArgs = dumpedFiles(ok('kubeletArgs') ?? '', marker).flatMap((f) => f.text.split('\n').filter((l) => /^\s*KUBELET_[A-Z_]*ARGS=/.test(l) && !PASSWORDY.test(l)).map((l) => `${f.file}: ${l.trim()}`));
  const adv = optional('apiserverAdvertise').text;
  const apiserverAdvertise = adv ? (/--advertise-address=(\S+)/.exec(adv)?.[1] ?? null) : null;
  const kc = optional('kubeletConf').text;
  const kubeletServer = kc ? (/server:\s*(\S+)/.exec(kc)?.[1] ?? null) : null;

  return {
    name,
    now,
    machineId: base.machineId,
    dbusMachineId: base.dbusMachineId,
    bootId: base.bootId,
    weaveMac: isMac(mac) ? mac : null,
    weaveCollisions,
    links: base.links,
    addrs,
    defaultRoute: base.defaultRoute,
    routes,
    subnetEnv,
    cniConfigs,
    hostLocal,
    sandboxes: ids('sandboxes'),
    containers: ids('containers'),
    netConfig,
    kubeletArgs,
    apiserverAdvertise,
    kubeletServer,
    problems,
  };
}
