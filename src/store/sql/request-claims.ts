// The runner's queries: find runnable batches, claim requests under a lease,
// keep leases alive, and record outcomes in groups. Every write that ends a
// claim is conditional on the lease owner and state 'running', so a result
// arriving after the lease lapsed (and the request was reclaimed elsewhere,
// or failed by cancel/expiry) changes nothing: each line ends with exactly
// one outcome.
import { PostgresAdapter, sql, type Kysely, type QueryCreator, type Transaction } from 'kysely';
import type { SqlDialectName } from './database.ts';
import type { Database, RequestRow } from './schema.ts';
import { addUsage, UsageTally } from './usage.ts';

export interface RunnableBatch {
  id: string;
  user_id: string;
  priority: number;
  input_file_id: string;
  endpoint: string;
  deadline_at: number;
}

/**
 * Every in-progress batch with work left, in no particular order (the runner's scheduler orders them). All of
 * them, not the first N: a claim must be able to reach any batch with lines due.
 */
export async function listRunnableBatches(db: Kysely<Database>, now: number): Promise<RunnableBatch[]> {
  return db
    .selectFrom('batches')
    .select(['id', 'user_id', 'priority', 'input_file_id', 'endpoint', 'deadline_at'])
    .where('status', '=', 'in_progress')
    .where('deadline_at', '>', now)
    .where((eb) => eb(eb('request_completed', '+', eb.ref('request_failed')), '<', eb.ref('request_total')))
    .execute();
}

/**
 * Claims up to `limit` requests of one batch, in line order: pending ones
 * whose retry time has come, and running ones whose lease lapsed (their
 * worker died). Each claim counts as an attempt. On PostgreSQL concurrent
 * workers skip each other's locked rows instead of waiting; SQLite has one
 * writer at a time, so the UPDATE alone is atomic.
 */
export async function claimRequests(
  db: Kysely<Database>,
  dialect: SqlDialectName,
  batchId: string,
  owner: string,
  leaseMs: number,
  now: number,
  limit: number,
): Promise<RequestRow[]> {
  const lease = { state: 'running' as const, lease_owner: owner, lease_expires_at: now + leaseMs };
  // Two range scans of requests_batch_state (batch_id, state, line), each already in line order: due pending
  // lines, and running ones whose lease lapsed. A single OR'd query is planned as a walk of the whole batch in
  // line order past every finished line, which made each claim cost O(lines done): quadratic over a batch, on
  // both dialects (bench --only scale, PostgreSQL, one claimer: 20,000 lines at 7,200 rows/s with the OR'd
  // query, against 27,000 rows/s for 5,000). Compound members cannot carry their own ORDER BY/LIMIT in SQLite,
  // hence the wrapping subqueries.
  // Typed against the plain schema: the CTEs it may run inside add tables it does not read.
  const inState = <DB extends Database>(qc: QueryCreator<DB>, state: 'pending' | 'running') =>
    (qc as unknown as QueryCreator<Database>)
      .selectFrom('requests')
      .select('line')
      .where('batch_id', '=', batchId)
      .where('state', '=', state)
      .where((eb) => (state === 'pending' ? eb('not_before', '<=', now) : eb('lease_expires_at', '<', now)))
      .orderBy('line')
      .limit(limit);
  if (dialect === 'postgres') {
    // Each branch locks what it picks and skips rows other claimers hold, in a CTE, which PostgreSQL runs once
    // (a row one branch locked but the outer LIMIT drops is unlocked when the statement commits). As a plain
    // `line IN (SELECT ... FOR UPDATE SKIP LOCKED)` the subquery could be run again for a row another claimer
    // had just changed, and a claim could come back empty while lines were due: the same shape made webhook
    // claims do exactly that (webhooks.test.ts), and one of 4 request claimers once came back empty with 24 lines
    // still pending.
    return db
      .with('due', (qc) => inState(qc, 'pending').forUpdate().skipLocked())
      .with('lapsed', (qc) => inState(qc, 'running').forUpdate().skipLocked())
      .updateTable('requests')
      .set((eb) => ({ ...lease, attempts: eb('attempts', '+', 1) }))
      .where('batch_id', '=', batchId)
      .where('line', 'in', (eb) => eb.selectFrom('due').select('due.line').unionAll(eb.selectFrom('lapsed').select('lapsed.line')).orderBy('line').limit(limit))
      .returningAll()
      .execute();
  }
  const candidates = db
    .selectFrom(inState(db, 'pending').as('due'))
    .select('line')
    .unionAll(db.selectFrom(inState(db, 'running').as('lapsed')).select('line'))
    .orderBy('line')
    .limit(limit);
  // SQLite runs `UPDATE ... WHERE line IN (<that compound select>)` at ~35 µs a row, against ~6 µs for an
  // UPDATE by an explicit list of keys (2.4 ms against 0.4 ms a 64-line claim, measured on 20,000 lines;
  // bench --only zero-latency --sql-profile had the claim as the heaviest statement). So: pick the lines, then
  // update exactly those, re-checking that each is still due, which keeps the claim atomic per row. A claimer
  // in another process may take the picked lines in between; then pick again rather than come back empty while
  // lines are due. (Not one BEGIN IMMEDIATE around both: held across an await, it blocked a second connection
  // in the same process inside SQLite's busy wait, with the holder unable to finish on the same thread.)
  for (let attempt = 0; attempt < CLAIM_PICKS; attempt++) {
    const lines = (await candidates.execute()).map((row) => row.line);
    if (lines.length === 0) return [];
    const update = db
      .updateTable('requests')
      .set((eb) => ({ ...lease, attempts: eb('attempts', '+', 1) }))
      .where('batch_id', '=', batchId)
      .where('line', 'in', lines)
      .where((eb) =>
        eb.or([
          eb.and([eb('state', '=', 'pending'), eb('not_before', '<=', now)]),
          eb.and([eb('state', '=', 'running'), eb('lease_expires_at', '<', now)]),
        ]),
      )
      .returningAll();
    const rows = await withoutSqliteFsync(db, async (conn) => (await conn.executeQuery(update.compile())).rows);
    if (rows.length > 0) return rows;
  }
  return [];
}

