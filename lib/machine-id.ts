/**
 * Seed 000, as pure decisions: which nodes share an identity (machine-id in either file,
 * or the weave MAC derived from it), which of them to fix and in what order, and the exact
 * commands a fix runs on a node. No I/O: unit-tested in test/unit/machine-id.test.ts.
 */
import type { Finding } from './findings';
import { fnv1a } from './hash';

export interface NodeIdentity {
  name: string;
  role: 'control-plane' | 'worker';
  machineId: string | null;
  dbusMachineId: string | null;
  /** The weave bridge's MAC, or null where there is no weave bridge. */
  weaveMac: string | null;
}

export interface SharedGroup {
  /** The identities the members share, e.g. "machine-id 3d12...", "weave MAC 76:2f:...". */
  shared: string[];
  nodes: string[];
}

/**
 * Groups of two or more nodes connected by any shared identity (transitively: a shares its
 * machine-id with b, b its weave MAC with c, so a, b, c are one group). Groups and their
 * members are sorted by name, so the result does not depend on the input order.
 */
export function sharedIdentityGroups(nodes: readonly NodeIdentity[]): SharedGroup[] {
  const keys = (n: NodeIdentity) =>
    [
      n.machineId && `machine-id ${n.machineId}`,
      n.dbusMachineId && `machine-id ${n.dbusMachineId}`,
      n.weaveMac && `weave MAC ${n.weaveMac.toLowerCase()}`,
    ].filter((k): k is string => !!k);
  const holders = new Map<string, string[]>();
  for (const n of nodes) for (const k of new Set(keys(n))) holders.set(k, [...(holders.get(k) ?? []), n.name]);
  // Union-find over node names joined by a key held by more than one node.
  const parent = new Map(nodes.map((n) => [n.name, n.name]));
  const find = (x: string): string => {
    let r = x;
    while (parent.get(r) !== r) r = parent.get(r)!;
    parent.set(x, r);
    return r;
  };
  for (const names of holders.values()) for (const other of names.slice(1)) parent.set(find(other), find(names[0]));
  const groups = new Map<string, Set<string>>();
  for (const n of nodes) {
    const r = find(n.name);
    groups.set(r, (groups.get(r) ?? new Set()).add(n.name));
  }
  return [...groups.values()]
    .filter((g) => g.size > 1)
    .map((g) => {
      const members = [...g].sort();
      const shared = [...holders.entries()].filter(([, names]) => names.length > 1 && names.every((x) => g.has(x))).map(([k]) => k).sort();
      return { shared, nodes: members };
    })
    .sort((a, b) => a.nodes[0].localeCompare(b.nodes[0]));
}

/** Where the old ids are kept on a node before they are removed (never deleted by kubemend). */
export const BACKUP_DIR = '/var/lib/kubemend/machine-id';

/** What a fix runs on a node, in order, for the plan and the audit trail; the activity runs exactly these. */
export const FIX_COMMANDS = [
  `mkdir -p ${BACKUP_DIR} && cp /etc/machine-id ${BACKUP_DIR}/etc-machine-id.<run> && cp /var/lib/dbus/machine-id ${BACKUP_DIR}/dbus-machine-id.<run>`,
  'rm -f /etc/machine-id /var/lib/dbus/machine-id',
  'systemd-machine-id-setup',
  'cp /etc/machine-id /var/lib/dbus/machine-id',
  'systemctl reboot',
] as const;

export interface PlannedNode {
  name: string;
  role: 'control-plane' | 'worker';
  /** The ids it has now, which the fix replaces. */
  machineId: string | null;
  weaveMac: string | null;
  steps: string[];
}

export interface MachineIdPlan {
  /** A digest of the plan's content: an approval names it, so a stale approval is refused. */
  id: string;
  groups: SharedGroup[];
  /** Per group, the member left as it is (unless includeKeeper). */
  keepers: string[];
  /** In the order they will be fixed, one at a time. */
  nodes: PlannedNode[];
  /** Nodes of a shared group that will not be touched, and why (excluded, not selected). */
  skipped: Array<{ name: string; reason: string }>;
}

export interface PlanOptions {
  includeKeeper: boolean;
  /** Nodes the run may touch (the run's --node selection, or every node). */
  selected: readonly string[];
  /** Nodes labelled kubemend.io/exclude=true. */
  excluded: readonly string[];
}

