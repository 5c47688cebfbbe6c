// Deleting a batch for good (Anthropic's DELETE /v1/messages/batches/{id}):
// only once it has ended, so no worker, sweep or finalizer is still using it;
// its rows go in one transaction, then its blobs.
import { conflict } from '../errors.ts';
import type { Store } from '../store/index.ts';
import { deleteBatchAndItsFiles } from '../store/sql/batch-deletion.ts';
import { TERMINAL_BATCH_STATUSES, type BatchRow } from '../store/sql/schema.ts';

export async function deleteEndedBatch(store: Store, batch: BatchRow): Promise<void> {
  if (!TERMINAL_BATCH_STATUSES.includes(batch.status)) {
    throw conflict(`Batch ${batch.id} is ${batch.status}: only a finished batch can be deleted. Cancel it first.`, 'batch_not_finished');
  }
  const blobKeys = (await deleteBatchAndItsFiles(store.sql.db, batch.id)) ?? [];
  // Rows first: a blob left behind by a crash here is garbage nobody points at, never a row pointing at nothing.
  await Promise.all(blobKeys.map((key) => store.blobs.delete(key).catch(() => undefined)));
}
