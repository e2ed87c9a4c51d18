/**
 * May kubemend take this node out of service now? (pure; the activity feeds it the
 * cluster's Node objects as they are at that moment). Fails closed: any doubt blocks.
 * As kured and medik8s do: a cluster-wide budget of nodes cordoned or down, never the
 * last Ready control-plane node, never a node labelled kubemend.io/exclude=true.
 */
import type { NodeObjectFacts } from './node-object';

/** Set on a node kubemend cordoned, with the run's ID: kubemend's count, and its undo's proof. */
export const CORDONED_BY_ANNOTATION = 'kubemend.io/cordoned-by';

export interface ClusterNode extends NodeObjectFacts {
  name: string;
  /** The run that cordoned it, from CORDONED_BY_ANNOTATION, or null. */
  cordonedBy: string | null;
}

export type BudgetVerdict = { ok: true } | { ok: false; reason: string };

export function mayDisrupt(nodes: readonly ClusterNode[], target: string, maxUnavailable: number): BudgetVerdict {
  const node = nodes.find((n) => n.name === target);
  if (!node) return { ok: false, reason: `no Node object named ${target}` };
  if (node.excluded) return { ok: false, reason: `${target} is labelled kubemend.io/exclude=true` };
  // Out of service: NotReady/Unknown, or cordoned by some kubemend run. This run's own
  // cordon of the target is not counted twice.
  const out = nodes.filter((n) => n.name !== target && (n.ready !== 'True' || (n.cordonedBy !== null && n.unschedulable)));
  if (out.length + 1 > maxUnavailable) {
    return { ok: false, reason: `the disruption budget allows ${maxUnavailable} node(s) out of service and ${out.length} already are (${out.map((n) => `${n.name}: ${n.ready !== 'True' ? `Ready=${n.ready ?? 'never'}` : `cordoned by ${n.cordonedBy}`}`).join(', ')})` };
  }
  if (node.controlPlane) {
    const otherReady = nodes.filter((n) => n.controlPlane && n.name !== target && n.ready === 'True' && !n.unschedulable);
    if (otherReady.length === 0) return { ok: false, reason: `${target} is the last Ready control-plane node` };
  }
  return { ok: true };
}

/**
 * Before a run starts: the NotReady nodes must leave room in the budget for one more (a
 * sick cluster is not the moment for planned reboots). A NotReady node the run is about to
 * fix is not "one more": it is already out, and fixing it is the point (medik8s counts the
 * unhealthy node it remediates the same way), so `targets` that are NotReady are left out of
 * the count; each target still passes mayDisrupt, which counts the other targets, before it
 * is taken out.
 */
export function clusterHealthy(nodes: readonly ClusterNode[], maxUnavailable: number, targets: readonly string[] = []): BudgetVerdict {
  const notReady = nodes.filter((n) => n.ready !== 'True' && !targets.includes(n.name));
  if (notReady.length >= maxUnavailable) {
    const fixing = nodes.filter((n) => n.ready !== 'True' && targets.includes(n.name)).map((n) => n.name);
    return { ok: false, reason: `${notReady.length} node(s) NotReady (${notReady.map((n) => n.name).join(', ')}), budget ${maxUnavailable}: refusing to start${fixing.length ? ` (not counted: ${fixing.join(', ')}, which this run fixes)` : ''}` };
  }
  return { ok: true };
}
