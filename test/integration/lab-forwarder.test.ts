/**
 * The lab's loopback forwarders: each node's port is its own forwarder's, below the kernel's
 * ephemeral range, and a forwarder that cannot bind its port is reported at once, with
 * socat's own words, instead of the lab waiting out its deadline on another process's port.
 */
import { readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { down, labProcesses, type LabState, rebootNode, up } from '../lab/lab';
import { listeningInode } from '../lab/tcp-listen';
import { tempDir } from '../helpers/harness';

const dir = join(tempDir('lab-forwarder'), 'lab');
let state: LabState;

beforeAll(async () => {
  state = await up({ dir, nodes: 2 });
});

afterAll(async () => {
  await down(dir);
});

test("each node's port is below the ephemeral range, distinct, and held by that node's forwarder", () => {
  const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  const ports = state.nodes.map((n) => n.port);
  expect(new Set(ports).size).toBe(ports.length);
  const table = readFileSync('/proc/self/net/tcp', 'utf8');
  for (const n of state.nodes) {
    expect(n.port).toBeLessThan(low);
    const inode = listeningInode(table, '127.0.0.1', n.port);
    expect(inode).toBeDefined();
    const forwarders = labProcesses(dir).filter((p) => p.argv0 === `kmlab-fwd ${dir} ${n.name}`);
    expect(forwarders.some((p) => fdLinks(p.pid).includes(`socket:[${inode}]`))).toBe(true);
  }
});

test("a node whose port another process took while it was down fails its boot at once, with socat's error", async () => {
  const node = state.nodes[1];
  writeFileSync(join(dir, 'nodes', node.name, 'control', 'stay-down'), '');
  await rebootNode(dir, node.name); // down, and it stays down: its forwarder is gone, the port free
  const squatter: Server = createServer((s) => s.destroy());
  await new Promise<void>((resolve, reject) => {
    squatter.once('error', reject);
    squatter.listen(node.port, '127.0.0.1', resolve);
  });
  try {
    rmSync(join(dir, 'nodes', node.name, 'control', 'stay-down'));
    const err = await rebootNode(dir, node.name).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(new RegExp(`^${node.name}: its forwarder on 127\\.0\\.0\\.1:${node.port} failed: .*bind.*Address already in use`));
  } finally {
    await new Promise((r) => squatter.close(r));
  }
  // the other node was never touched
  const other = state.nodes[0];
  expect(labProcesses(dir).some((p) => p.argv0 === `kmlab-fwd ${dir} ${other.name}`)).toBe(true);
});

/** What the process's descriptors point at ("socket:[inode]", paths). */
function fdLinks(pid: number): string[] {
  return readdirSync(`/proc/${pid}/fd`).map((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      return '';
    }
  });
}