// Picks of due lines one SQLite claim tries before it reports nothing claimed; each lost pick means another
// claimer took those lines, so the next one sees different lines.
const CLAIM_PICKS = 5;

/**
 * Runs `work` on SQLite's one connection with `synchronous = NORMAL`: its
 * commits reach the WAL but are not fsynced on their own. For claims only:
 * losing one to a power cut hands the lines back as pending, which is what a
 * lapsed lease does anyway, and the next FULL commit (the result writer's)
 * fsyncs the WAL up to and including it. Each claim had paid a ~2 ms fsync
 * on the event loop (bench --only zero-latency --sql-profile: 331 claims,
 * 760 ms of 1.7 s of SQLite time for 20,000 lines). The connection is held
 * for the whole exchange, so no other statement runs in between with the
 * relaxed setting.
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
 * One heartbeat for everything this worker holds. On PostgreSQL rows locked
 * by another transaction are skipped rather than waited for: they are this
 * worker's own results being recorded (which end the lease anyway) or a
 * claim; waiting made the heartbeat and the result writer's transaction,
 * which lock the same rows in different orders, deadlock each other under
 * load. A skipped row is renewed by the next heartbeat.
 */
export async function renewRequestLeases(db: Kysely<Database>, owner: string, leaseMs: number, now: number): Promise<number> {
  let query = db
    .updateTable('requests')
    .set({ lease_expires_at: now + leaseMs })
    .where('lease_owner', '=', owner)
    .where('state', '=', 'running');
  if (db.getExecutor().adapter instanceof PostgresAdapter) {
    const unlocked = db
      .selectFrom('requests')
      .select(['batch_id', 'line'])
      .where('lease_owner', '=', owner)
      .where('state', '=', 'running')
      .forUpdate()
      .skipLocked();
    query = query.where((eb) => eb(eb.refTuple('batch_id', 'line'), 'in', unlocked.$asTuple('batch_id', 'line')));
  }
  const result = await query.executeTakeFirst();
  return Number(result.numUpdatedRows);
}

export type RequestOutcomeRecord =
  | {
      kind: 'succeeded';
      batchId: string;
      line: number;
      status: number;
      /** JSON text of the response body. */
      body: string;
      requestId: string | null;
      inputTokens: number;
      outputTokens: number;
      /** Whose usage this is, of which model, and what it cost (billionths of the batch's currency). */
      userId: string;
      model: string;
      costNanos: number;
      /** The last attempt's upstream exchange, ms. */
      latencyMs?: number;
    }
  | {
      kind: 'failed';
      batchId: string;
      line: number;
      code: string;
      message: string;
      status: number | null;
      body: string | null;
      requestId: string | null;
      latencyMs?: number;
    }
  | { kind: 'retry'; batchId: string; line: number; notBefore: number; message: string }
  /** Handed back unsent (shutdown): the claim does not count as an attempt. */
  | { kind: 'released'; batchId: string; line: number };

/**
 * Records a group of outcomes and bumps the batches' counters in one
 * transaction ("group commit"): one fsync for many results. Returns the
 * records that applied; the others had lost their lease.
 */
