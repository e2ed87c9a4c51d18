/**
 * Where a run's wall time went, from a history exported as JSON (test/histories/*.json, or
 * `temporal workflow show --output json`): the run's total and the time each activity type
 * took from scheduled to completed, summed. Prints figures only.
 *
 *   npm run build && node dist/scripts/history-times.js test/histories/remediate-default-route-fixed.json
 */
import { readFileSync } from 'node:fs';

interface Event {
  eventId: string;
  eventTime: string;
  activityTaskScheduledEventAttributes?: { activityType: { name: string } };
  activityTaskCompletedEventAttributes?: { scheduledEventId: string };
}

const file = process.argv[2];
if (!file) {
  console.error('usage: history-times <history.json>');
  process.exit(2);
}
const events = (JSON.parse(readFileSync(file, 'utf8')) as { events: Event[] }).events;
const at = (e: Event) => Date.parse(e.eventTime);
const scheduled = new Map<string, { type: string; at: number }>();
const spent = new Map<string, number>();
for (const e of events) {
  if (e.activityTaskScheduledEventAttributes) scheduled.set(String(e.eventId), { type: e.activityTaskScheduledEventAttributes.activityType.name, at: at(e) });
  const done = e.activityTaskCompletedEventAttributes;
  const s = done && scheduled.get(String(done.scheduledEventId));
  if (s) spent.set(s.type, (spent.get(s.type) ?? 0) + at(e) - s.at);
}
const f = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
console.log(`run: ${f(at(events[events.length - 1]) - at(events[0]))} from its first event to its last`);
for (const [type, ms] of [...spent].sort((a, b) => b[1] - a[1])) console.log(`  ${type.padEnd(24)} ${f(ms)}`);
