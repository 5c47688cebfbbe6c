// Writes a batch's terminal-state event into the webhook outbox. Called inside
// the very transaction that makes the batch terminal (finalize, validation
// failure, expiry before validation), so the state change and its event commit
// together or not at all: a crash can delay an event but never lose it.
import type { Kysely, Transaction } from 'kysely';
import type { WebhooksConfig } from '../config.ts';
import { newWebhookDeliveryId, newWebhookEventId } from '../ids.ts';
import { findBatch } from '../store/sql/batches.ts';
import { TERMINAL_BATCH_STATUSES, type BatchRow, type Database, type WebhookEventType } from '../store/sql/schema.ts';
import { insertWebhookDeliveries } from '../store/sql/webhooks.ts';

/** The URLs a batch's events go to: its own webhook_url and its user's configured one, each once. */
export function webhookTargets(batch: Pick<BatchRow, 'webhook_url' | 'user_id'>, config: Pick<WebhooksConfig, 'users'>): string[] {
  const targets = [batch.webhook_url, Object.hasOwn(config.users, batch.user_id) ? config.users[batch.user_id] : null];
  return [...new Set(targets.filter((url): url is string => typeof url === 'string' && url !== ''))];
}

/**
 * The batch object an event carries, in the dialect the batch was created in, exactly as the API shows it. The
 * API layer supplies it (app.ts), so this layer below it never imports its presenters.
 */
export type PresentBatch = (batch: BatchRow) => unknown;

/** The event body: `{id, object, type, created_at, data}` with data the batch object in the dialect it was created in. */
export function webhookPayload(eventId: string, batch: BatchRow, now: number, present: PresentBatch): string {
  const type = `batch.${batch.status}` as WebhookEventType;
  return JSON.stringify({ id: eventId, object: 'event', type, created_at: Math.floor(now / 1000), data: present(batch) });
}

/**
 * Queues one delivery per target for the batch's current (terminal) state; the
 * caller runs this in the transaction that made it terminal, after the update.
 * Returns how many deliveries were queued.
 */
export async function enqueueBatchEvent(
  db: Kysely<Database> | Transaction<Database>,
  config: Pick<WebhooksConfig, 'users'>,
  present: PresentBatch,
  batchId: string,
  now = Date.now(),
): Promise<number> {
  const batch = await findBatch(db, batchId);
  if (!batch || !TERMINAL_BATCH_STATUSES.includes(batch.status)) return 0;
  const targets = webhookTargets(batch, config);
  if (targets.length === 0) return 0;
  const eventId = newWebhookEventId();
  const payload = webhookPayload(eventId, batch, now, present);
  await insertWebhookDeliveries(
    db,
    targets.map((url) => ({
      id: newWebhookDeliveryId(),
      event_id: eventId,
      event_type: `batch.${batch.status}` as WebhookEventType,
      batch_id: batch.id,
      user_id: batch.user_id,
      url,
      payload,
      state: 'pending' as const,
      attempts: 0,
      next_attempt_at: now,
      created_at: now,
    })),
  );
  return targets.length;
}
