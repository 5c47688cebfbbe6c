// Chunk rows (data plane v2): written by validation, claimed by workers under
// a lease, finished by their last segment commit (segments.ts), closed by the
// cancel and expiry sweeps. A batch's progress is the sum of its chunks,
// read on demand: no row is written by every worker's commits.
import { PostgresAdapter, sql, type Kysely, type QueryCreator, type Transaction } from 'kysely';
import type { SqlDialectName } from './database.ts';
import type { ChunkRow, Database, NewChunk } from './schema.ts';

type Db = Kysely<Database> | Transaction<Database>;

/** Where a chunk lies in its input and what it holds: what validation knows of it. */
export type ChunkPlace = Pick<NewChunk, 'batch_id' | 'chunk' | 'line_start' | 'line_count' | 'byte_start' | 'byte_end' | 'models' | 'estimated_tokens'>;

/** A chunk row as validation writes it: pending, never claimed, nothing recorded. */
export function newChunk(place: ChunkPlace): NewChunk {
  return {
    ...place,
    state: 'pending',
    claims: 0,
    lease_owner: null,
    lease_expires_at: null,
    segments: 0,
    succeeded: 0,
    failed: 0,
    input_tokens: 0,
    output_tokens: 0,
    cost_nanos: 0,
    finished_at: null,
  };
}

// Rows per INSERT: 19 columns a row stays far inside both dialects' bound-parameter caps.
const INSERT_ROWS = 100;

export async function insertChunks(db: Db, rows: NewChunk[]): Promise<void> {
  for (let i = 0; i < rows.length; i += INSERT_ROWS) await db.insertInto('chunks').values(rows.slice(i, i + INSERT_ROWS)).execute();
}

/** A batch's chunks and segment rows (not the segment blobs: the caller deletes those first). */
export async function deleteBatchChunks(db: Db, batchId: string): Promise<void> {
  await db.deleteFrom('segments').where('batch_id', '=', batchId).execute();
  await db.deleteFrom('chunks').where('batch_id', '=', batchId).execute();
}

export interface RunnableBatch {
  id: string;
  user_id: string;
  priority: number;
  input_file_id: string;
  endpoint: string;
  deadline_at: number;
  cost_currency: string;
  /** The model of lines whose body names none (validation allowed them only with it set). */
  model_id: string | null;
}

/**
 * Every in-progress batch with a chunk to claim (pending, or running under a lapsed lease), in no particular order
 * (the runner's scheduler orders them). All of them: a claim must be able to reach any batch with work left.
 */
export async function listRunnableBatches(db: Kysely<Database>, now: number): Promise<RunnableBatch[]> {
  return db
    .selectFrom('batches')
    .select(['id', 'user_id', 'priority', 'input_file_id', 'endpoint', 'deadline_at', 'cost_currency', 'model_id'])
    .where('status', '=', 'in_progress')
    .where('deadline_at', '>', now)
    .where(({ exists, selectFrom }) =>
      exists(
        selectFrom('chunks')
          .select('chunk')
          .whereRef('chunks.batch_id', '=', 'batches.id')
          .where((eb) => eb.or([eb('state', '=', 'pending'), eb.and([eb('state', '=', 'running'), eb('lease_expires_at', '<', now)])])),
      ),
    )
    .execute();
}

/**
 * Claims the first claimable chunk of a batch (pending, or running under a lapsed lease: its worker died), as one
 * more claim. PostgreSQL workers skip each other's locked rows; SQLite has one writer, and the pick is re-checked in
 * the UPDATE, so of two claimers one wins and the other picks again.
 */
