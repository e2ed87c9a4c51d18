/**
 * What every detector reads: the nodes' SSH facts and the API's facts, gathered once by
 * `kubemend diagnose` (activities/diagnose.ts). Pure helpers over them live here too.
 */
import type { DiagnoseApiFacts } from '../diagnose-api';
import type { DiagnoseNodeFacts } from '../diagnose-script';

export interface DiagnoseFacts {
  cluster: string;
  /** Every node of the cluster in kubemend's config. */
  configured: string[];
  /** The nodes that could be read (a node that could not is not here). */
  nodes: DiagnoseNodeFacts[];
  /** null when the cluster has no kubeconfig or the API could not be read. */
  api: DiagnoseApiFacts | null;
}

/** Interfaces a CNI, container runtime or virtual switch makes: not a host's own uplink. */
export const VIRTUAL_IF = /^(lo|cni\d*|cbr\d*|flannel\.|weave|vxlan|cali|tunl|docker|veth|br-|virbr|kube-|datapath|vethwe|cilium|nodelocaldns)/;

function ipv4(a: string): number | null {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  if (!m) return null;
  return ((Number(m[1]) << 24) >>> 0) + (Number(m[2]) << 16) + (Number(m[3]) << 8) + Number(m[4]);
}

/** Whether "a.b.c.d" (or "a.b.c.d/len") is inside the IPv4 CIDR; false for anything unparsable. */
export function inCidr(address: string, cidr: string): boolean {
  const [net, len] = cidr.split('/');
  const a = ipv4(address.split('/')[0]);
  const n = ipv4(net);
  const bits = Number(len);
  if (a === null || n === null || !Number.isInteger(bits) || bits < 0 || bits > 32) return false;
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return ((a & mask) >>> 0) === ((n & mask) >>> 0);
}

/** Usable host-local addresses in an IPv4 CIDR: all but network, broadcast and the gateway (.1). */
export function hostLocalCapacity(cidr: string): number | null {
  const bits = Number(cidr.split('/')[1]);
  if (!Number.isInteger(bits) || bits < 1 || bits > 30) return null;
  return 2 ** (32 - bits) - 3;
}

/** The network address of "a.b.c.d/len" as a CIDR ("10.244.1.1/24" -> "10.244.1.0/24"). */
export function networkOf(addressWithLen: string): string | null {
  const [a, len] = addressWithLen.split('/');
  const v = ipv4(a);
  const bits = Number(len);
  if (v === null || !Number.isInteger(bits) || bits < 0 || bits > 32) return null;
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  const n = (v & mask) >>> 0;
  return `${[n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.')}/${bits}`;
}

export const apiNode = (f: DiagnoseFacts, name: string) => f.api?.nodes.find((n) => n.name === name) ?? null;
