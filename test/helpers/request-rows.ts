// A pending request row as validation stores it, for store-level tests that
// need lines to claim without uploading and validating a batch first.
import type { NewRequest } from '../../src/store/sql/schema.ts';

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