export async function claimChunk(
  db: Kysely<Database>,
  dialect: SqlDialectName,
  batchId: string,
  owner: string,
  leaseMs: number,
  now: number,
): Promise<ChunkRow | undefined> {
  const lease = { state: 'running' as const, lease_owner: owner, lease_expires_at: now + leaseMs };
  // One range scan of chunks_batch_state per state, each in chunk order (an OR'd query walks the done ones too).
  const inState = <DB extends Database>(qc: QueryCreator<DB>, state: 'pending' | 'running') =>
    (qc as unknown as QueryCreator<Database>)
      .selectFrom('chunks')
      .select('chunk')
      .where('batch_id', '=', batchId)
      .where('state', '=', state)
      .$if(state === 'running', (q) => q.where('lease_expires_at', '<', now))
      .orderBy('chunk')
      .limit(1);
  if (dialect === 'postgres') {
    return db
      .with('due', (qc) => inState(qc, 'pending').forUpdate().skipLocked())
      .with('lapsed', (qc) => inState(qc, 'running').forUpdate().skipLocked())
      .updateTable('chunks')
      .set((eb) => ({ ...lease, claims: eb('claims', '+', 1) }))
      .where('batch_id', '=', batchId)
      .where('chunk', 'in', (eb) => eb.selectFrom('due').select('due.chunk').unionAll(eb.selectFrom('lapsed').select('lapsed.chunk')).orderBy('chunk').limit(1))
      .returningAll()
      .executeTakeFirst();
  }
  for (let pick = 0; pick < CLAIM_PICKS; pick++) {
    const candidate = await db
      .selectFrom(inState(db, 'pending').as('due'))
      .select('chunk')
      .unionAll(db.selectFrom(inState(db, 'running').as('lapsed')).select('chunk'))
      .orderBy('chunk')
      .limit(1)
      .executeTakeFirst();
    if (!candidate) return undefined;
    const claim = db
      .updateTable('chunks')
      .set((eb) => ({ ...lease, claims: eb('claims', '+', 1) }))
      .where('batch_id', '=', batchId)
      .where('chunk', '=', candidate.chunk)
      .where((eb) => eb.or([eb('state', '=', 'pending'), eb.and([eb('state', '=', 'running'), eb('lease_expires_at', '<', now)])]))
      .returningAll();
    const row = await withoutSqliteFsync(db, async (conn) => (await conn.executeQuery(claim.compile())).rows[0]);
    if (row) return row;
  }
  return undefined;
}

// Picks a SQLite claim tries before reporting nothing claimed; each lost pick means another claimer took that chunk.
const CLAIM_PICKS = 5;

/**
 * Runs `work` on SQLite's one connection with `synchronous = NORMAL`: its commit reaches the WAL but is not fsynced
 * on its own. For claims only: losing one to a power cut hands the chunk back as pending, which is what a lapsed
 * lease does anyway, and the next FULL commit (a segment's) fsyncs the WAL up to and including it. A claim's own
 * fsync cost ~2 ms on the event loop (bench --only zero-latency --cpu-prof). The connection is held for the whole
 * exchange, so no other statement runs in between with the relaxed setting.
 */
async function withoutSqliteFsync<T>(db: Kysely<Database>, work: (conn: Kysely<Database>) => Promise<T>): Promise<T> {
  return db.connection().execute(async (conn) => {
    await sql`pragma synchronous = NORMAL`.execute(conn);
    try {
      return await work(conn);
    } finally {
      await sql`pragma synchronous = FULL`.execute(conn);
    }
  });
}

/**
 * One heartbeat for every chunk this worker holds. On PostgreSQL a row locked by another transaction (this
 * worker's own segment commit, or a sweep closing it) is skipped rather than waited for, so the heartbeat and
 * the commit never deadlock; a skipped row is renewed by the next heartbeat.
 */
export async function renewChunkLeases(db: Kysely<Database>, owner: string, leaseMs: number, now: number): Promise<number> {
  let query = db.updateTable('chunks').set({ lease_expires_at: now + leaseMs }).where('lease_owner', '=', owner).where('state', '=', 'running');
  if (db.getExecutor().adapter instanceof PostgresAdapter) {
    const unlocked = db.selectFrom('chunks').select(['batch_id', 'chunk']).where('lease_owner', '=', owner).where('state', '=', 'running').forUpdate().skipLocked();
    query = query.where((eb) => eb(eb.refTuple('batch_id', 'chunk'), 'in', unlocked.$asTuple('batch_id', 'chunk')));
  }
  const result = await query.executeTakeFirst();
  return Number(result.numUpdatedRows);
}

