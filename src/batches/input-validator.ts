// Checks a batch input file in one streaming pass and hands the valid request
// lines to the caller in chunks. A file with any bad line fails the whole
// batch (DESIGN.md "Batch states"), so errors carry line numbers and say how
// to fix the line. Line contents are never kept: a request row stores only
// where its line sits in the blob.
import { isUtf8 } from 'node:buffer';
import { scanLines, type ScannedLine } from './line-scanner.ts';

export interface ValidationRules {
  /** The batch endpoint, one of BATCH_ENDPOINTS. */
  endpoint: string;
  /** model_id given on batch create; used when a line's body.model is absent. */
  modelId: string | null;
  /** Most request (non-blank) lines a file may hold. */
  maxLines: number;
  /** Errors to collect before reading stops; the first ones are kept. */
  maxErrors: number;
  /** Completion tokens assumed for a chat/completions line that sets no max_tokens. */
  defaultMaxTokensEstimate: number;
  /** Rows per onRequests call; default 1000. */
  chunkSize?: number;
}

export interface ValidRequestLine {
  line: number;
  offset: number;
  length: number;
  customId: string;
  model: string;
  estimatedTokens: number;
  /** The two parts of estimatedTokens, which are priced apart: the prompt (bytes / 4) and the completion budget. */
  promptTokens: number;
  completionTokens: number;
}

export interface LineError {
  code: string;
  message: string;
  line: number | null;
  param: string | null;
}

export interface ValidationOutcome {
  ok: boolean;
  errors: LineError[];
  /** Request (non-blank) lines read; equals the rows handed out when ok. */
  requestCount: number;
  /** Sum of estimatedTokens over the valid lines. */
  estimatedTokens: number;
  tokensByModel: Map<string, number>;
  /** Estimated prompt and completion tokens per model, for the cost estimate. */
  usageByModel: Map<string, { prompt: number; completion: number }>;
}

export const BATCH_ENDPOINTS = [
  '/v1/chat/completions',
  '/v1/completions',
  '/v1/embeddings',
  '/v1/audio/transcriptions',
  '/v1/audio/translations',
] as const;

/**
 * Anthropic Messages requests: the endpoint of batches created inline at /v1/messages/batches. Not one of
 * BATCH_ENDPOINTS, which a file batch may name: its results are only read back as Message Batches results.
 */
export const MESSAGES_BATCH_ENDPOINT = '/v1/messages';

export const MAX_CUSTOM_ID_LENGTH = 64;
/** Model names are keys of indexes and routing rules; the same bound as a batch's model_id. */
export const MAX_MODEL_LENGTH = 256;
const DEFAULT_CHUNK_SIZE = 1000;

/**
 * Streams `source` once. Valid rows go to `onRequests` in chunks of
 * `chunkSize`, each awaited so a slow store slows reading instead of piling
 * rows up. Once any error is found onRequests is not called again: the batch
 * has failed and the caller discards what it already stored. Reading stops
 * early at the first line over `maxLines` or once `maxErrors` errors are held.
 */
export async function validateInput(
  source: AsyncIterable<Uint8Array>,
  rules: ValidationRules,
  onRequests: (rows: ValidRequestLine[]) => Promise<void>,
): Promise<ValidationOutcome> {
  const checker = new LineChecker(rules);
  const chunkSize = Math.max(1, rules.chunkSize ?? DEFAULT_CHUNK_SIZE);
  const maxErrors = Math.max(1, rules.maxErrors);
  const errors: LineError[] = [];
  const tokensByModel = new Map<string, number>();
  const usageByModel = new Map<string, { prompt: number; completion: number }>();
  let estimatedTokens = 0;
  let requestCount = 0;
  let pending: ValidRequestLine[] = [];

  for await (const scanned of scanLines(source)) {
    if (isBlankLine(scanned.bytes)) continue;
    if (requestCount === rules.maxLines) {
      errors.push(tooManyRequests(scanned.line, rules.maxLines));
      break;
    }
    requestCount += 1;
    const result = checker.check(scanned);
    if (Array.isArray(result)) {
      errors.push(...result.slice(0, maxErrors - errors.length));
      pending = [];
      if (errors.length >= maxErrors) break;
      continue;
    }
    estimatedTokens += result.estimatedTokens;
    tokensByModel.set(result.model, (tokensByModel.get(result.model) ?? 0) + result.estimatedTokens);
    const usage = usageByModel.get(result.model);
    if (usage) {
      usage.prompt += result.promptTokens;
      usage.completion += result.completionTokens;
    } else usageByModel.set(result.model, { prompt: result.promptTokens, completion: result.completionTokens });
    if (errors.length > 0) continue;
    pending.push(result);
    if (pending.length === chunkSize) {
      await onRequests(pending);
      pending = [];
    }
  }

  if (errors.length === 0 && pending.length > 0) await onRequests(pending);
  if (requestCount === 0 && errors.length === 0) errors.push(emptyFile());
  return { ok: errors.length === 0, errors, requestCount, estimatedTokens, tokensByModel, usageByModel };
}

