/**
 * Notifications: one activity that posts a run's news to the webhook in the worker's config.
 * A notification never fails a run: every delivery problem (no answer, refused, HTTP error,
 * an unreadable URL file) is retried a few times inside the activity, logged, and returned
 * as `delivered: false`. The URL is a secret: it is read here, from the worker's config,
 * and never appears in a result, an error or a log line (those name its host only).
 */
import { readFile } from 'node:fs/promises';
import { Context, log } from '@temporalio/activity';
import { type Config, formatZodIssues, isWebhookUrl } from '../lib/config';
import { formatDuration } from '../lib/duration';
import { notificationMessage, NotifyInput } from '../lib/notification';

export type { NotifyInput } from '../lib/notification';

export interface NotifyResult {
  delivered: boolean;
  error?: string;
  /** Attempts made (0 when nothing was sent). */
  attempts?: number;
}

export interface NotifyDeps {
  config: Config;
  env?: Record<string, string | undefined>;
}

type Webhook = NonNullable<Config['notifications']['webhook']>;

/** The webhook's URL from the worker's config, read at each send (a mounted secret may rotate). */
async function webhookUrl(w: Webhook, env: Record<string, string | undefined>): Promise<{ url: string } | { error: string }> {
  let url: string | undefined;
  if (w.url !== undefined) url = w.url;
  else if (w.urlEnv !== undefined) {
    url = env[w.urlEnv]?.trim();
    if (!url) return { error: `notifications.webhook.urlEnv: $${w.urlEnv} is not set in the worker's environment` };
  } else if (w.urlFile !== undefined) {
    try {
      url = (await readFile(w.urlFile, 'utf8')).trim();
    } catch (err) {
      return { error: `notifications.webhook.urlFile: cannot read ${w.urlFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})` };
    }
  }
  if (!url || !isWebhookUrl(url)) return { error: 'notifications.webhook: the configured value is not an http(s) URL (not shown: it is a secret)' };
  return { url };
}

/** Removes the URL, and its path (where a Slack webhook keeps its token), from any text. */
function redact(text: string, url: string): string {
  const u = new URL(url);
  let out = text.split(url).join('<webhook>');
  const secretPart = `${u.pathname}${u.search}`;
  if (secretPart.length > 1) out = out.split(secretPart).join('/<redacted>');
  return out;
}

type Attempt = { ok: true; status: number } | { ok: false; retry: boolean; error: string };

async function postOnce(url: string, body: string, timeoutMs: number, cancel: AbortSignal | undefined): Promise<Attempt> {
  const signal = cancel ? AbortSignal.any([AbortSignal.timeout(timeoutMs), cancel]) : AbortSignal.timeout(timeoutMs);
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json; charset=utf-8', 'user-agent': 'kubemend' },
      body,
      redirect: 'manual',
      signal,
    });
    const text = (await res.text()).slice(0, 200).replace(/\s+/g, ' ').trim();
    if (res.status >= 200 && res.status < 300) return { ok: true, status: res.status };
    // Slack answers 4xx for a bad token, a removed channel or a bad payload: retrying will not help.
    const retry = res.status >= 500 || res.status === 429 || res.status === 408;
    return { ok: false, retry, error: `HTTP ${res.status}${text ? `: ${text}` : ''}` };
  } catch (err) {
    if (cancel?.aborted) return { ok: false, retry: false, error: 'cancelled' };
    const e = err as Error & { cause?: NodeJS.ErrnoException };
    if (e.name === 'TimeoutError' || e.name === 'AbortError') return { ok: false, retry: true, error: `no answer within ${formatDuration(timeoutMs)}` };
    const code = e.cause?.code;
    const known: Record<string, string> = { ECONNREFUSED: 'connection refused', ECONNRESET: 'connection reset', ENOTFOUND: 'host not found', EAI_AGAIN: 'host lookup failed', EHOSTUNREACH: 'host unreachable', ENETUNREACH: 'network unreachable', UND_ERR_SOCKET: 'connection closed' };
    return { ok: false, retry: true, error: code ? (known[code] ?? code) : (e.cause?.message ?? e.message) };
  }
}

