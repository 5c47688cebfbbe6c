// The validation sweep: takes one VALIDATING batch under its lease, streams
// its input once through the checker, and either stores one chunk row per run
// of consecutive lines (chunking.ts) and moves the batch to IN_PROGRESS, or
// stores no rows and fails the batch with line-numbered errors. A crash at any
// point leaves the batch VALIDATING with a lapsing lease; the next sweep
// deletes any half-written chunks and starts over, so the outcome is all
// chunks or none.
import { budgetMessage, budgetStanding } from '../usage/budget.ts';
import { Pricing } from '../usage/pricing.ts';
import type { Kysely } from 'kysely';
import { claimBatchLease, findBatch, releaseBatchLease, renewBatchLease, updateLeasedBatch } from '../store/sql/batches.ts';
import { classifyStoreError, describeStoreFailure } from '../store/errors.ts';
import { stepBackoff } from './step-backoff.ts';
import { findFile } from '../store/sql/files.ts';
import { BlobNotFoundError } from '../store/blobs/types.ts';
import { deleteBatchChunks, enqueuedTokensForModel, insertChunks } from '../store/sql/chunks.ts';
import type { BatchRow, BatchValidationError, Database, NewChunk } from '../store/sql/schema.ts';
import { enqueueBatchEvent } from '../webhooks/outbox.ts';
import { leaseMs, type LifecycleContext } from '../runtime/context.ts';
import { MESSAGES_BATCH_ENDPOINT, validateInput } from './input-validator.ts';
import { ChunkBuilder, linesPerChunk } from './chunking.ts';
import { BatchLeaseKeeper, LeaseLostError } from './lease-keeper.ts';
import { reclaimAfterLargeStream } from '../runtime/reclaim-memory.ts';

// Errors shown per failed batch; the first ones are what a user fixes first.
const MAX_REPORTED_ERRORS = 100;

/** Validates at most one batch; true when it did some work. */
export async function validateNextBatch(ctx: LifecycleContext): Promise<boolean> {
  const db = ctx.store.sql.db;
  const batch = await claimBatchLease(db, { statuses: ['validating'] }, ctx.workerId, leaseMs(ctx), Date.now());
  if (!batch) return false;
  const lease = new BatchLeaseKeeper(ctx, batch.id);
  const startedAt = performance.now();
  try {
    const outcome = await validateBatch(ctx, batch, lease);
    stepBackoff(ctx).succeeded(batch.id);
    ctx.metrics?.validated(outcome, (performance.now() - startedAt) / 1000);
  } catch (err) {
    if (err instanceof LeaseLostError) ctx.log.warn({ batchId: batch.id }, 'lost the batch lease during validation; another process takes over');
    else await onValidationError(ctx, batch, err);
  } finally {
    lease.stop();
  }
  return true;
}

/**
 * Validation threw. When the database refused what validation stored, the same file fails the same way every
 * time: the batch fails now, saying so. Anything else (the store down, a disk full) may pass: the batch is
 * parked under its lease for a backoff that doubles per failure, so the sweep goes on to other batches and
 * comes back to this one later, never in a hot loop. Its completion window still bounds the whole.
 */
async function onValidationError(ctx: LifecycleContext, batch: BatchRow, err: unknown): Promise<void> {
  const db = ctx.store.sql.db;
  if (classifyStoreError(err) === 'refused') {
    ctx.log.error({ err, batchId: batch.id }, 'the database refused what validation stored; the batch fails');
    try {
      await deleteBatchChunks(db, batch.id);
      await failValidation(ctx, batch, [
        {
          code: 'validation_error',
          message: `The input file could not be stored for running (${describeStoreFailure(err)}). Check the file for unusual content, or report this to the operator.`,
          line: null,
          param: null,
        },
      ]);
      stepBackoff(ctx).succeeded(batch.id);
      return;
    } catch (failErr) {
      ctx.log.error({ err: failErr, batchId: batch.id }, 'failing the batch did not work either; it is retried later');
    }
  }
  const parkMs = stepBackoff(ctx).failed(batch.id);
  ctx.log.error({ err, batchId: batch.id, retryInMs: parkMs }, 'validation failed unexpectedly; it will be retried');
  await renewBatchLease(db, batch.id, ctx.workerId, parkMs, Date.now()).catch(() => undefined);
}

