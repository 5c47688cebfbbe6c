// A Message Batch's results, {"custom_id", "result"} per line, read from the
// batch's output and error files (each custom_id is in exactly one of them,
// once) a line at a time. A batch that failed validation ran nothing: each of
// its requests is read back from the input file as errored, with the reason.
import { scanLines } from '../../batches/line-scanner.ts';
import { anthropicEnvelope, anthropicErrorType } from './errors.ts';

type Json = Record<string, unknown>;

/** Output-file lines: every one a success, whose body is already the Messages answer. */
export async function* succeededResults(output: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  for await (const { bytes } of scanLines(output)) {
    const line = parseLine(bytes);
    if (!line) continue;
    const response = (line.response ?? {}) as Json;
    yield resultLine(line.custom_id, { type: 'succeeded', message: response.body ?? null });
  }
}

/** Error-file lines: canceled and expired by their code, anything else errored with the upstream's (or Spool's) reason. */
export async function* failedResults(errors: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  for await (const { bytes } of scanLines(errors)) {
    const line = parseLine(bytes);
    if (!line) continue;
    const error = (line.error ?? {}) as Json;
    if (error.code === 'batch_cancelled') yield resultLine(line.custom_id, { type: 'canceled' });
    else if (error.code === 'batch_expired') yield resultLine(line.custom_id, { type: 'expired' });
    else yield resultLine(line.custom_id, { type: 'errored', error: erroredOf(line.response as Json | null, String(error.message ?? 'The request failed.')) });
  }
}

/** Input-file lines of a batch none of whose requests ran: each with the batch's outcome (errored for `reason`). */
export async function* unrunResults(input: AsyncIterable<Uint8Array>, outcome: 'errored' | 'canceled' | 'expired', reason: string): AsyncGenerator<Buffer> {
  const result = outcome === 'errored' ? { type: 'errored', error: { ...anthropicEnvelope(400, reason), request_id: null } } : { type: outcome };
  for await (const { bytes } of scanLines(input)) {
    const line = parseLine(bytes);
    if (line) yield resultLine(line.custom_id, result);
  }
}

/**
 * The ErrorResponse of an errored request: the type an Anthropic-shaped upstream error gave, else the status's
 * (api_error when no answer came: a timeout, an unreachable upstream), and Spool's reason.
 */
function erroredOf(response: Json | null, reason: string): Json {
  const status = typeof response?.status_code === 'number' ? response.status_code : 500;
  const body = (response?.body ?? null) as Json | null;
  const inner = body && typeof body.error === 'object' && body.error !== null ? (body.error as Json) : null;
  const type = body?.type === 'error' && typeof inner?.type === 'string' ? inner.type : anthropicErrorType(status);
  // Spool's reason already quotes what the upstream said, and says what to do about it.
  return { type: 'error', error: { type, message: reason }, request_id: response?.request_id ?? null };
}

function parseLine(bytes: Buffer): (Json & { custom_id: string }) | null {
  const text = bytes.toString('utf8').trim();
  if (text === '') return null;
  const line = JSON.parse(text) as Json;
  return typeof line.custom_id === 'string' ? (line as Json & { custom_id: string }) : null;
}

function resultLine(customId: string, result: Json): Buffer {
  return Buffer.from(`${JSON.stringify({ custom_id: customId, result })}\n`);
}
