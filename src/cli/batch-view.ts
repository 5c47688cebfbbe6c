// How the CLI reads and shows a batch (OpenAI wire object): which states are
// final, what counts as done, and the table rows and fields people see.
import type { WireBatch, WireFile } from './client.ts';
import { formatBytes, formatTime } from './output.ts';

const TERMINAL = new Set(['completed', 'failed', 'expired', 'cancelled']);

export function isTerminal(batch: WireBatch): boolean {
  return TERMINAL.has(batch.status);
}

/** Lines with a result, successful or not. */
export function doneCount(batch: WireBatch): number {
  return batch.request_counts.completed + batch.request_counts.failed;
}

export function progressText(batch: WireBatch): string {
  const { total } = batch.request_counts;
  if (total === 0) return batch.status === 'validating' ? 'validating' : '0/0';
  return `${doneCount(batch)}/${total} (${Math.floor((doneCount(batch) / total) * 100)}%)`;
}

export const BATCH_TABLE_HEAD = ['ID', 'STATUS', 'PROGRESS', 'FAILED', 'ENDPOINT', 'CREATED'];

export function batchRow(batch: WireBatch): Array<string | number | null> {
  return [batch.id, batch.status, progressText(batch), batch.request_counts.failed, batch.endpoint, formatTime(batch.created_at)];
}

export function batchFields(batch: WireBatch): Array<[string, string | number | null | undefined]> {
  const fields: Array<[string, string | number | null | undefined]> = [
    ['id', batch.id],
    ['status', batch.status],
    ['endpoint', batch.endpoint],
    ['model', batch.model],
    ['progress', progressText(batch)],
    ['completed', batch.request_counts.completed],
    ['failed', batch.request_counts.failed],
    ['input_file_id', batch.input_file_id],
    ['output_file_id', batch.output_file_id],
    ['error_file_id', batch.error_file_id],
    ['created_at', formatTime(batch.created_at)],
    ['in_progress_at', formatTime(batch.in_progress_at)],
    ['completed_at', formatTime(batch.completed_at)],
    ['failed_at', formatTime(batch.failed_at)],
    ['expired_at', formatTime(batch.expired_at)],
    ['cancelled_at', formatTime(batch.cancelled_at)],
    ['expires_at', formatTime(batch.expires_at)],
  ];
  if (batch.retry_of) fields.push(['retry_of', batch.retry_of]);
  if (batch.webhook_url) fields.push(['webhook_url', batch.webhook_url]);
  if (batch.usage) fields.push(['tokens', `${batch.usage.input_tokens} in, ${batch.usage.output_tokens} out`]);
  for (const [index, line] of validationErrorLines(batch).entries()) fields.push([index === 0 ? 'errors' : '', line]);
  return fields;
}

/** A failed batch's validation errors, one readable line each ("line 3: ..."). */
export function validationErrorLines(batch: WireBatch): string[] {
  return (batch.errors?.data ?? []).map((error) => {
    // Spool's own messages already start with "line N"; other servers' may not.
    const where = error.line !== null && error.line !== undefined && !/^line \d+/i.test(error.message) ? `line ${error.line}: ` : '';
    return `${where}${error.message}${error.code ? ` (${error.code})` : ''}`;
  });
}

export const FILE_TABLE_HEAD = ['ID', 'FILENAME', 'PURPOSE', 'SIZE', 'CREATED'];

export function fileRow(file: WireFile): Array<string | number | null> {
  return [file.id, file.filename, file.purpose, formatBytes(file.bytes), formatTime(file.created_at)];
}

export function fileFields(file: WireFile): Array<[string, string | number | null | undefined]> {
  return [
    ['id', file.id],
    ['filename', file.filename],
    ['purpose', file.purpose],
    ['bytes', file.bytes],
    ['status', file.status],
    ['created_at', formatTime(file.created_at)],
    ['expires_at', formatTime(file.expires_at)],
  ];
}
