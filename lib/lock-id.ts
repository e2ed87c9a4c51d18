/** The workflow ID that is the lock on one node, for every kind of remediation (shared with the CLI). */
export const lockId = (cluster: string, node: string) => `kubemend-lock-${cluster}-${node}`;
