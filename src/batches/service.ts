// Batch lifecycle as the API sees it: create, read, list, cancel, retry. The work
// that follows (validation, running, finalization) happens in sweeps that any
// process may run; this module only moves a batch into the state that asks
// for that work, and every move is a conditional UPDATE so racing processes
// agree on the outcome.
import { Readable } from 'node:stream';
import type { BillingConfig } from '../config.ts';
import { budgetMessage, budgetStanding } from '../usage/budget.ts';
import { Pricing } from '../usage/pricing.ts';
import type { Kysely, Transaction } from 'kysely';
import type { Principal } from '../auth/keys.ts';
import { ApiError, badRequest, conflict, notFound } from '../errors.ts';
import { newBatchId } from '../ids.ts';
import type { Store } from '../store/index.ts';
import { findBatch, findUserBatch, insertBatch, listBatches, transitionBatch } from '../store/sql/batches.ts';
import { findFile, findUserFile, insertFile } from '../store/sql/files.ts';
import { isMissingBlob, segmentParts } from './result-lines.ts';
import { batchStats, type BatchStats } from '../store/sql/batch-stats.ts';
import { hasChunks } from '../store/sql/chunks.ts';
import { enqueuedTokensForModel } from '../store/sql/chunks.ts';
import { TERMINAL_BATCH_STATUSES, type BatchRow, type Database, type WireDialect } from '../store/sql/schema.ts';
import { parseWindow, type CreateBatchArgs } from './create-args.ts';
import { writeRetryInput } from './retry-input.ts';

type Db = Kysely<Database> | Transaction<Database>;

/** Where a new batch comes from: the dialect it was asked for in (its webhook events use it) and, for a retry, the original. */
export interface BatchOrigin {
  dialect: WireDialect;
  retryOf?: string | null;
}

export interface BatchServiceOptions {
  /** Output/error file lifetime for batches created without output_expires_after; unset keeps them until deleted. */
  defaultOutputExpiresAfterSeconds?: number;
  /** Per user and model. */
  maxEnqueuedTokensPerModel: number;
  /** Prices, currency and monthly budgets. */
  billing: BillingConfig;
}

// A file's size says little about its tokens; ~4 bytes per token is the usual
// rule of thumb for English text. Used only for the early check at create:
// validation makes the exact per-model estimate.
const BYTES_PER_TOKEN = 4;

export class BatchService {
  private readonly pricing: Pricing;

  constructor(
    private readonly store: Store,
    private readonly options: BatchServiceOptions,
  ) {
    this.pricing = new Pricing(options.billing);
  }

  private get db() {
    return this.store.sql.db;
  }

  /** `db` lets a caller create the batch inside its own transaction (a retry registers its input file in the same one). */
  async create(userId: string, args: CreateBatchArgs, origin: BatchOrigin = { dialect: 'together' }, db: Db = this.db): Promise<BatchRow> {
    const file = await findUserFile(db, userId, args.inputFileId);
    if (!file || (file.expires_at !== null && file.expires_at <= Date.now())) {
      // 404 like any other read of a missing or foreign file: another user's file is indistinguishable from none.
      throw new ApiError(404, `No file found with id '${args.inputFileId}' for 'input_file_id': upload the batch input file first and pass its id.`, {
        code: 'not_found',
        param: 'input_file_id',
      });
    }
    if (file.status !== 'processed') {
      throw badRequest(`'input_file_id' ${file.id} has no content yet: finish its upload first.`, 'input_file_id', 'file_not_uploaded');
    }
    if (file.purpose !== 'batch') {
      throw badRequest(
        `'input_file_id' ${file.id} was uploaded with purpose "${file.purpose}": batch input files need purpose "batch" (OpenAI) or "batch-api" (Together).`,
        'input_file_id',
        'invalid_input_file',
      );
    }
    if (file.file_type !== 'jsonl') {
      throw badRequest(`'input_file_id' ${file.id} is a ${file.file_type} file: batch input must be JSONL.`, 'input_file_id', 'invalid_input_file');
    }
    if (args.modelId) await this.checkTokenBudget(userId, args.modelId, Math.ceil(file.bytes / BYTES_PER_TOKEN), db);
    await this.checkSpendBudget(userId, args.modelId ? this.pricing.costNanos(args.modelId, Math.ceil(file.bytes / BYTES_PER_TOKEN), 0) : 0, db);
    const now = Date.now();
    const row: BatchRow = {
      id: newBatchId(),
      user_id: userId,
      input_file_id: file.id,
      endpoint: args.endpoint,
      completion_window: args.completionWindow,
      status: 'validating',
      priority: args.priority,
      model_id: args.modelId,
      metadata: args.metadata ? JSON.stringify(args.metadata) : null,
      file_size_bytes: file.bytes,
      created_at: now,
      deadline_at: now + args.windowMs,
      in_progress_at: null,
      finalizing_at: null,
      completed_at: null,
      failed_at: null,
      expired_at: null,
      cancelling_at: null,
      cancelled_at: null,
      output_file_id: null,
      error_file_id: null,
      errors: null,
      request_total: 0,
      request_completed: 0,
      request_failed: 0,
      input_tokens: 0,
      output_tokens: 0,
      estimated_tokens: 0,
      output_expires_after_seconds: args.outputExpiresAfterSeconds ?? this.options.defaultOutputExpiresAfterSeconds ?? null,
      lease_owner: null,
      lease_expires_at: null,
      dialect: origin.dialect,
      webhook_url: args.webhookUrl,
      retry_of: origin.retryOf ?? null,
      cost_nanos: 0,
      cost_currency: this.options.billing.currency,
      estimated_cost_nanos: 0,
    };
    await insertBatch(db, row);
    return row;
  }