export async function applyRequestOutcomes(
  db: Kysely<Database>,
  owner: string,
  records: RequestOutcomeRecord[],
  now: number,
): Promise<RequestOutcomeRecord[]> {
  return db.transaction().execute(async (tx) => {
    const applied: RequestOutcomeRecord[] = [];
    const counters = new Map<string, { completed: number; failed: number; input: number; output: number; cost: number }>();
    const usage = new UsageTally(now);
    // The successes (nearly every record) go in a few multi-row statements; the rest one by one.
    const grouped = await applySucceededGrouped(tx, owner, records, now);
    for (const record of records) {
      if (grouped && record.kind === 'succeeded') {
        if (!grouped.has(`${record.line}\u0000${record.batchId}`)) continue;
        applied.push(record);
        const counter = counters.get(record.batchId) ?? { completed: 0, failed: 0, input: 0, output: 0, cost: 0 };
        counter.completed += 1;
        counter.input += record.inputTokens;
        counter.output += record.outputTokens;
        counter.cost += record.costNanos;
        counters.set(record.batchId, counter);
        usage.add(record);
        continue;
      }
      const base = tx
        .updateTable('requests')
        .where('batch_id', '=', record.batchId)
        .where('line', '=', record.line)
        .where('lease_owner', '=', owner)
        .where('state', '=', 'running');
      const cleared = { lease_owner: null, lease_expires_at: null };
      let query;
      switch (record.kind) {
        case 'succeeded':
          query = base.set({
            ...cleared,
            state: 'succeeded',
            response_status: record.status,
            response_body: record.body,
            request_id: record.requestId,
            input_tokens: record.inputTokens,
            output_tokens: record.outputTokens,
            latency_ms: record.latencyMs ?? null,
            error_code: null,
            error_message: null,
            finished_at: now,
          });
          break;
        case 'failed':
          query = base.set({
            ...cleared,
            state: 'failed',
            response_status: record.status,
            response_body: record.body,
            request_id: record.requestId,
            latency_ms: record.latencyMs ?? null,
            error_code: record.code,
            error_message: record.message,
            finished_at: now,
          });
          break;
        case 'retry':
          query = base.set({ ...cleared, state: 'pending', not_before: record.notBefore, error_message: record.message });
          break;
        case 'released':
          query = base.set((eb) => ({ ...cleared, state: 'pending', attempts: eb('attempts', '-', 1) }));
          break;
      }
      const result = await query.executeTakeFirst();
      if (Number(result.numUpdatedRows) !== 1) continue;
      applied.push(record);
      if (record.kind !== 'succeeded' && record.kind !== 'failed') continue;
      const counter = counters.get(record.batchId) ?? { completed: 0, failed: 0, input: 0, output: 0, cost: 0 };
      if (record.kind === 'succeeded') {
        counter.completed += 1;
        counter.input += record.inputTokens;
        counter.output += record.outputTokens;
        counter.cost += record.costNanos;
        usage.add(record);
      } else counter.failed += 1;
      counters.set(record.batchId, counter);
    }
    const batchCurrencies = new Map<string, string>();
    for (const [batchId, c] of counters) {
      const updated = await tx
        .updateTable('batches')
        .set((eb) => ({
          request_completed: eb('request_completed', '+', c.completed),
          request_failed: eb('request_failed', '+', c.failed),
          input_tokens: eb('input_tokens', '+', c.input),
          output_tokens: eb('output_tokens', '+', c.output),
          cost_nanos: eb('cost_nanos', '+', c.cost),
        }))
        .where('id', '=', batchId)
        .returning('cost_currency')
        .executeTakeFirst();
      if (updated) batchCurrencies.set(batchId, updated.cost_currency);
    }
    await addUsage(tx, owner, usage.day, usage.rows(), batchCurrencies);
    return applied;
  });
}

// Rows per multi-row UPDATE: 8 bound values each, far inside SQLite's 32766 and PostgreSQL's 65535.
const OUTCOME_CHUNK = 500;

/**
 * Records every 'succeeded' outcome of a group with one UPDATE ... FROM
 * (VALUES ...) per chunk instead of one UPDATE per line: per-line statements
 * each paid a Kysely build, a prepare (SQLite) or a round trip (PostgreSQL)
 * and a run, which at thousands of results a second was most of the writer's
 * cost (bench --only scale, PostgreSQL: one statement per line cost ~300 µs
 * of server CPU per request). Same conditions as the per-line path (owner and
 * state 'running'). Returns "line\0batchId" of the rows it changed, or
 * undefined for a group that names a line twice (left to the per-line path).
 */
