// Deleting a batch's segment blobs: after finalization (their lines are in the
// batch's output and error files by then), and from retention and batch
// deletion for any a failed or interrupted delete left behind. Blob first,
// then its key is forgotten: a crash in between leaves a key the next pass
// deletes again (deleting a missing blob is not an error), never a blob
// nothing points at.
import type { Kysely } from 'kysely';
import type { BlobStore } from './blobs/types.ts';
import type { Database } from './sql/schema.ts';
import { clearSegmentBlobKeys, segmentBlobKeys } from './sql/segments.ts';

// Keys per page (and per round of deletes in flight).
const PAGE = 64;

/** Deletes every segment blob of the batch still recorded, and forgets their keys. Returns how many went. */
export async function deleteSegmentBlobs(db: Kysely<Database>, blobs: Pick<BlobStore, 'delete'>, batchId: string): Promise<number> {
  let deleted = 0;
  for (;;) {
    const keys = await segmentBlobKeys(db, batchId, PAGE);
    if (keys.length === 0) return deleted;
    await Promise.all(keys.map((key) => blobs.delete(key)));
    await clearSegmentBlobKeys(db, batchId, keys);
    deleted += keys.length;
  }
}