// JSON's own whitespace (RFC 8259: space, tab, CR, LF); any other byte, \v and
// \f included, means the line holds something to check.
const WHITESPACE_BYTES = new Set([0x20, 0x09, 0x0d, 0x0a]);

/** Decides from the leading bytes, which for a request line is a single '{'. */
function isBlankLine(bytes: Buffer): boolean {
  for (let i = 0; i < bytes.length; i++) {
    if (!WHITESPACE_BYTES.has(bytes[i])) return false;
  }
  return true;
}

type JsonObject = Record<string, unknown>;

function isPlainObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Checks one line at a time and remembers the custom_ids seen so far, the
 * only per-line state validation keeps (bounded by maxLines).
 */
class LineChecker {
  private readonly customIdLines = new Map<string, number>();
  private readonly audio: boolean;
  private readonly expectedMethod: string;
  private readonly promptField: string | null;
  private readonly countsCompletionTokens: boolean;

  constructor(private readonly rules: ValidationRules) {
    if (!(BATCH_ENDPOINTS as readonly string[]).includes(rules.endpoint) && rules.endpoint !== MESSAGES_BATCH_ENDPOINT) {
      throw new TypeError(`validateInput: unsupported endpoint '${rules.endpoint}'`);
    }
    this.audio = rules.endpoint.startsWith('/v1/audio/');
    this.expectedMethod = this.audio ? 'FILE' : 'POST';
    this.promptField = promptFieldFor(rules.endpoint);
    this.countsCompletionTokens = rules.endpoint === '/v1/chat/completions' || rules.endpoint === '/v1/completions' || rules.endpoint === MESSAGES_BATCH_ENDPOINT;
  }

  /** The row for a valid line, or every problem found on it. */
  check(scanned: ScannedLine): ValidRequestLine | LineError[] {
    const lineNo = scanned.line;
    if (!isUtf8(scanned.bytes)) {
      return [lineError('invalid_utf8', lineNo, null, `line ${lineNo} is not valid UTF-8; save the file as UTF-8 text.`)];
    }
    // A LineError is itself a plain object, so the outcome is tagged rather than shape-tested.
    const outcome = parseJsonObject(scanned.bytes, lineNo);
    if ('error' in outcome) return [outcome.error];
    const parsed = outcome.value;

    const errors: LineError[] = [];
    const customId = this.checkCustomId(parsed.custom_id, lineNo, errors);
    this.checkUrlAndMethod(parsed, lineNo, errors);
    const body = parsed.body;
    if (!isPlainObject(body)) {
      errors.push(lineError('invalid_body', lineNo, 'body', `line ${lineNo} needs a "body" that is a JSON object holding the request parameters.`));
      return errors;
    }
    const model = this.checkBody(body, lineNo, errors);
    if (errors.length > 0 || customId === null || model === null) return errors;
    const estimate = this.estimateTokens(body);
    return {
      line: lineNo,
      offset: scanned.offset,
      length: scanned.length,
      customId,
      model,
      estimatedTokens: Math.max(1, estimate.prompt + estimate.completion),
      promptTokens: estimate.prompt,
      completionTokens: estimate.completion,
    };
  }

