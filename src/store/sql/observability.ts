// Read-only queries behind /metrics and /readyz, run at scrape or probe time,
// never per request. (Queue depth by model comes from queue-stats.ts, shared
// with the admin status view.)
import { sql, type Kysely } from 'kysely';
import type { BatchStatus, Database } from './schema.ts';

/** The cheapest statement that proves the database answers. */
export async function pingDatabase(db: Kysely<Database>): Promise<void> {
  await sql`select 1`.execute(db);
}

/** Batches per internal status; statuses with no batch are absent. One pass over the batches_status index. */
export async function batchesByStatus(db: Kysely<Database>): Promise<Map<BatchStatus, number>> {
  const rows = await db
    .selectFrom('batches')
    .select((eb) => ['status', eb.fn.countAll<number | string>().as('n')])
    .groupBy('status')
    .execute();
  return new Map(rows.map((row) => [row.status, Number(row.n)]));
}
