import { detectClonedMachineId } from '../../lib/detect/seed000-machine-id';
import { REMEDIATION_FIXABLE } from '../../lib/detect/fixable';
import { fixCommand } from '../../lib/findings';
import { factsOf } from '../helpers/diagnose-fixtures';

test('seed 000 on lab nodes cloned from one image: every node, with the shared id, MAC and weave refusals', () => {
  const f = factsOf('ssh-all-five');
  const id = f.nodes[0].machineId!;
  const mac = f.nodes[0].weaveMac!;
  const found = detectClonedMachineId(f);
  expect(found.map((x) => x.node)).toEqual(['node1', 'node2', 'node3']);
  for (const x of found) {
    expect(x).toMatchObject({ seed: '000', remediation: 'machine-id', signature: 'local and remote peer names collision', fixable: true });
    expect(x.evidence).toContain(`/etc/machine-id ${id}`);
    expect(x.evidence).toContain(`weave MAC ${mac}`);
    expect(x.evidence).toContain('weave status connections: 2 connection(s) refused for a peer names collision');
    expect(x.evidence[0]).toMatch(new RegExp(`^shares machine-id ${id} and weave MAC ${mac} with node\\d, node\\d$`));
  }
  expect(found[1].fixNodes).toEqual(['node1', 'node2', 'node3']);
  // The plan keeps one member of the group and fixes the others: the command names the whole group.
  expect(fixCommand(found[1], 'lab')).toBe('kubemend run machine-id --cluster lab --node node1 --node node2 --node node3');
});

test('seed 000 on a healthy lab: nothing', () => {
  expect(detectClonedMachineId(factsOf('ssh-healthy'))).toEqual([]);
});

test('fixable comes from the one table', () => {
  expect(REMEDIATION_FIXABLE['machine-id']).toBe(true);
  expect(Object.entries(REMEDIATION_FIXABLE).filter(([, v]) => !v).map(([k]) => k).sort()).toEqual([]);
});
