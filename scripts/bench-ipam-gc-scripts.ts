/**
 * Prints figures, asserts nothing: ipam-gc's node scripts on one lab node holding 10 live
 * and 254 leaked host-local files. The 10 live ones are real (CNI ADD by the lab's plugins,
 * network cbr0); the 254 leaked ones are written in host-local's format into a second network
 * directory, bench0, with sandbox ids no runtime has, an hour old. Per round: the listing
 * (one SSH exec), the decision (in process), the release of the 254 (one SSH exec), the same
 * release again (everything "already"), and a restore (so the next round has them back).
 * Needs root and `npm run build` (or tsc). Run: node dist/scripts/bench-ipam-gc-scripts.js [rounds]
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { SshConnector } from '../activities/ssh';
import type { NodeTarget } from '../lib/config';
import { decideNode } from '../lib/ipam-gc';
import { listingArgv, parseListing, parseRelease, parseRestore, releaseArgv, restoreArgv } from '../lib/ipam-gc-scripts';
import { podAdd } from '../test/lab/cni';
import { down, up } from '../test/lab/lab';

const LIVE = 10;
const LEAKED = 254;

async function main(): Promise<void> {
  const rounds = Number(process.argv[2] ?? 5);
  const dir = join(mkdtempSync('/tmp/bench-ipam-gc-'), 'lab');
  const ssh = new SshConnector({ connectTimeoutMs: 10_000, commandTimeoutMs: 300_000 });
  try {
    const state = await up({ dir, nodes: 1, rebootDowntimeMs: 300 });
    const target: NodeTarget = { cluster: 'bench', name: 'node1', role: 'worker', host: '127.0.0.1', port: state.nodes[0].port, user: 'root', privateKeyPath: join(dir, 'id_ed25519'), knownHostsPath: join(dir, 'known_hosts') };
    const run = (argv: string[]) => ssh.withSession(target, (s) => s.run(argv, { check: false }));
    for (let k = 0; k < LIVE; k++) await podAdd(dir, 'node1', { namespace: 'default', name: `live-${k}` });
    // 254 leaked reservations as host-local writes them ("<id>\r\n<ifname>", no newline at the end).
    const ids = Array.from({ length: LEAKED }, () => randomBytes(32).toString('hex'));
    const w = await run([
      'sh',
      '-c',
      'd=/var/lib/cni/networks/bench0; mkdir -p $d && : > $d/lock && k=2; for id; do printf "%s\\r\\neth0" "$id" > $d/10.245.$((k / 256)).$((k % 256)); k=$((k + 1)); done; printf 10.245.1.0 > $d/last_reserved_ip.0; touch -d "1 hour ago" $d/10.245.*',
      'bench-write',
      ...ids,
    ]);
    if (w.exitCode !== 0) throw new Error(w.stderr);
    await run(['true']); // the connection is open before anything is timed

    const rows: Array<Record<string, number>> = [];
    for (let r = 1; r <= rounds; r++) {
      const marker = randomBytes(12).toString('hex');
      let t = performance.now();
      const listed = await run(listingArgv(marker));
      const listMs = performance.now() - t;
      t = performance.now();
      const listing = parseListing(listed.stdout, marker);
      if ('error' in listing) throw new Error(listing.error);
      const d = decideNode(listing, { graceS: 900 });
      const decideMs = performance.now() - t;
      const cands = d.candidates.bench0 ?? [];
      const tag = `bench-${r}`;
      t = performance.now();
      const rel = await run(releaseArgv({ network: 'bench0', runTag: tag, candidates: cands }));
      const releaseMs = performance.now() - t;
      const report = parseRelease(rel.stdout, 'bench0', cands);
      t = performance.now();
      const again = parseRelease((await run(releaseArgv({ network: 'bench0', runTag: tag, candidates: cands }))).stdout, 'bench0', cands);
      const againMs = performance.now() - t;
      t = performance.now();
      const back = parseRestore((await run(restoreArgv({ network: 'bench0', runTag: tag }))).stdout, 'bench0');
      const restoreMs = performance.now() - t;
      const n = (xs: Array<{ result: string }>, what: string) => xs.filter((x) => x.result === what).length;
      rows.push({
        round: r,
        files: listing.entries.filter((e) => e.kind === 'reservation').length,
        live: d.networks.reduce((a, x) => a + x.live, 0),
        candidates: cands.length,
        listMs,
        decideMs,
        releaseMs,
        released: n(report.outcomes, 'released'),
        againMs,
        already: n(again.outcomes, 'already'),
        restoreMs,
        restored: n(back.outcomes, 'restored'),
        listBytes: listed.stdout.length,
      });
    }
    console.table(rows.map((x) => Object.fromEntries(Object.entries(x).map(([k, v]) => [k, k.endsWith('Ms') ? Number(v.toFixed(1)) : v]))));
    const median = (k: string) => {
      const v = rows.map((x) => x[k]).sort((a, b) => a - b);
      return v[Math.floor(v.length / 2)].toFixed(1);
    };
    console.log(`median over ${rounds} rounds: listing ${median('listMs')} ms, decision ${median('decideMs')} ms, release ${median('releaseMs')} ms, release again ${median('againMs')} ms, restore ${median('restoreMs')} ms`);
  } finally {
    ssh.close();
    await down(dir);
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
