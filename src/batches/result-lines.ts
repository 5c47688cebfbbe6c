// The output and error file line formats from CONTRACT.md. Stored response
// bodies are already JSON text, so they are spliced in rather than parsed and
// re-serialized: finalizing a 50,000-line batch never parses a response.
import type { Kysely } from 'kysely';
import { pageBatchRequests } from '../store/sql/requests.ts';
import type { Database, RequestRow, RequestState } from '../store/sql/schema.ts';

// Rows per page when streaming results out; bounds memory whatever the batch size.
const PAGE_SIZE = 500;

/** Stable per-line id: the batch id's unique part plus the line number. */
export function requestLineId(batchId: string, line: number): string {
  return `batch_req_${batchId.replace(/^batch-/, '').replace(/-/g, '')}_${line}`;
}

export function outputLine(batchId: string, row: RequestRow): string {
  return (
    `{"id":${JSON.stringify(requestLineId(batchId, row.line))},"custom_id":${JSON.stringify(row.custom_id)},` +
    `"response":{"status_code":${row.response_status ?? 200},"request_id":${JSON.stringify(row.request_id)},"body":${row.response_body ?? 'null'}},` +
    `"error":null}\n`
  );
}

export function errorLine(batchId: string, row: RequestRow): string {
  const response =
    row.response_status === null
      ? 'null'
      : `{"status_code":${row.response_status},"request_id":${JSON.stringify(row.request_id)},"body":${row.response_body ?? 'null'}}`;
  const error = JSON.stringify({ code: row.error_code ?? 'upstream_error', message: row.error_message ?? 'The request failed.' });
  return `{"id":${JSON.stringify(requestLineId(batchId, row.line))},"custom_id":${JSON.stringify(row.custom_id)},"response":${response},"error":${error}}\n`;
}

/**
 * The batch's recorded lines in `state` (succeeded: output lines; failed: error lines), in line order, a page at a
 * time. `beforePage` runs before each page (finalization checks its lease there).
 */
export async function* recordedResultLines(db: Kysely<Database>, batchId: string, state: RequestState, beforePage?: () => void): AsyncGenerator<Uint8Array> {
  const format = state === 'succeeded' ? outputLine : errorLine;
  let afterLine = 0;
  for (;;) {
    beforePage?.();
    const page: RequestRow[] = await pageBatchRequests(db, batchId, afterLine, PAGE_SIZE, [state]);
    if (page.length === 0) return;
    yield Buffer.from(page.map((row) => format(batchId, row)).join(''));
    afterLine = page[page.length - 1].line;
  }
}
