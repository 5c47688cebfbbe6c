// What the dashboard charts of one batch: lines finished per time bucket, the
// latency distribution of its upstream exchanges, and its errors by code.
// Summed from its segment rows (each carries its lines' latency histogram,
// errors by code and commit time), a page at a time, so a 50,000-line batch
// comes back as a few hundred numbers; plus the lines finalization reported
// as batch_cancelled / batch_expired (in no segment).
import type { Kysely } from 'kysely';
import { parseSegmentStats } from './queue-stats.ts';
import type { Database } from './schema.ts';

/** Upper bounds (ms) of the latency histogram's buckets; the last bucket is everything above. */
export const LATENCY_BOUNDS_MS = [50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000];

export interface BatchStats {
  /** Per bucket since `startAt`: lines that succeeded and failed then. */
  finished: Array<{ bucket: number; succeeded: number; failed: number }>;
  latency: number[];
  errors: Array<{ code: string; count: number }>;
}

// Segment rows read per page.
const PAGE = 1000;

export async function batchStats(db: Kysely<Database>, batchId: string, startAt: number, bucketMs: number): Promise<BatchStats> {
  const byBucket = new Map<number, { bucket: number; succeeded: number; failed: number }>();
  const bucketAt = (at: number) => {
    const index = Math.max(0, Math.floor((at - startAt) / bucketMs));
    let entry = byBucket.get(index);
    if (!entry) byBucket.set(index, (entry = { bucket: index, succeeded: 0, failed: 0 }));
    return entry;
  };
  const latency = new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0);
  const errorCounts = new Map<string, number>();
  let linesInSegments = 0;
  let after: { chunk: number; seq: number } | undefined;
  for (;;) {
    let query = db.selectFrom('segments').select(['chunk', 'seq', 'created_at', 'output_lines', 'error_lines', 'stats']).where('batch_id', '=', batchId);
    if (after) {
      const at = after;
      query = query.where((eb) => eb.or([eb('chunk', '>', at.chunk), eb.and([eb('chunk', '=', at.chunk), eb('seq', '>', at.seq)])]));
    }
    const rows = await query.orderBy('chunk').orderBy('seq').limit(PAGE).execute();
    for (const row of rows) {
      const entry = bucketAt(Number(row.created_at));
      entry.succeeded += Number(row.output_lines);
      entry.failed += Number(row.error_lines);
      linesInSegments += Number(row.output_lines) + Number(row.error_lines);
      const stats = parseSegmentStats(row.stats);
      for (let i = 0; i < latency.length; i++) latency[i] += Number(stats.latency[i] ?? 0);
      for (const [code, n] of Object.entries(stats.errors)) errorCounts.set(code, (errorCounts.get(code) ?? 0) + Number(n));
    }
    if (rows.length < PAGE) break;
    const last = rows[rows.length - 1];
    after = { chunk: last.chunk, seq: last.seq };
  }
  // Lines in no segment of a batch that ended cancelled or expired: finalization reported them with its reason.
  const batch = await db
    .selectFrom('batches')
    .select(['status', 'request_total', 'cancelled_at', 'expired_at'])
    .where('id', '=', batchId)
    .executeTakeFirst();
  const endedAt = batch?.status === 'cancelled' ? batch.cancelled_at : batch?.status === 'expired' ? batch.expired_at : null;
  // Only while its chunk rows are there: retention deletes them (and the segments) with both files.
  const hasChunks = endedAt !== null && endedAt !== undefined && (await db.selectFrom('chunks').select('chunk').where('batch_id', '=', batchId).limit(1).executeTakeFirst()) !== undefined;
  if (batch && hasChunks) {
    const unrun = Number(batch.request_total) - linesInSegments;
    if (unrun > 0) {
      bucketAt(Number(endedAt)).failed += unrun;
      const code = batch.status === 'cancelled' ? 'batch_cancelled' : 'batch_expired';
      errorCounts.set(code, (errorCounts.get(code) ?? 0) + unrun);
    }
  }
  const errors = [...errorCounts]
    .map(([code, count]) => ({ code, count }))
    .filter((entry) => entry.count > 0)
    .sort((a, b) => b.count - a.count || (a.code < b.code ? -1 : 1));
  return { finished: [...byBucket.values()].sort((a, b) => a.bucket - b.bucket), latency, errors };
}
