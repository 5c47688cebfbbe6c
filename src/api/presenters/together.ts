// Internal rows as Together AI's wire objects (CONTRACT.md: File object, BatchJob).
import { presentCost } from './cost.ts';
import type { BatchRow, BatchStatus, BatchValidationError, FilePurpose, FileRow } from '../../store/sql/schema.ts';
import { isoOrNull, unixSeconds } from './time.ts';

const STATUS: Record<BatchStatus, string> = {
  validating: 'VALIDATING',
  failed: 'FAILED',
  in_progress: 'IN_PROGRESS',
  finalizing: 'IN_PROGRESS',
  completed: 'COMPLETED',
  expired: 'EXPIRED',
  cancelling: 'CANCELING',
  cancelled: 'CANCELLED',
};

// Python v1 accepts only these purposes; batch inputs and outputs are both "batch-api".
const PURPOSE: Record<FilePurpose, string> = {
  batch: 'batch-api',
  batch_output: 'batch-api',
  'fine-tune': 'fine-tune',
  eval: 'eval',
  'eval-output': 'eval-output',
};

export function togetherFile(file: FileRow) {
  return {
    id: file.id,
    object: 'file',
    created_at: unixSeconds(file.created_at),
    filename: file.filename,
    bytes: file.bytes,
    purpose: PURPOSE[file.purpose],
    type: file.file_type,
    FileType: file.file_type,
    LineCount: file.line_count,
    Processed: file.status === 'processed',
  };
}

export function batchProgress(batch: BatchRow): number {
  if (batch.status === 'completed') return 100;
  if (batch.request_total === 0) return 0;
  return Math.min(100, ((batch.request_completed + batch.request_failed) / batch.request_total) * 100);
}

/** A readable summary of validation errors naming the first few lines. */
export function validationErrorSummary(errors: BatchValidationError[]): string {
  const shown = errors.slice(0, 5).map((e) => (e.line === null ? e.message : e.message.startsWith('line ') ? e.message : `line ${e.line}: ${e.message}`));
  const more = errors.length > shown.length ? `; and ${errors.length - shown.length} more error(s)` : '';
  return `Input file failed validation: ${shown.join('; ')}${more}`;
}

export function togetherBatch(batch: BatchRow) {
  const errors: BatchValidationError[] = batch.errors ? JSON.parse(batch.errors) : [];
  return {
    id: batch.id,
    user_id: batch.user_id,
    input_file_id: batch.input_file_id,
    file_size_bytes: batch.file_size_bytes,
    status: STATUS[batch.status],
    job_deadline: new Date(batch.deadline_at).toISOString(),
    created_at: new Date(batch.created_at).toISOString(),
    endpoint: batch.endpoint,
    progress: batchProgress(batch),
    model_id: batch.model_id,
    output_file_id: batch.output_file_id,
    error_file_id: batch.error_file_id,
    error: errors.length > 0 ? validationErrorSummary(errors) : null,
    completed_at: isoOrNull(batch.completed_at ?? batch.failed_at ?? batch.cancelled_at ?? batch.expired_at),
    // Spool's own fields (webhooks, retries, cost: docs/api.md); SDKs pass unknown fields through.
    webhook_url: batch.webhook_url,
    retry_of: batch.retry_of,
    cost: presentCost(batch),
  };
}
