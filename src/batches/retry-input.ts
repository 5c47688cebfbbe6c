// The input file of a retry: the original input's lines whose requests failed
// (at run time, or as batch_cancelled / batch_expired: those never ran), in
// their original order and byte for byte. Streamed: failed rows are paged from
// the database and their bytes read from the original blob by range, so memory
// holds one page of lines whatever the size of the batch.
import { newFileId } from '../ids.ts';
import { blobKeyForUpload, type Store } from '../store/index.ts';
import type { BlobWriteResult } from '../store/blobs/types.ts';
import { pageBatchRequests } from '../store/sql/requests.ts';
import type { FileRow } from '../store/sql/schema.ts';
import { readLines } from '../store/blobs/line-ranges.ts';
import { writtenInputFileRow } from './input-file-row.ts';

// Failed rows per page (and per ranged read of the source): bounds memory to this many lines.
const PAGE_SIZE = 100;
const NEWLINE = Buffer.from('\n');

async function* failedLines(store: Store, batchId: string, sourceBlobKey: string): AsyncGenerator<Uint8Array> {
  let afterLine = 0;
  for (;;) {
    const page = await pageBatchRequests(store.sql.db, batchId, afterLine, PAGE_SIZE, ['failed']);
    if (page.length === 0) return;
    const bodies = await readLines(store.blobs, sourceBlobKey, page);
    // One write per page: the page's lines are in memory already, and fewer, larger chunks write faster.
    yield Buffer.concat(page.flatMap((row) => [bodies.get(row.line)!, NEWLINE]));
    afterLine = page[page.length - 1].line;
  }
}

/**
 * Writes the failed lines of `batchId` (read from `sourceBlobKey`, its input)
 * into a new blob and returns the file row to register for it: a processed
 * batch input file of the batch's user, not yet inserted.
 */
export async function writeRetryInput(store: Store, batch: { id: string; user_id: string }, sourceBlobKey: string): Promise<FileRow> {
  const id = newFileId();
  const blobKey = blobKeyForUpload(id);
  const written: BlobWriteResult = await store.blobs.write(blobKey, failedLines(store, batch.id, sourceBlobKey));
  return writtenInputFileRow({ id, userId: batch.user_id, filename: `${batch.id}_retry.jsonl`, blobKey }, written);
}
