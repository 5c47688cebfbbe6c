// Usage per user, UTC day and model: counted in the transaction that records
// each success (so a line counts once, whatever retries and restarts came
// before), kept apart from request rows (so it outlives their retention), one
// counter row per writing process (so workers never wait on each other's row),
// summed when read.
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database } from './schema.ts';

interface Recorded {
  batchId: string;
  userId: string;
  model: string;
  inputTokens: number;
  outputTokens: number;
  costNanos: number;
}

export interface UsageDelta {
  batchId: string;
  userId: string;
  model: string;
  requests: number;
  input: number;
  output: number;
  cost: number;
}

/** One group commit's successes, summed per batch and model. */
export class UsageTally {
  private readonly deltas = new Map<string, UsageDelta>();
  readonly day: string;

  constructor(now: number) {
    this.day = new Date(now).toISOString().slice(0, 10);
  }

  add(record: Recorded): void {
    const key = `${record.batchId}\u0000${record.model}`;
    let delta = this.deltas.get(key);
    if (!delta) this.deltas.set(key, (delta = { batchId: record.batchId, userId: record.userId, model: record.model, requests: 0, input: 0, output: 0, cost: 0 }));
    delta.requests += 1;
    delta.input += record.inputTokens;
    delta.output += record.outputTokens;
    delta.cost += record.costNanos;
  }

  rows(): UsageDelta[] {
    return [...this.deltas.values()];
  }
}

/** Adds a group's usage to this writer's counter rows; `currencies`: each batch's cost currency. */
export async function addUsage(tx: Transaction<Database>, shard: string, day: string, deltas: UsageDelta[], currencies: Map<string, string>): Promise<void> {
  const merged = new Map<string, { user_id: string; model: string; currency: string; requests: number; input_tokens: number; output_tokens: number; cost_nanos: number }>();
  for (const delta of deltas) {
    const currency = currencies.get(delta.batchId) ?? 'USD';
    const key = `${delta.userId}\u0000${delta.model}\u0000${currency}`;
    const row = merged.get(key) ?? { user_id: delta.userId, model: delta.model, currency, requests: 0, input_tokens: 0, output_tokens: 0, cost_nanos: 0 };
    row.requests += delta.requests;
    row.input_tokens += delta.input;
    row.output_tokens += delta.output;
    row.cost_nanos += delta.cost;
    merged.set(key, row);
  }
  for (const row of merged.values()) {
    await tx
      .insertInto('usage_counters')
      .values({ ...row, day, shard })
      .onConflict((oc) =>
        oc.columns(['user_id', 'day', 'model', 'shard', 'currency']).doUpdateSet((eb) => ({
          requests: eb('usage_counters.requests', '+', eb.ref('excluded.requests')),
          input_tokens: eb('usage_counters.input_tokens', '+', eb.ref('excluded.input_tokens')),
          output_tokens: eb('usage_counters.output_tokens', '+', eb.ref('excluded.output_tokens')),
          cost_nanos: eb('usage_counters.cost_nanos', '+', eb.ref('excluded.cost_nanos')),
        })),
      )
      .execute();
  }
}

export interface UsageRow {
  day: string;
  model: string;
  /** Only when grouped by user. */
  user_id?: string;
  currency: string;
  requests: number;
  input_tokens: number;
  output_tokens: number;
  cost_nanos: number;
}

export interface UsageQuery {
  /** One user's usage; undefined: every user's (admins). */
  userId?: string;
  /** Inclusive UTC days, "YYYY-MM-DD". */
  from: string;
  to: string;
  groupByUser: boolean;
}

/** Usage by day and model (and user), oldest day first. */
export async function queryUsage(db: Kysely<Database>, query: UsageQuery): Promise<UsageRow[]> {
  let select = db
    .selectFrom('usage_counters')
    .select((eb) => [
      'day',
      'model',
      'currency',
      eb.fn.sum<number>('requests').as('requests'),
      eb.fn.sum<number>('input_tokens').as('input_tokens'),
      eb.fn.sum<number>('output_tokens').as('output_tokens'),
      eb.fn.sum<number>('cost_nanos').as('cost_nanos'),
    ])
    .where('day', '>=', query.from)
    .where('day', '<=', query.to)
    .groupBy(['day', 'model', 'currency'])
    .orderBy('day')
    .orderBy('model');
  if (query.userId !== undefined) select = select.where('user_id', '=', query.userId);
  if (query.groupByUser) select = select.select('user_id').groupBy('user_id').orderBy('user_id');
  const rows = await select.execute();
  return rows.map((row) => ({
    ...row,
    requests: Number(row.requests),
    input_tokens: Number(row.input_tokens),
    output_tokens: Number(row.output_tokens),
    cost_nanos: Number(row.cost_nanos),
  }));
}

/** Cost recorded for a user from `from` (inclusive UTC day) on, per currency. */
export async function costSince(db: Kysely<Database>, userId: string, from: string): Promise<Map<string, number>> {
  const rows = await db
    .selectFrom('usage_counters')
    .select(['currency', sql<number>`sum(cost_nanos)`.as('cost')])
    .where('user_id', '=', userId)
    .where('day', '>=', from)
    .groupBy('currency')
    .execute();
  return new Map(rows.map((row) => [row.currency, Number(row.cost)]));
}

/**
 * What a user's open batches may still spend: per batch, its estimated cost less what it has cost so far (its
 * chunks' cost; never below 0), in `currency`; `exceptBatchId` leaves one batch out (the one being validated).
 */
export async function committedCost(db: Kysely<Database>, userId: string, currency: string, exceptBatchId?: string): Promise<number> {
  // What an open batch has cost so far is in its chunk rows (its own cost_nanos is written at finalization).
  const spent = sql<number>`(cost_nanos + coalesce((select sum(chunks.cost_nanos) from chunks where chunks.batch_id = batches.id), 0))`;
  let query = db
    .selectFrom('batches')
    .select(sql<number>`coalesce(sum(case when estimated_cost_nanos > ${spent} then estimated_cost_nanos - ${spent} else 0 end), 0)`.as('left'))
    .where('user_id', '=', userId)
    .where('cost_currency', '=', currency)
    .where('status', 'in', ['in_progress', 'finalizing', 'cancelling']);
  if (exceptBatchId !== undefined) query = query.where('id', '!=', exceptBatchId);
  const row = await query.executeTakeFirst();
  return Number(row?.left ?? 0);
}
