/**
 * Every seed's detector, run over one gathering of facts. Pure and deterministic: the
 * diagnose workflow runs them, and a remediation's `detect` is one of them.
 */
import type { Finding } from '../findings';
import type { DiagnoseFacts } from './facts';
import { detectClonedMachineId } from './seed000-machine-id';
import { detectNatAdvertise } from './seed001-nat-advertise';
import { detectNoDefaultRoute } from './seed002-default-route';
import { detectStaleCni } from './seed003-stale-cni';
import { detectOrphanCalico } from './seed004-orphan-calico';

export type { DiagnoseFacts } from './facts';
export { REMEDIATION_FIXABLE, isFixable } from './fixable';

export const DETECTORS: ReadonlyArray<(f: DiagnoseFacts) => Finding[]> = [detectClonedMachineId, detectNatAdvertise, detectNoDefaultRoute, detectStaleCni, detectOrphanCalico];

/** All findings, by seed, then node. */
export function detectAll(f: DiagnoseFacts): Finding[] {
  return DETECTORS.flatMap((d) => d(f));
}
