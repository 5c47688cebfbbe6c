// Batch lifecycle as the API sees it: create, read, list, cancel. The work
// that follows (validation, running, finalization) happens in sweeps that any
// process may run; this module only moves a batch into the state that asks
// for that work, and every move is a conditional UPDATE so racing processes
// agree on the outcome.
import { ApiError, badRequest, conflict, notFound } from '../errors.ts';
import { newBatchId } from '../ids.ts';
import type { Store } from '../store/index.ts';
import { findBatch, findUserBatch, insertBatch, listBatches, transitionBatch } from '../store/sql/batches.ts';
import { findUserFile } from '../store/sql/files.ts';
import { enqueuedTokensForModel } from '../store/sql/requests.ts';
import type { BatchRow } from '../store/sql/schema.ts';
import type { CreateBatchArgs } from './create-args.ts';

export interface BatchServiceOptions {
  maxEnqueuedTokensPerModel: number;
}

// A file's size says little about its tokens; ~4 bytes per token is the usual
// rule of thumb for English text. Used only for the early check at create:
// validation makes the exact per-model estimate.
const BYTES_PER_TOKEN = 4;

export class BatchService {
  constructor(
    private readonly store: Store,
    private readonly options: BatchServiceOptions,
  ) {}

  private get db() {
    return this.store.sql.db;
  }

  async create(userId: string, args: CreateBatchArgs): Promise<BatchRow> {
    const file = await findUserFile(this.db, userId, args.inputFileId);
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
    if (args.modelId) await this.checkTokenBudget(args.modelId, Math.ceil(file.bytes / BYTES_PER_TOKEN));
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
      output_expires_after_seconds: args.outputExpiresAfterSeconds,
      lease_owner: null,
      lease_expires_at: null,
    };
    await insertBatch(this.db, row);
    return row;
  }

  /** 429 when a model's queue already holds more tokens than the configured ceiling. */
  async checkTokenBudget(model: string, more: number): Promise<void> {
    const enqueued = await enqueuedTokensForModel(this.db, model);
    const limit = this.options.maxEnqueuedTokensPerModel;
    if (enqueued + more > limit) {
      throw new ApiError(
        429,
        `Enqueued token limit reached for model ${model}: ${enqueued} tokens are queued and this batch adds about ${more}; the limit is ${limit}. Wait for running batches to finish.`,
        { type: 'rate_limit_error', code: 'token_limit_exceeded', param: 'model_id', headers: { 'retry-after': '60' } },
      );
    }
  }

  async get(userId: string, batchId: string): Promise<BatchRow> {
    const batch = await findUserBatch(this.db, userId, batchId);
    if (!batch) throw notFound('batch', batchId);
    return batch;
  }

  /** Newest first; returns limit+1 rows so the caller can tell has_more. */
  async list(userId: string, limit: number, after?: string): Promise<BatchRow[]> {
    return listBatches(this.db, { userId, limit, after });
  }

  /**
   * validating/in_progress → cancelling; the cancel sweep fails what has not
   * run and finalizes. Cancelling twice is harmless; a finished batch is a 409.
   */
  async cancel(userId: string, batchId: string): Promise<BatchRow> {
    const batch = await this.get(userId, batchId);
    const now = Date.now();
    const moved = await transitionBatch(this.db, batch.id, ['validating', 'in_progress'], { status: 'cancelling', cancelling_at: now });
    const current = (await findBatch(this.db, batch.id))!;
    if (moved || current.status === 'cancelling' || current.status === 'cancelled') return current;
    if (current.status === 'finalizing') return current;
    throw conflict(`Batch ${batch.id} is already ${current.status} and cannot be cancelled.`, 'batch_not_cancellable');
  }
}
