// Process-shared settings: values every API and worker process must agree on.
import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from './schema.ts';

/** Returns the stored value, creating it with `make()` if absent; safe when processes race. */
export async function getOrCreateSetting(db: Kysely<Database>, key: string, make: () => string): Promise<string> {
  const existing = await db.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirst();
  if (existing) return existing.value;
  await db
    .insertInto('settings')
    .values({ key, value: make() })
    .onConflict((oc) => oc.column('key').doNothing())
    .execute();
  const row = await db.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirstOrThrow();
  return row.value;
}

export const getUploadSigningSecret = (db: Kysely<Database>): Promise<string> =>
  getOrCreateSetting(db, 'upload_signing_secret', () => randomBytes(32).toString('hex'));

/**
 * The one secret every user's webhook events were signed with before secrets were per user, when this install
 * generated one; never created any more (webhook-secrets.ts has the per-user ones).
 */
export async function findSharedWebhookSecret(db: Kysely<Database>): Promise<string | undefined> {
  const row = await db.selectFrom('settings').select('value').where('key', '=', 'webhook_signing_secret').executeTakeFirst();
  return row?.value;
}

/** A write of a few bytes, for readiness to find out whether the database takes writes again (a full disk). */
export async function recordWriteProbe(db: Kysely<Database>, now: number): Promise<void> {
  await db
    .insertInto('settings')
    .values({ key: 'write_probe', value: String(now) })
    .onConflict((oc) => oc.column('key').doUpdateSet({ value: String(now) }))
    .execute();
}
