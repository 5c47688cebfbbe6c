// Rows as validation stores them (a batch, its pending request lines), for
// store-level tests that need them without uploading and validating a file.
import { newBatchId } from '../../src/ids.ts';
import type { NewBatch, NewRequest } from '../../src/store/sql/schema.ts';

export function pendingRequestRow(batchId: string, line: number, overrides: Partial<NewRequest> = {}): NewRequest {
  return {
    batch_id: batchId,
    line,
    custom_id: `c${line}`,
    model: 'm',
    byte_offset: (line - 1) * 100,
    byte_length: 100,
    estimated_tokens: 1,
    state: 'pending',
    attempts: 0,
    not_before: 0,
    input_tokens: 0,
    output_tokens: 0,
    ...overrides,
  };
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
