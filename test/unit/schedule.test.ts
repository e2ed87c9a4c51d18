import { windowFromFlags } from '../../cli/schedule';
import { CliError } from '../../cli/errors';
import { IpamGcInput } from '../../lib/remediation-input';
import { isTimeZone, localTime, MaintenanceWindow, parseDays, scheduleId, SCHEDULE_ID, ScheduledBy, windowOpen, windowText } from '../../lib/schedule';

const w = (x: Partial<MaintenanceWindow>): MaintenanceWindow => MaintenanceWindow.parse({ days: ['mon', 'tue', 'wed', 'thu', 'fri'], start: '22:00', end: '04:00', timeZone: 'UTC', ...x });
const at = (iso: string) => new Date(iso);

describe('parseDays: kured-style days, with ranges', () => {
  test.each([
    ['mon-fri', ['mon', 'tue', 'wed', 'thu', 'fri']],
    ['sat,sun', ['sun', 'sat']],
    ['su,mo,tu', ['sun', 'mon', 'tue']],
    ['Monday,wed-thu', ['mon', 'wed', 'thu']],
    ['fri-mon', ['sun', 'mon', 'fri', 'sat']],
    ['mon,mon', ['mon']],
  ])('%s', (text, days) => expect(parseDays(text)).toEqual(days));
  test.each([['m'], ['funday'], ['mon,,tue'], ['mon-tue-wed'], [''], ['mon;rm -rf /']])('%j is refused, naming the bad part', (text) => expect(() => parseDays(text)).toThrow(/day/));
});

describe('localTime', () => {
  test('weekday and minute of the day in the zone, across the date line', () => {
    // 2026-11-26 is a Thursday.
    expect(localTime(at('2026-11-26T23:30:00Z'), 'UTC')).toMatchObject({ day: 'thu', minute: 23 * 60 + 30 });
    expect(localTime(at('2026-11-26T23:30:00Z'), 'Europe/Berlin')).toMatchObject({ day: 'fri', minute: 30 });
    expect(localTime(at('2026-11-26T03:00:00Z'), 'America/New_York')).toMatchObject({ day: 'wed', minute: 22 * 60 });
    expect(localTime(at('2026-11-26T00:00:00Z'), 'UTC')).toMatchObject({ day: 'thu', minute: 0 });
  });
});

