// Internal rows as OpenAI's wire objects (CONTRACT.md: File object, Batch).
import { presentCost } from './cost.ts';
import type { BatchRow, BatchValidationError, FilePurpose, FileRow } from '../../store/sql/schema.ts';
import { unixSeconds, unixSecondsOrNull } from './time.ts';

const PURPOSE: Record<FilePurpose, string> = {
  batch: 'batch',
  batch_output: 'batch_output',
  'fine-tune': 'fine-tune',
  eval: 'evals',
  'eval-output': 'evals',
};

export function openaiFile(file: FileRow) {
  return {
    id: file.id,
    object: 'file',
    bytes: file.bytes,
    created_at: unixSeconds(file.created_at),
    filename: file.filename,
    purpose: PURPOSE[file.purpose],
    status: file.status === 'processed' ? 'processed' : 'uploaded',
    ...(file.expires_at !== null ? { expires_at: unixSeconds(file.expires_at) } : {}),
    status_details: null,
  };
}

export function openaiBatch(batch: BatchRow) {
  const errors: BatchValidationError[] | null = batch.errors ? JSON.parse(batch.errors) : null;
  return {
    id: batch.id,
    object: 'batch',
    endpoint: batch.endpoint,
    errors: errors ? { object: 'list', data: errors.map(({ code, message, param, line }) => ({ code, message, param, line })) } : null,
    input_file_id: batch.input_file_id,
    completion_window: batch.completion_window,
    status: batch.status,
    output_file_id: batch.output_file_id,
    error_file_id: batch.error_file_id,
    created_at: unixSeconds(batch.created_at),
    in_progress_at: unixSecondsOrNull(batch.in_progress_at),
    expires_at: unixSeconds(batch.deadline_at),
    finalizing_at: unixSecondsOrNull(batch.finalizing_at),
    completed_at: unixSecondsOrNull(batch.completed_at),
    failed_at: unixSecondsOrNull(batch.failed_at),
    expired_at: unixSecondsOrNull(batch.expired_at),
    cancelling_at: unixSecondsOrNull(batch.cancelling_at),
    cancelled_at: unixSecondsOrNull(batch.cancelled_at),
    request_counts: { total: batch.request_total, completed: batch.request_completed, failed: batch.request_failed },
    usage: {
      input_tokens: batch.input_tokens,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: batch.output_tokens,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: batch.input_tokens + batch.output_tokens,
    },
    metadata: batch.metadata ? JSON.parse(batch.metadata) : null,
    model: batch.model_id,
    // Spool's own fields (webhooks, retries, cost: docs/api.md); SDKs pass unknown fields through.
    webhook_url: batch.webhook_url,
    retry_of: batch.retry_of,
    cost: presentCost(batch),
  };
}
