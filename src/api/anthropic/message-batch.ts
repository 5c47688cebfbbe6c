// A batch as Anthropic's MessageBatch object. Anthropic counts what became of
// each request (succeeded, errored, canceled, expired) where the batch row
// counts succeeded and failed: the failed ones are split by the code they
// failed with (batch_cancelled, batch_expired), which the caller counts.
import type { BatchRow, BatchStatus } from '../../store/sql/schema.ts';
import { isoOrNull } from '../presenters/time.ts';
import { messageBatchId } from './ids.ts';

export interface RequestCounts {
  /** Requests not yet finished; while the batch validates, every request it was created with. */
  processing: number;
  succeeded: number;
  errored: number;
  canceled: number;
  expired: number;
}

const PROCESSING_STATUS: Record<BatchStatus, 'in_progress' | 'canceling' | 'ended'> = {
  validating: 'in_progress',
  in_progress: 'in_progress',
  finalizing: 'in_progress',
  cancelling: 'canceling',
  failed: 'ended',
  completed: 'ended',
  expired: 'ended',
  cancelled: 'ended',
};

export function isEnded(batch: BatchRow): boolean {
  return PROCESSING_STATUS[batch.status] === 'ended';
}

/** Counts from the batch row alone (failed lines all count as errored), for where nothing more can be asked. */
export function countsFromRow(batch: BatchRow): RequestCounts {
  return {
    processing: isEnded(batch) ? 0 : Math.max(0, batch.request_total - batch.request_completed - batch.request_failed),
    succeeded: batch.request_completed,
    errored: batch.request_failed,
    canceled: 0,
    expired: 0,
  };
}

/** `baseUrl` makes results_url absolute (the SDKs fetch it as it is); without one it is a path. */
export function presentMessageBatch(batch: BatchRow, counts: RequestCounts = countsFromRow(batch), baseUrl = '') {
  const id = messageBatchId(batch.id);
  const endedAt = batch.completed_at ?? batch.cancelled_at ?? batch.expired_at ?? batch.failed_at;
  return {
    id,
    type: 'message_batch',
    processing_status: PROCESSING_STATUS[batch.status],
    request_counts: counts,
    ended_at: isEnded(batch) ? isoOrNull(endedAt) : null,
    created_at: new Date(batch.created_at).toISOString(),
    expires_at: new Date(batch.deadline_at).toISOString(),
    archived_at: null,
    cancel_initiated_at: isoOrNull(batch.cancelling_at),
    results_url: isEnded(batch) ? `${baseUrl}/v1/messages/batches/${id}/results` : null,
  };
}
