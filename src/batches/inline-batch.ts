// Batches whose requests arrive in the create request itself (Anthropic's
// Message Batches) rather than as an uploaded file. The requests are streamed
// into an input file as JSONL while they arrive, so from there on the batch is
// like any other: validated, run, finalized and expired by the same sweeps.
// The file and the batch are registered in one transaction once every request
// has arrived and passed the caller's checks: a refused create leaves nothing.
import { newFileId } from '../ids.ts';
import { blobKeyForUpload, type Store } from '../store/index.ts';
import { insertFile } from '../store/sql/files.ts';
import type { BatchRow, WireDialect } from '../store/sql/schema.ts';
import { writtenInputFileRow } from './input-file-row.ts';
import { reclaimAfterLargeStream } from '../runtime/reclaim-memory.ts';
import { parseWindow } from './create-args.ts';
import type { BatchService } from './service.ts';

export interface InlineBatchOptions {
  /** The internal endpoint every line targets (MESSAGES_BATCH_ENDPOINT). */
  endpoint: string;
  dialect: WireDialect;
  /** The input file's name as listed in /files. */
  fileName: string;
  /** Bytes of JSONL at most; the blob store stops the stream beyond it (BlobTooLargeError). */
  maxBytes: number;
  completionWindow: string;
}

/**
 * Writes `lines` (JSONL, one request per line, already checked by the caller, which throws to refuse the
 * create) to a new input file and creates a batch of it for `userId`.
 */
export async function createInlineBatch(
  store: Store,
  batches: BatchService,
  userId: string,
  lines: AsyncIterable<Uint8Array>,
  options: InlineBatchOptions,
): Promise<BatchRow> {
  const fileId = newFileId();
  const blobKey = blobKeyForUpload(fileId);
  const written = await store.blobs.write(blobKey, lines, { maxBytes: options.maxBytes });
  reclaimAfterLargeStream(written.bytes);
  const file = writtenInputFileRow({ id: fileId, userId, filename: options.fileName, blobKey }, written);
  try {
    return await store.sql.db.transaction().execute(async (tx) => {
      await insertFile(tx, file);
      const args = {
        inputFileId: fileId,
        endpoint: options.endpoint,
        completionWindow: options.completionWindow,
        windowMs: parseWindow(options.completionWindow),
        priority: 0,
        modelId: null,
        metadata: null,
        outputExpiresAfterSeconds: null,
        webhookUrl: null,
      };
      return batches.create(userId, args, { dialect: options.dialect }, tx);
    });
  } catch (err) {
    await store.blobs.delete(blobKey).catch(() => undefined);
    throw err;
  }
}
