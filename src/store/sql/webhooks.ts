// The webhook outbox. Rows are written in the transaction that makes a batch
// terminal; any process's delivery sweep claims due rows under a lease (like
// request claims: a conditional UPDATE, skipping rows other processes are
// locking on PostgreSQL), sends them, and records the outcome only while it
// still holds the lease, so a slow sender whose lease lapsed cannot overwrite
// the outcome of the process that took the row over.
import { PostgresAdapter, type Kysely, type QueryCreator, type Transaction } from 'kysely';
import type { Database, NewWebhookDelivery, WebhookDeliveryRow } from './schema.ts';

type Db = Kysely<Database> | Transaction<Database>;

/** Adds deliveries; one that already exists for the same batch and URL is left as it is. */
export async function insertWebhookDeliveries(db: Db, rows: NewWebhookDelivery[]): Promise<void> {
  if (rows.length === 0) return;
  await db
    .insertInto('webhook_deliveries')
    .values(rows)
    .onConflict((oc) => oc.columns(['batch_id', 'url']).doNothing())
    .execute();
}

/**
 * Takes up to `limit` pending deliveries that are due and that nobody holds
 * (or whose holder's lease lapsed: it died mid-send), oldest due first. Each
 * claim counts as an attempt, so a sender that keeps dying still runs out of
 * attempts.
 */
export async function claimDueWebhookDeliveries(
  db: Kysely<Database>,
  args: { owner: string; leaseMs: number; now: number; limit: number },
): Promise<WebhookDeliveryRow[]> {
  const due = (qc: QueryCreator<Database>) =>
    qc
      .selectFrom('webhook_deliveries')
      .select('id')
      .where('state', '=', 'pending')
      .where('next_attempt_at', '<=', args.now)
      .where((eb) => eb.or([eb('lease_expires_at', 'is', null), eb('lease_expires_at', '<', args.now)]))
      .orderBy('next_attempt_at')
      .limit(args.limit);
  // Look before claiming: every process polls this all the time, and on SQLite even an UPDATE that matches
  // nothing takes the database's single write lock, which the runner's result writes are waiting for.
  if (!(await due(db).executeTakeFirst())) return [];
  const lease = { lease_owner: args.owner, lease_expires_at: args.now + args.leaseMs };
  if (db.getExecutor().adapter instanceof PostgresAdapter) {
    // The rows are picked and locked in a CTE, which PostgreSQL runs once. As a plain `id IN (SELECT ...
    // LIMIT n FOR UPDATE SKIP LOCKED)` the subquery could be run again for a row another claimer had just
    // changed, and the claim came back empty while deliveries were due (4 claimers over 300 due rows: one
    // found nothing with 21-49 still unclaimed, in most runs of webhooks.test.ts).
    return db
      .with('picked', (qc) => due(qc).forUpdate().skipLocked())
      .updateTable('webhook_deliveries')
      .set((eb) => ({ ...lease, attempts: eb('attempts', '+', 1) }))
      .where('id', 'in', (eb) => eb.selectFrom('picked').select('picked.id'))
      .returningAll()
      .execute();
  }
  return db
    .updateTable('webhook_deliveries')
    .set((eb) => ({ ...lease, attempts: eb('attempts', '+', 1) }))
    .where('id', 'in', due(db))
    // Re-checked here: on SQLite the subquery takes no lock, so this is what makes two claimers exclusive.
    .where('state', '=', 'pending')
    .where((eb) => eb.or([eb('lease_expires_at', 'is', null), eb('lease_expires_at', '<', args.now)]))
    .returningAll()
    .execute();
}

/** A 2xx came back. False when the lease was lost meanwhile (the new holder records its own outcome). */
export async function markWebhookDelivered(db: Db, id: string, owner: string, status: number, now: number): Promise<boolean> {
  const result = await db
    .updateTable('webhook_deliveries')
    .set({ state: 'delivered', delivered_at: now, last_status: status, last_error: null, lease_owner: null, lease_expires_at: null })
    .where('id', '=', id)
    .where('lease_owner', '=', owner)
    .where('state', '=', 'pending')
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

export interface WebhookFailure {
  status: number | null;
  error: string;
  /** When to try again; null gives up (state failed). */
  nextAttemptAt: number | null;
}

/** An attempt failed: schedule the next one, or give up. Conditional on the lease, like markWebhookDelivered. */
export async function recordWebhookFailure(db: Db, id: string, owner: string, failure: WebhookFailure): Promise<boolean> {
  const result = await db
    .updateTable('webhook_deliveries')
    .set({
      state: failure.nextAttemptAt === null ? 'failed' : 'pending',
      ...(failure.nextAttemptAt === null ? {} : { next_attempt_at: failure.nextAttemptAt }),
      last_status: failure.status,
      last_error: failure.error.slice(0, 1000),
      lease_owner: null,
      lease_expires_at: null,
    })
    .where('id', '=', id)
    .where('lease_owner', '=', owner)
    .where('state', '=', 'pending')
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/**
 * Hands a claimed delivery back untouched, its attempt uncounted: the process
 * is stopping and cut the send short, which says nothing about the receiver.
 */
export async function releaseWebhookDelivery(db: Db, id: string, owner: string): Promise<void> {
  await db
    .updateTable('webhook_deliveries')
    .set((eb) => ({ lease_owner: null, lease_expires_at: null, attempts: eb('attempts', '-', 1) }))
    .where('id', '=', id)
    .where('lease_owner', '=', owner)
    .where('state', '=', 'pending')
    .execute();
}

/** A batch's deliveries, oldest first (one per webhook URL). */
export async function listBatchWebhookDeliveries(db: Db, batchId: string): Promise<WebhookDeliveryRow[]> {
  return db.selectFrom('webhook_deliveries').selectAll().where('batch_id', '=', batchId).orderBy('created_at').orderBy('id').execute();
}
