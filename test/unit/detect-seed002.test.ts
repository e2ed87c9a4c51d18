import { detectNoDefaultRoute, NO_DEFAULT_ROUTE } from '../../lib/detect/seed002-default-route';
import { fixCommand } from '../../lib/findings';
import { factsOf } from '../helpers/diagnose-fixtures';

test('seed 002 on the lab: only the control plane, whose uplink stayed down, with flannel never started', () => {
  const found = detectNoDefaultRoute(factsOf('ssh-all-five'));
  expect(found).toEqual([
    {
      seed: '002',
      remediation: 'default-route',
      node: 'node1',
      signature: NO_DEFAULT_ROUTE,
      evidence: ['ip route show default: no default route', 'enp0s3 is DOWN with 10.0.2.15/24', '/run/flannel/subnet.env is missing: flanneld has not started on this boot'],
      fixable: true,
    },
  ]);
  expect(fixCommand(found[0], 'lab')).toBe('kubemend run default-route --cluster lab --node node1');
});

test("seed 002 names the interface the node's own netplan gives the default route", () => {
  const f = factsOf('ssh-all-five');
  const n1 = f.nodes.find((n) => n.name === 'node1')!;
  n1.netConfig = [{ file: '/etc/netplan/50-cloud-init.yaml', kind: 'netplan', interfaces: ['enp0s3', 'enp0s8'], defaultRouteInterfaces: ['enp0s3'] }];
  expect(detectNoDefaultRoute(f)[0].evidence[1]).toBe('/etc/netplan/50-cloud-init.yaml gives enp0s3 the default route; enp0s3 is DOWN');
});

test('seed 002 on a healthy lab: nothing', () => {
  expect(detectNoDefaultRoute(factsOf('ssh-healthy'))).toEqual([]);
});
