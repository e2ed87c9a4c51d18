/** What lab tests share: ssh to a node as an operator would, and the lab's config pointed at the suite's Temporal. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { temporalAddress, uniqueQueue, writeConfig } from './harness';
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
