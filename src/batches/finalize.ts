// Finalization: once no request of a batch is open, stream its results into
// an output file and an error file, register both as the user's files and
// move the batch to its terminal state, all in one transaction that holds
// only while this process still owns the batch lease. Idempotent: a crash
// anywhere leaves the batch in its previous state, and the next sweep redoes
// the whole step (the blobs are overwritten under the same keys).
import { newFileId } from '../ids.ts';
import { blobKeyForBatchOutput } from '../store/index.ts';
import { updateLeasedBatch } from '../store/sql/batches.ts';
import { insertFile } from '../store/sql/files.ts';
import { batchRequestTotals } from '../store/sql/requests.ts';
import type { BatchRow, BatchStatus, FileRow, RequestState } from '../store/sql/schema.ts';
import { enqueueBatchEvent } from '../webhooks/outbox.ts';
import type { LifecycleContext } from '../runtime/context.ts';
import type { BatchLeaseKeeper } from './lease-keeper.ts';
import { recordedResultLines } from './result-lines.ts';

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

/** Caller holds the batch lease and has checked that no request is open. Returns false if the lease was lost. */
export async function finalizeBatch(ctx: LifecycleContext, batch: BatchRow, status: FinalStatus, lease: BatchLeaseKeeper): Promise<boolean> {
  const { store } = ctx;
  const startedAt = performance.now();
  const outputKey = blobKeyForBatchOutput(batch.id, 'output');
  const errorsKey = blobKeyForBatchOutput(batch.id, 'errors');
  const output = await store.blobs.write(outputKey, resultLines(ctx, batch, 'succeeded', lease));
  const errors = await store.blobs.write(errorsKey, resultLines(ctx, batch, 'failed', lease));
  lease.check();
  const totals = await batchRequestTotals(store.sql.db, batch.id);
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
      request_total: totals.succeeded + totals.failed,
      request_completed: totals.succeeded,
      request_failed: totals.failed,
      input_tokens: totals.inputTokens,
      output_tokens: totals.outputTokens,
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
  if (done) ctx.metrics?.finalized(status, (performance.now() - startedAt) / 1000);
  return done;
}

function resultLines(ctx: LifecycleContext, batch: BatchRow, state: RequestState, lease: BatchLeaseKeeper): AsyncGenerator<Uint8Array> {
  return recordedResultLines(ctx.store.sql.db, batch.id, state, () => lease.check());
}
