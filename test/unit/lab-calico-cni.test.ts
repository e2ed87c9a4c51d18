/** The lab's Calico stand-in, its pure parts: calico-ipam's block changes, Go's time string, the kubelet's status. */
import { assignInBlock, goUtcString, type IpamBlock, releaseInBlock, seedSandboxes } from '../lab/calico-cni';
import { CniPluginError, SandboxNetworkError } from '../lab/cni';
import { type ApiPod, runningStatus, sandboxFailedMessage, sandboxFailedStatus, sandboxSettled, showsRunning, showsSandboxFailed } from '../lab/pod-kubelet';
import { sandboxId } from '../lab/manifests';

const block = (): IpamBlock['spec'] => {
  const allocations: Array<number | null> = Array.from({ length: 64 }, () => null);
  allocations[10] = 0;
  allocations[11] = 1;
  return {
    cidr: '192.168.202.0/26',
    affinity: 'host:node2',
    allocations,
    unallocated: allocations.flatMap((a, i) => (a === null ? [i] : [])),
    attributes: [
      { handle_id: 'k8s-pod-network.a', secondary: { pod: 'a' } },
      { handle_id: 'k8s-pod-network.b', secondary: { pod: 'b' } },
    ],
  };
};

test('assign: the first unallocated ordinal, a new attribute for the handle', () => {
  const { ordinal, spec } = assignInBlock(block(), 'k8s-pod-network.c', { pod: 'c' });
  expect(ordinal).toBe(0);
  expect(spec.allocations[0]).toBe(2);
  expect(spec.attributes[2]).toEqual({ handle_id: 'k8s-pod-network.c', secondary: { pod: 'c' } });
  expect(spec.unallocated).not.toContain(0);
  expect(spec.unallocated).toHaveLength(64 - 3);
  const full = { ...block(), unallocated: [] };
  expect(() => assignInBlock(full, 'k8s-pod-network.c', {})).toThrow('has no free address');
});

test('release: the handle\'s ordinals to the end of unallocated, its attribute dropped, the others renumbered', () => {
  const { released, spec } = releaseInBlock(block(), 'k8s-pod-network.a');
  expect(released).toEqual([10]);
  expect(spec.allocations[10]).toBeNull();
  expect(spec.allocations[11]).toBe(0);
  expect(spec.attributes).toEqual([{ handle_id: 'k8s-pod-network.b', secondary: { pod: 'b' } }]);
  expect(spec.unallocated[spec.unallocated.length - 1]).toBe(10);
  // Again: nothing held, nothing changed (a second DEL).
  const again = releaseInBlock(spec, 'k8s-pod-network.a');
  expect(again.released).toEqual([]);
  expect(again.spec).toBe(spec);
});

test('assign then release leaves the block as it was but for the order of unallocated', () => {
  const b = block();
  const { spec } = assignInBlock(b, 'k8s-pod-network.c', {});
  const back = releaseInBlock(spec, 'k8s-pod-network.c').spec;
  expect(back.allocations).toEqual(b.allocations);
  expect(back.attributes).toEqual(b.attributes);
  expect([...back.unallocated].sort((x, y) => x - y)).toEqual(b.unallocated);
});

test("Go's time.Time.String() of a UTC time", () => {
  expect(goUtcString(Date.UTC(2026, 10, 26, 5, 20, 1, 120))).toBe('2026-11-26 05:20:01.12 +0000 UTC');
  expect(goUtcString(Date.UTC(2026, 0, 1))).toBe('2026-01-01 00:00:00 +0000 UTC');
});

test('seed 004 on a node: the runtime\'s pods keep the sandbox ids their IPAM handles name; gone pods\' netns ids are fresh', () => {
  const seeds = seedSandboxes({ name: 'node2', index: 2 });
  expect(seeds.map((s) => [s.pod, s.kind, s.ip])).toEqual([
    ['web-node2-a', 'withVeth', '192.168.202.10'],
    ['web-node2-b', 'withVeth', '192.168.202.11'],
    ['gone-node2-x', 'vethOnly', '192.168.202.12'],
    ['gone-node2-y', 'vethOnly', '192.168.202.13'],
    ['gone-node2-z', 'vethOnly', '192.168.202.14'],
    ['db-node2-0', 'withoutVeth', '192.168.202.15'],
    ['db-node2-1', 'withoutVeth', '192.168.202.16'],
  ]);
  for (const s of seeds) {
    expect(s.data.handle).toBe(`k8s-pod-network.${sandboxId('node2', s.pod)}`);
    expect(s.id === sandboxId('node2', s.pod)).toBe(s.kind !== 'vethOnly');
  }
});

