/**
 * orphan-calico (seed 004) on lab nodes, as an operator finds it: list the node's cali*
 * veths, list the pods the runtime has, and compare with Calico's naming rule.
 * Composed with stale-cni, so the crictl records of both scenarios coexist.
 */
import { join } from 'node:path';
import { calicoVethName } from '../../lib/calico';
import { calicoPods, down, type LabState, LIVE_PODS_PER_NODE, requestReboot, up } from '../lab/lab';
import { tempDir } from '../helpers/harness';
import { hostSnapshot } from '../helpers/host';
import { labSsh } from '../helpers/lab';

const dir = join(tempDir('calico'), 'lab');
let state: LabState;

let hostBefore: ReturnType<typeof hostSnapshot>;

beforeAll(async () => {
  hostBefore = hostSnapshot();
  state = await up({ dir, nodes: 2, scenarios: ['orphan-calico', 'stale-cni'], rebootDowntimeMs: 200 });
});
afterAll(async () => {
  await down(dir);
  expect(hostSnapshot()).toEqual(hostBefore); // the host after the scenario, its reboots, and down
});

const ssh = (port: number, cmd: string) => labSsh(dir, port, cmd);

function nodeView(port: number) {
  const links = JSON.parse(ssh(port, 'ip -j link')) as Array<{ ifname: string; operstate: string; flags: string[] }>;
  const cali = links.filter((l) => l.ifname.startsWith('cali'));
  // crictl pods: POD ID, CREATED ("About an hour ago": 4 words), STATE, NAME, NAMESPACE, ...
  const pods = ssh(port, 'crictl pods').trim().split('\n').slice(1).map((l) => l.split(/\s+/)).map((f) => ({ name: f[6], namespace: f[7] }));
  return { cali, pods };
}

test.each([1, 2])('node%i: the veths and the pods disagree exactly as seeded', (index) => {
  const n = state.nodes[index - 1];
  const seeded = calicoPods(n.name);
  const { cali, pods } = nodeView(n.port);
  for (const l of cali) expect(l.flags).toContain('LOWER_UP'); // a live veth, as Calico's would be
  const expected = new Map(pods.map((p) => [calicoVethName(p.namespace, p.name), p]));
  const orphanVeths = cali.map((l) => l.ifname).filter((v) => !expected.has(v)).sort();
  expect(orphanVeths).toEqual(seeded.vethOnly.map((p) => calicoVethName(seeded.namespace, p)).sort());
  // Pods without a veth: every runtime pod whose name-derived veth is missing (stale-cni's
  // app pods use the flannel bridge in that seed, so they are filtered by name here).
  const calicoManaged = pods.filter((p) => /^(web|db)-/.test(p.name));
  const missing = calicoManaged.filter((p) => !cali.some((l) => l.ifname === calicoVethName(p.namespace, p.name))).map((p) => p.name).sort();
  expect(missing).toEqual([...seeded.withoutVeth].sort());
  expect(pods).toHaveLength(LIVE_PODS_PER_NODE + seeded.withVeth.length + seeded.withoutVeth.length);
  // Each cali veth has its /32 route, as Felix programs it.
  const routes = ssh(n.port, 'ip -j route').trim();
  for (const l of cali) expect(routes).toContain(`"dev":"${l.ifname}"`);
});

test('a reboot takes the veths away with the node (pods come back through the CNI, not the lab)', async () => {
  await requestReboot(dir, 'node1');
  expect(nodeView(state.nodes[0].port).cali).toEqual([]);
  expect(nodeView(state.nodes[1].port).cali).toHaveLength(5);
});
