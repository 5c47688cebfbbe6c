// A Message Batch's request_counts. The batch row says how many lines
// succeeded and failed; Anthropic also wants the failed ones told apart
// (canceled, expired, errored), and the requests of a batch that is still
// validating (or failed validation) counted from its input file. Of a batch
// that ended cancelled or expired, the lines in no segment (their chunk was
// closed first: finalization wrote them as batch_cancelled / batch_expired) are
// its failed lines less those its chunks recorded as failed at run time.
import type { Kysely } from 'kysely';
import { findFile } from '../../store/sql/files.ts';
import { chunkFailuresOf } from '../../store/sql/chunks.ts';
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
  // Running: no line is cancelled or expired yet. Completed: every line ran.
  if (batch.request_failed > 0 && (batch.status === 'cancelled' || batch.status === 'expired')) {
    const chunks = await chunkFailuresOf(db, batch.id);
    // No chunk rows left (retention deleted them with both files): the failures can no longer be told apart.
    if (chunks.chunks > 0) {
      const unrunLines = Math.max(0, batch.request_failed - chunks.failed);
      if (batch.status === 'cancelled') counts.canceled = unrunLines;
      else counts.expired = unrunLines;
      counts.errored = batch.request_failed - unrunLines;
    }
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