test("the kubelet's status: Running, Ready, the sandbox's address; compared so nothing is patched twice", () => {
  const pod: ApiPod = { metadata: { name: 'db-node2-0', namespace: 'default', uid: 'u1' }, spec: { nodeName: 'node2', containers: [{ name: 'app', image: 'nginx:1.27' }] }, status: { phase: 'Pending' } };
  const s = runningStatus(pod, { id: 'f'.repeat(64), ip: '192.168.202.0', createdAtMs: Date.UTC(2026, 10, 26) }, '10.213.0.12', Date.UTC(2026, 10, 26, 0, 0, 5)) as Record<string, Any>;
  expect(s).toMatchObject({ phase: 'Running', podIP: '192.168.202.0', podIPs: [{ ip: '192.168.202.0' }], hostIP: '10.213.0.12', startTime: '2026-11-26T00:00:00Z' });
  expect(s.conditions.map((c: { type: string; status: string }) => `${c.type}=${c.status}`)).toEqual(['PodReadyToStartContainers=True', 'Initialized=True', 'ContainersReady=True', 'Ready=True']);
  expect(s.containerStatuses).toEqual([expect.objectContaining({ name: 'app', ready: true, started: true, state: { running: { startedAt: '2026-11-26T00:00:00Z' } } })]);
  expect(showsRunning(pod, '192.168.202.0')).toBe(false);
  const shown = { ...pod, status: s } as ApiPod;
  expect(showsRunning(shown, '192.168.202.0')).toBe(true);
  expect(showsRunning(shown, '192.168.202.1')).toBe(false);
});

test("a sandbox's attempt is its containers' restart count (a pod whose sandbox died with a reboot runs again in attempt 1)", () => {
  const pod: ApiPod = { metadata: { name: 'web-1', namespace: 'demo', uid: 'u1' }, spec: { nodeName: 'node2', containers: [{ name: 'web', image: 'nginx:1.27' }] } };
  const s = runningStatus(pod, { id: 'f'.repeat(64), ip: '10.244.1.7', createdAtMs: 0, attempt: 1 }, '10.213.0.12', 0) as Record<string, Any>;
  expect(s.containerStatuses[0].restartCount).toBe(1);
});

test("a failed sandbox as the kubelet reports it: Pending, containers waiting in ContainerCreating, libcni's words in the event's message", () => {
  const pod: ApiPod = { metadata: { name: 'web-1', namespace: 'demo', uid: 'u1' }, spec: { nodeName: 'node3', containers: [{ name: 'web', image: 'nginx:1.27' }, { name: 'side', image: 'busybox' }] }, status: { phase: 'Pending' } };
  const s = sandboxFailedStatus(pod, '10.213.0.13', Date.UTC(2026, 10, 26)) as Record<string, Any>;
  expect(s).toMatchObject({ phase: 'Pending', hostIP: '10.213.0.13', startTime: '2026-11-26T00:00:00Z' });
  expect(s.podIP).toBeUndefined();
  expect(s.conditions.map((c: { type: string; status: string }) => `${c.type}=${c.status}`)).toEqual(['PodReadyToStartContainers=False', 'Initialized=True', 'Ready=False', 'ContainersReady=False']);
  expect(s.conditions[2]).toMatchObject({ reason: 'ContainersNotReady', message: 'containers with unready status: [web side]' });
  expect(s.containerStatuses.map((c: Any) => c.state)).toEqual([{ waiting: { reason: 'ContainerCreating' } }, { waiting: { reason: 'ContainerCreating' } }]);
  expect(showsSandboxFailed(pod)).toBe(false);
  const shown = { ...pod, status: s } as ApiPod;
  expect(showsSandboxFailed(shown)).toBe(true);
  expect(sandboxSettled(shown)).toBe(true);
  expect(sandboxSettled(pod)).toBe(false);

  const id = 'c'.repeat(64);
  const plugin = new CniPluginError('bridge', 'ADD', 11, 'failed to set bridge addr: "cni0" already has an IP address different from 10.244.2.1/24').of({ type: 'flannel' });
  expect(sandboxFailedMessage(new SandboxNetworkError(id, 'setup', plugin))).toBe(
    `Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox "${id}": plugin type="flannel" failed (add): failed to set bridge addr: "cni0" already has an IP address different from 10.244.2.1/24`,
  );
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;
