// A Message Batch's request_counts. The batch row says how many lines
// succeeded and failed; Anthropic also wants the failed ones told apart
// (canceled, expired, errored), and the requests of a batch that is still
// validating (or failed validation) counted from its input file.
import type { Kysely } from 'kysely';
import { findFile } from '../../store/sql/files.ts';
import { countBatchFailuresByCode } from '../../store/sql/requests.ts';
import type { BatchRow, Database } from '../../store/sql/schema.ts';
import { countsFromRow, type RequestCounts } from './message-batch.ts';

export async function messageBatchCounts(db: Kysely<Database>, batch: BatchRow): Promise<RequestCounts> {
  const counts = countsFromRow(batch);
  const unrun = unrunOutcome(batch);
  if (batch.status === 'validating' || unrun) {
    const requests = (await findFile(db, batch.input_file_id))?.line_count ?? 0;
    if (unrun) counts[unrun] = requests;
    else counts.processing = requests;
    return counts;
  }
  if (batch.request_failed > 0) {
    const byCode = await countBatchFailuresByCode(db, batch.id, ['batch_cancelled', 'batch_expired'] as const);
    counts.canceled = byCode.batch_cancelled;
    counts.expired = byCode.batch_expired;
    counts.errored = Math.max(0, batch.request_failed - counts.canceled - counts.expired);
  }
  return counts;
}

/**
 * What became of every request of a batch that ended before any of its requests was stored for running (failed
 * validation, or cancelled or expired while validating): they are read back from its input file with this outcome.
 */
export function unrunOutcome(batch: BatchRow): 'errored' | 'canceled' | 'expired' | null {
  if (batch.status === 'failed') return 'errored';
  if (batch.in_progress_at !== null || batch.request_total > 0) return null;
  if (batch.status === 'cancelled') return 'canceled';
  if (batch.status === 'expired') return 'expired';
  return null;
}