/**
 * The fix: in each group keep one member (a control-plane node if there is one, since it
 * is the riskiest to reboot; else the first by name) and fix the rest. Workers go before
 * control-plane nodes; within each, by name.
 */
export function planMachineIdFix(nodes: readonly NodeIdentity[], opts: PlanOptions): MachineIdPlan {
  const groups = sharedIdentityGroups(nodes);
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const keepers: string[] = [];
  const toFix: NodeIdentity[] = [];
  const skipped: Array<{ name: string; reason: string }> = [];
  for (const g of groups) {
    const members = g.nodes.map((n) => byName.get(n)!);
    const keeper = opts.includeKeeper ? undefined : (members.find((m) => m.role === 'control-plane') ?? members[0]);
    if (keeper) keepers.push(keeper.name);
    for (const m of members) {
      if (m === keeper) continue;
      if (opts.excluded.includes(m.name)) skipped.push({ name: m.name, reason: 'labelled kubemend.io/exclude=true' });
      else if (!opts.selected.includes(m.name)) skipped.push({ name: m.name, reason: 'not selected by --node' });
      else toFix.push(m);
    }
  }
  toFix.sort((a, b) => (a.role === b.role ? a.name.localeCompare(b.name) : a.role === 'worker' ? -1 : 1));
  const planned = toFix.map((n) => ({ name: n.name, role: n.role, machineId: n.machineId, weaveMac: n.weaveMac, steps: ['cordon', 'drain', ...FIX_COMMANDS, 'wait for SSH with a new boot id and the Node Ready', 'verify ids and weave MAC unique', 'uncordon'] }));
  const content = JSON.stringify({ groups, keepers, planned: planned.map((p) => [p.name, p.machineId, p.weaveMac]), skipped });
  return { id: fnv1a(content), groups, keepers, nodes: planned, skipped };
}

/**
 * After a fix: identities still shared anywhere in the cluster (empty when seed 000 is
 * gone). Used on every node after its reboot and once more at the end.
 */
export function remainingCollisions(nodes: readonly NodeIdentity[]): string[] {
  return sharedIdentityGroups(nodes).map((g) => `${g.nodes.join(', ')} share ${g.shared.join(' and ')}`);
}

/**
 * Seed 000's detector: one finding per node that shares an identity with another. The
 * runbook's detect and `kubemend diagnose` both use it.
 */
export function detectSharedIdentity(nodes: readonly (NodeIdentity & { collisions?: number | null })[]): Finding[] {
  const out: Finding[] = [];
  for (const g of sharedIdentityGroups(nodes)) {
    for (const name of g.nodes) {
      const n = nodes.find((x) => x.name === name)!;
      const others = g.nodes.filter((x) => x !== name);
      out.push({
        seed: '000',
        remediation: 'machine-id',
        node: name,
        signature: 'local and remote peer names collision',
        evidence: [
          `shares ${g.shared.join(' and ')} with ${others.join(', ')}`,
          ...(n.machineId ? [`/etc/machine-id ${n.machineId}`] : []),
          ...(n.weaveMac ? [`weave MAC ${n.weaveMac}`] : []),
          ...(n.collisions ? [`weave status connections: ${n.collisions} connection(s) refused for a peer names collision`] : []),
        ],
        fixable: true,
      });
    }
  }
  return out;
}

/**
 * The plan the runbook's machine-id remediation approves: planMachineIdFix (unchanged, the
 * frozen v1 workflow uses it too), with a node that has no readable machine-id moved to
 * `skipped` (there is no id to replace: fail closed and leave it alone).
 */
export function planMachineIdRunbook(nodes: readonly NodeIdentity[], opts: PlanOptions): MachineIdPlan {
  const base = planMachineIdFix(nodes, opts);
  const unreadable = base.nodes.filter((n) => !n.machineId);
  if (unreadable.length === 0) return base;
  const planned = base.nodes.filter((n) => n.machineId);
  const skipped = [...base.skipped, ...unreadable.map((n) => ({ name: n.name, reason: 'no readable /etc/machine-id (shares only its weave MAC): nothing to regenerate; look at the node by hand' }))];
  const content = JSON.stringify({ groups: base.groups, keepers: base.keepers, planned: planned.map((p) => [p.name, p.machineId, p.weaveMac]), skipped });
  return { ...base, id: fnv1a(content), nodes: planned, skipped };
}
