/**
 * Strict patterns for every value that can end up on a remote command line or in a
 * Temporal visibility query. Anything outside them is rejected at the edge (config, CLI,
 * workflow input) before a connection is made.
 */
import { z } from 'zod';

/** Kubernetes node names are DNS-1123 subdomains (RFC 1123 labels joined by dots). */
export const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/;
/** Cluster names: one DNS-1123 label. */
export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** Hostnames (case-insensitive RFC 1123), dotted IPv4, or IPv6 without brackets. */
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HEX16 = /^[0-9A-Fa-f]{1,4}$/;

/** IPv6 without brackets or zone id: 8 groups, or fewer around one '::', optionally ending in IPv4. */
function isIPv6(v: string): boolean {
  if (v.length > 45) return false;
  let text = v;
  const tail = text.slice(text.lastIndexOf(':') + 1);
  if (tail.includes('.')) {
    if (!IPV4.test(tail)) return false;
    text = `${text.slice(0, text.length - tail.length)}0:0`; // an IPv4 tail is two groups wide
  }
  const groups = (h: string) => (h === '' ? [] : h.split(':'));
  const halves = text.split('::');
  if (halves.length > 2) return false;
  const all = halves.length === 2 ? [...groups(halves[0]), ...groups(halves[1])] : groups(text);
  if (!all.every((g) => HEX16.test(g))) return false;
  return halves.length === 2 ? all.length <= 7 : all.length === 8;
}
/** Linux interface names: at most 15 bytes (IFNAMSIZ-1), no '/', no whitespace, no ':'. */
export const IFNAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;
/** POSIX login names as useradd accepts them. */
export const LOGIN = /^[a-z_][a-z0-9_-]{0,31}$/;

export function isHost(value: string): boolean {
  if (IPV4.test(value)) return true;
  if (value.includes(':')) return isIPv6(value);
  // A dotted all-numeric name that is not a valid IPv4 address is a typo, not a host.
  if (/^[\d.]+$/.test(value)) return false;
  return HOSTNAME.test(value);
}

const show = (v: string) => JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);

/** A string schema that accepts what `test` accepts and otherwise says what was expected and what came. */
function matching(test: (v: string) => boolean, expected: string) {
  return z.string().superRefine((v, ctx) => {
    if (!test(v)) ctx.addIssue({ code: 'custom', message: `must be ${expected}, got ${show(v)}` });
  });
}

export const nodeName = matching((v) => v.length <= 253 && DNS_SUBDOMAIN.test(v), 'a Kubernetes node name (lowercase DNS-1123 subdomain)');
export const clusterName = matching((v) => DNS_LABEL.test(v), "a lowercase DNS-1123 label (a-z, 0-9, '-', at most 63)");
export const host = matching(isHost, 'a hostname, an IPv4 or an IPv6 address');
export const interfaceName = matching((v) => IFNAME.test(v), 'a Linux interface name (1-15 of A-Z a-z 0-9 _ . -)');
export const loginName = matching((v) => LOGIN.test(v), 'a POSIX login name');

export const port = z.number().int().min(1).max(65535);

/** A file path from config: no NUL or line breaks; relative paths are resolved by the loader. */
export const filePath = z
  .string()
  .min(1)
  .refine((v) => !/[\0\r\n]/.test(v), { message: 'must not contain NUL or line breaks' });

/** Free text that is recorded but never executed (reasons, actors). */
export const freeText = (max: number) =>
  z.string().max(max).refine((v) => !/[\0-\x08\x0b-\x1f\x7f]/.test(v), {
    message: 'must not contain control characters',
  });
