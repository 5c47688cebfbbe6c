// Deleting a batch that has ended, with everything that is only its: its
// chunk and segment rows (and request rows of the per-line design), its output
// and error files and, unless another batch reads it too, its input file. One
// transaction, so a batch is either all there or all gone; the caller deletes
// the returned blobs after it commits (segment blobs still recorded among them).
import type { Kysely } from 'kysely';
import { deleteBatchChunks } from './chunks.ts';
import type { Database } from './schema.ts';

/** Deletes the batch's rows; returns the blob keys of the files that went with it, or undefined when there was no such batch. */
export async function deleteBatchAndItsFiles(db: Kysely<Database>, batchId: string): Promise<string[] | undefined> {
  return db.transaction().execute(async (tx) => {
    const batch = await tx.selectFrom('batches').select(['input_file_id', 'output_file_id', 'error_file_id']).where('id', '=', batchId).executeTakeFirst();
    if (!batch) return undefined;
    const sharedInput = await tx
      .selectFrom('batches')
      .select('id')
      .where('input_file_id', '=', batch.input_file_id)
      .where('id', '!=', batchId)
      .executeTakeFirst();
    const fileIds = [batch.output_file_id, batch.error_file_id, sharedInput ? null : batch.input_file_id].filter((id): id is string => id !== null);
    const files = fileIds.length === 0 ? [] : await tx.selectFrom('files').select(['id', 'blob_key']).where('id', 'in', fileIds).execute();
    // Segment blobs finalization left behind (a failed delete): after the commit nothing else points at them.
    const segmentBlobs = await tx.selectFrom('segments').select('blob_key').where('batch_id', '=', batchId).where('blob_key', 'is not', null).execute();
    await deleteBatchChunks(tx, batchId);
    await tx.deleteFrom('requests').where('batch_id', '=', batchId).execute();
    if (files.length > 0) await tx.deleteFrom('files').where('id', 'in', files.map((file) => file.id)).execute();
    await tx.deleteFrom('batches').where('id', '=', batchId).execute();
    return [...files.map((file) => file.blob_key), ...segmentBlobs.map((segment) => segment.blob_key)].filter((key): key is string => key !== null);
  });
}
