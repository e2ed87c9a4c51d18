import type { HostLocalEntry, NodeIpamListing } from '../../lib/ipam-gc';
import { detectLeaks, GRACE_WARN_S, type IpamGcFacts, leakLines, type NetworkRelease, networkOutcome, planForResult, planIpamGc, problemsAfterRelease, RESULT_CANDIDATES_MAX, runTagOf } from '../../lib/ipam-gc-plan';
import { parseQuarantineList, quarantineListArgv, RELEASE_BATCH } from '../../lib/ipam-gc-scripts';

const NOW = 1_800_000_000;
const id = (c: string) => c.repeat(64);
const LIVE = id('a');
const NEW = id('d');

function file(name: string, containerId: string, ageS: number): HostLocalEntry {
  return { network: 'cbr0', name, kind: 'reservation', containerId, ifname: 'eth0', lines: 2, mtime: NOW - ageS };
}

/** A /24 with LIVE's file at .2 and `leaked` files of gone sandboxes from .3 on, each an hour old. */
function listing(leaked: number, over: Partial<NodeIpamListing> = {}): NodeIpamListing {
  const entries: HostLocalEntry[] = [{ network: 'cbr0', name: 'lock', kind: 'lock', containerId: null, ifname: null, lines: 0, mtime: null }, file('10.244.0.2', LIVE, 86_400)];
  for (let k = 0; k < leaked; k++) entries.push(file(`10.244.0.${3 + k}`, `b${k.toString(16).padStart(3, '0')}`.repeat(16), 3600));
  return { now: NOW, networks: ['cbr0'], entries, sandboxes: [LIVE], containers: [], ranges: { cbr0: [{ subnet: '10.244.0.0/24' }] }, problems: [], ...over };
}

const opts = { graceS: 900, selected: ['node1', 'node2', 'node3'], excluded: [] as string[], controlPlane: ['node1'], runTag: 'ipam-gc-lab-x' };

