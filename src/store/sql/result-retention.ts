// A batch's results live in its output and error files. While it ran they
// were in segment blobs, which finalization deletes once the files hold them;
// any it left behind (a failed delete) go as soon as either file goes. When
// both files are gone (deleted by their owner, or past output_expires_after),
// so do the batch's chunk and segment rows (which lines succeeded and failed:
// what a retry reads), as the per-line request rows of the first design did
// (still deleted, for batches of that design). So retention covers the
// database as well as the blob store.
import type { Kysely, Transaction } from 'kysely';
import type { BlobStore } from '../blobs/types.ts';
import { deleteSegmentBlobs } from '../segment-blobs.ts';
import { deleteBatchChunks } from './chunks.ts';
import type { Database, FileRow } from './schema.ts';

type Db = Kysely<Database> | Transaction<Database>;

/**
 * Deletes the file's row and forgets what of its batch's results it held; the caller deletes the file's blob
 * (before or after). With `blobs`, segment blobs of its batch still recorded are deleted first.
 */
export async function deleteFileAndItsResults(db: Kysely<Database>, file: Pick<FileRow, 'id' | 'batch_id'>, blobs?: Pick<BlobStore, 'delete'>): Promise<void> {
  if (file.batch_id && blobs) await deleteSegmentBlobs(db, blobs, file.batch_id);
  await db.transaction().execute(async (tx) => {
    await tx.deleteFrom('files').where('id', '=', file.id).execute();
    if (file.batch_id) await forgetResultsOfFile(tx, file.batch_id, file.id);
  });
}

async function forgetResultsOfFile(tx: Db, batchId: string, fileId: string): Promise<void> {
  const batch = await tx.selectFrom('batches').select(['output_file_id', 'error_file_id']).where('id', '=', batchId).executeTakeFirst();
  if (!batch) return;
  const other = fileId === batch.output_file_id ? batch.error_file_id : fileId === batch.error_file_id ? batch.output_file_id : undefined;
  if (other === undefined) return;
  const otherLeft = other !== null && (await tx.selectFrom('files').select('id').where('id', '=', other).executeTakeFirst()) !== undefined;
  if (!otherLeft) {
    // Segment rows whose blob is still recorded are kept for a pass with the blob store to delete (deleteSegmentBlobs).
    const heldBlob = await tx.selectFrom('segments').select('seq').where('batch_id', '=', batchId).where('blob_key', 'is not', null).limit(1).executeTakeFirst();
    if (!heldBlob) await deleteBatchChunks(tx, batchId);
    await tx.deleteFrom('requests').where('batch_id', '=', batchId).execute();
    return;
  }
  // Request rows of the per-line design kept a copy of the file's content: it goes with the file.
  if (fileId === batch.output_file_id) {
    await tx
      .updateTable('requests')
      .set({ response_body: null })
      .where('batch_id', '=', batchId)
      .where('state', '=', 'succeeded')
      .where('response_body', 'is not', null)
      .execute();
  } else {
    await tx
      .updateTable('requests')
      .set({ response_body: null, error_message: null })
      .where('batch_id', '=', batchId)
      .where('state', '=', 'failed')
      .execute();
  }
}
