/** The lab kubelet's rules for kube-flannel's pods (test/lab/flannel-kubelet.ts), without I/O. */
import { apiTime, BACKOFF_MAX_MS, containerStatus, type ContainerView, crashLoopMessage, goDuration, podStatus, RestartBackoff, statusShows, terminationMessageFromLog } from '../lab/flannel-kubelet';

describe("the kubelet's restart back-off", () => {
  test('the first exit restarts at once; later exits wait 10 s, doubling, at most 300 s', () => {
    const b = new RestartBackoff();
    let t = 1_000_000;
    expect(b.inBackOffSince(t, t)).toBe(false);
    b.next(t, t); // restart 1, at once
    const waits: number[] = [];
    for (let i = 0; i < 8; i++) {
      t += 1000; // it runs a second, then exits
      expect(b.inBackOffSince(t, t)).toBe(true);
      waits.push(b.currentMs);
      expect(b.inBackOffSince(t, b.until(t) - 1)).toBe(true);
      expect(b.inBackOffSince(t, b.until(t))).toBe(false);
      t = b.until(t);
      b.next(t - b.currentMs, t);
    }
    expect(waits).toEqual([10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000, 300_000]);
  });

  test('a container that ran calmly for twice the maximum starts over at 10 s', () => {
    const b = new RestartBackoff();
    b.next(0, 0);
    b.next(1000, 11_000);
    expect(b.currentMs).toBe(20_000);
    const calm = 11_000 + 2 * BACKOFF_MAX_MS + 1;
    expect(b.inBackOffSince(calm, calm)).toBe(false);
    b.next(calm, calm);
    expect(b.currentMs).toBe(10_000);
  });
});

test.each([
  [10_000, '10s'],
  [40_000, '40s'],
  [80_000, '1m20s'],
  [160_000, '2m40s'],
  [300_000, '5m0s'],
  [3_600_000, '1h0m0s'],
])('Go prints %i ms as %s', (ms, text) => {
  expect(goDuration(ms)).toBe(text);
});

test("CrashLoopBackOff's message is the kubelet's", () => {
  expect(crashLoopMessage(20_000, { name: 'kube-flannel-ds-x7k2p', namespace: 'kube-flannel', uid: 'u-1', image: 'i' })).toBe('back-off 20s restarting failed container=kube-flannel pod=kube-flannel-ds-x7k2p_kube-flannel(u-1)');
});

describe('FallbackToLogsOnError', () => {
  test('a short log is the whole message', () => {
    const log = 'I0101 flanneld starting\nE0101 Failed to find any valid interface to use: failed to get default interface: unable to find default route\n';
    expect(terminationMessageFromLog(log)).toBe(log);
  });

  test('the last 80 lines, at most their last 2048 bytes', () => {
    const lines = Array.from({ length: 100 }, (_, i) => `line ${i}\n`);
    expect(terminationMessageFromLog(lines.join(''))).toBe(lines.slice(20).join(''));
    const long = Array.from({ length: 50 }, (_, i) => `${String(i).padStart(2, '0')} ${'x'.repeat(96)}\n`).join('');
    const message = terminationMessageFromLog(long);
    expect(Buffer.byteLength(message)).toBe(2048);
    expect(long.endsWith(message)).toBe(true);
  });
});

const image = 'ghcr.io/flannel-io/flannel:v0.28.10';
const t0 = Date.parse('2026-03-01T10:00:00Z');
const crashed: ContainerView = {
  image,
  restartCount: 1,
  waiting: { reason: 'CrashLoopBackOff', message: 'back-off 10s restarting failed container=kube-flannel pod=p_kube-flannel(u)' },
  lastTerminated: { exitCode: 1, reason: 'Error', message: 'E0301 Failed to find any valid interface to use\n', startedAt: apiTime(t0), finishedAt: apiTime(t0 + 900), containerID: 'containerd://c1' },
};

