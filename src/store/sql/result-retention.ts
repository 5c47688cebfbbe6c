// A batch's results live in its output and error files; the request rows kept
// a copy of the same content (response bodies, error messages built from
// input). When one of those files goes (deleted by its owner, or past
// output_expires_after), the rows' copy of its content goes in the same
// transaction; when both are gone, so do the rows themselves (custom_ids
// included). So retention covers the database as well as the blob store.
import type { Kysely, Transaction } from 'kysely';
import type { Database, FileRow } from './schema.ts';

type Db = Kysely<Database> | Transaction<Database>;

/** Deletes the file's row and forgets what of its batch's results it held; the caller deletes the blob after. */
export async function deleteFileAndItsResults(db: Kysely<Database>, file: Pick<FileRow, 'id' | 'batch_id'>): Promise<void> {
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
    await tx.deleteFrom('requests').where('batch_id', '=', batchId).execute();
    return;
  }
  if (fileId === batch.output_file_id) {
    await tx
      .updateTable('requests')
      .set({ response_body: null })
      .where('batch_id', '=', batchId)
      .where('state', '=', 'succeeded')
      .where('response_body', 'is not', null)
      .execute();
  } else {
    // Failed lines keep their state and code (a retry reads which lines failed, by byte range of the input),
    // not what they said.
    await tx
      .updateTable('requests')
      .set({ response_body: null, error_message: null })
      .where('batch_id', '=', batchId)
      .where('state', '=', 'failed')
      .execute();
  }
}
