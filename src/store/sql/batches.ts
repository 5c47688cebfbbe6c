// Batch rows and the batch-level lease that serializes validation and
// finalization across processes. The lease is an optimistic conditional
// UPDATE (owner + expiry), which both SQLite and PostgreSQL run atomically;
// any process may sweep, and exactly one wins each batch at a time.
import type { Kysely, Transaction } from 'kysely';
import { chunkTotalsOf } from './chunks.ts';
import type { BatchRow, BatchStatus, BatchUpdate, Database, NewBatch, WireDialect } from './schema.ts';

type Db = Kysely<Database> | Transaction<Database>;

export async function insertBatch(db: Db, row: NewBatch): Promise<void> {
  await db.insertInto('batches').values(row).execute();
}

/** The batch, with live progress while it runs (withLiveCounts). */
export async function findBatch(db: Db, id: string): Promise<BatchRow | undefined> {
  const row = await db.selectFrom('batches').selectAll().where('id', '=', id).executeTakeFirst();
  return row && (await withLiveCounts(db, [row]))[0];
}

/** The batch if it is the user's, with live progress while it runs (withLiveCounts). */
export async function findUserBatch(db: Db, userId: string, id: string): Promise<BatchRow | undefined> {
  const row = await db.selectFrom('batches').selectAll().where('id', '=', id).where('user_id', '=', userId).executeTakeFirst();
  return row && (await withLiveCounts(db, [row]))[0];
}

/** Batches whose progress lives in their chunk rows until finalization writes it on the batch row. */
const LIVE_STATUSES: readonly BatchStatus[] = ['in_progress', 'finalizing', 'cancelling'];

/**
 * The rows with the progress of those still running overlaid: request_completed, request_failed, tokens and cost
 * summed from their chunks (one grouped query for all of them), since the batch row holds those only from
 * finalization on. What the row itself holds is added, not replaced, so a row that counted lines itself (a batch
 * of the per-line design) still shows them.
 */
export async function withLiveCounts(db: Db, rows: BatchRow[]): Promise<BatchRow[]> {
  const live = rows.filter((row) => LIVE_STATUSES.includes(row.status)).map((row) => row.id);
  if (live.length === 0) return rows;
  const totals = await chunkTotalsOf(db, live);
  return rows.map((row) => {
    const sum = totals.get(row.id);
    if (!sum || !LIVE_STATUSES.includes(row.status)) return row;
    return {
      ...row,
      request_completed: Number(row.request_completed) + sum.succeeded,
      request_failed: Number(row.request_failed) + sum.failed,
      input_tokens: Number(row.input_tokens) + sum.inputTokens,
      output_tokens: Number(row.output_tokens) + sum.outputTokens,
      cost_nanos: Number(row.cost_nanos) + sum.costNanos,
    };
  });
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
    return withLiveCounts(db, rows.reverse());
  }
  return withLiveCounts(db, await query.orderBy('id', 'desc').limit(q.limit + 1).execute());
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
  /** Only batches with no chunk left to run (none pending or running): each is done or closed. */
  allChunksDone?: boolean;
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
  if (filter.allChunksDone) {
    query = query.where(({ not, exists, selectFrom }) =>
      not(
        exists(
          selectFrom('chunks')
            .select('chunks.chunk')
            .whereRef('chunks.batch_id', '=', 'batches.id')
            .where('chunks.state', 'in', ['pending', 'running']),
        ),
      ),
    );
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

/**
 * `updateLeasedBatch`, and when it applied, `then` in the same transaction (a terminal state's webhook event, so
 * the two commit together). True when the batch moved.
 */
export async function updateLeasedBatchThen(
  db: Kysely<Database>,
  id: string,
  owner: string,
  from: readonly BatchStatus[],
  values: BatchUpdate,
  then: (tx: Transaction<Database>) => Promise<unknown>,
): Promise<boolean> {
  return db.transaction().execute(async (tx) => {
    const moved = await updateLeasedBatch(tx, id, owner, from, values);
    if (moved) await then(tx);
    return moved;
  });
}
