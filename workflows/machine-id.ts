/**
 * machine-id: seed 000. Nodes cloned from one image share /etc/machine-id (and the dbus
 * copy), so Weave Net gives them the same peer name and MAC and refuses their connections
 * ("local and remote peer names collision").
 *
 * Its own story, on the shared runbook (workflows/runbook.ts), which does the locks,
 * approval, budget, cordon, drain, reboot, uncordon, undo and audit:
 *  - facts: every node's ids, boot id and weave MAC, read in one activity;
 *  - detect: nodes sharing a machine-id (either file) or weave MAC (lib/machine-id.ts);
 *  - plan: in each group keep one node (a control-plane node if there is one), fix the
 *    rest, workers first;
 *  - per node, out of service and rebooted: back up the old ids and regenerate them
 *    (systemd-machine-id-setup); no undo, because restoring the cloned id would bring the
 *    collision back (the old ids stay in /var/lib/kubemend/machine-id on the node);
 *  - verify: after its reboot the node's id is the new one in both files, its id and weave
 *    MAC are unique cluster-wide and weave reports no collision; at the end, no collision
 *    is left on any node this run fixed.
 */
import { ApplicationFailure } from '@temporalio/workflow';
import { Failure } from '../lib/failures';
import { detectSharedIdentity, type MachineIdPlan, type NodeIdentity, planMachineIdRunbook, remainingCollisions } from '../lib/machine-id';
import type { NodeIdentityReading } from '../lib/node-scripts';
import { type FixedNode, MachineIdInput, type MachineIdResult } from '../lib/remediation-input';
import { NodeStep } from '../lib/runbook';
import { type NodeContext, parseInput, type Remediation, type RunContext, runRemediation } from './runbook';

type Input = ReturnType<typeof MachineIdInput.parse>;
type Identity = NodeIdentity & { bootId: string; collisions: number | null };
interface Facts {
  identities: Identity[];
}
type Regenerated = { newId: string; already: boolean };
type Fixed = Omit<FixedNode, 'uncordoned' | 'resumed'>;

const RegeneratingId = 'RegeneratingId';

async function identities(run: RunContext<Input>): Promise<Identity[]> {
  const readings = await run.acts.readIdentities({ cluster: run.cluster, nodes: run.everyNode });
  return run.everyNode.map((name, i) => toIdentity(run, name, readings[i]));
}

function toIdentity(run: RunContext<Input>, name: string, r: NodeIdentityReading): Identity {
  const role = run.apiNodes.find((n) => n.name === name)?.controlPlane ? 'control-plane' : 'worker';
  return { name, role, machineId: r.machineId, dbusMachineId: r.dbusMachineId, weaveMac: r.weaveMac, bootId: r.bootId, collisions: r.collisions };
}

/** Remaining collisions that involve a node this run fixed. */
function onFixed(lines: string[], plan: MachineIdPlan): string[] {
  const fixed = new Set(plan.nodes.map((n) => n.name));
  return lines.filter((line) => line.split(' share ')[0].split(', ').some((n) => fixed.has(n)));
}

export const machineIdRemediation: Remediation<Input, Facts, MachineIdPlan, Regenerated, Fixed> = {
  name: 'machine-id',
  disruption: { outOfService: true, reboots: true, why: 'the new machine-id takes effect at boot, so each node is drained and rebooted' },

  async gather(run) {
    return { identities: await identities(run) };
  },

  detect: (facts) => detectSharedIdentity(facts.identities),

  plan: (facts, _findings, run) =>
    planMachineIdRunbook(facts.identities, { includeKeeper: run.input.includeKeeper, selected: run.selected, excluded: run.apiNodes.filter((n) => n.excluded).map((n) => n.name) }),

  planStatus: (plan) => Object.fromEntries(plan.keepers.map((k) => [k, { phase: NodeStep.Keeper }])),

  async apply(planned, ctx: NodeContext<Input>) {
    ctx.step(RegeneratingId);
    const regen = await ctx.acts.regenerateMachineId({ cluster: ctx.cluster, node: ctx.node, runTag: ctx.runTag, oldId: planned.machineId!, audit: ctx.audit });
    if (regen.already) ctx.resumed.push('machine-id');
    // No undo: restoring the cloned id would bring the collision back.
    return regen;
  },

  async verifyNode(planned, regen, ctx) {
    const all = await identities(ctx);
    const mine = all.find((n) => n.name === ctx.node)!;
    const others = all.filter((n) => n.name !== ctx.node);
    const clash = [
      ...others.filter((o) => mine.machineId && (o.machineId === mine.machineId || o.dbusMachineId === mine.machineId)).map((o) => `machine-id shared with ${o.name}`),
      ...others.filter((o) => mine.weaveMac && o.weaveMac === mine.weaveMac).map((o) => `weave MAC shared with ${o.name}`),
      ...(mine.machineId !== regen.newId ? [`machine-id is ${mine.machineId}, expected ${regen.newId}`] : []),
      ...(mine.dbusMachineId !== mine.machineId ? ['/var/lib/dbus/machine-id differs from /etc/machine-id'] : []),
      ...(mine.collisions ? [`weave still reports ${mine.collisions} peer-name collision(s)`] : []),
    ];
    if (clash.length) throw ApplicationFailure.create({ type: Failure.VerificationFailed, message: `${ctx.node} after its fix: ${clash.join('; ')}`, nonRetryable: true });
    return {
      result: { name: ctx.node, oldMachineId: planned.machineId, newMachineId: regen.newId, oldWeaveMac: planned.weaveMac, newWeaveMac: mine.weaveMac, bootIdBefore: ctx.bootIdBefore, bootIdAfter: ctx.bootIdAfter ?? mine.bootId },
      detail: `${planned.machineId} -> ${regen.newId}`,
      record: {
        action: 'verified: machine-id and weave MAC unique cluster-wide, no weave collision',
        before: { machineId: planned.machineId, weaveMac: planned.weaveMac, bootId: ctx.bootIdBefore },
        after: { machineId: regen.newId, weaveMac: mine.weaveMac, bootId: ctx.bootIdAfter },
      },
    };
  },

  remaining: (facts) => remainingCollisions(facts.identities),

  async verifyCluster(run, plan) {
    const remaining = remainingCollisions(await identities(run));
    return { remaining, failing: onFixed(remaining, plan) };
  },
};

/** The machine-id remediation's workflow type (the frozen `machineId` is its v1). */
export async function remediateMachineId(rawInput: MachineIdInput): Promise<MachineIdResult> {
  return runRemediation(machineIdRemediation, parseInput(MachineIdInput, rawInput, 'machine-id'));
}
