// Every workflow kubemend's worker registers. Workflow code is deterministic: see ../README.md.
export { probe, statusQuery } from './probe';
export { machineId, nodeLock } from './machine-id';
