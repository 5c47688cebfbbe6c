// The output and error file line formats from CONTRACT.md. Stored response
// bodies are already JSON text, so they are spliced in rather than parsed and
// re-serialized: finalizing a 50,000-line batch never parses a response.
import type { RequestRow } from '../store/sql/schema.ts';

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
