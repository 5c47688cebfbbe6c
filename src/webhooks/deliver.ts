// The webhook delivery sweep. Any number of processes may run it: each pass
// claims due deliveries from the outbox under a lease, POSTs them signed
// through the SSRF guard, and records the outcome. A 2xx ends a delivery;
// anything else (another status, a network error, a timeout) schedules the
// next attempt with exponential backoff and jitter, until maxAttempts. All of
// that state is in the database, so a restart (or another process) carries on
// where this one stopped: delivery is at least once.
import type { Kysely } from 'kysely';
import type { LifecycleContext } from '../runtime/context.ts';
import type { WebhooksConfig } from '../config.ts';
import type { Database, WebhookDeliveryRow } from '../store/sql/schema.ts';
import { findSharedWebhookSecret } from '../store/sql/settings.ts';
import { userWebhookSecret } from '../store/sql/webhook-secrets.ts';
import {
  claimDueWebhookDeliveries,
  markWebhookDelivered,
  recordWebhookFailure,
  releaseWebhookDelivery,
} from '../store/sql/webhooks.ts';
import { GuardedFetchError, guardedFetch } from '../upstreams/ssrf-guard.ts';
import { signedHeaders } from './sign.ts';
import { WakeableSleep } from '../runtime/wakeable-sleep.ts';

// Deliveries sent at once per pass; a backlog drains over successive passes, which follow each other at once.
const CLAIM_LIMIT = 16;
// A claim outlives its attempt's timeout by this much, so a slow but live sender is never overtaken by a second one.
const LEASE_MARGIN_MS = 5_000;
// Each retry waits this many times longer than the one before.
const BACKOFF_FACTOR = 4;
// Delays vary by +-20%, so receivers that went down together are not hit by every retry at the same instant.
const JITTER = 0.2;

export interface WebhookDispatcherOptions {
  db: Kysely<Database>;
  config: WebhooksConfig;
  /**
   * The secret every user's events were signed with before secrets were per user (webhooks.signingSecret, or
   * the one an older Spool generated), while webhooks.signWithSharedSecret keeps signing with it; each event
   * is always signed with its user's own secret (store/sql/webhook-secrets.ts).
   */
  sharedSecret?: string;
  /** Lease owner id of this process. */
  owner: string;
  pollIntervalMs: number;
  log: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void; error(obj: object, msg?: string): void };
}

/** Delay before attempt `attempt + 1`, after `attempt` failed ones: base * 4^(attempt-1), jittered, capped. */
export function retryDelayMs(attempt: number, config: Pick<WebhooksConfig, 'retryBaseDelayMs' | 'retryMaxDelayMs'>, random = Math.random): number {
  const exponential = config.retryBaseDelayMs * BACKOFF_FACTOR ** Math.max(0, attempt - 1);
  const jittered = Math.min(exponential, config.retryMaxDelayMs) * (1 - JITTER + 2 * JITTER * random());
  return Math.round(Math.min(jittered, config.retryMaxDelayMs));
}

type SendOutcome =
  | { ok: true; status: number }
  | { ok: false; status: number | null; error: string; permanent: boolean; retryAfterMs?: number; stopped?: boolean };

export class WebhookDispatcher {
  private stopping = false;
  private readonly abort = new AbortController();
  private readonly pause = new WakeableSleep();
  private loop: Promise<void> | undefined;

  constructor(private readonly options: WebhookDispatcherOptions) {}

  start(): this {
    this.loop = this.run();
    return this;
  }