/**
 * Hands a held chunk back (shutdown, a cancel or expiry noticed, input unreadable): pending again for any worker.
 * `unsent`: nothing of this claim reached an upstream, so it does not count as a claim. False when it was not held.
 */
export async function releaseChunk(db: Db, batchId: string, chunk: number, owner: string, unsent: boolean, claim?: number): Promise<boolean> {
  const result = await db
    .updateTable('chunks')
    .set((eb) => ({ state: 'pending', lease_owner: null, lease_expires_at: null, ...(unsent ? { claims: eb('claims', '-', 1) } : {}) }))
    .where('batch_id', '=', batchId)
    .where('chunk', '=', chunk)
    .where('lease_owner', '=', owner)
    .where('state', '=', 'running')
    .$if(claim !== undefined, (q) => q.where('claims', '=', claim!))
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** Marks a held chunk done without a new segment (a reclaimed chunk whose committed segments already hold every line). */
export async function finishChunk(db: Db, batchId: string, chunk: number, owner: string, now: number, claim?: number): Promise<boolean> {
  const result = await db
    .updateTable('chunks')
    .set({ state: 'done', lease_owner: null, lease_expires_at: null, finished_at: now })
    .where('batch_id', '=', batchId)
    .where('chunk', '=', chunk)
    .where('lease_owner', '=', owner)
    .where('state', '=', 'running')
    .$if(claim !== undefined, (q) => q.where('claims', '=', claim!))
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** Chunks of the batch not yet done or closed. */
export async function countOpenChunks(db: Db, batchId: string): Promise<number> {
  const row = await db
    .selectFrom('chunks')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('batch_id', '=', batchId)
    .where('state', 'in', ['pending', 'running'])
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/**
 * Closes the batch's chunks nobody works on (pending, or running under a lapsed lease; every running one when
 * `includeInFlight`): their unfinished lines become batch_cancelled / batch_expired lines at finalization. Taking
 * the lease away makes a late segment commit from the holder a no-op, since it is conditional on it.
 */
export async function closeOpenChunks(db: Db, batchId: string, now: number, includeInFlight: boolean): Promise<number> {
  const result = await db
    .updateTable('chunks')
    .set({ state: 'closed', lease_owner: null, lease_expires_at: null, finished_at: now })
    .where('batch_id', '=', batchId)
    .where((eb) =>
      includeInFlight
        ? eb('state', 'in', ['pending', 'running'])
        : eb.or([eb('state', '=', 'pending'), eb.and([eb('state', '=', 'running'), eb.or([eb('lease_expires_at', 'is', null), eb('lease_expires_at', '<', now)])])]),
    )
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

export interface ChunkTotals {
  succeeded: number;
  failed: number;
  inputTokens: number;
  outputTokens: number;
  costNanos: number;
  /** Lines of chunks not yet done or closed. */
  openLines: number;
}

const EMPTY_TOTALS: ChunkTotals = { succeeded: 0, failed: 0, inputTokens: 0, outputTokens: 0, costNanos: 0, openLines: 0 };

/** Progress of each batch, summed over its chunks: what `request_counts` and usage show while it runs. */
export async function chunkTotalsOf(db: Db, batchIds: readonly string[]): Promise<Map<string, ChunkTotals>> {
  const totals = new Map<string, ChunkTotals>();
  if (batchIds.length === 0) return totals;
  const rows = await db
    .selectFrom('chunks')
    .select((eb) => [
      'batch_id',
      eb.fn.sum<number>('succeeded').as('succeeded'),
      eb.fn.sum<number>('failed').as('failed'),
      eb.fn.sum<number>('input_tokens').as('input_tokens'),
      eb.fn.sum<number>('output_tokens').as('output_tokens'),
      eb.fn.sum<number>('cost_nanos').as('cost_nanos'),
      sql<number>`sum(case when state in ('pending', 'running') then line_count else 0 end)`.as('open_lines'),
    ])
    .where('batch_id', 'in', [...batchIds])
    .groupBy('batch_id')
    .execute();
  for (const row of rows) {
    totals.set(row.batch_id, {
      succeeded: Number(row.succeeded ?? 0),
      failed: Number(row.failed ?? 0),
      inputTokens: Number(row.input_tokens ?? 0),
      outputTokens: Number(row.output_tokens ?? 0),
      costNanos: Number(row.cost_nanos ?? 0),
      openLines: Number(row.open_lines ?? 0),
    });
  }
  for (const id of batchIds) if (!totals.has(id)) totals.set(id, { ...EMPTY_TOTALS });
  return totals;
}

/** A chunk's `models` column: model -> [lines, estimated tokens]. */
export type ChunkModels = Record<string, [number, number]>;

export function parseChunkModels(text: string): ChunkModels {
  try {
    const parsed = JSON.parse(text) as unknown;
    return typeof parsed === 'object' && parsed !== null ? (parsed as ChunkModels) : {};
  } catch {
    return {};
  }
}

/** Estimated tokens (prompt + max_tokens) of one user's chunks not yet finished, for one model. */
export async function enqueuedTokensForModel(db: Db, userId: string, model: string): Promise<number> {
  const rows = await db
    .selectFrom('chunks')
    .innerJoin('batches', 'batches.id', 'chunks.batch_id')
    .select('chunks.models')
    .where('chunks.state', 'in', ['pending', 'running'])
    .where('batches.user_id', '=', userId)
    .execute();
  let total = 0;
  for (const row of rows) total += parseChunkModels(row.models)[model]?.[1] ?? 0;
  return total;
}

/** Statuses of the given batches, so the runner can stop work of ones cancelled or expired meanwhile. */
export async function batchStatuses(db: Kysely<Database>, ids: string[]): Promise<Map<string, { status: string; deadline_at: number }>> {
  if (ids.length === 0) return new Map();
  const rows = await db.selectFrom('batches').select(['id', 'status', 'deadline_at']).where('id', 'in', ids).execute();
  return new Map(rows.map((row) => [row.id, { status: row.status, deadline_at: row.deadline_at }]));
}

/** One page of a batch's chunks in chunk order after `afterChunk` (-1: from the start); `notDone`: only those not done. */
export async function pageBatchChunks(db: Db, batchId: string, afterChunk: number, limit: number, options: { notDone?: boolean } = {}): Promise<ChunkRow[]> {
  let query = db.selectFrom('chunks').selectAll().where('batch_id', '=', batchId).where('chunk', '>', afterChunk);
  if (options.notDone) query = query.where('state', '!=', 'done');
  return query.orderBy('chunk').limit(limit).execute();
}

/** Whether the batch has chunk rows, and its chunks' failed lines summed (segments' error lines). */
export async function chunkFailuresOf(db: Db, batchId: string): Promise<{ chunks: number; failed: number }> {
  const row = await db
    .selectFrom('chunks')
    .select((eb) => [eb.fn.countAll<number>().as('n'), eb.fn.sum<number>('failed').as('failed')])
    .where('batch_id', '=', batchId)
    .executeTakeFirst();
  return { chunks: Number(row?.n ?? 0), failed: Number(row?.failed ?? 0) };
}

/** Whether a batch still has chunk rows (retention deletes them with both of its result files). */
export async function hasChunks(db: Db, batchId: string): Promise<boolean> {
  const row = await db.selectFrom('chunks').select('chunk').where('batch_id', '=', batchId).limit(1).executeTakeFirst();
  return row !== undefined;
}
