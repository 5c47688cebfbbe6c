// Rows as validation stores them (a batch, its pending chunks), for
// store-level tests that need them without uploading and validating a file.
import { newBatchId } from '../../src/ids.ts';
import type { NewBatch, NewChunk } from '../../src/store/sql/schema.ts';
import { newChunk } from '../../src/store/sql/chunks.ts';

/** A pending chunk of one line (line chunk + 1), as validation stores it. */
export function pendingChunkRow(batchId: string, chunk: number, overrides: Partial<NewChunk> = {}): NewChunk {
  const row = newChunk({
    batch_id: batchId,
    chunk,
    line_start: chunk + 1,
    line_count: 1,
    byte_start: chunk * 100,
    byte_end: chunk * 100 + 99,
    models: '{"m":[1,1]}',
    estimated_tokens: 1,
  });
  return { ...row, ...overrides };
}

/** An in-progress batch row of user-a, created at `now`, due a day later. */
export function batchRowAt(now: number, overrides: Partial<NewBatch> = {}): NewBatch {
  return {
    id: newBatchId(),
    user_id: 'user-a',
    input_file_id: 'file-input',
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
    status: 'in_progress',
    priority: 0,
    file_size_bytes: 0,
    created_at: now,
    deadline_at: now + 86_400_000,
    request_total: 0,
    request_completed: 0,
    request_failed: 0,
    input_tokens: 0,
    output_tokens: 0,
    estimated_tokens: 0,
    ...overrides,
  };
}
