/**
 * Parsers for what a node tells us over SSH. Pure: text in, typed value or a problem out.
 * They never throw on odd node state; the caller decides what an odd value means.
 */
import { z } from 'zod';

export type Parsed<T> = { ok: true; value: T } | { ok: false; problem: string };

const MACHINE_ID = /^[0-9a-f]{32}$/;
const BOOT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/**
 * /etc/machine-id and /var/lib/dbus/machine-id hold 32 lowercase hex digits and a newline
 * (machine-id(5)). An empty file or "uninitialized" is how images ship it before first
 * boot; both are reported as problems, not ids.
 */
export function parseMachineId(text: string, file: string): Parsed<string> {
  const v = text.trim();
  if (v === '') return { ok: false, problem: `${file} is empty` };
  if (v === 'uninitialized') return { ok: false, problem: `${file} says "uninitialized" (first boot not completed)` };
  if (!MACHINE_ID.test(v)) return { ok: false, problem: `${file} does not hold a machine id (32 lowercase hex digits): ${JSON.stringify(v.slice(0, 40))}` };
  return { ok: true, value: v };
}

export function parseBootId(text: string): Parsed<string> {
  const v = text.trim();
  if (!BOOT_ID.test(v)) return { ok: false, problem: `boot_id is not a UUID: ${JSON.stringify(v.slice(0, 40))}` };
  return { ok: true, value: v };
}

/** One entry of `ip -j link`. Only the fields kubemend relies on are checked; the rest pass through as iproute2 gives them. */
const IpLink = z.looseObject({
  ifindex: z.number().int(),
  ifname: z.string().min(1),
  flags: z.array(z.string()).optional(),
  mtu: z.number().int().optional(),
  operstate: z.string().optional(),
  link_type: z.string().optional(),
  address: z.string().optional(),
  master: z.string().optional(),
});
export type IpLink = z.infer<typeof IpLink>;

export function parseIpLinkJson(text: string): Parsed<IpLink[]> {
  return parseJsonArray(text, z.array(IpLink), 'ip -j link');
}

/** One entry of `ip -j route show default`. */
const IpRoute = z.looseObject({
  dst: z.string(),
  gateway: z.string().optional(),
  dev: z.string().optional(),
  protocol: z.string().optional(),
  metric: z.number().optional(),
  flags: z.array(z.string()).optional(),
});
export type IpRoute = z.infer<typeof IpRoute>;

/**
 * The route the kernel uses for default traffic: among the default routes, the one with
 * the lowest metric that is not marked linkdown. None (seed 002's state after the uplink
 * stays down) is `null`, which is a fact, not an error.
 */
export function parseDefaultRoute(text: string): Parsed<IpRoute | null> {
  const parsed = parseJsonArray(text, z.array(IpRoute), 'ip -j route show default');
  if (!parsed.ok) return parsed;
  const usable = parsed.value
    .filter((r) => r.dst === 'default' && !(r.flags ?? []).includes('linkdown'))
    .sort((a, b) => (a.metric ?? 0) - (b.metric ?? 0));
  return { ok: true, value: usable[0] ?? null };
}

function parseJsonArray<T>(text: string, schema: z.ZodType<T>, what: string): Parsed<T> {
  let doc: unknown;
  // iproute2 prints nothing at all (not "[]") for an empty table on some versions.
  const trimmed = text.trim();
  if (trimmed === '') return { ok: true, value: schema.parse([]) };
  try {
    doc = JSON.parse(trimmed);
  } catch {
    return { ok: false, problem: `${what} did not print JSON: ${JSON.stringify(trimmed.slice(0, 60))}` };
  }
  const r = schema.safeParse(doc);
  if (!r.success) return { ok: false, problem: `${what} printed unexpected JSON: ${r.error.issues[0]?.message ?? 'invalid'}` };
  return { ok: true, value: r.data };
}

export function isMac(value: string): boolean {
  return MAC.test(value);
}
