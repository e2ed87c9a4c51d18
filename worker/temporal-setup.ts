/** Namespace-level setup kubemend needs (its custom search attributes, idempotent), and waiting for a server to answer. */
import type { ChildProcess } from 'node:child_process';
import { createConnection } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { SEARCH_ATTRIBUTES } from '../lib/search-attributes';

const INDEXED = {
  Keyword: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  KeywordList: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
} as const;

/** Registers any of kubemend's search attributes the namespace lacks; returns the names it added. */
export async function ensureSearchAttributes(connection: Connection, namespace: string): Promise<string[]> {
  const have = await connection.operatorService.listSearchAttributes({ namespace });
  const existing = { ...(have.customAttributes ?? {}) };
  const missing = SEARCH_ATTRIBUTES.filter((a) => !(a.name in existing));
  for (const a of SEARCH_ATTRIBUTES) {
    const t = existing[a.name];
    if (t !== undefined && t !== INDEXED[a.cliType]) {
      throw new Error(`search attribute ${a.name} exists in namespace ${namespace} with another type (${t}); kubemend needs ${a.cliType}`);
    }
  }
  if (missing.length === 0) return [];
  await connection.operatorService.addSearchAttributes({
    namespace,
    searchAttributes: Object.fromEntries(missing.map((a) => [a.name, INDEXED[a.cliType]])),
  });
  return missing.map((a) => a.name);
}

/** True once something accepts TCP connections on host:port. */
function tcpOpen(address: string): Promise<boolean> {
  const i = address.lastIndexOf(':');
  return new Promise((resolve) => {
    const sock = createConnection({ host: address.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(address.slice(i + 1)) });
    sock.setTimeout(1000);
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('timeout', () => {
      sock.destroy();
      resolve(false);
    });
    sock.once('error', () => resolve(false));
  });
}

/**
 * Polls until the frontend at `address` answers, or `proc` dies, or the deadline passes.
 * It waits for the port with plain TCP first: a gRPC client created against a server that
 * is still starting can keep retrying in the background and hold the process open.
 */
export async function waitForFrontend(address: string, proc: ChildProcess, deadlineMs: number, log: () => string): Promise<void> {
  const until = Date.now() + deadlineMs;
  const dead = () => {
    if (proc.exitCode !== null) throw new Error(`Temporal exited with ${proc.exitCode}:\n${log()}`);
  };
  while (!(await tcpOpen(address))) {
    dead();
    if (Date.now() > until) throw new Error(`Temporal on ${address} did not open its port within ${deadlineMs} ms:\n${log()}`);
    await sleep(100);
  }
  while (Date.now() < until) {
    dead();
    let c: Connection | undefined;
    try {
      c = await Connection.connect({ address, connectTimeout: 5000 });
      await c.workflowService.getSystemInfo({});
      return;
    } catch {
      await sleep(250);
    } finally {
      await c?.close().catch(() => undefined);
    }
  }
  throw new Error(`Temporal on ${address} did not answer within ${deadlineMs} ms:\n${log()}`);
}