  /**
   * A new batch of the failed lines of a finished one (run-time failures, and
   * the batch_cancelled / batch_expired lines that never ran), with the
   * original's endpoint, window, priority, model, metadata and webhook, and
   * retry_of pointing back at it. Its input file is written from the
   * original's bytes and goes through validation like any other.
   */
  async retry(userId: string, batchId: string, dialect: WireDialect): Promise<BatchRow> {
    // The owner's own: a retry is a new batch of that user's, made from that user's input file.
    const original = await this.get({ userId, isAdmin: false }, batchId);
    if (!TERMINAL_BATCH_STATUSES.includes(original.status)) {
      throw conflict(
        `Batch ${original.id} is ${original.status}: only a finished batch (completed, failed, expired or cancelled) can be retried. Wait for it to finish.`,
        'batch_not_finished',
      );
    }
    if (original.request_failed === 0) {
      const why =
        original.status === 'failed'
          ? 'it failed validation, so none of its lines ran: fix the input file and create a new batch'
          : 'every line of it succeeded';
      throw conflict(`Batch ${original.id} has no failed lines to retry: ${why}.`, 'no_failed_lines');
    }
    // Its chunk rows record which lines failed; retention deletes them once both result files are gone.
    if (!(await hasChunks(this.db, original.id))) {
      throw conflict(
        `Batch ${original.id} had ${original.request_failed} failed lines, but its output and error files have expired or were deleted, and with them the record of which lines failed.`,
        'results_expired',
      );
    }
    const input = await findUserFile(this.db, userId, original.input_file_id);
    if (!input?.blob_key || (input.expires_at !== null && input.expires_at <= Date.now())) {
      throw conflict(`The input file ${original.input_file_id} of batch ${original.id} no longer exists, so its failed lines cannot be read.`, 'input_file_missing');
    }
    const file = await writeRetryInput(this.store, original, input.blob_key);
    const args: CreateBatchArgs = {
      inputFileId: file.id,
      endpoint: original.endpoint,
      completionWindow: original.completion_window,
      windowMs: parseWindow(original.completion_window),
      priority: original.priority,
      modelId: original.model_id,
      metadata: original.metadata ? JSON.parse(original.metadata) : null,
      outputExpiresAfterSeconds: original.output_expires_after_seconds,
      webhookUrl: original.webhook_url,
    };
    try {
      // File and batch in one transaction: a refused create (token budget) leaves no stray input file behind.
      return await this.db.transaction().execute(async (tx) => {
        await insertFile(tx, file);
        // A Message Batch's retry is a Message Batch: its lines are Messages requests, its results Anthropic's, and
        // it is listed where the original was (the other dialects see it too, as they see every batch).
        const retryDialect: WireDialect = original.dialect === 'anthropic' ? 'anthropic' : dialect;
        return this.create(userId, args, { dialect: retryDialect, retryOf: original.id }, tx);
      });
    } catch (err) {
      await this.store.blobs.delete(file.blob_key!).catch(() => undefined);
      throw err;
    }
  }

  /** 429 when the user's queue for a model already holds more tokens than the configured ceiling (per user and model). */
  async checkTokenBudget(userId: string, model: string, more: number, db: Db = this.db): Promise<void> {
    const enqueued = await enqueuedTokensForModel(db, userId, model);
    const limit = this.options.maxEnqueuedTokensPerModel;
    if (enqueued + more > limit) {
      throw new ApiError(
        429,
        `Enqueued token limit reached for model ${model}: ${enqueued} tokens of your batches are queued and this batch adds about ${more}; the limit per user and model is ${limit}. Wait for your running batches to finish.`,
        { type: 'rate_limit_error', code: 'token_limit_exceeded', param: 'model_id', headers: { 'retry-after': '60' } },
      );
    }
  }

  /**
   * The early check of a monthly budget: refused when nothing is left, or when the file's prompt alone (bytes / 4
   * at the price of the batch's model_id, when it names one) costs more than is left. Validation makes the
   * per-line estimate, completions included, and fails a batch over what is left.
   */
  async checkSpendBudget(userId: string, estimateNanos: number, db: Db = this.db): Promise<void> {
    const standing = await budgetStanding(db, this.options.billing, userId, Date.now());
    if (!standing || (standing.leftNanos > 0 && estimateNanos <= standing.leftNanos)) return;
    const retryAfter = Math.max(1, Math.ceil((standing.resetsAt.getTime() - Date.now()) / 1000));
    throw new ApiError(429, budgetMessage(userId, standing, estimateNanos > 0 ? estimateNanos : undefined), {
      type: 'rate_limit_error',
      code: 'budget_exceeded',
      param: null,
      headers: { 'retry-after': String(retryAfter), 'x-should-retry': 'false' },
    });
  }

