// The file row of a batch input that Spool wrote itself (a retry's failed lines, a Message Batch's inline
// requests): already processed, since its lines were written here, and owned by the batch's user.
import type { BlobWriteResult } from '../store/blobs/types.ts';
import type { FileRow } from '../store/sql/schema.ts';

export function writtenInputFileRow(file: { id: string; userId: string; filename: string; blobKey: string }, written: BlobWriteResult): FileRow {
  return {
    id: file.id,
    user_id: file.userId,
    filename: file.filename,
    purpose: 'batch',
    file_type: 'jsonl',
    status: 'processed',
    bytes: written.bytes,
    line_count: written.lineCount,
    sha256: written.sha256,
    declared_sha256: null,
    blob_key: file.blobKey,
    batch_id: null,
    created_at: Date.now(),
    expires_at: null,
  };
}
