/**
 * Calico's host-side veth name for a pod (calico's VethNameForWorkload): "cali" and the
 * first 11 hex digits of sha1("<namespace>.<pod>"), 15 characters, the Linux maximum.
 * kubemend compares these names with the node's interfaces to find orphan veths (seed 004).
 */
import { createHash } from 'node:crypto';

export const CALICO_VETH_PREFIX = 'cali';

export function calicoVethName(namespace: string, pod: string): string {
  return CALICO_VETH_PREFIX + createHash('sha1').update(`${namespace}.${pod}`).digest('hex').slice(0, 11);
}