  /**
   * What the dashboard charts of a batch, in at most ~60 time buckets from its start (whole seconds, at least 1):
   * lines finished per bucket, its upstream latency distribution and its errors by code. Empty once the batch's
   * results are gone (retention).
   */
  async stats(caller: Principal, batchId: string): Promise<BatchStats & { batch: BatchRow; startAt: number; bucketMs: number }> {
    const batch = await this.get(caller, batchId);
    const startAt = batch.in_progress_at ?? batch.created_at;
    const endAt = batch.completed_at ?? batch.cancelled_at ?? batch.expired_at ?? batch.failed_at ?? Date.now();
    const bucketMs = Math.max(1000, Math.ceil((endAt - startAt) / 60 / 1000) * 1000);
    return { batch, startAt, bucketMs, ...(await batchStats(this.db, batch.id, startAt, bucketMs)) };
  }

  /**
   * The batch's results so far: while it runs, the output (or error) parts of its committed segments, in (chunk,
   * seq) order, read a page of segment rows at a time; once it has ended, its output (or error) file itself.
   * `complete` says which. A finished batch whose files are gone (retention) has nothing left to give: 410.
   * A segment can vanish under a running stream (finalization deletes them once they are in the files): the stream
   * then ends there, short, and the caller has already said the batch was still running; the files hold the rest.
   */
  async resultsSoFar(caller: Principal, batchId: string, which: 'output' | 'errors'): Promise<{ batch: BatchRow; complete: boolean; stream: AsyncIterable<Uint8Array> }> {
    const batch = await this.get(caller, batchId);
    if (!TERMINAL_BATCH_STATUSES.includes(batch.status)) {
      const stream = segmentParts(this.db, this.store.blobs, batch.id, which, {
        skipCleared: true,
        onReadError: async (err) => {
          if (!isMissingBlob(err)) return false;
          const now = await findBatch(this.db, batch.id);
          return now === undefined || TERMINAL_BATCH_STATUSES.includes(now.status);
        },
      });
      return { batch, complete: false, stream };
    }
    const fileId = which === 'output' ? batch.output_file_id : batch.error_file_id;
    // Failed validation (or expired before it finished): no line ever ran, so there is nothing, and never will be.
    if (fileId === null) return { batch, complete: true, stream: Readable.from([]) };
    const file = await findFile(this.db, fileId);
    if (!file?.blob_key || (file.expires_at !== null && file.expires_at <= Date.now())) {
      throw new ApiError(410, `The results of batch ${batch.id} are gone: its ${which === 'output' ? 'output' : 'error'} file ${fileId} expired or was deleted.`, {
        type: 'invalid_request_error',
        code: 'results_expired',
      });
    }
    return { batch, complete: true, stream: await this.store.blobs.read(file.blob_key) };
  }

  /** The caller's batch; an admin's caller may read any user's. Another user's batch is a 404, like a missing one. */
  async get(caller: Principal, batchId: string): Promise<BatchRow> {
    const batch = caller.isAdmin ? await findBatch(this.db, batchId) : await findUserBatch(this.db, caller.userId, batchId);
    if (!batch) throw notFound('batch', batchId);
    return batch;
  }

  /**
   * Newest first; returns limit+1 rows so the caller can tell has_more. `forUser` (admin keys only) lists
   * another user's batches, or everyone's with "*"; anyone else always gets their own.
   */
  async list(caller: Principal, limit: number, after?: string, forUser?: string): Promise<BatchRow[]> {
    if (forUser !== undefined && !caller.isAdmin) {
      throw new ApiError(403, "Only admin keys may list another user's batches: leave out 'user_id' to list your own.", {
        type: 'permission_error',
        code: 'admin_required',
        param: 'user_id',
      });
    }
    const userId = forUser === '*' ? undefined : (forUser ?? caller.userId);
    return listBatches(this.db, { userId, limit, after });
  }

  /**
   * validating/in_progress → cancelling; the cancel sweep fails what has not
   * run and finalizes. Cancelling twice is harmless; a finished batch is a 409.
   * Admin keys may cancel any user's batch.
   */
  async cancel(caller: Principal, batchId: string): Promise<BatchRow> {
    const batch = await this.get(caller, batchId);
    const now = Date.now();
    const moved = await transitionBatch(this.db, batch.id, ['validating', 'in_progress'], { status: 'cancelling', cancelling_at: now });
    const current = (await findBatch(this.db, batch.id))!;
    if (moved || current.status === 'cancelling' || current.status === 'cancelled') return current;
    if (current.status === 'finalizing') return current;
    throw conflict(`Batch ${batch.id} is already ${current.status} and cannot be cancelled.`, 'batch_not_cancellable');
  }
}
