// What the dashboard charts of one batch: lines finished per time bucket, the
// latency distribution of its upstream exchanges, and its errors by code.
// Aggregated in SQL, so a 50,000-line batch comes back as a few hundred numbers.
import { sql, type Kysely } from 'kysely';
import type { Database } from './schema.ts';

/** Upper bounds (ms) of the latency histogram's buckets; the last bucket is everything above. */
export const LATENCY_BOUNDS_MS = [50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000];

export interface BatchStats {
  /** Per bucket since `startAt`: lines that succeeded and failed then. */
  finished: Array<{ bucket: number; succeeded: number; failed: number }>;
  latency: number[];
  errors: Array<{ code: string; count: number }>;
}

export async function batchStats(db: Kysely<Database>, batchId: string, startAt: number, bucketMs: number): Promise<BatchStats> {
  const bucket = sql<number>`floor((finished_at - ${startAt}) / ${bucketMs})`;
  const finishedRows = await db
    .selectFrom('requests')
    .select([bucket.as('bucket'), 'state', (eb) => eb.fn.countAll<number>().as('n')])
    .where('batch_id', '=', batchId)
    .where('state', 'in', ['succeeded', 'failed'])
    .where('finished_at', 'is not', null)
    // By position: the same expression with its own bound parameters is, to PostgreSQL, another expression.
    .groupBy([sql`1`, 'state'])
    .execute();
  const byBucket = new Map<number, { bucket: number; succeeded: number; failed: number }>();
  for (const row of finishedRows) {
    const index = Math.max(0, Number(row.bucket));
    const entry = byBucket.get(index) ?? { bucket: index, succeeded: 0, failed: 0 };
    if (row.state === 'succeeded') entry.succeeded += Number(row.n);
    else entry.failed += Number(row.n);
    byBucket.set(index, entry);
  }

  const cases = LATENCY_BOUNDS_MS.map((bound, i) => sql`when latency_ms <= ${bound} then ${i}`);
  const latencyBucket = sql<number>`case ${sql.join(cases, sql` `)} else ${LATENCY_BOUNDS_MS.length} end`;
  const latencyRows = await db
    .selectFrom('requests')
    .select([latencyBucket.as('bucket'), (eb) => eb.fn.countAll<number>().as('n')])
    .where('batch_id', '=', batchId)
    .where('latency_ms', 'is not', null)
    .groupBy(sql`1`)
    .execute();
  const latency = new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0);
  for (const row of latencyRows) latency[Number(row.bucket)] += Number(row.n);

  const errorRows = await db
    .selectFrom('requests')
    .select(['error_code', (eb) => eb.fn.countAll<number>().as('n')])
    .where('batch_id', '=', batchId)
    .where('state', '=', 'failed')
    .groupBy('error_code')
    .execute();
  const errors = errorRows
    .map((row) => ({ code: row.error_code ?? 'unknown', count: Number(row.n) }))
    .sort((a, b) => b.count - a.count || (a.code < b.code ? -1 : 1));

  return { finished: [...byBucket.values()].sort((a, b) => a.bucket - b.bucket), latency, errors };
}
