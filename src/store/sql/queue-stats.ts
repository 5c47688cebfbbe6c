// Queue depth and recent outcomes by model, for the operators' status view
// (GET /v1/admin/status). Both queries select the batches that can still
// have (or just had) work first, as a subquery, so their cost follows the open
// work, not the whole history of the requests table: the (batch_id, state,
// line) index leads from a batch to its rows in one state.
import { sql, type Kysely } from 'kysely';
import type { BatchStatus, Database } from './schema.ts';

/** Batches whose requests may be pending or running (validation inserts pending rows before in_progress). */
const OPEN_WORK_STATUSES: readonly BatchStatus[] = ['validating', 'in_progress', 'finalizing', 'cancelling'];

export interface ModelQueueDepth {
  model: string;
  pending: number;
  running: number;
}

/** Requests waiting for a worker (pending) and held by one (running), per model. */
export async function queueDepthByModel(db: Kysely<Database>): Promise<ModelQueueDepth[]> {
  const rows = await db
    .selectFrom('requests')
    .select(['model', 'state', (eb) => eb.fn.countAll<number>().as('n')])
    .where('batch_id', 'in', db.selectFrom('batches').select('id').where('status', 'in', [...OPEN_WORK_STATUSES]))
    .where('state', 'in', ['pending', 'running'])
    .groupBy(['model', 'state'])
    .execute();
  const byModel = new Map<string, ModelQueueDepth>();
  for (const row of rows) {
    const entry = byModel.get(row.model) ?? { model: row.model, pending: 0, running: 0 };
    if (row.state === 'pending') entry.pending += Number(row.n);
    else entry.running += Number(row.n);
    byModel.set(row.model, entry);
  }
  return [...byModel.values()].sort((a, b) => a.model.localeCompare(b.model));
}

export interface ModelOutcomes {
  model: string;
  succeeded: number;
  failed: number;
  /** Attempts beyond the first over those requests: retried upstream errors and re-claimed leases. */
  retries: number;
}

/**
 * Requests that reached a final outcome at or after `since` (ms), per model.
 * Only batches still open or that ended at or after `since` can hold such
 * requests, so older batches are never read.
 */
export async function recentOutcomesByModel(db: Kysely<Database>, since: number): Promise<ModelOutcomes[]> {
  // The batches as a subquery, not a join: with the OR below, SQLite would otherwise drive the join from
  // requests and scan every row ever recorded.
  const batches = db
    .selectFrom('batches')
    .select('id')
    .where((eb) =>
      eb.or([
        eb('status', 'in', [...OPEN_WORK_STATUSES]),
        eb('completed_at', '>=', since),
        eb('cancelled_at', '>=', since),
        eb('expired_at', '>=', since),
      ]),
    );
  const rows = await db
    .selectFrom('requests')
    .select([
      'model',
      'state',
      (eb) => eb.fn.countAll<number>().as('n'),
      // attempts is at least 1 for anything sent upstream; a line failed before its first claim (cancel, expiry) has 0.
      sql<number>`sum(case when attempts > 1 then attempts - 1 else 0 end)`.as('retries'),
    ])
    .where('batch_id', 'in', batches)
    .where('state', 'in', ['succeeded', 'failed'])
    .where('finished_at', '>=', since)
    .groupBy(['model', 'state'])
    .execute();
  const byModel = new Map<string, ModelOutcomes>();
  for (const row of rows) {
    const entry = byModel.get(row.model) ?? { model: row.model, succeeded: 0, failed: 0, retries: 0 };
    if (row.state === 'succeeded') entry.succeeded += Number(row.n);
    else entry.failed += Number(row.n);
    entry.retries += Number(row.retries ?? 0);
    byModel.set(row.model, entry);
  }
  return [...byModel.values()].sort((a, b) => a.model.localeCompare(b.model));
}