/** The wait before attempt `n + 1` (n >= 1): 0.5 s, 1 s, 2 s. */
export const backoffMs = (n: number) => Math.min(500 * 2 ** (n - 1), 2000);

function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}

/** Posts `body` up to `attempts` times; stops early on an answer that a retry will not change. */
async function deliver(
  url: string,
  body: string,
  w: { timeout: number; attempts: number },
  deadline: number,
  cancel: AbortSignal | undefined,
  report: (attempt: number, error: string) => void,
): Promise<NotifyResult> {
  const host = new URL(url).host;
  let last = '';
  for (let attempt = 1; attempt <= w.attempts; attempt++) {
    const left = deadline - Date.now();
    if (left < 100) return { delivered: false, error: `webhook ${host}: ${last ? `${last}; ` : ''}no time left for attempt ${attempt} before the activity's timeout`, attempts: attempt - 1 };
    const r = await postOnce(url, body, Math.min(w.timeout, left), cancel);
    if (r.ok) return { delivered: true, attempts: attempt };
    last = redact(r.error, url);
    report(attempt, last);
    if (!r.retry || attempt === w.attempts) return { delivered: false, error: `webhook ${host}: ${last} (attempt ${attempt} of ${w.attempts})`, attempts: attempt };
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, backoffMs(attempt));
      cancel?.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
    });
    if (cancel?.aborted) return { delivered: false, error: `webhook ${host}: cancelled after ${last}`, attempts: attempt };
  }
  return { delivered: false, error: `webhook ${host}: not attempted`, attempts: 0 };
}

export function createNotifyActivities(deps: NotifyDeps) {
  return {
    /**
     * Posts one event of a run to the configured webhook. Never throws: returns whether it was
     * delivered, and why not. At most `attempts` posts of `timeout` each, 0.5 s, 1 s, 2 s apart
     * (defaults: 3 of 5 s, so at most about 17 s), and always before the activity's own
     * start-to-close timeout.
     */
    async notify(raw: NotifyInput): Promise<NotifyResult> {
      const w = deps.config.notifications.webhook;
      if (!w) return { delivered: false, error: 'no webhook configured' };
      const parsed = NotifyInput.safeParse(raw);
      if (!parsed.success) {
        const error = `bad input: ${formatZodIssues(parsed.error).join('; ')}`;
        log.warn('notification not sent', { error });
        return { delivered: false, error };
      }
      const n = parsed.data;
      const about = { event: n.event, cluster: n.cluster, remediation: n.remediation, runId: n.runId };
      const resolved = await webhookUrl(w, deps.env ?? process.env);
      if ('error' in resolved) {
        log.error('notification not delivered', { ...about, error: resolved.error, attempts: 0 });
        return { delivered: false, error: resolved.error, attempts: 0 };
      }
      const host = new URL(resolved.url).host;
      const ctx = activityContext();
      const limit = ctx?.info.startToCloseTimeoutMs;
      const deadline = limit ? Date.now() + limit - 1000 : Infinity;
      const beat = ctx ? setInterval(() => ctx.heartbeat(), 1000) : undefined;
      let r: NotifyResult;
      try {
        r = await deliver(resolved.url, JSON.stringify(notificationMessage(n)), w, deadline, ctx?.cancellationSignal, (attempt, error) =>
          log.warn('notification attempt failed', { ...about, host, attempt, of: w.attempts, error }),
        );
      } finally {
        clearInterval(beat);
      }
      if (r.delivered) log.info('notification delivered', { ...about, host, attempts: r.attempts });
      else log.error('notification not delivered', { ...about, host, attempts: r.attempts, error: r.error });
      return r;
    },
  };
}