describe('windowOpen', () => {
  test('a daytime window: open from start (inclusive) to end (exclusive) on listed days only', () => {
    const day = w({ start: '09:00', end: '17:00' });
    expect(windowOpen(day, at('2026-11-26T09:00:00Z')).open).toBe(true); // Thursday
    expect(windowOpen(day, at('2026-11-26T16:59:00Z')).open).toBe(true);
    expect(windowOpen(day, at('2026-11-26T17:00:00Z')).open).toBe(false);
    expect(windowOpen(day, at('2026-11-26T08:59:00Z')).open).toBe(false);
    expect(windowOpen(day, at('2026-11-28T12:00:00Z')).open).toBe(false); // Saturday
  });
  test('an overnight window belongs to the day it opens: Friday 22:00 to Saturday 04:00 is open, Saturday 22:00 is not', () => {
    const night = w({});
    expect(windowOpen(night, at('2026-11-27T23:00:00Z')).open).toBe(true); // Fri 23:00
    expect(windowOpen(night, at('2026-11-28T03:59:00Z')).open).toBe(true); // Sat 03:59, opened Friday
    expect(windowOpen(night, at('2026-11-28T04:00:00Z')).open).toBe(false);
    expect(windowOpen(night, at('2026-11-28T23:00:00Z')).open).toBe(false); // Sat 23:00: Saturday is not listed
    expect(windowOpen(night, at('2026-11-30T02:00:00Z')).open).toBe(false); // Mon 02:00: Sunday was not listed
    expect(windowOpen(night, at('2026-11-26T12:00:00Z')).open).toBe(false);
  });
  test('start equal to end is all day on the listed days', () => {
    const all = w({ start: '00:00', end: '00:00', days: ['sat', 'sun'] });
    expect(windowOpen(all, at('2026-11-28T00:00:00Z')).open).toBe(true);
    expect(windowOpen(all, at('2026-11-29T23:59:00Z')).open).toBe(true);
    expect(windowOpen(all, at('2026-11-27T23:59:00Z')).open).toBe(false);
  });
  test('the time zone decides the local time, and daylight saving is the zone\'s', () => {
    const berlin = w({ start: '02:00', end: '05:00', days: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'], timeZone: 'Europe/Berlin' });
    expect(windowOpen(berlin, at('2026-11-26T01:30:00Z')).open).toBe(true); // 02:30 CET (UTC+1)
    expect(windowOpen(berlin, at('2026-07-01T01:30:00Z')).open).toBe(true); // 03:30 CEST (UTC+2)
    expect(windowOpen(berlin, at('2026-07-01T03:30:00Z')).open).toBe(false); // 05:30 CEST
    expect(windowOpen(berlin, at('2026-11-26T01:30:00Z')).local).toBe('thu 02:30 Europe/Berlin');
  });
});

describe('MaintenanceWindow and the CLI flags', () => {
  test('no window flags: no window', () => expect(windowFromFlags({})).toBeUndefined());
  test("defaults as kured's: every day, all day, UTC", () => {
    const x = windowFromFlags({ timeZone: 'UTC' })!;
    expect(x).toEqual({ days: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'], start: '00:00', end: '00:00', timeZone: 'UTC' });
    expect(windowText(x)).toBe('every day all day UTC');
    expect(windowText(w({}))).toBe('mon,tue,wed,thu,fri 22:00-04:00 (overnight) UTC');
  });
  test.each([
    [{ windowStart: '25:00' }, /--window-start: "25:00" must be a time of day as HH:MM/],
    [{ windowStart: '22:00', windowEnd: '4:00' }, /--window-end: "4:00"/],
    [{ timeZone: 'Mars/Olympus' }, /--time-zone: "Mars\/Olympus" must be an IANA time zone/],
    [{ timeZone: "UTC'; rm -rf /" }, /--time-zone/],
    [{ windowDays: 'weekdays' }, /--window-days: "weekdays" is not a day of the week/],
  ])('%j is refused with the flag named (exit 2)', (flags, message) => {
    let err: unknown;
    try {
      windowFromFlags(flags);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(2);
    expect((err as Error).message).toMatch(message);
  });
  test('isTimeZone', () => {
    expect(isTimeZone('Asia/Shanghai')).toBe(true);
    expect(isTimeZone('UTC')).toBe(true);
    expect(isTimeZone('Not/AZone')).toBe(false);
    expect(isTimeZone('../etc/passwd')).toBe(false);
  });
});

describe('schedule IDs and the scheduled input', () => {
  test('the id is kubemend-<remediation>-<cluster>[-<name>] and matches its pattern', () => {
    expect(scheduleId('ipam-gc', 'lab')).toBe('kubemend-ipam-gc-lab');
    expect(scheduleId('ipam-gc', 'lab', 'nightly')).toBe('kubemend-ipam-gc-lab-nightly');
    expect(SCHEDULE_ID.test(scheduleId('ipam-gc', 'prod-eu-1', 'x'))).toBe(true);
    expect(SCHEDULE_ID.test('other-schedule')).toBe(false);
  });
  test('an ipam-gc input carries who approved it by creating the schedule, and its window; a malformed one is refused', () => {
    const scheduledBy = { scheduleId: 'kubemend-ipam-gc-lab', createdBy: 'alice', createdAt: '2026-11-26T02:00:00.000Z' };
    const ok = IpamGcInput.parse({ cluster: 'lab', requestedBy: 'alice (schedule kubemend-ipam-gc-lab)', scheduledBy, window: w({}) });
    expect(ok.scheduledBy).toEqual(scheduledBy);
    expect(ok.parallel).toBe(4);
    expect(ScheduledBy.safeParse({ ...scheduledBy, createdBy: ' ' }).success).toBe(false);
    expect(ScheduledBy.safeParse({ ...scheduledBy, scheduleId: 'x' }).success).toBe(false);
    expect(IpamGcInput.safeParse({ cluster: 'lab', requestedBy: 'a', window: { ...w({}), timeZone: 'Nowhere/Else' } }).success).toBe(false);
    expect(IpamGcInput.safeParse({ cluster: 'lab', requestedBy: 'a', parallel: 0 }).success).toBe(false);
  });
});
