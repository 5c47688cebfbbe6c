// Finalization: once no chunk of a batch is open, concatenate its committed
// segments into an output file (their output parts) and an error file (their
// error parts, then a batch_cancelled / batch_expired line for every input
// line in no segment), register both as the user's files and move the batch to
// its terminal state with its totals summed from its chunks, all in one
// transaction that holds only while this process still owns the batch lease.
// Idempotent: a crash anywhere before that commit leaves the batch in its
// previous state and its segments untouched, and the next sweep redoes the
// whole step (the blobs are overwritten under the same keys). Only after the
// commit are the segment blobs deleted, best-effort: one left behind is
// deleted with the batch's files (retention, batch deletion).
import { newFileId } from '../ids.ts';
import { blobKeyForBatchOutput } from '../store/index.ts';
import { deleteSegmentBlobs } from '../store/segment-blobs.ts';
import { updateLeasedBatch } from '../store/sql/batches.ts';
import { chunkTotalsOf } from '../store/sql/chunks.ts';
import { insertFile } from '../store/sql/files.ts';
import { segmentLineTotals } from '../store/sql/segments.ts';
import type { BatchRow, BatchStatus, FileRow } from '../store/sql/schema.ts';
import { enqueueBatchEvent } from '../webhooks/outbox.ts';
import type { LifecycleContext } from '../runtime/context.ts';
import type { BatchLeaseKeeper } from './lease-keeper.ts';
import { segmentParts, unfinishedLineReason, unfinishedLines, type UnfinishedLineCount } from './result-lines.ts';

export type FinalStatus = Extract<BatchStatus, 'completed' | 'expired' | 'cancelled'>;

// Completion and expiry pass through FINALIZING, so a cancel that arrives meanwhile is refused rather than lost.
const FINALIZED_FROM: Record<FinalStatus, readonly BatchStatus[]> = {
  completed: ['finalizing'],
  expired: ['finalizing'],
  cancelled: ['cancelling'],
};

const TIMESTAMP_OF: Record<FinalStatus, 'completed_at' | 'expired_at' | 'cancelled_at'> = {
  completed: 'completed_at',
  expired: 'expired_at',
  cancelled: 'cancelled_at',
};

/** Caller holds the batch lease and has checked that no chunk is open. Returns false if the lease was lost. */
export async function finalizeBatch(ctx: LifecycleContext, batch: BatchRow, status: FinalStatus, lease: BatchLeaseKeeper): Promise<boolean> {
  const { store } = ctx;
  const db = store.sql.db;
  const startedAt = performance.now();
  const outputKey = blobKeyForBatchOutput(batch.id, 'output');
  const errorsKey = blobKeyForBatchOutput(batch.id, 'errors');
  const partOptions = { beforePage: () => lease.check(), skipCleared: false };
  const output = await store.blobs.write(outputKey, segmentParts(db, store.blobs, batch.id, 'output', partOptions));
  const filled: UnfinishedLineCount = { lines: 0 };
  const reason = unfinishedLineReason(batch, status === 'cancelled');
  const errors = await store.blobs.write(
    errorsKey,
    concat(segmentParts(db, store.blobs, batch.id, 'errors', partOptions), unfinishedLines(db, store.blobs, batch, reason.code, reason.message, filled)),
  );
  lease.check();
  const lines = await segmentLineTotals(db, batch.id);
  const totals = (await chunkTotalsOf(db, [batch.id])).get(batch.id)!;
  const now = Date.now();
  const expiresAt = batch.output_expires_after_seconds === null ? null : batch.created_at + batch.output_expires_after_seconds * 1000;
  const fileRow = (kind: 'output' | 'errors', key: string, measured: typeof output): FileRow => ({
    id: newFileId(),
    user_id: batch.user_id,
    filename: `${batch.id}_${kind === 'output' ? 'output' : 'error'}.jsonl`,
    purpose: 'batch_output',
    file_type: 'jsonl',
    status: 'processed',
    bytes: measured.bytes,
    line_count: measured.lineCount,
    sha256: measured.sha256,
    declared_sha256: null,
    blob_key: key,
    batch_id: batch.id,
    created_at: now,
    expires_at: expiresAt,
  });
  const outputFile = fileRow('output', outputKey, output);
  const errorFile = fileRow('errors', errorsKey, errors);
  const done = await store.sql.db.transaction().execute(async (tx) => {
    const moved = await updateLeasedBatch(tx, batch.id, ctx.workerId, FINALIZED_FROM[status], {
      status,
      [TIMESTAMP_OF[status]]: now,
      ...(status === 'cancelled' ? {} : { finalizing_at: batch.finalizing_at ?? now }),
      output_file_id: outputFile.id,
      error_file_id: errorFile.id,
      // request_total stays what validation counted; every one of those lines is in exactly one of the files.
      request_completed: lines.outputLines,
      request_failed: lines.errorLines + filled.lines,
      input_tokens: totals.inputTokens,
      output_tokens: totals.outputTokens,
      cost_nanos: totals.costNanos,
      lease_owner: null,
      lease_expires_at: null,
    });
    // Lost the lease (or the state moved): nothing is written but the blobs under this batch's keys, which the next finalizer rewrites.
    if (!moved) return false;
    await insertFile(tx, outputFile);
    await insertFile(tx, errorFile);
    // Same transaction as the state change: the terminal state and its webhook event commit together.
    await enqueueBatchEvent(tx, ctx.config.webhooks, ctx.presentBatch, batch.id, now);
    return true;
  });
  if (!done) return false;
  ctx.metrics?.finalized(status, (performance.now() - startedAt) / 1000);
  // The files hold every line now: the segments' blobs are copies. Best-effort: what is left goes with the files.
  try {
    await deleteSegmentBlobs(db, store.blobs, batch.id);
  } catch (err) {
    ctx.log.warn({ err, batchId: batch.id }, 'deleting the segment blobs of a finalized batch failed; retention deletes them with its files');
  }
  return true;
}

async function* concat(...sources: AsyncIterable<Uint8Array>[]): AsyncGenerator<Uint8Array> {
  for (const source of sources) yield* source;
}
