/** Audit reasons, shared by workflows (no I/O here) and the audit store. */
/** Named reasons: the same constants are the Kubernetes Events' reasons on the Node. */
export const AuditReason = {
  PlanMade: 'RemediationPlanned',
  DryRun: 'RemediationDryRun',
  Refused: 'RemediationRefused',
  Approved: 'RemediationApproved',
  NodeCordoned: 'NodeCordoned',
  NodeDrained: 'NodeDrained',
  MachineIdRegenerated: 'MachineIdRegenerated',
  NodeRebooted: 'NodeRebooted',
  NodeUncordoned: 'NodeUncordoned',
  Compensated: 'RemediationCompensated',
  LeakedIPsReleased: 'LeakedIPsReleased',
  InterfaceDeleted: 'InterfaceDeleted',
  NetworkConfigApplied: 'NetworkConfigApplied',
  CniPodRestarted: 'CniPodRestarted',
  PodEvicted: 'PodEvicted',
  KubeletRestarted: 'KubeletRestarted',
  NodeJoined: 'NodeJoined',
  NodeReset: 'NodeReset',
  CniLeftoversMoved: 'CniLeftoversMoved',
} as const;

