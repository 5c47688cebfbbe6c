// Per-user webhook signing secrets. Each user's events are signed with that
// user's own secret, readable only with that user's key (or an admin's), so
// one user can never sign an event another user's receiver accepts.
import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database, WebhookSecretsTable } from './schema.ts';

/** Standard Webhooks form ("whsec_" + base64 of 32 random bytes), which the OpenAI SDK's webhooks.unwrap() and the standardwebhooks libraries accept as is. */
export const newWebhookSecret = (): string => `whsec_${randomBytes(32).toString('base64')}`;

/** The user's secret, made on first use; safe when processes race (the first insert wins, everyone reads it). */
export async function userWebhookSecret(db: Kysely<Database>, userId: string, now = Date.now()): Promise<WebhookSecretsTable> {
  const existing = await db.selectFrom('webhook_secrets').selectAll().where('user_id', '=', userId).executeTakeFirst();
  if (existing) return existing;
  await db
    .insertInto('webhook_secrets')
    .values({ user_id: userId, secret: newWebhookSecret(), created_at: now })
    .onConflict((oc) => oc.column('user_id').doNothing())
    .execute();
  return db.selectFrom('webhook_secrets').selectAll().where('user_id', '=', userId).executeTakeFirstOrThrow();
}

/** Replaces the user's secret (making one if there was none); other users' secrets are untouched. */
export async function rotateUserWebhookSecret(db: Kysely<Database>, userId: string, now = Date.now()): Promise<WebhookSecretsTable> {
  const row = { user_id: userId, secret: newWebhookSecret(), created_at: now };
  await db
    .insertInto('webhook_secrets')
    .values(row)
    .onConflict((oc) => oc.column('user_id').doUpdateSet({ secret: row.secret, created_at: row.created_at }))
    .execute();
  return row;
}
