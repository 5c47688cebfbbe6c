// Request rows: one per input line, created by validation, driven by the runner.
import type { Kysely, Transaction } from 'kysely';
import type { Database, NewRequest, RequestRow, RequestState } from './schema.ts';

type Db = Kysely<Database> | Transaction<Database>;

// Rows per INSERT statement. Far inside SQLite's bound-parameter cap (32766)
// at ~12 columns a row; small enough that Kysely's per-statement AST stays
// cheap, and every full chunk is the same SQL text, so the prepared statement
// is reused (statement-cache.ts). Bench (--only validate): 500 rows -> 0.38 of
// the JSON.parse reference, 100 rows -> 0.42-0.45.
const INSERT_CHUNK = 100;

export async function insertRequests(db: Db, rows: NewRequest[]): Promise<void> {
  for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
    await db.insertInto('requests').values(rows.slice(i, i + INSERT_CHUNK)).execute();
  }
}

export async function deleteBatchRequests(db: Db, batchId: string): Promise<void> {
  await db.deleteFrom('requests').where('batch_id', '=', batchId).execute();
}

/** Prompt estimate + max_tokens summed over one user's requests not yet finished, for one model. */
export async function enqueuedTokensForModel(db: Db, userId: string, model: string): Promise<number> {
  const row = await db
    .selectFrom('requests')
    .innerJoin('batches', 'batches.id', 'requests.batch_id')
    .select((eb) => eb.fn.sum<number>('requests.estimated_tokens').as('total'))
    .where('requests.model', '=', model)
    .where('requests.state', 'in', ['pending', 'running'])
    .where('batches.user_id', '=', userId)
    .executeTakeFirst();
  return Number(row?.total ?? 0);
}

/** One page of a batch's requests in line order, for streaming them out without holding them all. */
export async function pageBatchRequests(
  db: Db,
  batchId: string,
  afterLine: number,
  limit: number,
  states?: RequestState[],
): Promise<RequestRow[]> {
  // `in ()` is a syntax error in PostgreSQL (SQLite matches nothing): an empty state list matches nothing.
  if (states && states.length === 0) return [];
  let query = db.selectFrom('requests').selectAll().where('batch_id', '=', batchId).where('line', '>', afterLine);
  if (states) query = query.where('state', 'in', states);
  return query.orderBy('line').limit(limit).execute();
}

export async function countBatchRequestsInStates(db: Db, batchId: string, states: RequestState[]): Promise<number> {
  if (states.length === 0) return 0;
  const row = await db
    .selectFrom('requests')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('batch_id', '=', batchId)
    .where('state', 'in', states)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** How many of a batch's lines failed with `code` (batch_expired: its deadline passed while a worker held them). */
/** How many of a batch's failed lines failed with each of `codes`, in one query (a code none failed with counts 0). */
export async function countBatchFailuresByCode<Code extends string>(db: Db, batchId: string, codes: readonly Code[]): Promise<Record<Code, number>> {
  const rows = await db
    .selectFrom('requests')
    .select(['error_code', (eb) => eb.fn.countAll<number>().as('n')])
    .where('batch_id', '=', batchId)
    .where('state', '=', 'failed')
    .where('error_code', 'in', codes)
    .groupBy('error_code')
    .execute();
  const counts = Object.fromEntries(codes.map((code) => [code, 0])) as Record<Code, number>;
  for (const row of rows) counts[row.error_code as Code] = Number(row.n);
  return counts;
}

export async function countBatchRequestsWithError(db: Db, batchId: string, code: string): Promise<number> {
  const row = await db
    .selectFrom('requests')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('batch_id', '=', batchId)
    .where('state', '=', 'failed')
    .where('error_code', '=', code)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/**
 * Fails every request of the batch that is pending, or running under a lease
 * that has lapsed (any running one when `includeInFlight`), with the given
 * code (batch_cancelled, batch_expired). Clearing the lease owner makes a
 * late result from the runner a no-op, since its write is conditional on it.
 * Returns how many were failed, so the caller can count them in one update.
 */
export async function failOpenRequests(
  db: Db,
  batchId: string,
  code: string,
  message: string,
  now: number,
  includeInFlight = false,
): Promise<number> {
  const result = await db
    .updateTable('requests')
    .set({
      state: 'failed',
      error_code: code,
      error_message: message,
      response_status: null,
      response_body: null,
      lease_owner: null,
      lease_expires_at: null,
      finished_at: now,
    })
    .where('batch_id', '=', batchId)
    .where((eb) =>
      includeInFlight
        ? eb('state', 'in', ['pending', 'running'])
        : eb.or([
            eb('state', '=', 'pending'),
            eb.and([eb('state', '=', 'running'), eb.or([eb('lease_expires_at', 'is', null), eb('lease_expires_at', '<', now)])]),
          ]),
    )
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

export interface BatchRequestTotals {
  succeeded: number;
  failed: number;
  open: number;
  inputTokens: number;
  outputTokens: number;
}

/** Exact counts from the rows themselves; finalization trusts these over the running counters. */
export async function batchRequestTotals(db: Db, batchId: string): Promise<BatchRequestTotals> {
  const rows = await db
    .selectFrom('requests')
    .select((eb) => [
      'state',
      eb.fn.countAll<number>().as('n'),
      eb.fn.sum<number>('input_tokens').as('input_tokens'),
      eb.fn.sum<number>('output_tokens').as('output_tokens'),
    ])
    .where('batch_id', '=', batchId)
    .groupBy('state')
    .execute();
  const totals: BatchRequestTotals = { succeeded: 0, failed: 0, open: 0, inputTokens: 0, outputTokens: 0 };
  for (const row of rows) {
    const n = Number(row.n);
    if (row.state === 'succeeded') totals.succeeded += n;
    else if (row.state === 'failed') totals.failed += n;
    else totals.open += n;
    totals.inputTokens += Number(row.input_tokens ?? 0);
    totals.outputTokens += Number(row.output_tokens ?? 0);
  }
  return totals;
}
