/**
 * Scheduled runs (pure: no I/O; imported by workflows, the CLI and tests).
 *
 * A schedule is a Temporal Schedule whose action starts a remediation's workflow with an
 * input fixed when the schedule was created. Creating the schedule is the approval of every
 * run it starts: the input carries who created it and when (`ScheduledBy`), and the runbook
 * records that as the run's approval.
 *
 * The maintenance window is kured's: days of the week, a start and an end time of day, and
 * a time zone. The run checks it when it starts (workflows/runbook.ts): outside the window it
 * records that and changes nothing. The schedule still fires on its interval; a window in
 * the run, not in the schedule's spec, also covers `schedule trigger` and a catch-up after the
 * server was down. A window whose end is before its start runs overnight, and the day it
 * opens is the day that counts (fri 22:00-04:00 includes Saturday 02:00).
 */
import { z } from 'zod';
import { freeText } from './patterns';

/** Remediations that may run on a schedule: those that keep nodes in service. */
export const SCHEDULABLE = ['ipam-gc', 'calico-orphans'] as const;
export type Schedulable = (typeof SCHEDULABLE)[number];

export const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
export type Day = (typeof DAYS)[number];

const HHMM = /^([01]\d|2[0-3]):([0-5]\d)$/;

/** Whether the runtime knows the IANA time zone (Intl throws a RangeError for one it does not). */
export function isTimeZone(tz: string): boolean {
  if (!/^[A-Za-z][A-Za-z0-9_+/-]{0,63}$/.test(tz)) return false;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

export const MaintenanceWindow = z
  .object({
    days: z.array(z.enum(DAYS)).min(1).max(7),
    /** HH:MM, 24-hour, local to timeZone. */
    start: z.string().regex(HHMM, 'must be a time of day as HH:MM (24-hour)'),
    /** HH:MM; before start means the window runs overnight; equal to start means all day. */
    end: z.string().regex(HHMM, 'must be a time of day as HH:MM (24-hour)'),
    timeZone: z.string().refine(isTimeZone, 'must be an IANA time zone such as UTC or Europe/Berlin'),
  })
  .strict();
export type MaintenanceWindow = z.output<typeof MaintenanceWindow>;

/** A schedule's ID: kubemend-<remediation>-<cluster>[-<name>]. Letters, digits, '-'. */
export const SCHEDULE_ID = /^kubemend-[a-z0-9-]{1,200}$/;

/** Who approved a scheduled run by creating its schedule. */
export const ScheduledBy = z
  .object({
    scheduleId: z.string().regex(SCHEDULE_ID),
    createdBy: freeText(200).refine((v) => v.trim().length > 0, 'must not be blank'),
    /** ISO 8601 time of the creation. */
    createdAt: z.string().regex(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/),
  })
  .strict();
export type ScheduledBy = z.output<typeof ScheduledBy>;

export function scheduleId(remediation: Schedulable, cluster: string, name?: string): string {
  return `kubemend-${remediation}-${cluster}${name ? `-${name}` : ''}`;
}

/**
 * Days as kured's --reboot-days takes them, plus ranges: "mon-fri", "sat,sun", "mon,wed-fri".
 * Two-letter forms (mo, tu, ...) and full names are accepted. Throws a message naming the bad part.
 */
export function parseDays(text: string): Day[] {
  const index = (word: string): number => {
    const w = word.trim().toLowerCase();
    const i = DAYS.findIndex((d) => w.length >= 2 && (d.startsWith(w) || (w.length > 3 && FULL[DAYS.indexOf(d)] === w)));
    if (i < 0) throw new Error(`${JSON.stringify(word)} is not a day of the week (sun, mon, tue, wed, thu, fri, sat)`);
    return i;
  };
  const out = new Set<number>();
  for (const part of text.split(',')) {
    if (part.trim() === '') throw new Error(`empty day in ${JSON.stringify(text)}`);
    const [a, b, extra] = part.split('-');
    if (extra !== undefined) throw new Error(`${JSON.stringify(part)} is not a day or a range of days`);
    const from = index(a);
    const to = b === undefined ? from : index(b);
    for (let i = from; ; i = (i + 1) % 7) {
      out.add(i);
      if (i === to) break;
    }
  }
  return [...out].sort((x, y) => x - y).map((i) => DAYS[i]);
}
const FULL = ['sunday', 'monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday'];

const minutesOf = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

/** The weekday and minute of the day of an instant in a time zone. */
export function localTime(at: Date, timeZone: string): { day: Day; minute: number; text: string } {
  const parts = new Intl.DateTimeFormat('en-US', { timeZone, hourCycle: 'h23', weekday: 'short', hour: '2-digit', minute: '2-digit' }).formatToParts(at);
  const get = (t: string) => parts.find((p) => p.type === t)?.value ?? '';
  const day = get('weekday').slice(0, 3).toLowerCase() as Day;
  const hour = Number(get('hour')) % 24;
  const minute = Number(get('minute'));
  return { day, minute: hour * 60 + minute, text: `${day} ${String(hour).padStart(2, '0')}:${String(minute).padStart(2, '0')} ${timeZone}` };
}

/** Whether the window is open at an instant, and the local time it was judged at. */
export function windowOpen(w: MaintenanceWindow, at: Date): { open: boolean; local: string } {
  const t = localTime(at, w.timeZone);
  const start = minutesOf(w.start);
  const end = minutesOf(w.end);
  const dayBefore = DAYS[(DAYS.indexOf(t.day) + 6) % 7];
  let open: boolean;
  if (start === end) open = w.days.includes(t.day);
  else if (start < end) open = w.days.includes(t.day) && t.minute >= start && t.minute < end;
  // Overnight: open from start to midnight on a listed day, and from midnight to end on the day after one.
  else open = (w.days.includes(t.day) && t.minute >= start) || (w.days.includes(dayBefore) && t.minute < end);
  return { open, local: t.text };
}

export function windowText(w: MaintenanceWindow): string {
  const span = w.start === w.end ? 'all day' : `${w.start}-${w.end}${minutesOf(w.end) < minutesOf(w.start) ? ' (overnight)' : ''}`;
  return `${w.days.length === 7 ? 'every day' : w.days.join(',')} ${span} ${w.timeZone}`;
}
