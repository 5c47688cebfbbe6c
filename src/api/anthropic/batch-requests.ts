// The body of POST /v1/messages/batches, {"requests": [{custom_id, params}, ...]},
// read as a stream (up to 256 MiB): each request is checked as soon as it has
// been parsed and comes out as one JSONL line of the batch's input file, so
// memory holds one chunk of the body and the custom_ids seen, never the body.
// The first bad request stops the create with a 400 (413 past the limits)
// that names its index and says what to fix.
import { JSONParser } from '@streamparser/json';
import type { ParsedElementInfo } from '@streamparser/json/utils/types/parsedElementInfo.js';
import { MESSAGES_BATCH_ENDPOINT } from '../../batches/input-validator.ts';
import { messagesParamsProblem } from '../../upstreams/messages/params.ts';
import { anthropicError } from './errors.ts';

export interface BatchRequestRules {
  maxRequests: number;
  maxBytes: number;
  /** Whether some upstream (or the engine, or echo) serves `model`. */
  modelServed(model: string): Promise<boolean>;
}

const CUSTOM_ID = /^[A-Za-z0-9_-]{1,64}$/;
const JSON_WHITESPACE = new Set([0x20, 0x09, 0x0a, 0x0d]);

/** The requests of a create body as JSONL input lines; throws the ApiError that refuses the create. */
export async function* batchRequestLines(body: AsyncIterable<Uint8Array>, rules: BatchRequestRules): AsyncGenerator<Buffer> {
  const parser = new JSONParser({ paths: ['$.requests.*'], keepStack: false });
  const parsed: ParsedElementInfo[] = [];
  parser.onValue = (info) => void parsed.push(info);
  const firstIndexOf = new Map<string, number>();
  const modelServed = new Map<string, boolean>();
  let bytes = 0;
  let sawStart = false;
  let count = 0;

  for await (const chunk of body) {
    bytes += chunk.byteLength;
    if (bytes > rules.maxBytes) {
      throw anthropicError(413, `The request body is larger than ${rules.maxBytes} bytes: split the requests into several batches.`);
    }
    if (!sawStart) sawStart = checkStartsWithObject(chunk);
    try {
      parser.write(chunk);
    } catch (err) {
      throw anthropicError(400, `The request body is not valid JSON (${(err as Error).message}): send {"requests": [{"custom_id": "...", "params": {...}}, ...]}.`);
    }
    const lines: string[] = [];
    for (const info of parsed.splice(0)) {
      if (!Array.isArray(info.parent)) throw anthropicError(400, 'requests: must be an array of {"custom_id", "params"} objects.');
      const index = count;
      count += 1;
      if (count > rules.maxRequests) {
        throw anthropicError(413, `requests: a batch holds at most ${rules.maxRequests} requests; split them into several batches.`);
      }
      lines.push(await inputLine(info.value, index, firstIndexOf, modelServed, rules));
    }
    if (lines.length > 0) yield Buffer.from(lines.join(''));
  }
  if (!parser.isEnded) {
    throw anthropicError(400, 'The request body ends before its JSON does: send the whole {"requests": [...]} object.');
  }
  if (count === 0) throw anthropicError(400, 'requests: is required: a non-empty array of {"custom_id", "params"} objects.');
}

/** True once the body's first non-whitespace byte is seen (and it is "{"); false while only whitespace came. */
function checkStartsWithObject(chunk: Uint8Array): boolean {
  for (const byte of chunk) {
    if (JSON_WHITESPACE.has(byte)) continue;
    if (byte !== 0x7b) throw anthropicError(400, 'The request body must be a JSON object: {"requests": [{"custom_id": "...", "params": {...}}, ...]}.');
    return true;
  }
  return false;
}

async function inputLine(
  request: unknown,
  index: number,
  firstIndexOf: Map<string, number>,
  modelServed: Map<string, boolean>,
  rules: BatchRequestRules,
): Promise<string> {
  const at = `requests.${index}`;
  if (typeof request !== 'object' || request === null || Array.isArray(request)) {
    throw anthropicError(400, `${at}: must be an object {"custom_id", "params"}.`);
  }
  const { custom_id: customId, params } = request as Record<string, unknown>;
  if (typeof customId !== 'string' || !CUSTOM_ID.test(customId)) {
    throw anthropicError(400, `${at}.custom_id: must be 1 to 64 letters, digits, "_" or "-"; got ${JSON.stringify(customId ?? null)?.slice(0, 100)}.`);
  }
  const first = firstIndexOf.get(customId);
  if (first !== undefined) {
    throw anthropicError(400, `${at}.custom_id: "${customId}" is already used by requests.${first}; custom_ids must be unique within a batch.`);
  }
  firstIndexOf.set(customId, index);
  const problem = messagesParamsProblem(params);
  if (problem) throw anthropicError(400, `${at}.params${problem.param === 'params' ? '' : `.${problem.param}`}: ${problem.message}.`);
  const model = (params as { model: string }).model;
  let served = modelServed.get(model);
  if (served === undefined) {
    served = await rules.modelServed(model);
    modelServed.set(model, served);
  }
  if (!served) {
    throw anthropicError(400, `${at}.params.model: no model named "${model.slice(0, 256)}" is served here; route it to an upstream in the config, or use model "echo".`);
  }
  return `${JSON.stringify({ custom_id: customId, method: 'POST', url: MESSAGES_BATCH_ENDPOINT, body: params })}\n`;
}
