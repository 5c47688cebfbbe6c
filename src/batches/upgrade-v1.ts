// Start-up upgrade of batches stored by the per-line design (one `requests`
// row per input line) to the chunk design (DESIGN.md "Data flow"): chunk rows
// cut by the same rule as validation (chunking.ts), and each chunk's finished
// lines as one committed segment, so the runner redoes only what never
// finished and finalization finds every result in a segment.
//
// The choice: an old data dir or database is converted when the new release
// starts, before its runner and sweeps do, rather than kept running on the old
// path until its batches drain. One data plane in the code, not two; the cost
// is that all processes of a deployment (every `spool serve` and `spool
// worker` on one database) must be upgraded together: a process of the old
// release would not see the chunks, and the new ones do not read request rows.
//
// Each batch converts in one transaction (its chunks, its segments, and the
// deletion of its request rows), so it is converted entirely or not at all; the
// segment blobs are written before that transaction, so a crash leaves at most
// an orphan blob and the batch still in request rows, converted again on the
// next start. Two processes starting at once each convert a batch at most
// once between them: on PostgreSQL the transaction locks the batch row and
// checks again that it has no chunks; SQLite has one writer. Idempotent, and
// one query when there is nothing left to convert.
import type { Kysely } from 'kysely';
import { blobKeyForSegment, type Store } from '../store/index.ts';
import { LineBitmap } from '../store/line-bitmap.ts';
import { LATENCY_BOUNDS_MS } from '../store/sql/batch-stats.ts';
import { insertChunks } from '../store/sql/chunks.ts';
import { TERMINAL_BATCH_STATUSES, type BatchStatus, type Database, type NewChunk, type RequestRow, type SegmentRow } from '../store/sql/schema.ts';
import type { LifecycleContext } from '../runtime/context.ts';
import { errorLineText, outputLineText } from '../runner/wire-lines.ts';
import { ChunkBuilder, linesPerChunk } from './chunking.ts';

/** Batches looked up per query of the requests table. */
const BATCH_PAGE = 100;
/** Request rows read per query: without response bodies (a batch that has ended needs none) ... */
const ROW_PAGE = 1000;
/** ... and with them, a chunk's worth at most, so memory stays bounded by a chunk of bodies whatever the batch. */
const ROW_PAGE_WITH_BODIES = 256;
/** Segment rows per INSERT (12 columns each). */
const SEGMENT_INSERT_ROWS = 100;
/** The owner part of the segment blobs written here. */
const UPGRADE_OWNER = 'upgrade';

export interface UpgradeSummary {
  /** Batches converted by this process. */
  batches: number;
  /** Request rows those batches had. */
  lines: number;
}

/**
 * Converts every batch that still has request rows and no chunk rows. Throws when one cannot be converted (the
 * blob store or the database failing): a process must not run its sweeps over a batch that has neither.
 */
export async function upgradeV1Batches(ctx: Pick<LifecycleContext, 'store' | 'log'>): Promise<UpgradeSummary> {
  const db = ctx.store.sql.db;
  const summary: UpgradeSummary = { batches: 0, lines: 0 };
  const startedAt = Date.now();
  let after: string | undefined;
  let found = 0;
  for (;;) {
    let query = db.selectFrom('requests').select('batch_id').distinct();
    if (after !== undefined) query = query.where('batch_id', '>', after);
    const page = await query.orderBy('batch_id').limit(BATCH_PAGE).execute();
    if (page.length === 0) break;
    found += page.length;
    for (const { batch_id: batchId } of page) {
      let converted: Converted | undefined;
      try {
        converted = await convertBatch(ctx.store, batchId);
      } catch (err) {
        throw new Error(`upgrading batch ${batchId} from request rows to chunks failed (it is retried on the next start): ${(err as Error).message}`, {
          cause: err,
        });
      }
      if (converted === 'orphan') ctx.log.warn({ batchId }, 'deleted request rows of a batch that no longer exists');
      else if (converted) {
        summary.batches += 1;
        summary.lines += converted.lines;
        ctx.log.info({ batchId, status: converted.status, lines: converted.lines, chunks: converted.chunks, segments: converted.segments }, 'batch upgraded from request rows to chunks');
      }
    }
    after = page[page.length - 1].batch_id;
  }
  if (found > 0) ctx.log.info({ ...summary, ms: Date.now() - startedAt }, 'upgrade from request rows to chunks done');
  return summary;
}