describe('plan', () => {
  test('per node and network: capacity, in use, leaked, candidates; the candidates in address order; no drain and why', () => {
    const facts: IpamGcFacts = { nodes: [{ node: 'node1', listing: listing(250) }] };
    const plan = planIpamGc(facts, opts);
    expect(plan.pools).toEqual([expect.objectContaining({ node: 'node1', network: 'cbr0', capacity: 253, inUse: 251, live: 1, leaked: 250, candidates: 250, free: 2 })]);
    expect(plan.nodes.map((n) => [n.name, n.role])).toEqual([['node1', 'control-plane']]);
    const [n1] = plan.nodes;
    expect(n1.candidates.cbr0).toHaveLength(250);
    expect(n1.candidates.cbr0.slice(0, 2).map((c) => c.ip)).toEqual(['10.244.0.3', '10.244.0.4']);
    expect(n1.live).toEqual([{ network: 'cbr0', ip: '10.244.0.2', containerId: LIVE, mtime: NOW - 86_400 }]);
    expect(n1.steps[0]).toMatch(/^network cbr0: under host-local's lock .* 250 candidate file\(s\) .* into \/var\/lib\/kubemend\/ipam-quarantine\/ipam-gc-lab-x\/cbr0\/ \(1 exec\)$/);
    expect(plan.summary).toEqual(expect.arrayContaining([expect.stringMatching(/^No cordon or drain: a released file is the reservation of a sandbox that is gone/), 'node1 cbr0: capacity 253, in use 251, leaked 250, candidates 250']));
    expect(plan.summary!.some((l) => l.startsWith('WARNING'))).toBe(false);
    expect(plan.skipped).toEqual([]);
  });

  test(`a grace period under ${GRACE_WARN_S} s is allowed and warned about; 0 makes every leaked file a candidate`, () => {
    const young = listing(0);
    young.entries.push(file('10.244.0.9', id('b'), 5));
    const facts: IpamGcFacts = { nodes: [{ node: 'node1', listing: young }] };
    expect(planIpamGc(facts, opts).nodes).toEqual([]); // too young at 15 min
    const zero = planIpamGc(facts, { ...opts, graceS: 0 });
    expect(zero.nodes[0].candidates.cbr0.map((c) => c.ip)).toEqual(['10.244.0.9']);
    expect(zero.summary).toContainEqual(expect.stringMatching(/^WARNING: a grace period under 60 s can release the file of a sandbox/));
  });

  test('an unreachable node is skipped with its reason, the others are planned; unselected nodes are left out', () => {
    const facts: IpamGcFacts = { nodes: [{ node: 'node1', listing: listing(3) }, { node: 'node2', error: 'SshTransient: connect ECONNREFUSED 127.0.0.1:2202' }, { node: 'node3', listing: listing(2) }] };
    const plan = planIpamGc(facts, { ...opts, selected: ['node1', 'node2'] });
    expect(plan.nodes.map((n) => n.name)).toEqual(['node1']);
    expect(plan.skipped).toEqual([{ name: 'node2', reason: 'unreachable: SshTransient: connect ECONNREFUSED 127.0.0.1:2202' }]);
  });

  test('a node whose runtime cannot be asked, or that is excluded, is skipped with the reason; one with nothing leaked is not planned', () => {
    const facts: IpamGcFacts = {
      nodes: [
        { node: 'node1', listing: listing(3, { sandboxes: null, problems: ['crictl pods -q: connection refused'] }) },
        { node: 'node2', listing: listing(3) },
        { node: 'node3', listing: listing(0) },
      ],
    };
    const plan = planIpamGc(facts, { ...opts, excluded: ['node2'] });
    expect(plan.nodes).toEqual([]);
    expect(plan.skipped).toEqual([
      { name: 'node1', reason: expect.stringMatching(/^the container runtime could not be asked for its sandboxes \(crictl pods -q: connection refused\)/) },
      { name: 'node2', reason: 'labelled kubemend.io/exclude=true' },
    ]);
  });

  test('the plan id names the candidates: another leaked file, another plan', () => {
    const a = planIpamGc({ nodes: [{ node: 'node1', listing: listing(3) }] }, opts);
    const b = planIpamGc({ nodes: [{ node: 'node1', listing: listing(4) }] }, opts);
    expect(a.id).toBe(planIpamGc({ nodes: [{ node: 'node1', listing: listing(3) }] }, opts).id);
    expect(a.id).not.toBe(b.id);
  });

  test(`more candidates than RELEASE_BATCH (${RELEASE_BATCH}) go in several execs`, () => {
    const big = listing(0, { ranges: { cbr0: [{ subnet: '10.244.0.0/16' }] } });
    for (let k = 0; k < RELEASE_BATCH + 1; k++) big.entries.push(file(`10.244.${10 + Math.floor(k / 250)}.${1 + (k % 250)}`, id('b'), 3600));
    expect(planIpamGc({ nodes: [{ node: 'node1', listing: big }] }, opts).nodes[0].steps[0]).toMatch(/\(2 execs\)$/);
  });
});

test('detect: one finding per node and network with leaked files; the remaining lines name them', () => {
  const facts: IpamGcFacts = { nodes: [{ node: 'node1', listing: listing(252) }, { node: 'node2', listing: listing(0) }] };
  const found = detectLeaks(facts, 900);
  expect(found).toEqual([
    {
      seed: '003',
      remediation: 'ipam-gc',
      node: 'node1',
      signature: 'no IP addresses available in network: cbr0',
      evidence: ['252 of 253 files in /var/lib/cni/networks/cbr0 name a container no live sandbox has (100%): 252 older than the grace period (900 s), 0 younger', 'capacity 253, in use 253, free 0'],
      fixable: true,
    },
  ]);
  expect(leakLines(facts, 900)).toEqual([`node1: ${found[0].evidence[0]}`]);
  expect(leakLines(facts, 900, new Set(['node2']))).toEqual([]);
});

describe('verify after the release', () => {
  const planned = { name: 'node1', live: [{ network: 'cbr0', ip: '10.244.0.2', containerId: LIVE, mtime: NOW - 86_400 }] };
  const release = (ips: string[]): NetworkRelease[] => [{ network: 'cbr0', released: ips.map((ip, k) => ({ ip, containerId: `b${k.toString(16).padStart(3, '0')}`.repeat(16), ageS: 3600 })), already: [], kept: [], gone: [] }];

  test('released addresses free and the live file as it was: nothing wrong', () => {
    expect(problemsAfterRelease(planned, release(['10.244.0.3', '10.244.0.4']), listing(0))).toEqual([]);
  });

  test('a released address held by a new live sandbox is fine', () => {
    const after = listing(0, { sandboxes: [LIVE, NEW] });
    after.entries.push(file('10.244.0.3', NEW, 1));
    expect(problemsAfterRelease(planned, release(['10.244.0.3']), after)).toEqual([]);
  });

  test('a released file back with its gone container, or the live file changed or gone, is a problem', () => {
    const back = listing(1); // 10.244.0.3 again, naming the gone container
    expect(problemsAfterRelease(planned, release(['10.244.0.3']), back)).toEqual([expect.stringMatching(/^cbr0 10\.244\.0\.3: released, but its file is there again naming the same gone container/)]);
    const changed = listing(0);
    changed.entries[1] = file('10.244.0.2', LIVE, 10);
    expect(problemsAfterRelease(planned, release([]), changed)).toEqual([`cbr0 10.244.0.2: the file of live sandbox ${LIVE.slice(0, 12)} changed`]);
    const gone = listing(0);
    gone.entries.splice(1, 1);
    expect(problemsAfterRelease(planned, release([]), gone)).toEqual([`cbr0 10.244.0.2: the file of live sandbox ${LIVE.slice(0, 12)} is gone`]);
    // ...unless the sandbox itself went away meanwhile (its DEL took the file).
    expect(problemsAfterRelease(planned, release([]), { ...gone, sandboxes: [] })).toEqual([]);
  });

  test('a runtime that cannot be asked afterwards fails the check', () => {
    expect(problemsAfterRelease(planned, release([]), listing(0, { sandboxes: null }))).toEqual(['node1: the runtime could not be asked after the release, so the live sandboxes\' files cannot be checked']);
  });
});

test('the run tag is the runbook\'s, from the workflow ID', () => {
  expect(runTagOf('ipam-gc-lab-20261125T231700Z-abc123')).toBe('ipam-gc-lab-20261125T231700Z-abc123');
  expect(runTagOf('a:b.c')).toBe('a-b-c');
});

test('the quarantine listing: argv validated, output parsed, anything odd an error', () => {
  expect(quarantineListArgv('ipam-gc-lab-1').slice(-2)).toEqual(['kubemend-ipam-quarantine', 'ipam-gc-lab-1']);
  expect(() => quarantineListArgv('../etc')).toThrow('not a run tag');
  expect(() => quarantineListArgv('a b')).toThrow('not a run tag');
  expect(parseQuarantineList('net cbr0 250\nnet k8s-pod-network 0\ndone\n')).toEqual({ networks: [{ network: 'cbr0', files: 250 }, { network: 'k8s-pod-network', files: 0 }] });
  expect(parseQuarantineList('done\n')).toEqual({ networks: [] });
  expect(parseQuarantineList('net cbr0 250\n')).toEqual({ error: 'the quarantine listing was cut short' });
  expect(parseQuarantineList('net ../x 1\ndone\n')).toEqual({ error: expect.stringMatching(/^unexpected line/) });
});

describe('the plan and the release in a run\'s result (Temporal refuses results over 2 MB)', () => {
  test('50 nodes with 250 leaked files each: the result lists the first 1000 candidates, counts the rest, and stays far below 2 MB', () => {
    const facts: IpamGcFacts = { nodes: Array.from({ length: 50 }, (_, i) => ({ node: `n${i}`, listing: listing(250) })) };
    const plan = planIpamGc(facts, { ...opts, selected: facts.nodes.map((n) => n.node) });
    expect(JSON.stringify(plan).length).toBeGreaterThan(2_000_000 * 0.6);
    const small = planForResult(plan);
    const listed = small.nodes.reduce((a, n) => a + Object.values(n.candidates).reduce((b, c) => b + c.length, 0), 0);
    expect(listed).toBe(RESULT_CANDIDATES_MAX);
    expect(small.nodes.reduce((a, n) => a + n.omitted!.candidates, 0)).toBe(50 * 250 - RESULT_CANDIDATES_MAX);
    expect(small.nodes[0].omitted).toEqual({ candidates: 0, live: 1 });
    expect(small.nodes[4].omitted).toEqual({ candidates: 250, live: 1 });
    expect(small.nodes.every((n) => n.live.length === 0)).toBe(true);
    expect(small.id).toBe(plan.id);
    expect(small.pools).toEqual(plan.pools);
    expect(JSON.stringify(small).length).toBeLessThan(300_000);
  });
  test('a small plan keeps every candidate', () => {
    const plan = planIpamGc({ nodes: [{ node: 'node1', listing: listing(3) }] }, opts);
    expect(planForResult(plan).nodes[0].candidates).toEqual(plan.nodes[0].candidates);
  });
  test('a network\'s release as counts, with the first kept ones named', () => {
    const r: NetworkRelease = {
      network: 'cbr0',
      released: [{ ip: '10.244.0.3', containerId: NEW, ageS: 1 }],
      already: [{ ip: '10.244.0.4', containerId: NEW, ageS: 1 }],
      kept: Array.from({ length: 60 }, (_, k) => ({ ip: `10.244.1.${k}`, containerId: NEW, reason: 'live' })),
      gone: ['10.244.0.5'],
    };
    const o = networkOutcome(r);
    expect({ ...o, kept: o.kept.length }).toEqual({ network: 'cbr0', releasedCount: 2, alreadyCount: 1, kept: 50, keptCount: 60, goneCount: 1 });
  });
});
