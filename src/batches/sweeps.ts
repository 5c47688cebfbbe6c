// The lifecycle sweeps after validation. Each claims one batch under its
// lease, does one idempotent step, and lets go; any process may run them, so
// a crash between steps only delays the next sweep.
//
//   cancelling ──close pending chunks (and, after a grace period, those in flight); finalize once none is
//                open: their lines in no segment become batch_cancelled lines──► cancelled
//   in_progress ──every chunk done──► finalizing ──► completed
//   in_progress ──deadline passed with chunks open: close them all (their lines in no segment become
//                 batch_expired lines)──► finalizing ──► expired
//   validating ──deadline passed before validation finished──► expired (no files)
//   finalizing ──(a finalizer died)──► completed | expired
//   output/error files past output_expires_after ──► blob and row deleted
import { claimBatchLease, releaseBatchLease, renewBatchLease, updateLeasedBatch, updateLeasedBatchThen, type BatchClaimFilter } from '../store/sql/batches.ts';
import { closeOpenChunks, countOpenChunks, deleteBatchChunks } from '../store/sql/chunks.ts';
import { listExpiredFiles } from '../store/sql/files.ts';
import { deleteFileAndItsResults } from '../store/sql/result-retention.ts';
import type { BatchRow } from '../store/sql/schema.ts';
import { enqueueBatchEvent } from '../webhooks/outbox.ts';
import { leaseMs, type LifecycleContext } from '../runtime/context.ts';
import { finalizeBatch } from './finalize.ts';
import { BatchLeaseKeeper, LeaseLostError } from './lease-keeper.ts';
import { stepBackoff } from './step-backoff.ts';

/**
 * One step on a claimed batch; returns whether it changed anything, or
 * WAITING when the batch cannot move on until others act (chunks in flight).
 */
type Step = (ctx: LifecycleContext, batch: BatchRow, lease: BatchLeaseKeeper) => Promise<boolean | typeof WAITING>;

const WAITING = Symbol('waiting');

// How long a cancel lets chunks in flight finish their lines before closing them too.
export const CANCEL_GRACE_MS = 30_000;

// Batches one sweep pass may find waiting before it gives up on the rest until the next pass.
const WAITING_PER_PASS = 16;

/**
 * Claims the first batch matching `filter` and runs `step` on it. A batch
 * that has to wait is left leased for one poll interval instead of released,
 * one whose step failed for a backoff that doubles per failure (step-backoff.ts), and the pass goes on to the next eligible
 * batch: each claim takes the first eligible batch, so without the parking a
 * batch that cannot move would be handed to every sweep and hold up every
 * batch behind it (a cancel waiting out its grace period for a request in
 * flight held up a later cancel for those 30 s whenever the next sweep began
 * after the parking lease had lapsed).
 */
async function withClaimedBatch(ctx: LifecycleContext, filter: BatchClaimFilter, step: Step): Promise<boolean> {
  for (let waited = 0; waited < WAITING_PER_PASS; waited++) {
    const result = await stepOnClaimedBatch(ctx, filter, step);
    if (result !== WAITING) return result;
  }
  return false;
}

/** One claim and one step; WAITING when the batch was parked (the pass may try the next one). */
async function stepOnClaimedBatch(ctx: LifecycleContext, filter: BatchClaimFilter, step: Step): Promise<boolean | typeof WAITING> {
  const db = ctx.store.sql.db;
  const batch = await claimBatchLease(db, filter, ctx.workerId, leaseMs(ctx), Date.now());
  if (!batch) return false;
  const lease = new BatchLeaseKeeper(ctx, batch.id);
  let parkMs: number | undefined;
  try {
    const result = await step(ctx, batch, lease);
    stepBackoff(ctx).succeeded(batch.id);
    if (result === WAITING) parkMs = ctx.config.worker.pollIntervalMs;
    return result;
  } catch (err) {
    if (err instanceof LeaseLostError) {
      ctx.log.warn({ batchId: batch.id }, 'lost the batch lease during a sweep step; another process takes over');
      parkMs = ctx.config.worker.pollIntervalMs;
    } else {
      // A step that keeps failing (a bucket that refuses the output file, a full disk) backs off per batch.
      parkMs = stepBackoff(ctx).failed(batch.id);
      ctx.log.error({ err, batchId: batch.id, retryInMs: parkMs }, 'batch sweep step failed; it will be retried');
    }
    return WAITING;
  } finally {
    lease.stop();
    if (parkMs !== undefined) await renewBatchLease(db, batch.id, ctx.workerId, parkMs, Date.now()).catch(() => undefined);
    else await releaseBatchLease(db, batch.id, ctx.workerId).catch(() => undefined);
  }
}

const openChunkCount = (ctx: LifecycleContext, batchId: string): Promise<number> => countOpenChunks(ctx.store.sql.db, batchId);

export const finishCancellation: Step = async (ctx, batch, lease) => {
  const db = ctx.store.sql.db;
  // Cancelled before validation finished: a validator that died midway leaves some chunks and no count.
  // Validation is all chunks or none, so that half is dropped rather than reported as cancelled lines.
  // (A validation that finished under the cancel stores request_total, and its chunks are kept.)
  if (batch.in_progress_at === null && batch.request_total === 0) await deleteBatchChunks(db, batch.id);
  const graceOver = Date.now() - (batch.cancelling_at ?? 0) >= CANCEL_GRACE_MS;
  // Closed chunks run no more lines; their workers notice, hand them back, and a late segment commit is refused.
  const closed = await closeOpenChunks(db, batch.id, Date.now(), graceOver);
  // Chunks in flight get the grace period to commit what they finished; a later sweep comes back for them.
  if ((await openChunkCount(ctx, batch.id)) > 0) return closed > 0 ? true : WAITING;
  const done = await finalizeBatch(ctx, batch, 'cancelled', lease);
  if (done) ctx.log.info({ batchId: batch.id }, 'batch cancelled');
  return done;
};

