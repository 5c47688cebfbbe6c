// The output and error file line formats from CONTRACT.md, built from their
// parts. A response body arrives here as JSON text and is spliced in, never
// parsed again: segments hold lines in this final shape, and finalization
// only concatenates them.

/** Stable per-line id: the batch id's unique part plus the line number. */
export function requestLineId(batchId: string, line: number): string {
  // The prefix of the batch last asked for is kept: every line of a segment, and most in a row, are of one batch.
  if (batchId !== lastBatchId) {
    lastBatchId = batchId;
    lastPrefix = `batch_req_${batchId.replace(/^batch-/, '').replace(/-/g, '')}_`;
  }
  return lastPrefix + line;
}

let lastBatchId = '';
let lastPrefix = '';

export interface ResponsePart {
  status: number;
  requestId: string | null;
  /** JSON text of the body. */
  body: string;
}

export function outputLineText(batchId: string, line: number, customId: string, response: ResponsePart): string {
  return (
    `{"id":${JSON.stringify(requestLineId(batchId, line))},"custom_id":${JSON.stringify(customId)},` +
    `"response":{"status_code":${response.status},"request_id":${JSON.stringify(response.requestId)},"body":${response.body}},` +
    `"error":null}\n`
  );
}

export function errorLineText(batchId: string, line: number, customId: string, code: string, message: string, response: ResponsePart | null): string {
  const responseText =
    response === null ? 'null' : `{"status_code":${response.status},"request_id":${JSON.stringify(response.requestId)},"body":${response.body}}`;
  return (
    `{"id":${JSON.stringify(requestLineId(batchId, line))},"custom_id":${JSON.stringify(customId)},` +
    `"response":${responseText},"error":${JSON.stringify({ code, message })}}\n`
  );
}
