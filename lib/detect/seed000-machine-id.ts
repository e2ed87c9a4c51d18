/** Seed 000: nodes cloned from one image share a machine-id, so Weave Net gives them one peer name. */
import type { Finding } from '../findings';
import { detectSharedIdentity, sharedIdentityGroups } from '../machine-id';
import type { DiagnoseFacts } from './facts';
import { isFixable } from './fixable';

export function detectClonedMachineId(f: DiagnoseFacts): Finding[] {
  const ids = f.nodes.map((n) => ({ name: n.name, role: 'worker' as const, machineId: n.machineId, dbusMachineId: n.dbusMachineId, weaveMac: n.weaveMac, collisions: n.weaveCollisions?.length ?? null }));
  const groups = sharedIdentityGroups(ids);
  // The fix plans over the whole group (one member is kept as it is), so its command names them all.
  return detectSharedIdentity(ids).map((x) => ({ ...x, fixable: isFixable('machine-id'), fixNodes: groups.find((g) => g.nodes.includes(x.node))?.nodes ?? [x.node] }));
}