export const expireOverdue: Step = async (ctx, batch, lease) => {
  const db = ctx.store.sql.db;
  const now = Date.now();
  if (batch.status === 'validating') {
    await deleteBatchChunks(db, batch.id);
    // The terminal state and its webhook event commit together.
    const expired = await updateLeasedBatchThen(db, batch.id, ctx.workerId, ['validating'], { status: 'expired', expired_at: now }, (tx) =>
      enqueueBatchEvent(tx, ctx.config.webhooks, ctx.presentBatch, batch.id, now),
    );
    if (expired) ctx.log.info({ batchId: batch.id }, 'batch expired before validation finished');
    return expired;
  }
  // Every line already has its outcome: the batch made it in time, whatever the clock says now.
  if ((await openChunkCount(ctx, batch.id)) === 0) return completeDone(ctx, batch, lease);
  // The deadline is hard: chunks in flight are closed too, and their late segments are refused.
  await closeOpenChunks(db, batch.id, now, true);
  const moved = await updateLeasedBatch(db, batch.id, ctx.workerId, ['in_progress'], { status: 'finalizing', finalizing_at: now, expired_at: now });
  if (!moved) return false;
  return finalize(ctx, { ...batch, status: 'finalizing', finalizing_at: now, expired_at: now }, lease);
};

export const completeDone: Step = async (ctx, batch, lease) => {
  if ((await openChunkCount(ctx, batch.id)) > 0) return false;
  const now = Date.now();
  const values = { status: 'finalizing' as const, finalizing_at: now };
  const moved = await updateLeasedBatch(ctx.store.sql.db, batch.id, ctx.workerId, ['in_progress'], values);
  if (!moved) return false;
  return finalize(ctx, { ...batch, ...values }, lease);
};

/** Finishes a FINALIZING batch, including one whose finalizer died midway. */
export const finalize: Step = async (ctx, batch, lease) => {
  const status = batch.expired_at !== null ? 'expired' : 'completed';
  const done = await finalizeBatch(ctx, batch, status, lease);
  if (done) ctx.log.info({ batchId: batch.id, status }, 'batch finalized');
  return done;
};

// Files removed per pass; a backlog drains over successive passes.
const PURGE_PER_PASS = 100;
// A file whose blob could not be deleted is skipped for this long, doubling per failure, so one blob that
// cannot be removed neither fails every pass nor holds up the files behind it.
const PURGE_RETRY_BASE_MS = 60_000;
const PURGE_RETRY_MAX_MS = 3_600_000;
const purgeFailures = new Map<string, { count: number; retryAt: number }>();

/**
 * Output and error files past their `output_expires_after` are already hidden
 * from every read; this reclaims their bytes and rows. Blob first: a crash in
 * between leaves a row the next pass deletes again, never an orphaned blob.
 * Any number of processes may run it: both deletes are idempotent.
 */
export async function purgeExpiredFiles(ctx: LifecycleContext): Promise<boolean> {
  const now = Date.now();
  const waiting = [...purgeFailures.values()].filter((failure) => failure.retryAt > now).length;
  const expired = await listExpiredFiles(ctx.store.sql.db, now, PURGE_PER_PASS + waiting);
  let purged = 0;
  for (const file of expired) {
    const failure = purgeFailures.get(file.id);
    if (failure && failure.retryAt > now) continue;
    if (purged >= PURGE_PER_PASS) break;
    try {
      if (file.blob_key) await ctx.store.blobs.delete(file.blob_key);
      await deleteFileAndItsResults(ctx.store.sql.db, file, ctx.store.blobs);
      purgeFailures.delete(file.id);
      purged += 1;
    } catch (err) {
      const count = (failure?.count ?? 0) + 1;
      const delayMs = Math.min(PURGE_RETRY_MAX_MS, PURGE_RETRY_BASE_MS * 2 ** Math.min(count - 1, 10));
      if (purgeFailures.size >= 10_000) purgeFailures.delete(purgeFailures.keys().next().value as string);
      purgeFailures.set(file.id, { count, retryAt: now + delayMs });
      ctx.log.warn({ err, fileId: file.id, retryInMs: delayMs }, 'removing an expired file failed; it is tried again later');
    }
  }
  return purged > 0;
}

/**
 * One pass of every post-validation sweep; true when any changed something (the loop goes again without
 * waiting). Each sweep runs whatever the others did: one that fails (its database query, a blob store that
 * refuses) is logged and must not hold up cancels, expiries and finalizations of every other batch.
 */
export async function runLifecycleSweeps(ctx: LifecycleContext): Promise<boolean> {
  const now = Date.now();
  const sweeps: [string, () => Promise<boolean>][] = [
    ['purge expired files', () => purgeExpiredFiles(ctx)],
    ['cancel', () => withClaimedBatch(ctx, { statuses: ['cancelling'] }, finishCancellation)],
    ['expire', () => withClaimedBatch(ctx, { statuses: ['validating', 'in_progress'], overdueAt: now }, expireOverdue)],
    ['complete', () => withClaimedBatch(ctx, { statuses: ['in_progress'], allChunksDone: true }, completeDone)],
    ['finalize', () => withClaimedBatch(ctx, { statuses: ['finalizing'] }, finalize)],
  ];
  let changed = false;
  for (const [name, sweep] of sweeps) {
    try {
      if (await sweep()) changed = true;
    } catch (err) {
      ctx.log.error({ err, sweep: name }, 'lifecycle sweep failed; the next pass tries again');
    }
  }
  return changed;
}
