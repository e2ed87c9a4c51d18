/**
 * All of a probe's reads in one SSH exec, so a node costs one round trip, not five.
 * The script is a constant; the only variable part, a random section marker, reaches it as
 * a positional argument ("$1"), quoted by lib/shell like any other argument. Each section
 * carries the exit status of its command, so a missing file is told apart from an empty one.
 */

import { parseBootId, parseDefaultRoute, parseIpLinkJson, parseMachineId } from './node-facts';
import type { ProbeNodeFacts } from './probe';

export const PROBE_SECTIONS = {
  machineId: '/etc/machine-id',
  dbusMachineId: '/var/lib/dbus/machine-id',
  bootId: '/proc/sys/kernel/random/boot_id',
  links: 'ip -j link',
  defaultRoute: 'ip -j route show default',
} as const;
export type ProbeSection = keyof typeof PROBE_SECTIONS;

export const PROBE_SCRIPT = [
  'm=$1',
  'section() { printf "%s begin %s\\n" "$m" "$1"; shift; "$@" 2>&1; rc=$?; printf "\\n%s end %d\\n" "$m" "$rc"; }',
  'section machineId cat -- /etc/machine-id',
  'section dbusMachineId cat -- /var/lib/dbus/machine-id',
  'section bootId cat -- /proc/sys/kernel/random/boot_id',
  'section links ip -j link',
  'section defaultRoute ip -j route show default',
].join('\n');

export function probeArgv(marker: string): string[] {
  return sectionScriptArgv(PROBE_SCRIPT, 'kubemend-probe', marker);
}

/** `sh -c SCRIPT NAME MARKER`: the marker is the script's only input, checked here. */
export function sectionScriptArgv(script: string, name: string, marker: string): string[] {
  if (!/^[0-9a-f]{16,64}$/.test(marker)) throw new Error(`${name.replace(/^kubemend-/, '')} marker must be 16-64 lowercase hex digits`);
  return ['sh', '-c', script, name, marker];
}

export interface SectionOutput {
  exitCode: number;
  /** stdout and stderr of the command, interleaved. */
  text: string;
}

/** Splits the script's output into sections; a section that never ended is absent. */
export function parseProbeOutput(stdout: string, marker: string): Partial<Record<ProbeSection, SectionOutput>> {
  return parseSections(stdout, marker, PROBE_SECTIONS);
}

/**
 * Splits a section script's output (`section NAME cmd...` lines, as PROBE_SCRIPT prints them)
 * into the sections `known` names; unknown names and sections that never ended are absent.
 */
export function parseSections<K extends string>(stdout: string, marker: string, known: Record<K, string>): Partial<Record<K, SectionOutput>> {
  const out: Partial<Record<K, SectionOutput>> = {};
  const begin = new RegExp(`^${marker} begin (\\w+)$`);
  const end = new RegExp(`^${marker} end (\\d+)$`);
  let current: { name: string; lines: string[] } | undefined;
  for (const line of stdout.split('\n')) {
    const b = begin.exec(line);
    if (b) {
      current = { name: b[1], lines: [] };
      continue;
    }
    const e = end.exec(line);
    if (e && current) {
      if (Object.hasOwn(known, current.name)) {
        // The newline the script prints before the end marker is the one join() leaves out.
        out[current.name as K] = { exitCode: Number(e[1]), text: current.lines.join('\n') };
      }
      current = undefined;
      continue;
    }
    current?.lines.push(line);
  }
  return out;
}

/** Turns the probe script's sections into facts; anything odd becomes a problem, not an exception. */
export function probeFacts(name: string, sections: ReturnType<typeof parseProbeOutput>): ProbeNodeFacts {
  const problems: string[] = [];
  const ok = (key: ProbeSection): string | undefined => {
    const sec = sections[key];
    if (!sec) {
      problems.push(`${PROBE_SECTIONS[key]}: no output (the probe script was cut short)`);
      return undefined;
    }
    if (sec.exitCode !== 0) {
      problems.push(`${PROBE_SECTIONS[key]}: ${sec.text.trim().slice(0, 200) || `exit ${sec.exitCode}`}`);
      return undefined;
    }
    return sec.text;
  };
  const id = (key: 'machineId' | 'dbusMachineId') => {
    const text = ok(key);
    if (text === undefined) return null;
    const p = parseMachineId(text, PROBE_SECTIONS[key]);
    if (!p.ok) problems.push(p.problem);
    return p.ok ? p.value : null;
  };
  const machineId = id('machineId');
  const dbusMachineId = id('dbusMachineId');
  const bootText = ok('bootId');
  const boot = bootText === undefined ? undefined : parseBootId(bootText);
  if (boot && !boot.ok) problems.push(boot.problem);
  const linksText = ok('links');
  const links = linksText === undefined ? undefined : parseIpLinkJson(linksText);
  if (links && !links.ok) problems.push(links.problem);
  const routeText = ok('defaultRoute');
  const route = routeText === undefined ? undefined : parseDefaultRoute(routeText);
  if (route && !route.ok) problems.push(route.problem);
  return {
    name,
    machineId,
    dbusMachineId,
    bootId: boot?.ok ? boot.value : null,
    links: links?.ok ? links.value : [],
    defaultRoute: route?.ok ? route.value : null,
    problems,
  };
}