  /** Cuts sends in flight short and hands them back uncounted; another process (or the next start) sends them. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.abort.abort();
    this.pause.wakeAll();
    await this.loop;
  }

  /** One pass: claims due deliveries and sends them; true when there were any. */
  async deliverDue(): Promise<boolean> {
    const { db, config, owner } = this.options;
    const claimed = await claimDueWebhookDeliveries(db, { owner, leaseMs: config.timeoutMs + LEASE_MARGIN_MS, now: Date.now(), limit: CLAIM_LIMIT });
    await Promise.all(claimed.map((row) => this.deliver(row)));
    return claimed.length > 0;
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      let busy = false;
      try {
        busy = await this.deliverDue();
      } catch (err) {
        // The database may be briefly unreachable; claims are leased, so nothing is lost by coming back later.
        this.options.log.error({ err }, 'webhook delivery sweep failed');
      }
      if (!busy && !this.stopping) await this.pause.sleep(this.options.pollIntervalMs);
    }
  }

  private async deliver(row: WebhookDeliveryRow): Promise<void> {
    const { db, config, owner, log } = this.options;
    const outcome = await this.send(row);
    const context = { deliveryId: row.id, eventId: row.event_id, batchId: row.batch_id, url: row.url, attempt: row.attempts };
    if (outcome.ok) {
      if (await markWebhookDelivered(db, row.id, owner, outcome.status, Date.now())) log.info({ ...context, status: outcome.status }, 'webhook delivered');
      return;
    }
    if (outcome.stopped) {
      await releaseWebhookDelivery(db, row.id, owner);
      return;
    }
    const giveUp = outcome.permanent || row.attempts >= config.maxAttempts;
    const delay = Math.min(Math.max(retryDelayMs(row.attempts, config), outcome.retryAfterMs ?? 0), config.retryMaxDelayMs);
    const nextAttemptAt = giveUp ? null : Date.now() + delay;
    await recordWebhookFailure(db, row.id, owner, { status: outcome.status, error: outcome.error, nextAttemptAt });
    if (giveUp) log.error({ ...context, error: outcome.error }, `webhook delivery given up after ${row.attempts} attempt(s)`);
    else log.warn({ ...context, error: outcome.error, retryInMs: delay }, 'webhook delivery failed; it will be retried');
  }

  private async send(row: WebhookDeliveryRow): Promise<SendOutcome> {
    const { config, sharedSecret, db } = this.options;
    // Read per attempt, so a rotation by another process applies to the next attempt.
    const own = await userWebhookSecret(db, row.user_id);
    const secrets = sharedSecret ? [own.secret, sharedSecret] : [own.secret];
    // Signed per attempt: receivers reject stale timestamps, and the body (fixed in the outbox) is what is signed.
    const headers = signedHeaders(secrets, row.event_id, Math.floor(Date.now() / 1000), row.payload);
    const timeout = AbortSignal.timeout(config.timeoutMs);
    try {
      const response = await guardedFetch(row.url, {
        method: 'POST',
        body: row.payload,
        headers: { 'content-type': 'application/json', 'user-agent': 'spool-webhooks/0.1', ...headers },
        signal: AbortSignal.any([this.abort.signal, timeout]),
        skipBody: true,
        maxBytes: 0,
        allowPrivateNetworks: config.allowPrivateNetworks,
        allowedHosts: config.allowedHosts,
      });
      if (response.status >= 200 && response.status < 300) return { ok: true, status: response.status };
      return { ok: false, status: response.status, error: `HTTP ${response.status}`, permanent: false, retryAfterMs: retryAfterMs(response.headers['retry-after']) };
    } catch (err) {
      if (this.abort.signal.aborted) return { ok: false, status: null, error: 'stopped', permanent: false, stopped: true };
      if (timeout.aborted) return { ok: false, status: null, error: `no answer within ${config.timeoutMs} ms`, permanent: false };
      if (err instanceof GuardedFetchError) {
        // A refused address or scheme stays refused under this configuration: retrying only postpones the same answer.
        const permanent = err.code === 'blocked_address' || err.code === 'bad_scheme';
        const hint = err.code === 'blocked_address' ? ' (allow it with webhooks.allowedHosts or webhooks.allowPrivateNetworks)' : '';
        return { ok: false, status: null, error: `${err.message}${hint}`, permanent };
      }
      return { ok: false, status: null, error: describe(err), permanent: false };
    }
  }
}

/** Retry-After in seconds or as an HTTP date, in ms from now; undefined when absent or unreadable. */
function retryAfterMs(header: string | string[] | undefined): number | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

function describe(err: unknown): string {
  const error = err as Error & { code?: string; cause?: { code?: string; message?: string } };
  const code = error.code ?? error.cause?.code;
  const message = error.message || error.cause?.message || String(err);
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}

/** Starts this process's delivery sweep on the lifecycle context's store, signing with per-user secrets (and the shared one, while configured). */
export async function startWebhookDispatcher(ctx: LifecycleContext): Promise<WebhookDispatcher> {
  const { config, store } = ctx;
  const sharedSecret = config.webhooks.signWithSharedSecret
    ? (config.webhooks.signingSecret ?? (await findSharedWebhookSecret(store.sql.db)))
    : undefined;
  return new WebhookDispatcher({
    db: store.sql.db,
    config: config.webhooks,
    sharedSecret,
    owner: ctx.workerId,
    pollIntervalMs: config.worker.pollIntervalMs,
    log: ctx.log,
  }).start();
}
