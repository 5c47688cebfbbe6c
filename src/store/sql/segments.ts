// Result segments (data plane v2). A worker writes finished lines of a chunk
// to a segment blob, then commits it here: one transaction records the
// segment row and adds its counts to its chunk (done when it holds the
// chunk's last line), conditional on the worker still holding the chunk, so
// a segment of a chunk that was reclaimed or closed meanwhile is never
// counted (its blob is garbage). Usage counters move in the same transaction.
import type { Kysely, Transaction } from 'kysely';
import type { Database, SegmentRow } from './schema.ts';
import { addUsage, type UsageDelta } from './usage.ts';

type Db = Kysely<Database> | Transaction<Database>;

export interface SegmentCommit {
  batchId: string;
  chunk: number;
  blobKey: string;
  outputBytes: number;
  errorBytes: number;
  outputLines: number;
  errorLines: number;
  doneBits: string;
  failedBits: string;
  stats: string;
  inputTokens: number;
  outputTokens: number;
  costNanos: number;
  /** It holds the chunk's last unfinished line: the chunk is done with it. */
  finishesChunk: boolean;
  /**
   * The chunk's claim count when its writer claimed it: the commit applies only to that very claim. A worker whose
   * lease lapsed under a stall may claim its own chunk again; the earlier tenure's commits must then not apply.
   */
  claim?: number;
  /** Usage of its successes, per model. */
  usage: UsageDelta[];
}

/**
 * Commits a group of segments (of any chunks this worker holds) in one transaction ("group commit": one fsync or
 * round trip for many). Returns the commits that applied; the others' chunks had been taken from this worker.
 * `currencies`: each batch's cost currency, for the usage counters.
 */
export async function commitSegments(
  db: Kysely<Database>,
  owner: string,
  commits: SegmentCommit[],
  currencies: Map<string, string>,
  now: number,
  /**
   * An earlier try of these very commits failed without saying whether it committed (a connection cut during
   * COMMIT): a commit whose segment row is already there applied then, and must not apply twice.
   */
  recheck = false,
): Promise<Set<SegmentCommit>> {
  return db.transaction().execute(async (tx) => {
    const applied = new Set<SegmentCommit>();
    const usage: UsageDelta[] = [];
    for (const commit of commits) {
      if (recheck) {
        const earlier = await tx
          .selectFrom('segments')
          .select('seq')
          .where('batch_id', '=', commit.batchId)
          .where('chunk', '=', commit.chunk)
          .where('blob_key', '=', commit.blobKey)
          .executeTakeFirst();
        if (earlier) {
          applied.add(commit);
          continue;
        }
      }
      const chunk = await tx
        .updateTable('chunks')
        .set((eb) => ({
          segments: eb('segments', '+', 1),
          succeeded: eb('succeeded', '+', commit.outputLines),
          failed: eb('failed', '+', commit.errorLines),
          input_tokens: eb('input_tokens', '+', commit.inputTokens),
          output_tokens: eb('output_tokens', '+', commit.outputTokens),
          cost_nanos: eb('cost_nanos', '+', commit.costNanos),
          ...(commit.finishesChunk ? { state: 'done' as const, lease_owner: null, lease_expires_at: null, finished_at: now } : {}),
        }))
        .where('batch_id', '=', commit.batchId)
        .where('chunk', '=', commit.chunk)
        .where('lease_owner', '=', owner)
        .where('state', '=', 'running')
        .$if(commit.claim !== undefined, (q) => q.where('claims', '=', commit.claim!))
        .returning('segments')
        .executeTakeFirst();
      if (!chunk) continue;
      await tx
        .insertInto('segments')
        .values({
          batch_id: commit.batchId,
          chunk: commit.chunk,
          seq: Number(chunk.segments) - 1,
          blob_key: commit.blobKey,
          output_bytes: commit.outputBytes,
          error_bytes: commit.errorBytes,
          output_lines: commit.outputLines,
          error_lines: commit.errorLines,
          done_bits: commit.doneBits,
          failed_bits: commit.failedBits,
          stats: commit.stats,
          created_at: now,
        })
        .execute();
      applied.add(commit);
      usage.push(...commit.usage);
    }
    if (usage.length > 0) await addUsage(tx, owner, new Date(now).toISOString().slice(0, 10), usage, currencies);
    return applied;
  });
}

/** The committed segments of one chunk, in commit order. */
export async function chunkSegments(db: Db, batchId: string, chunk: number): Promise<SegmentRow[]> {
  return db.selectFrom('segments').selectAll().where('batch_id', '=', batchId).where('chunk', '=', chunk).orderBy('seq').execute();
}

/** One page of a batch's segments in (chunk, seq) order after the given position, for streaming without holding them all. */
export async function pageBatchSegments(db: Db, batchId: string, after: { chunk: number; seq: number } | undefined, limit: number): Promise<SegmentRow[]> {
  let query = db.selectFrom('segments').selectAll().where('batch_id', '=', batchId);
  if (after) query = query.where((eb) => eb.or([eb('chunk', '>', after.chunk), eb.and([eb('chunk', '=', after.chunk), eb('seq', '>', after.seq)])]));
  return query.orderBy('chunk').orderBy('seq').limit(limit).execute();
}

/** Forgets the blobs of a batch's segments (finalization copied them into its files and deletes them). */
export async function clearSegmentBlobs(db: Db, batchId: string): Promise<void> {
  await db.updateTable('segments').set({ blob_key: null }).where('batch_id', '=', batchId).where('blob_key', 'is not', null).execute();
}

/** Blob keys of a batch's segments still held, a page at a time. */
export async function segmentBlobKeys(db: Db, batchId: string, limit: number): Promise<string[]> {
  const rows = await db.selectFrom('segments').select('blob_key').where('batch_id', '=', batchId).where('blob_key', 'is not', null).limit(limit).execute();
  return rows.map((row) => row.blob_key!);
}

/** Lines the batch's segments hold: output (succeeded) and error (failed) lines, summed. */
export async function segmentLineTotals(db: Db, batchId: string): Promise<{ outputLines: number; errorLines: number }> {
  const row = await db
    .selectFrom('segments')
    .select((eb) => [eb.fn.sum<number>('output_lines').as('output_lines'), eb.fn.sum<number>('error_lines').as('error_lines')])
    .where('batch_id', '=', batchId)
    .executeTakeFirst();
  return { outputLines: Number(row?.output_lines ?? 0), errorLines: Number(row?.error_lines ?? 0) };
}

/** Forgets the given blobs of a batch's segments (deleted from the blob store by the caller). */
export async function clearSegmentBlobKeys(db: Db, batchId: string, keys: readonly string[]): Promise<void> {
  if (keys.length === 0) return;
  await db.updateTable('segments').set({ blob_key: null }).where('batch_id', '=', batchId).where('blob_key', 'in', [...keys]).execute();
}