type Converted = { status: BatchStatus; lines: number; chunks: number; segments: number } | 'orphan' | undefined;

type SourceRow = Omit<RequestRow, 'response_body'> & { response_body?: string | null };

async function convertBatch(store: Store, batchId: string): Promise<Converted> {
  const db = store.sql.db;
  const batch = await db.selectFrom('batches').select(['status', 'input_file_id', 'request_total']).where('id', '=', batchId).executeTakeFirst();
  if (!batch) {
    // A request row no batch owns is unreachable: nothing reads it, and no chunk can be built for it.
    await db.deleteFrom('requests').where('batch_id', '=', batchId).execute();
    return 'orphan';
  }
  if (await hasChunks(db, batchId)) return undefined;
  const terminal = TERMINAL_BATCH_STATUSES.includes(batch.status);
  const file = await db.selectFrom('files').select('line_count').where('id', '=', batch.input_file_id).executeTakeFirst();
  const builder = new ChunkBuilder(batchId, linesPerChunk(file?.line_count ?? batch.request_total));
  const chunks: NewChunk[] = [];
  const segments: SegmentRow[] = [];
  const now = Date.now();
  let lines = 0;
  let held: SourceRow[] = [];
  const close = async (chunk: NewChunk, rows: SourceRow[]) => {
    const segment = await segmentOf(store, batchId, chunk, rows, terminal, now);
    chunks.push(chunk);
    if (segment) segments.push(segment);
  };
  // Read with bodies only when segment blobs are to be written: an ended batch's results are in its files already.
  const pageSize = terminal ? ROW_PAGE : ROW_PAGE_WITH_BODIES;
  let afterLine = 0;
  for (;;) {
    const page: SourceRow[] = await db
      .selectFrom('requests')
      .select([
        'batch_id', 'line', 'custom_id', 'model', 'byte_offset', 'byte_length', 'estimated_tokens', 'state', 'attempts', 'not_before', 'lease_owner',
        'lease_expires_at', 'response_status', 'latency_ms', 'error_code', 'error_message', 'request_id', 'input_tokens', 'output_tokens', 'finished_at',
      ])
      .$if(!terminal, (q) => q.select('response_body'))
      .where('batch_id', '=', batchId)
      .where('line', '>', afterLine)
      .orderBy('line')
      .limit(pageSize)
      .execute();
    for (const row of page) {
      const closed = builder.add({ line: row.line, offset: row.byte_offset, length: row.byte_length, model: row.model, estimatedTokens: row.estimated_tokens });
      if (closed) {
        await close(closed, held);
        held = [];
      }
      held.push(row);
      lines += 1;
    }
    if (page.length < pageSize) break;
    afterLine = page[page.length - 1].line;
  }
  const last = builder.finish();
  if (last) await close(last, held);

  const converted = await db.transaction().execute(async (tx) => {
    // PostgreSQL: a second process converting the same batch waits here, then finds the chunks and stops.
    const locked = await tx
      .selectFrom('batches')
      .select('id')
      .where('id', '=', batchId)
      .$if(store.sql.dialect === 'postgres', (q) => q.forUpdate())
      .executeTakeFirst();
    if (!locked || (await hasChunks(tx, batchId))) return false;
    await insertChunks(tx, chunks);
    for (let i = 0; i < segments.length; i += SEGMENT_INSERT_ROWS) await tx.insertInto('segments').values(segments.slice(i, i + SEGMENT_INSERT_ROWS)).execute();
    await tx.deleteFrom('requests').where('batch_id', '=', batchId).execute();
    return true;
  });
  // Not converted here: another process did (its blobs have the same keys and content, so none is deleted), or the batch went.
  if (!converted) return undefined;
  return { status: batch.status, lines, chunks: chunks.length, segments: segments.length };
}

async function hasChunks(db: Kysely<Database>, batchId: string): Promise<boolean> {
  return (await db.selectFrom('chunks').select('chunk').where('batch_id', '=', batchId).limit(1).executeTakeFirst()) !== undefined;
}

