// The input file of a retry: the original input's lines that did not succeed
// (failed at run time, or batch_cancelled / batch_expired: in no segment), in
// their original order and byte for byte. Per chunk, the lines its segments
// hold as succeeded are done_bits minus failed_bits; every other line of the
// chunk is retried. Streamed: chunk rows are paged, each chunk's segment
// bitmaps read on their own, and the input read once (chunk-input.ts), so
// memory holds one chunk's bitmaps and one line whatever the size of the batch.
import { newFileId } from '../ids.ts';
import { blobKeyForUpload, type Store } from '../store/index.ts';
import type { BlobWriteResult } from '../store/blobs/types.ts';
import { pageBatchChunks } from '../store/sql/chunks.ts';
import { chunkSegments } from '../store/sql/segments.ts';
import type { FileRow } from '../store/sql/schema.ts';
import { pickChunkLines, type WantedChunk } from './chunk-input.ts';
import { writtenInputFileRow } from './input-file-row.ts';
import { unionOf } from './result-lines.ts';

// Chunk rows per page.
const CHUNK_PAGE = 100;
// Lines are handed to the blob store in pieces of about this many bytes.
const FLUSH_BYTES = 256 * 1024;
const NEWLINE = Buffer.from('\n');
// JSON's own whitespace: a line of only these is blank, as validation counts it (never a request).
const WHITESPACE = new Set([0x20, 0x09, 0x0d, 0x0a]);

/** The batch's chunks with a line that did not succeed, each with those lines. */
async function* chunksToRetry(store: Store, batchId: string): AsyncGenerator<WantedChunk> {
  let after = -1;
  for (;;) {
    const page = await pageBatchChunks(store.sql.db, batchId, after, CHUNK_PAGE);
    if (page.length === 0) return;
    for (const chunk of page) {
      // Done with no failure: every line succeeded, without reading its segments.
      if (chunk.state === 'done' && Number(chunk.failed) === 0) continue;
      const segments = await chunkSegments(store.sql.db, batchId, chunk.chunk);
      const succeeded = unionOf(chunk, segments, 'done_bits');
      succeeded.removeAll(unionOf(chunk, segments, 'failed_bits'));
      if (succeeded.count() >= chunk.line_count) continue;
      yield { chunk, wanted: (index) => !succeeded.has(index) };
    }
    after = page[page.length - 1].chunk;
  }
}

async function* retryLines(store: Store, batchId: string, sourceBlobKey: string): AsyncGenerator<Uint8Array> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const picked of pickChunkLines(store.blobs, sourceBlobKey, chunksToRetry(store, batchId))) {
    if (picked.bytes === null) throw new Error(`input line ${picked.line} of batch ${batchId} is past the end of its input file`);
    if (isBlank(picked.bytes)) continue;
    // Copied: the scanner's view is only valid until the next line.
    pending.push(Buffer.from(picked.bytes), NEWLINE);
    pendingBytes += picked.bytes.length + 1;
    if (pendingBytes >= FLUSH_BYTES) {
      yield Buffer.concat(pending);
      pending = [];
      pendingBytes = 0;
    }
  }
  if (pending.length > 0) yield Buffer.concat(pending);
}

function isBlank(bytes: Buffer): boolean {
  for (const byte of bytes) if (!WHITESPACE.has(byte)) return false;
  return true;
}

/**
 * Writes the lines of `batchId` that did not succeed (read from `sourceBlobKey`, its input) into a new blob and
 * returns the file row to register for it: a processed batch input file of the batch's user, not yet inserted.
 */
export async function writeRetryInput(store: Store, batch: { id: string; user_id: string }, sourceBlobKey: string): Promise<FileRow> {
  const id = newFileId();
  const blobKey = blobKeyForUpload(id);
  const written: BlobWriteResult = await store.blobs.write(blobKey, retryLines(store, batch.id, sourceBlobKey));
  return writtenInputFileRow({ id, userId: batch.user_id, filename: `${batch.id}_retry.jsonl`, blobKey }, written);
}