async function validateBatch(ctx: LifecycleContext, batch: BatchRow, lease: BatchLeaseKeeper): Promise<'valid' | 'invalid'> {
  const db = ctx.store.sql.db;
  await deleteBatchChunks(db, batch.id);
  const file = await findFile(db, batch.input_file_id);
  if (!file?.blob_key) {
    await failValidation(ctx, batch, [
      { code: 'missing_file', message: `The input file ${batch.input_file_id} no longer exists.`, line: null, param: 'input_file_id' },
    ]);
    return 'invalid';
  }
  const { limits } = ctx.config;
  let source;
  try {
    source = await ctx.store.blobs.read(file.blob_key);
  } catch (err) {
    if (!(err instanceof BlobNotFoundError)) throw err;
    // The row is there but its bytes are gone (deleted from the bucket behind Spool's back): no retry brings them back.
    await failValidation(ctx, batch, [
      { code: 'missing_file', message: `The content of input file ${batch.input_file_id} is no longer in the blob store.`, line: null, param: 'input_file_id' },
    ]);
    return 'invalid';
  }
  // Chunks are stored as they fill, each batch of them in a transaction of its own; the last one once the file proved valid.
  const chunks = new ChunkBuilder(batch.id, linesPerChunk(file.line_count));
  const outcome = await validateInput(
    source,
    {
      endpoint: batch.endpoint,
      modelId: batch.model_id,
      // Message Batches were held to their own (larger) limit when created inline.
      maxLines: batch.endpoint === MESSAGES_BATCH_ENDPOINT ? Math.max(limits.maxLinesPerBatch, ctx.config.messageBatches.maxRequests) : limits.maxLinesPerBatch,
      maxErrors: MAX_REPORTED_ERRORS,
      defaultMaxTokensEstimate: limits.defaultMaxTokensEstimate,
    },
    async (rows) => {
      const closed: NewChunk[] = [];
      for (const row of rows) {
        const chunk = chunks.add(row);
        if (chunk) closed.push(chunk);
      }
      lease.check();
      await storeChunks(db, closed);
    },
  );
  lease.check();
  if (outcome.ok) {
    const last = chunks.finish();
    if (last) await storeChunks(db, [last]);
  }
  if (!outcome.ok) {
    await deleteBatchChunks(db, batch.id);
    await failValidation(ctx, batch, outcome.errors);
    return 'invalid';
  }
  const overBudget = await modelsOverTokenBudget(db, batch.user_id, outcome.tokensByModel, limits.maxEnqueuedTokensPerModel);
  if (overBudget.length > 0) {
    await deleteBatchChunks(db, batch.id);
    await failValidation(ctx, batch, overBudget);
    return 'invalid';
  }
  // The monthly budget, against this batch's estimate (prompt bytes / 4 and each line's max_tokens, at the prices).
  const pricing = new Pricing(ctx.config.billing);
  let estimatedCost = 0;
  for (const [model, usage] of outcome.usageByModel) estimatedCost += pricing.costNanos(model, usage.prompt, usage.completion);
  const standing = await budgetStanding(db, ctx.config.billing, batch.user_id, Date.now(), batch.id);
  if (standing && estimatedCost > standing.leftNanos) {
    await deleteBatchChunks(db, batch.id);
    await failValidation(ctx, batch, [{ code: 'budget_exceeded', message: budgetMessage(batch.user_id, standing, estimatedCost), line: null, param: null }]);
    return 'invalid';
  }
  const counts = { request_total: outcome.requestCount, estimated_tokens: outcome.estimatedTokens, estimated_cost_nanos: estimatedCost };
  const started = await updateLeasedBatch(db, batch.id, ctx.workerId, ['validating'], {
    ...counts,
    status: 'in_progress',
    in_progress_at: Date.now(),
    lease_owner: null,
    lease_expires_at: null,
  });
  if (started) ctx.onRunnable?.();
  else {
    // Cancelled while we read: keep the chunks so the cancel sweep reports every line as batch_cancelled.
    // (If instead our lease was lost, the new owner rewrites everything and this changes nothing.)
    await updateLeasedBatch(db, batch.id, ctx.workerId, ['cancelling'], counts);
    await releaseBatchLease(db, batch.id, ctx.workerId);
  }
  ctx.log.info({ batchId: batch.id, requests: outcome.requestCount, started }, 'batch validated');
  reclaimAfterLargeStream(file.bytes);
  return 'valid';
}

async function storeChunks(db: Kysely<Database>, rows: NewChunk[]): Promise<void> {
  if (rows.length === 0) return;
  await db.transaction().execute((tx) => insertChunks(tx, rows));
}

/** The chunks are already stored, so each model's enqueued total includes this batch. The budget is per user and model. */
async function modelsOverTokenBudget(db: Kysely<Database>, userId: string, tokensByModel: Map<string, number>, limit: number): Promise<BatchValidationError[]> {
  const errors: BatchValidationError[] = [];
  for (const [model, tokens] of tokensByModel) {
    const enqueued = await enqueuedTokensForModel(db, userId, model);
    if (enqueued > limit) {
      errors.push({
        code: 'token_limit_exceeded',
        message: `Enqueued token limit reached for model ${model}: this batch adds about ${tokens} tokens to ${enqueued - tokens} of yours already queued; the limit per user and model is ${limit}. Retry once your running batches finish.`,
        line: null,
        param: null,
      });
    }
  }
  return errors;
}

async function failValidation(ctx: LifecycleContext, batch: BatchRow, errors: BatchValidationError[]): Promise<void> {
  const db = ctx.store.sql.db;
  const now = Date.now();
  const released = { lease_owner: null, lease_expires_at: null, errors: JSON.stringify(errors) };
  // One transaction with the webhook event, so the terminal state and its event commit together.
  await db.transaction().execute(async (tx) => {
    const failed = await updateLeasedBatch(tx, batch.id, ctx.workerId, ['validating'], { ...released, status: 'failed', failed_at: now });
    // A cancel that arrived while we read wins: the user asked for it to stop.
    const cancelled = !failed && (await updateLeasedBatch(tx, batch.id, ctx.workerId, ['cancelling'], { ...released, status: 'cancelled', cancelled_at: now }));
    if (failed || cancelled) await enqueueBatchEvent(tx, ctx.config.webhooks, ctx.presentBatch, batch.id, now);
  });
  const current = await findBatch(db, batch.id);
  ctx.log.info({ batchId: batch.id, status: current?.status, errors: errors.length }, 'batch failed validation');
}