/**
 * Completes `chunk` (its counts and state) from its request rows, and returns the segment of its finished lines,
 * if any, having written its blob when the batch has not ended. `rows` are the chunk's lines in order.
 */
async function segmentOf(store: Store, batchId: string, chunk: NewChunk, rows: SourceRow[], terminal: boolean, now: number): Promise<SegmentRow | undefined> {
  const lineStart = chunk.line_start;
  const lineCount = chunk.line_count;
  if (rows.length !== lineCount || rows[0].line !== lineStart) throw new Error(`chunk ${chunk.chunk} of batch ${batchId}: rows do not match the chunk`);
  const done = new LineBitmap(lineCount);
  const failedBits = new LineBitmap(lineCount);
  const latency = new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0);
  const errors: Record<string, number> = Object.create(null);
  const models: Record<string, [number, number, number]> = Object.create(null);
  const outputParts: string[] = [];
  const errorParts: string[] = [];
  let succeeded = 0;
  let failed = 0;
  let inputTokens = 0;
  let outputTokens = 0;
  let lastFinished = 0;
  for (const row of rows) {
    if (row.state !== 'succeeded' && row.state !== 'failed') continue;
    const index = row.line - lineStart;
    done.set(index);
    const model = (models[row.model] ??= [0, 0, 0]);
    model[2] += Math.max(Number(row.attempts) - 1, 0);
    if (row.latency_ms !== null && row.latency_ms !== undefined) latency[latencyBucket(Number(row.latency_ms))] += 1;
    inputTokens += Number(row.input_tokens);
    outputTokens += Number(row.output_tokens);
    lastFinished = Math.max(lastFinished, Number(row.finished_at ?? 0));
    if (row.state === 'succeeded') {
      succeeded += 1;
      model[0] += 1;
      if (!terminal) outputParts.push(outputLineText(batchId, row.line, row.custom_id, { status: row.response_status ?? 200, requestId: row.request_id, body: row.response_body ?? 'null' }));
    } else {
      failed += 1;
      model[1] += 1;
      failedBits.set(index);
      const code = row.error_code ?? 'upstream_error';
      errors[code] = (errors[code] ?? 0) + 1;
      if (!terminal) {
        const response = row.response_status === null ? null : { status: row.response_status, requestId: row.request_id, body: row.response_body ?? 'null' };
        errorParts.push(errorLineText(batchId, row.line, row.custom_id, code, row.error_message ?? 'The request failed.', response));
      }
    }
  }
  const finished = succeeded + failed;
  const allFinished = finished === lineCount;
  // Lines that were running under an old lease are pending again: the runner redoes what no segment holds.
  Object.assign(chunk, {
    state: allFinished ? 'done' : terminal ? 'closed' : 'pending',
    finished_at: allFinished || terminal ? lastFinished || now : null,
    segments: finished > 0 ? 1 : 0,
    succeeded,
    failed,
    input_tokens: inputTokens,
    output_tokens: outputTokens,
  } satisfies Partial<NewChunk>);
  if (finished === 0) return undefined;

  let blobKey: string | null = null;
  const output = Buffer.from(outputParts.join(''));
  const error = Buffer.from(errorParts.join(''));
  if (!terminal) {
    blobKey = blobKeyForSegment(batchId, chunk.chunk, 0, 0, UPGRADE_OWNER);
    await store.blobs.write(
      blobKey,
      (async function* () {
        if (output.length > 0) yield output;
        if (error.length > 0) yield error;
      })(),
    );
  }
  return {
    batch_id: batchId,
    chunk: chunk.chunk,
    seq: 0,
    blob_key: blobKey,
    // An ended batch's segment has no blob: its byte counts are those of the lines it would hold, unknown here.
    output_bytes: output.length,
    error_bytes: error.length,
    output_lines: succeeded,
    error_lines: failed,
    done_bits: done.toHex(),
    failed_bits: failedBits.toHex(),
    stats: JSON.stringify({ latency, errors, models }),
    created_at: lastFinished || now,
  };
}

function latencyBucket(ms: number): number {
  const index = LATENCY_BOUNDS_MS.findIndex((bound) => ms <= bound);
  return index < 0 ? LATENCY_BOUNDS_MS.length : index;
}
