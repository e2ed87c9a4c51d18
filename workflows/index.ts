// Every workflow kubemend's worker registers. Workflow code is deterministic: see ../README.md.
export { probe, statusQuery } from './probe';
export { nodeLock } from './lock';
export { remediateMachineId } from './machine-id';
export { remediateDefaultRoute } from './default-route';
export { remediateIpamGc, restoreIpamQuarantine } from './ipam-gc';
export { remediateStaleCni } from './stale-cni';
export { remediateCalicoOrphans } from './calico-orphans';
export { remediateNodeAddress } from './node-address';
// Frozen: started by kubemend before the shared runbook; kept so such runs finish and replay.
export { machineId } from './legacy/machine-id-v1';
export { diagnose } from './diagnose';
