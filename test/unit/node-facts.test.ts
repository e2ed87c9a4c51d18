// Fixtures in test/fixtures are real `ip -j` output (iproute2 6.1) captured from a network
// namespace shaped like the seeds' nodes: seed 000's weave bridge MAC 76:2f:d2:46:f8:94,
// seed 001's NAT interface enp0s3 with 10.0.2.15/24 beside host-only enp0s8, and seed 002's
// node after its uplink stayed down.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isMac, parseBootId, parseDefaultRoute, parseIpLinkJson, parseMachineId } from '../../lib/node-facts';

const fixture = (name: string) => readFileSync(join(__dirname, '..', 'fixtures', name), 'utf8');

describe('parseMachineId', () => {
  test('accepts 32 lowercase hex digits and a newline (machine-id(5))', () => {
    expect(parseMachineId('3d1219c7c4c5404aaa1f6d2a48adfda4\n', '/etc/machine-id')).toEqual({ ok: true, value: '3d1219c7c4c5404aaa1f6d2a48adfda4' });
  });
  test.each([
    ['', /is empty/],
    ['\n', /is empty/],
    ['uninitialized\n', /uninitialized/],
    ['3D1219C7C4C5404AAA1F6D2A48ADFDA4\n', /does not hold a machine id/],
    ['3d1219c7-c4c5-404a-aa1f-6d2a48adfda4\n', /does not hold a machine id/],
    ['3d1219c7c4c5404aaa1f6d2a48adfd\n', /does not hold a machine id/],
  ])('%j is a problem, not an id', (text, problem) => {
    const r = parseMachineId(text, '/etc/machine-id');
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.problem).toMatch(problem);
  });
});

describe('parseBootId', () => {
  test('reads the kernel boot id', () => {
    expect(parseBootId('4e8b998e-fba8-4b52-a414-df49d9ea37b7\n')).toEqual({ ok: true, value: '4e8b998e-fba8-4b52-a414-df49d9ea37b7' });
  });
  test('rejects anything else', () => expect(parseBootId('garbage').ok).toBe(false));
});

describe('parseIpLinkJson', () => {
  test("finds seed 000's weave bridge and its MAC, and passes fields through as iproute2 gives them", () => {
    const r = parseIpLinkJson(fixture('seed000-ip-link.json'));
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const weave = r.value.find((l) => l.ifname === 'weave');
    expect(weave).toMatchObject({ address: '76:2f:d2:46:f8:94', mtu: 1376, link_type: 'ether' });
    expect(isMac(weave!.address!)).toBe(true);
    const enp0s3 = r.value.find((l) => l.ifname === 'enp0s3');
    expect(enp0s3).toMatchObject({ operstate: 'UP', address: '08:00:27:4e:66:a1' });
    expect(enp0s3!.flags).toContain('LOWER_UP');
    expect((enp0s3 as Record<string, unknown>).qdisc).toBe('noqueue');
  });
  test('reports output that is not ip -j link', () => {
    expect(parseIpLinkJson('1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536')).toEqual({ ok: false, problem: expect.stringMatching(/did not print JSON/) });
    expect(parseIpLinkJson('[{"ifname": 3}]')).toEqual({ ok: false, problem: expect.stringMatching(/unexpected JSON/) });
  });
});

describe('parseDefaultRoute', () => {
  test("seed 001's node routes default traffic through the NAT interface", () => {
    expect(parseDefaultRoute(fixture('seed001-route-default.json'))).toEqual({
      ok: true,
      value: { dst: 'default', gateway: '10.0.2.2', dev: 'enp0s3', protocol: 'dhcp', metric: 100, flags: [] },
    });
  });
  test("seed 002: uplink down, so no default route, which flannel needs (a fact, not an error)", () => {
    expect(fixture('seed002-route-default-uplink-down.json').trim()).toBe('[]');
    expect(parseDefaultRoute(fixture('seed002-route-default-uplink-down.json'))).toEqual({ ok: true, value: null });
    expect(parseDefaultRoute('')).toEqual({ ok: true, value: null });
  });
  test('prefers the lowest metric and skips routes whose link is down', () => {
    const routes = [
      { dst: 'default', gateway: '192.168.6.1', dev: 'wlan0', metric: 600, flags: ['linkdown'] },
      { dst: 'default', gateway: '10.0.2.2', dev: 'enp0s3', metric: 200, flags: [] },
      { dst: 'default', gateway: '192.178.33.1', dev: 'enp0s8', metric: 100, flags: [] },
    ];
    const r = parseDefaultRoute(JSON.stringify(routes));
    expect(r.ok && r.value?.dev).toBe('enp0s8');
    const onlyDown = parseDefaultRoute(JSON.stringify([routes[0]]));
    expect(onlyDown).toEqual({ ok: true, value: null });
  });
});
