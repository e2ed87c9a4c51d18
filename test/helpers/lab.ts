/** What lab tests share: ssh to a node as an operator would, and the lab's config pointed at the suite's Temporal. */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import type { AuditRecord } from '../../lib/audit';
import { TOOLS_BIN } from '../../worker/paths';
import { runCli, temporalAddress, uniqueQueue, writeConfig } from './harness';
import { toolPath } from './temporal-dev';

/** ssh arguments with the lab's key and strict host-key checking against the lab's known_hosts. */
export function labSshArgs(dir: string, port: number, cmd: string): string[] {
  return ['-i', join(dir, 'id_ed25519'), '-o', `UserKnownHostsFile=${join(dir, 'known_hosts')}`, '-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '-p', String(port), 'root@127.0.0.1', cmd];
}

/** Runs `cmd` on a lab node and returns its stdout; a non-zero exit throws. */
export function labSsh(dir: string, port: number, cmd: string): string {
  return execFileSync('ssh', labSshArgs(dir, port, cmd), { encoding: 'utf8' });
}

/** The config `lab up` wrote, pointed at the suite's Temporal server and a task queue of its own. */
export function labTestConfig(dir: string, queue: string): string {
  const generated = parse(readFileSync(join(dir, 'kubemend.yaml'), 'utf8')) as Record<string, unknown>;
  return writeConfig(dir, { ...generated, temporal: { address: temporalAddress(), taskQueue: uniqueQueue(queue) } }, 'kubemend-test.yaml');
}

/** A bootstrap token as kubeadm makes them. */
export const BOOTSTRAP_TOKEN = /\b[a-z0-9]{6}\.[a-z0-9]{16}\b/;

/** A run's whole history as text, every payload decoded: what a scan for a secret must look through. */
export function historyText(runId: string): string {
  const json = execFileSync(toolPath('temporal'), ['workflow', 'show', '--address', temporalAddress(), '--workflow-id', runId, '--output', 'json'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const out: string[] = [json];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k === 'data' && typeof x === 'string') out.push(Buffer.from(x, 'base64').toString('utf8'));
        else walk(x);
      }
    }
  };
  walk(JSON.parse(json));
  return out.join('\n');
}

/** The lab's kubectl (Debian's, in .tools/bin) as the lab's admin: code, stdout, stderr. */
export function labKubectl(adminKubeconfig: string, args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(join(TOOLS_BIN, 'kubectl'), ['--kubeconfig', adminKubeconfig, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A device's IPv4 addresses on a lab node ("a.b.c.d/len"), as `ip -j addr` shows them; null without the device. */
export function nodeIpv4(dir: string, port: number, dev: string): string[] | null {
  const r = spawnSync('ssh', labSshArgs(dir, port, `ip -j addr show dev ${dev}`), { encoding: 'utf8' });
  if (r.status !== 0) {
    if (!r.stderr.includes('does not exist')) throw new Error(`ip addr show dev ${dev}: exit ${r.status}: ${r.stderr}`);
    return null;
  }
  const [link] = JSON.parse(r.stdout) as Array<{ addr_info: Array<{ family: string; local: string; prefixlen: number }> }>;
  return link.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
}

/** A run's audit trail, as `kubemend audit show <run> --json` prints it. */
export async function auditTrail(config: string, runId: string): Promise<AuditRecord[]> {
  const r = await runCli(['--config', config, 'audit', 'show', runId, '--json']);
  if (r.stderr !== '') throw new Error(`kubemend audit show ${runId}: ${r.stderr}`);
  return JSON.parse(r.stdout) as AuditRecord[];
}