async function applySucceededGrouped(tx: Transaction<Database>, owner: string, records: RequestOutcomeRecord[], now: number): Promise<Set<string> | undefined> {
  const succeeded = records.filter((record): record is Extract<RequestOutcomeRecord, { kind: 'succeeded' }> => record.kind === 'succeeded');
  const keys = new Set(succeeded.map((record) => `${record.line}\u0000${record.batchId}`));
  if (keys.size !== succeeded.length) return undefined;
  const postgres = tx.getExecutor().adapter instanceof PostgresAdapter;
  const applied = new Set<string>();
  for (let i = 0; i < succeeded.length; i += OUTCOME_CHUNK) {
    const chunk = succeeded.slice(i, i + OUTCOME_CHUNK);
    const rows = postgres ? await updateSucceededPostgres(tx, owner, chunk, now) : await updateSucceededSqlite(tx, owner, chunk, now);
    for (const row of rows) applied.add(`${row.line}\u0000${row.batch_id}`);
  }
  return applied;
}

type Succeeded = Extract<RequestOutcomeRecord, { kind: 'succeeded' }>;

// SQLite's VALUES columns are untyped and named column1..N. The unary + keeps the planner off the partial
// index on running rows by lease_owner: with it, SQLite walked every line this worker holds for each VALUES
// row (256-row groups with 400 lines held: 105 µs a row, against 20 µs by primary key).
async function updateSucceededSqlite(tx: Transaction<Database>, owner: string, chunk: Succeeded[], now: number): Promise<{ batch_id: string; line: number }[]> {
  const values = sql.join(chunk.map((r) => sql`(${r.batchId}, ${r.line}, ${r.status}, ${r.body}, ${r.requestId}, ${r.inputTokens}, ${r.outputTokens}, ${r.latencyMs ?? null})`));
  const result = await sql<{ batch_id: string; line: number }>`
    update requests set
      state = 'succeeded', lease_owner = null, lease_expires_at = null,
      response_status = v.column3, response_body = v.column4, request_id = v.column5,
      input_tokens = v.column6, output_tokens = v.column7, latency_ms = v.column8,
      error_code = null, error_message = null, finished_at = ${now}
    from (values ${values}) as v
    where requests.batch_id = v.column1 and requests.line = v.column2 and +requests.lease_owner = ${owner} and +requests.state = 'running'
    returning requests.batch_id, requests.line`.execute(tx);
  return result.rows;
}

// PostgreSQL types untyped parameters in VALUES as text: each numeric column is cast so the comparisons and
// assignments to integer/bigint columns type-check. The rows are only this worker's own running lines, which
// claims and heartbeats skip while locked; a deadlock with a cancel or expiry sweep is broken by PostgreSQL
// aborting one side, and the result writer retries its group.
async function updateSucceededPostgres(tx: Transaction<Database>, owner: string, chunk: Succeeded[], now: number): Promise<{ batch_id: string; line: number }[]> {
  const values = sql.join(
    chunk.map(
      (r) =>
        sql`(${r.batchId}::text, ${r.line}::integer, ${r.status}::integer, ${r.body}::text, ${r.requestId}::text, ${r.inputTokens}::bigint, ${r.outputTokens}::bigint, ${r.latencyMs ?? null}::integer)`,
    ),
  );
  const result = await sql<{ batch_id: string; line: number }>`
    update requests set
      state = 'succeeded', lease_owner = null, lease_expires_at = null,
      response_status = v.status, response_body = v.body, request_id = v.request_id,
      input_tokens = v.input_tokens, output_tokens = v.output_tokens, latency_ms = v.latency_ms,
      error_code = null, error_message = null, finished_at = ${now}
    from (values ${values}) as v (batch_id, line, status, body, request_id, input_tokens, output_tokens, latency_ms)
    where requests.batch_id = v.batch_id and requests.line = v.line and requests.lease_owner = ${owner} and requests.state = 'running'
    returning requests.batch_id, requests.line`.execute(tx);
  return result.rows.map((row) => ({ batch_id: row.batch_id, line: Number(row.line) }));
}

/** Statuses of the given batches, so the runner can abort work for ones cancelled or expired meanwhile. */
export async function batchStatuses(db: Kysely<Database>, ids: string[]): Promise<Map<string, { status: string; deadline_at: number }>> {
  if (ids.length === 0) return new Map();
  const rows = await db.selectFrom('batches').select(['id', 'status', 'deadline_at']).where('id', 'in', ids).execute();
  return new Map(rows.map((row) => [row.id, { status: row.status, deadline_at: row.deadline_at }]));
}