describe("the pod's status", () => {
  test('running and ready: Ready and ContainersReady True, the host network address as the pod IP', () => {
    const v: ContainerView = { image, restartCount: 0, running: { containerID: 'containerd://c0', startedAt: apiTime(t0), ready: true } };
    const s = podStatus(v, '10.213.0.12', {}, t0);
    expect(s).toMatchObject({ phase: 'Running', hostIP: '10.213.0.12', podIP: '10.213.0.12', podIPs: [{ ip: '10.213.0.12' }], startTime: '2026-03-01T10:00:00Z' });
    expect(s.conditions.filter((c) => c.status === 'True').map((c) => c.type)).toEqual(['PodReadyToStartContainers', 'Initialized', 'ContainersReady', 'Ready']);
    expect(s.containerStatuses[0]).toMatchObject({ name: 'kube-flannel', ready: true, started: true, restartCount: 0, state: { running: { startedAt: '2026-03-01T10:00:00Z' } }, containerID: 'containerd://c0' });
  });

  test('crash-looping: waiting with the last container terminated, not ready', () => {
    const s = podStatus(crashed, '10.213.0.11', {}, t0 + 1000);
    expect(s.conditions.find((c) => c.type === 'Ready')).toMatchObject({ status: 'False', reason: 'ContainersNotReady', message: 'containers with unready status: [kube-flannel]' });
    expect(s.containerStatuses[0]).toMatchObject({ ready: false, started: false, restartCount: 1, containerID: 'containerd://c1', state: { waiting: crashed.waiting }, lastState: { terminated: crashed.lastTerminated } });
  });

  test('a condition keeps its transition time while its status stays', () => {
    const first = podStatus(crashed, '10.213.0.11', {}, t0);
    const later = podStatus(crashed, '10.213.0.11', first, t0 + 60_000);
    expect(later.conditions.map((c) => c.lastTransitionTime)).toEqual(first.conditions.map((c) => c.lastTransitionTime));
    const ready = podStatus({ ...crashed, waiting: undefined, running: { containerID: 'containerd://c2', startedAt: apiTime(t0 + 60_000), ready: true } }, '10.213.0.11', first, t0 + 61_000);
    expect(ready.conditions.find((c) => c.type === 'Ready')?.lastTransitionTime).toBe(apiTime(t0 + 61_000));
    expect(ready.conditions.find((c) => c.type === 'Initialized')?.lastTransitionTime).toBe(apiTime(t0));
  });

  test('what the API returns for a status it stored shows it (nothing to patch); a change does not', () => {
    const desired = podStatus(crashed, '10.213.0.11', {}, t0);
    // The API drops nulls and keeps the rest, keys in its own order; kwok-style statuses lack our fields.
    const stored = JSON.parse(JSON.stringify({ ...desired, qosClass: 'Burstable', conditions: [{ type: 'PodScheduled', status: 'True' }, ...desired.conditions.map((c) => Object.fromEntries(Object.entries(c).filter(([, v]) => v !== null)))] }));
    stored.containerStatuses = stored.containerStatuses.map((c: Record<string, unknown>) => Object.fromEntries(Object.entries(c).reverse()));
    expect(statusShows(stored, desired)).toBe(true);
    const next = podStatus({ ...crashed, restartCount: 2 }, '10.213.0.11', stored, t0 + 1000);
    expect(statusShows(stored, next)).toBe(false);
    const kwok = { phase: 'Running', hostIP: '10.213.0.11', podIP: '10.213.0.11', startTime: apiTime(t0), conditions: [{ type: 'Ready', status: 'True' }], containerStatuses: [{ name: 'kube-flannel', image, ready: true, restartCount: 0, state: { running: { startedAt: apiTime(t0) } } }] };
    expect(statusShows(kwok, desired)).toBe(false);
  });

  test('before its first start the container is ContainerCreating', () => {
    expect(containerStatus({ image, restartCount: 0 })).toMatchObject({ state: { waiting: { reason: 'ContainerCreating' } }, ready: false, started: false, lastState: {} });
  });
});