  private checkCustomId(value: unknown, lineNo: number, errors: LineError[]): string | null {
    if (value === undefined) {
      errors.push(lineError('missing_custom_id', lineNo, 'custom_id', `line ${lineNo} has no "custom_id"; give every request a unique custom_id string.`));
      return null;
    }
    if (typeof value !== 'string' || value.length === 0) {
      errors.push(lineError('invalid_custom_id', lineNo, 'custom_id', `line ${lineNo} has a "custom_id" that is not a non-empty string; use a string such as "request-${lineNo}".`));
      return null;
    }
    if (characterCount(value) > MAX_CUSTOM_ID_LENGTH) {
      errors.push(
        lineError('custom_id_too_long', lineNo, 'custom_id', `line ${lineNo} has a "custom_id" longer than ${MAX_CUSTOM_ID_LENGTH} characters; shorten it.`),
      );
      return null;
    }
    const unprintable = unprintableIn(value);
    if (unprintable) {
      errors.push(lineError('invalid_custom_id', lineNo, 'custom_id', `line ${lineNo} has a "custom_id" with ${unprintable}; use printable text.`));
      return null;
    }
    const earlierLine = this.customIdLines.get(value);
    if (earlierLine !== undefined) {
      errors.push(
        lineError(
          'duplicate_custom_id',
          lineNo,
          'custom_id',
          `line ${lineNo} repeats custom_id ${JSON.stringify(value)} already used on line ${earlierLine}; custom_ids must be unique within the file.`,
        ),
      );
      return null;
    }
    this.customIdLines.set(value, lineNo);
    return value;
  }

  private checkUrlAndMethod(parsed: JsonObject, lineNo: number, errors: LineError[]): void {
    const { url, method } = parsed;
    if (url !== undefined && url !== this.rules.endpoint) {
      errors.push(
        lineError('mismatched_url', lineNo, 'url', `line ${lineNo} has "url" ${JSON.stringify(url)} but the batch endpoint is "${this.rules.endpoint}"; make them match or drop "url".`),
      );
    }
    // Audio lines must say "FILE" because their body names a file to upload, not JSON to post.
    if ((this.audio || method !== undefined) && method !== this.expectedMethod) {
      errors.push(
        lineError('invalid_method', lineNo, 'method', `line ${lineNo} has "method" ${JSON.stringify(method ?? null)}; requests to ${this.rules.endpoint} use "method": "${this.expectedMethod}".`),
      );
    }
  }

  /** Returns the model the line runs on, or null after recording why there is none. */
  private checkBody(body: JsonObject, lineNo: number, errors: LineError[]): string | null {
    if (body.stream === true) {
      errors.push(lineError('stream_not_supported', lineNo, 'body.stream', `line ${lineNo} sets "stream": true; batch requests cannot stream, remove it or set it to false.`));
    }
    if (this.audio && (typeof body.file !== 'string' || body.file.length === 0)) {
      errors.push(lineError('missing_file', lineNo, 'body.file', `line ${lineNo} needs "body.file": the URL or file id of the audio to process.`));
    }
    return this.resolveModel(body.model, lineNo, errors);
  }

  private resolveModel(value: unknown, lineNo: number, errors: LineError[]): string | null {
    if (value !== undefined && typeof value !== 'string') {
      errors.push(lineError('invalid_model', lineNo, 'body.model', `line ${lineNo} has a "body.model" that is not a string; give the model name as a string.`));
      return null;
    }
    if (typeof value === 'string' && value.length > 0) {
      if (value.length > MAX_MODEL_LENGTH) {
        errors.push(lineError('invalid_model', lineNo, 'body.model', `line ${lineNo} has a "body.model" longer than ${MAX_MODEL_LENGTH} characters; give a model name.`));
        return null;
      }
      const unprintable = unprintableIn(value);
      if (unprintable) {
        errors.push(lineError('invalid_model', lineNo, 'body.model', `line ${lineNo} has a "body.model" with ${unprintable}; give the model name as printable text.`));
        return null;
      }
      return value;
    }
    if (this.rules.modelId) return this.rules.modelId;
    errors.push(
      lineError('missing_model', lineNo, 'body.model', `line ${lineNo} names no model; set "body.model" on the line or model_id when creating the batch.`),
    );
    return null;
  }

  /**
   * Prompt bytes / 4 (a rough tokens-per-byte ratio), and the completion budget. Their sum, at least 1 (so
   * every request, audio ones that have neither included, counts), is the line's estimated tokens.
   */
  private estimateTokens(body: JsonObject): { prompt: number; completion: number } {
    const prompt = this.promptField === null ? 0 : Math.ceil(jsonByteLength(body[this.promptField]) / 4);
    const completion = this.countsCompletionTokens ? completionBudget(body, this.rules.defaultMaxTokensEstimate) : 0;
    return { prompt, completion };
  }
}

