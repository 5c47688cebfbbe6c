// Batch rows and the batch-level lease that serializes validation and
// finalization across processes. The lease is an optimistic conditional
// UPDATE (owner + expiry), which both SQLite and PostgreSQL run atomically;
// any process may sweep, and exactly one wins each batch at a time.
import type { Kysely, Transaction } from 'kysely';
import type { BatchRow, BatchStatus, BatchUpdate, Database, NewBatch, WireDialect } from './schema.ts';

type Db = Kysely<Database> | Transaction<Database>;

export async function insertBatch(db: Db, row: NewBatch): Promise<void> {
  await db.insertInto('batches').values(row).execute();
}

export async function findBatch(db: Db, id: string): Promise<BatchRow | undefined> {
  return db.selectFrom('batches').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function findUserBatch(db: Db, userId: string, id: string): Promise<BatchRow | undefined> {
  return db.selectFrom('batches').selectAll().where('id', '=', id).where('user_id', '=', userId).executeTakeFirst();
}

export interface ListBatchesQuery {
  /** Undefined: every user's batches (admins). */
  userId: string | undefined;
  limit: number;
  after?: string;
  /** The page of newer batches just before this id (newest first still); fetches limit+1 to tell has_more. */
  before?: string;
  /** Only batches created in this dialect. */
  dialect?: WireDialect;
}

/** Newest first; `after` is the id of the last batch of the previous page. Fetches limit+1 to tell has_more. */
export async function listBatches(db: Db, q: ListBatchesQuery): Promise<BatchRow[]> {
  let query = db.selectFrom('batches').selectAll();
  if (q.userId !== undefined) query = query.where('user_id', '=', q.userId);
  if (q.dialect !== undefined) query = query.where('dialect', '=', q.dialect);
  if (q.after) query = query.where('id', '<', q.after);
  if (q.before) {
    // The limit+1 batches nearest above the cursor, then newest first like every other page.
    const rows = await query.where('id', '>', q.before).orderBy('id', 'asc').limit(q.limit + 1).execute();
    return rows.reverse();
  }
  return query.orderBy('id', 'desc').limit(q.limit + 1).execute();
}

/** Applies `values` only while the batch is in one of `from`; true if this caller made the transition. */
export async function transitionBatch(
  db: Db,
  id: string,
  from: readonly BatchStatus[],
  values: BatchUpdate,
  /** When given, only while this process holds the batch lease. */
  leaseOwner?: string,
): Promise<boolean> {
  // `in ()` is a syntax error in PostgreSQL (SQLite matches nothing): no statuses, no transition.
  if (from.length === 0) return false;
  let query = db
    .updateTable('batches')
    .set(values)
    .where('id', '=', id)
    .where('status', 'in', [...from]);
  if (leaseOwner !== undefined) query = query.where('lease_owner', '=', leaseOwner);
  const result = await query.executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

export async function updateBatch(db: Db, id: string, values: BatchUpdate): Promise<void> {
  await db.updateTable('batches').set(values).where('id', '=', id).execute();
}

export interface BatchClaimFilter {
  statuses: readonly BatchStatus[];
  /** Only batches whose every request has a recorded outcome (the counters are kept in the same transaction as results). */
  allRequestsDone?: boolean;
  /** Only batches whose deadline is at or before this time. */
  overdueAt?: number;
}

/**
 * Takes the lease on one batch matching `filter` that nobody holds (or whose
 * holder's lease lapsed). Highest priority, then oldest, first. The claim is
 * a conditional UPDATE, so of two processes racing for a batch one wins.
 */
export async function claimBatchLease(
  db: Kysely<Database>,
  filter: BatchClaimFilter,
  owner: string,
  leaseMs: number,
  now: number,
): Promise<BatchRow | undefined> {
  if (filter.statuses.length === 0) return undefined;
  let query = db
    .selectFrom('batches')
    .selectAll()
    .where('status', 'in', [...filter.statuses])
    .where((eb) => eb.or([eb('lease_expires_at', 'is', null), eb('lease_expires_at', '<', now)]));
  if (filter.allRequestsDone) {
    query = query.where((eb) => eb(eb('request_completed', '+', eb.ref('request_failed')), '>=', eb.ref('request_total')));
  }
  if (filter.overdueAt !== undefined) query = query.where('deadline_at', '<=', filter.overdueAt);
  const candidates = await query.orderBy('priority', 'desc').orderBy('id', 'asc').limit(16).execute();
  for (const candidate of candidates) {
    const result = await db
      .updateTable('batches')
      .set({ lease_owner: owner, lease_expires_at: now + leaseMs })
      .where('id', '=', candidate.id)
      .where('status', '=', candidate.status)
      .where((eb) => eb.or([eb('lease_expires_at', 'is', null), eb('lease_expires_at', '<', now)]))
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) === 1) return { ...candidate, lease_owner: owner, lease_expires_at: now + leaseMs };
  }
  return undefined;
}

/** Extends a held lease; false means it lapsed and someone else may own the batch now. */
export async function renewBatchLease(db: Db, id: string, owner: string, leaseMs: number, now: number): Promise<boolean> {
  const result = await db
    .updateTable('batches')
    .set({ lease_expires_at: now + leaseMs })
    .where('id', '=', id)
    .where('lease_owner', '=', owner)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

export async function releaseBatchLease(db: Db, id: string, owner: string): Promise<void> {
  await db
    .updateTable('batches')
    .set({ lease_owner: null, lease_expires_at: null })
    .where('id', '=', id)
    .where('lease_owner', '=', owner)
    .execute();
}

/** Applies `values` only while `owner` holds the lease and the batch is in one of `from`. */
export function updateLeasedBatch(
  db: Db,
  id: string,
  owner: string,
  from: readonly BatchStatus[],
  values: BatchUpdate,
): Promise<boolean> {
  return transitionBatch(db, id, from, values, owner);
}

/** Adds `failed` to the batch's failed-request counter (lines failed in bulk: a cancel, an expiry). */
export async function countFailedRequests(db: Db, batchId: string, failed: number): Promise<void> {
  await db
    .updateTable('batches')
    .set((eb) => ({ request_failed: eb('request_failed', '+', failed) }))
    .where('id', '=', batchId)
    .execute();
}
