// Worker liveness rows: each Spool process registers, beats every second, and
// removes its row when it stops. Any process may find another dead and hand
// back everything the dead one held (runtime/liveness.ts decides who is dead;
// this file only reads and writes the rows).
import { sql, type Kysely } from 'kysely';
import type { SqlDialectName } from './database.ts';
import type { Database, WorkersTable } from './schema.ts';

export type WorkerRow = WorkersTable;

/** Registers (or re-registers, after others took this process for dead) a live process. */
export async function registerWorker(db: Kysely<Database>, row: WorkerRow): Promise<void> {
  await db
    .insertInto('workers')
    .values(row)
    .onConflict((oc) => oc.column('id').doUpdateSet({ heartbeat_at: row.heartbeat_at, lock_key: row.lock_key }))
    .execute();
}

/** Beats; false when the row is gone (another process found this one dead and reaped it). */
export async function beatWorker(db: Kysely<Database>, id: string, now: number, lockKey: number | null): Promise<boolean> {
  const result = await db.updateTable('workers').set({ heartbeat_at: now, lock_key: lockKey }).where('id', '=', id).executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

export async function listWorkers(db: Kysely<Database>): Promise<WorkerRow[]> {
  return (await db.selectFrom('workers').selectAll().execute()).map((row) => ({
    ...row,
    pid: Number(row.pid),
    started_at: Number(row.started_at),
    heartbeat_at: Number(row.heartbeat_at),
    lock_key: row.lock_key === null ? null : Number(row.lock_key),
  }));
}

export async function removeWorker(db: Kysely<Database>, id: string): Promise<void> {
  await db.deleteFrom('workers').where('id', '=', id).execute();
}

/**
 * The advisory locks of LIVENESS_LOCK_CLASS held right now in this database
 * (PostgreSQL only; advisory locks are per database, and pg_locks shows every
 * database's). A worker row whose lock_key is not among them has lost its
 * liveness session: its process died, or its connection did.
 */
export async function heldLivenessLocks(db: Kysely<Database>, dialect: SqlDialectName): Promise<Set<number> | undefined> {
  if (dialect !== 'postgres') return undefined;
  const { rows } = await sql<{ key: string | number }>`
    select objid::bigint as key from pg_locks
    where locktype = 'advisory' and granted and classid = ${LIVENESS_LOCK_CLASS} and objsubid = 2
      and database = (select oid from pg_database where datname = current_database())`.execute(db);
  return new Set(rows.map((row) => Number(row.key)));
}

/** The first key of every liveness lock (pg_advisory_lock(int4, int4)); the second is the worker's lock_key. */
export const LIVENESS_LOCK_CLASS = 0x5300_1001;

export interface ReapedWork {
  requests: number;
  slots: number;
  batches: number;
  webhookDeliveries: number;
}

/**
 * Hands back everything a dead worker held, in one transaction with the
 * removal of its row (undefined when another process reaped it first): its running requests, batch leases and webhook
 * deliveries lapse now (the owner stays, so a process wrongly taken for dead
 * still records outcomes for lines nobody reclaimed yet; every outcome write
 * is conditional on the lease owner), and its upstream slots are freed.
 */
export async function reapWorker(db: Kysely<Database>, id: string): Promise<ReapedWork | undefined> {
  return db.transaction().execute(async (trx) => {
    // The row goes first: of several processes reaping the same dead one at once, the one whose delete took the
    // row does the rest; the others (waiting on its row lock, or serialised by SQLite) find nothing to do.
    const removed = await trx.deleteFrom('workers').where('id', '=', id).executeTakeFirst();
    if (Number(removed.numDeletedRows) === 0) return undefined;
    const requests = await trx
      .updateTable('requests')
      .set({ lease_expires_at: 0 })
      .where('lease_owner', '=', id)
      .where('state', '=', 'running')
      .executeTakeFirst();
    const chunks = await trx
      .updateTable('chunks')
      .set({ lease_expires_at: 0 })
      .where('lease_owner', '=', id)
      .where('state', '=', 'running')
      .executeTakeFirst();
    const slots = await trx.updateTable('upstream_slots').set({ owner: null, expires_at: null }).where('owner', '=', id).executeTakeFirst();
    const batches = await trx
      .updateTable('batches')
      .set({ lease_expires_at: 0 })
      .where('lease_owner', '=', id)
      .where('lease_expires_at', 'is not', null)
      .executeTakeFirst();
    const webhookDeliveries = await trx
      .updateTable('webhook_deliveries')
      .set({ lease_expires_at: 0 })
      .where('lease_owner', '=', id)
      .where('state', '=', 'pending')
      .executeTakeFirst();
    return {
      requests: Number(requests.numUpdatedRows) + Number(chunks.numUpdatedRows),
      slots: Number(slots.numUpdatedRows),
      batches: Number(batches.numUpdatedRows),
      webhookDeliveries: Number(webhookDeliveries.numUpdatedRows),
    };
  });
}