function promptFieldFor(endpoint: string): string | null {
  if (endpoint === '/v1/chat/completions' || endpoint === MESSAGES_BATCH_ENDPOINT) return 'messages';
  if (endpoint === '/v1/completions') return 'prompt';
  if (endpoint === '/v1/embeddings') return 'input';
  return null;
}

/**
 * The UTF-8 size of `value` as JSON, computed by walking it: re-serializing
 * every prompt with JSON.stringify was the largest single cost of validation
 * (bench: ~300 ms of CPU per 50,000 lines, plus the garbage). Strings count
 * their raw UTF-8 bytes, so escapes (\n, \") count one byte short; an
 * estimate at bytes/4 does not notice.
 */
function jsonByteLength(value: unknown): number {
  switch (typeof value) {
    case 'string':
      return Buffer.byteLength(value, 'utf8') + 2;
    case 'number':
      return Number.isFinite(value) ? String(value).length : 4;
    case 'boolean':
      return value ? 4 : 5;
    case 'object': {
      if (value === null) return 4;
      if (Array.isArray(value)) {
        let size = 2 + Math.max(0, value.length - 1);
        for (const item of value) size += item === undefined ? 4 : jsonByteLength(item);
        return size;
      }
      let size = 2;
      let members = 0;
      for (const key in value as Record<string, unknown>) {
        const member = (value as Record<string, unknown>)[key];
        if (member === undefined) continue;
        size += Buffer.byteLength(key, 'utf8') + 3 + jsonByteLength(member);
        members++;
      }
      return size + Math.max(0, members - 1);
    }
    default:
      return 0;
  }
}

// No model generates more per request; a larger max_tokens (1e300 is valid JSON) counts as this, so every
// estimate and every sum of them stays an integer that PostgreSQL's bigint holds.
const MAX_COMPLETION_BUDGET = 2_147_483_647;

function completionBudget(body: JsonObject, fallback: number): number {
  for (const value of [body.max_tokens, body.max_completion_tokens]) {
    if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return Math.min(Math.ceil(value), MAX_COMPLETION_BUDGET);
  }
  return fallback;
}

/** The parsed object, or the error to report when the line is not a JSON object. */
function parseJsonObject(bytes: Buffer, lineNo: number): { value: JsonObject } | { error: LineError } {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    const reason = err instanceof Error ? `: ${truncate(err.message, 200)}` : '';
    return { error: lineError('invalid_json_line', lineNo, null, `line ${lineNo} is not valid JSON${reason}; each line must be one complete JSON object.`) };
  }
  if (isPlainObject(value)) return { value };
  return { error: lineError('invalid_json_line', lineNo, null, `line ${lineNo} is JSON but not an object; each line must be a JSON object with "custom_id" and "body".`) };
}

// C0 controls and DEL: JSON escapes such as \u0000 decode to them. PostgreSQL's text type refuses U+0000 outright.
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;

/**
 * What makes `text` unfit for an identifier, in words for the error message, or undefined when it is fine: a
 * control character (U+0000-U+001F, U+007F), or a lone UTF-16 surrogate ("\ud800"), which has no UTF-8 form
 * and would come back as U+FFFD, so the output would no longer carry the id that was sent and two ids could
 * collide. Any other Unicode text is fine.
 */
export function unprintableIn(text: string): string | undefined {
  const control = CONTROL_CHARACTER.exec(text);
  if (control) return `the control character U+${control[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`;
  if (!(text as string & { isWellFormed(): boolean }).isWellFormed()) return 'a lone UTF-16 surrogate (an escape such as "\\ud800" without its pair)';
  return undefined;
}

/** Characters as people count them: code points, so an emoji is one. */
function characterCount(text: string): number {
  // Every code point is at most two UTF-16 units, so short strings need no walk.
  if (text.length <= MAX_CUSTOM_ID_LENGTH) return text.length;
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

function lineError(code: string, line: number | null, param: string | null, message: string): LineError {
  return { code, message, line, param };
}

function tooManyRequests(lineNo: number, maxLines: number): LineError {
  return lineError(
    'too_many_requests',
    lineNo,
    null,
    `line ${lineNo} is over the limit of ${maxLines} requests per batch; split the file into batches of at most ${maxLines} lines.`,
  );
}

function emptyFile(): LineError {
  return lineError('empty_file', null, null, 'The input file holds no requests; add one JSON request per line.');
}
