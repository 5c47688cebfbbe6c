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

/** Standard Webhooks form ("whsec_" + base64 of 32 random bytes), which the OpenAI SDK's webhooks.unwrap() and the standardwebhooks libraries accept as is. */
export const getWebhookSigningSecret = (db: Kysely<Database>): Promise<string> =>
  getOrCreateSetting(db, 'webhook_signing_secret', () => `whsec_${randomBytes(32).toString('base64')}`);

/** A write of a few bytes, for readiness to find out whether the database takes writes again (a full disk). */
export async function recordWriteProbe(db: Kysely<Database>, now: number): Promise<void> {
  await db
    .insertInto('settings')
    .values({ key: 'write_probe', value: String(now) })
    .onConflict((oc) => oc.column('key').doUpdateSet({ value: String(now) }))
    .execute();
}
