// The built-in `echo` model: a deterministic stand-in for an OpenAI-compatible
// inference server (vLLM flavoured), answered in-process. Client pipelines and
// tests get real response shapes, real usage accounting and real 400s without
// a GPU; the same request always yields the same content, vectors and id.
import { createHash } from 'node:crypto';

export const ECHO_EMBEDDING_DIMENSIONS = 64;

export interface EchoResult {
  status: number;
  body: unknown;
}

type Body = Record<string, unknown>;
type AudioKind = 'transcriptions' | 'translations';

const DEFAULT_MODEL = 'echo';
const MAX_CHOICES = 8;
const AUDIO_RESPONSE_FORMATS = ['json', 'text', 'verbose_json', 'srt', 'vtt'] as const;
// Bytes per second of 16 kHz, 16-bit mono PCM: the audio format whisper models
// resample to, so a plausible duration can be derived from the size alone.
const PCM_BYTES_PER_SECOND = 32_000;

/** A validation failure, carried as a value so every handler stays a straight line. */
class InvalidRequest {
  constructor(
    readonly message: string,
    readonly param: string | null,
  ) {}
}

/** endpoint is one of '/v1/chat/completions', '/v1/completions', '/v1/embeddings' */
export function echoJson(endpoint: string, body: Record<string, unknown>): EchoResult {
  const outcome = dispatchJson(endpoint, body);
  return outcome instanceof InvalidRequest ? invalidRequest(outcome) : { status: 200, body: outcome };
}

/** kind 'transcriptions' | 'translations'; fields are the non-file form fields (model, language, prompt, response_format, temperature...); audio is the file bytes */
export function echoAudio(kind: AudioKind, fields: Record<string, string>, audio: Uint8Array, fileName: string): EchoResult {
  const outcome = transcribe(kind, fields, audio, fileName);
  return outcome instanceof InvalidRequest ? invalidRequest(outcome) : { status: 200, body: outcome };
}

function dispatchJson(endpoint: string, body: Body): unknown {
  switch (endpoint) {
    case '/v1/chat/completions':
      return chatCompletion(body);
    case '/v1/completions':
      return textCompletion(body);
    case '/v1/embeddings':
      return embeddings(body);
    default:
      return new InvalidRequest(`The echo model does not serve ${endpoint}.`, null);
  }
}

function invalidRequest(problem: InvalidRequest): EchoResult {
  return {
    status: 400,
    body: { error: { message: problem.message, type: 'invalid_request_error', param: problem.param, code: null } },
  };
}

// ---------------------------------------------------------------- generation

interface GenerationLimits {
  maxTokens: number | null;
  stops: string[];
  choices: number;
}

interface Generated {
  text: string;
  finishReason: 'stop' | 'length';
  tokens: number;
}

function chatCompletion(body: Body): unknown {
  const common = commonProblems(body);
  if (common) return common;
  const messages = readMessages(body.messages);
  if (messages instanceof InvalidRequest) return messages;
  const limits = readGenerationLimits(body);
  if (limits instanceof InvalidRequest) return limits;

  const promptTokens = messages.reduce((sum, message) => sum + countTokens(message.text), 0);
  const generated = generate(lastUserText(messages), limits);
  return {
    id: `chatcmpl-${requestHash(body)}`,
    object: 'chat.completion',
    created: nowSeconds(),
    model: modelOf(body),
    choices: repeat(limits.choices, (index) => ({
      index,
      message: { role: 'assistant', content: generated.text },
      finish_reason: generated.finishReason,
      logprobs: null,
    })),
    usage: completionUsage(promptTokens, generated.tokens * limits.choices),
  };
}

function textCompletion(body: Body): unknown {
  const common = commonProblems(body);
  if (common) return common;
  const prompts = readTextInputs(body.prompt);
  if (prompts === null) {
    return new InvalidRequest('prompt is required: a string, an array of strings, or token ids.', 'prompt');
  }
  const limits = readGenerationLimits(body);
  if (limits instanceof InvalidRequest) return limits;

  // A real server answers every prompt of a list; the emulator answers the first
  // so that `n` alone decides how many choices come back.
  const prompt = prompts[0];
  const generated = generate(prompt, limits);
  return {
    id: `cmpl-${requestHash(body)}`,
    object: 'text_completion',
    created: nowSeconds(),
    model: modelOf(body),
    choices: repeat(limits.choices, (index) => ({
      index,
      text: generated.text,
      finish_reason: generated.finishReason,
      logprobs: null,
    })),
    usage: completionUsage(countTokens(prompt), generated.tokens * limits.choices),
  };
}

/** Emulates decoding: output ends at the first stop sequence or when the token budget runs out. */
function generate(source: string, limits: GenerationLimits): Generated {
  const stopped = cutAtFirstStop(source, limits.stops);
  const tokens = countTokens(stopped);
  if (limits.maxTokens !== null && tokens > limits.maxTokens) {
    return { text: truncateToTokens(stopped, limits.maxTokens), finishReason: 'length', tokens: limits.maxTokens };
  }
  return { text: stopped, finishReason: 'stop', tokens };
}

function cutAtFirstStop(text: string, stops: string[]): string {
  let cut = text.length;
  for (const stop of stops) {
    const at = text.indexOf(stop);
    if (at !== -1 && at < cut) cut = at;
  }
  return text.slice(0, cut);
}

function completionUsage(promptTokens: number, completionTokens: number) {
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}

// ---------------------------------------------------------------- embeddings

function embeddings(body: Body): unknown {
  const common = commonProblems(body);
  if (common) return common;
  const inputs = readTextInputs(body.input);
  if (inputs === null) {
    return new InvalidRequest('input is required: a string, an array of strings, or token ids.', 'input');
  }
  if (body.dimensions !== undefined && body.dimensions !== null && body.dimensions !== ECHO_EMBEDDING_DIMENSIONS) {
    return new InvalidRequest(`The echo model only produces ${ECHO_EMBEDDING_DIMENSIONS}-dimensional embeddings.`, 'dimensions');
  }
  const format = body.encoding_format ?? 'float';
  if (format !== 'float' && format !== 'base64') {
    return new InvalidRequest("encoding_format must be 'float' or 'base64'.", 'encoding_format');
  }

  const promptTokens = inputs.reduce((sum, text) => sum + countTokens(text), 0);
  return {
    object: 'list',
    data: inputs.map((text, index) => {
      const vector = unitVector(text);
      return { object: 'embedding', index, embedding: format === 'base64' ? float32Base64(vector) : vector };
    }),
    model: modelOf(body),
    usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
  };
}

/** A pseudo-random direction seeded by the text, so equal texts embed identically. */
function unitVector(text: string): number[] {
  const random = mulberry32(sha256(text).readUInt32BE(0));
  const raw = repeat(ECHO_EMBEDDING_DIMENSIONS, () => random() * 2 - 1);
  const norm = Math.hypot(...raw) || 1;
  return raw.map((value) => value / norm);
}

function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** OpenAI's base64 encoding: the little-endian float32 bytes of the vector. */
function float32Base64(vector: number[]): string {
  const floats = Float32Array.from(vector);
  return Buffer.from(floats.buffer, floats.byteOffset, floats.byteLength).toString('base64');
}

// ---------------------------------------------------------------- audio

function transcribe(kind: AudioKind, fields: Record<string, string>, audio: Uint8Array, fileName: string): unknown {
  if (audio.byteLength === 0) return new InvalidRequest('file is required and must not be empty.', 'file');
  if (fields.stream === 'true') return new InvalidRequest('stream is not supported by this server.', 'stream');
  const format = fields.response_format ?? 'json';
  if (!(AUDIO_RESPONSE_FORMATS as readonly string[]).includes(format)) {
    return new InvalidRequest(`response_format must be one of ${AUDIO_RESPONSE_FORMATS.join(', ')}.`, 'response_format');
  }

  const digest = sha256(audio).toString('hex');
  const noun = kind === 'transcriptions' ? 'transcription' : 'translation';
  const text = `echo ${noun} of ${fileName}: ${audio.byteLength} bytes, sha256 prefix ${digest.slice(0, 16)}`;
  const duration = Math.round((audio.byteLength / PCM_BYTES_PER_SECOND) * 100) / 100;

  switch (format) {
    case 'text':
      return text;
    case 'srt':
      return `1\n${subtitleTime(0, ',')} --> ${subtitleTime(duration, ',')}\n${text}\n\n`;
    case 'vtt':
      return `WEBVTT\n\n${subtitleTime(0, '.')} --> ${subtitleTime(duration, '.')}\n${text}\n\n`;
    case 'verbose_json':
      return {
        task: kind === 'transcriptions' ? 'transcribe' : 'translate',
        // Translation always produces English; transcription keeps the caller's hint.
        language: kind === 'translations' ? 'en' : (fields.language ?? 'en'),
        duration,
        text,
        segments: [],
      };
    default:
      return { text };
  }
}

function subtitleTime(seconds: number, fractionSeparator: ',' | '.'): string {
  const totalMs = Math.round(seconds * 1000);
  const pad = (value: number, width: number) => String(value).padStart(width, '0');
  const hours = Math.floor(totalMs / 3_600_000);
  const minutes = Math.floor((totalMs % 3_600_000) / 60_000);
  const secs = Math.floor((totalMs % 60_000) / 1000);
  return `${pad(hours, 2)}:${pad(minutes, 2)}:${pad(secs, 2)}${fractionSeparator}${pad(totalMs % 1000, 3)}`;
}

// ---------------------------------------------------------------- request reading

interface Message {
  role: string;
  text: string;
}

/** Problems any JSON endpoint rejects before looking at its own fields. */
function commonProblems(body: Body): InvalidRequest | null {
  if (body.stream === true) return new InvalidRequest('stream is not supported in batch requests.', 'stream');
  if (body.model !== undefined && typeof body.model !== 'string') return new InvalidRequest('model must be a string.', 'model');
  return null;
}

function readMessages(value: unknown): Message[] | InvalidRequest {
  if (!Array.isArray(value) || value.length === 0) {
    return new InvalidRequest('messages is required and must be a non-empty array.', 'messages');
  }
  const messages: Message[] = [];
  for (const [index, entry] of value.entries()) {
    const message = readMessage(entry);
    if (message === null) return new InvalidRequest(`messages[${index}] is not a valid message.`, `messages[${index}]`);
    messages.push(message);
  }
  return messages;
}

function readMessage(entry: unknown): Message | null {
  if (!isRecord(entry) || typeof entry.role !== 'string') return null;
  const text = contentText(entry.content);
  return text === null ? null : { role: entry.role, text };
}

/** Text of string or multi-part content; null/absent content (assistant tool calls) reads as empty. */
function contentText(content: unknown): string | null {
  if (content === undefined || content === null) return '';
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return null;
  const texts: string[] = [];
  for (const part of content) {
    if (!isRecord(part) || typeof part.type !== 'string') return null;
    if (part.type === 'text') {
      if (typeof part.text !== 'string') return null;
      texts.push(part.text);
    }
  }
  return texts.join('\n');
}

function lastUserText(messages: Message[]): string {
  const lastUser = messages.findLast((message) => message.role === 'user');
  return (lastUser ?? messages[messages.length - 1]).text;
}

function readGenerationLimits(body: Body): GenerationLimits | InvalidRequest {
  for (const param of ['max_tokens', 'max_completion_tokens']) {
    const value = body[param];
    if (value !== undefined && value !== null && !isPositiveInteger(value)) {
      return new InvalidRequest(`${param} must be a positive integer.`, param);
    }
  }
  // OpenAI's newer name wins when a client sends both.
  const maxTokens = (body.max_completion_tokens ?? body.max_tokens ?? null) as number | null;
  const choices = body.n ?? 1;
  if (!isPositiveInteger(choices) || choices > MAX_CHOICES) {
    return new InvalidRequest(`n must be an integer from 1 to ${MAX_CHOICES}.`, 'n');
  }
  const stops = readStops(body.stop);
  if (stops === null) return new InvalidRequest('stop must be a string or an array of strings.', 'stop');
  return { maxTokens, stops, choices };
}

function readStops(value: unknown): string[] | null {
  if (value === undefined || value === null) return [];
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || !list.every((stop) => typeof stop === 'string')) return null;
  // An empty stop sequence would match at offset 0 and erase every answer.
  return (list as string[]).filter((stop) => stop.length > 0);
}

/**
 * The forms OpenAI accepts for `prompt` and `input`: a string, strings, token
 * ids, or lists of token ids. Token ids read as space-separated numbers, which
 * the tokenizer below counts one token each. Null means not a valid input.
 */
function readTextInputs(value: unknown): string[] | null {
  if (typeof value === 'string') return [value];
  if (!Array.isArray(value) || value.length === 0) return null;
  if (value.every((item) => typeof item === 'string')) return value as string[];
  if (value.every(isTokenId)) return [value.join(' ')];
  if (value.every((item) => Array.isArray(item) && item.length > 0 && item.every(isTokenId))) {
    return (value as number[][]).map((ids) => ids.join(' '));
  }
  return null;
}

// ---------------------------------------------------------------- tokens

// A word (letters, digits, underscore) or a single other visible character is one token.
const TOKEN_PATTERN = /[\p{L}\p{N}_]+|[^\p{L}\p{N}_\s]/gu;

function countTokens(text: string): number {
  return text.match(TOKEN_PATTERN)?.length ?? 0;
}

/** Keeps the original spacing up to the end of the `limit`-th token. */
function truncateToTokens(text: string, limit: number): string {
  let seen = 0;
  for (const match of text.matchAll(TOKEN_PATTERN)) {
    seen += 1;
    if (seen === limit) return text.slice(0, match.index + match[0].length);
  }
  return text;
}

// ---------------------------------------------------------------- small helpers

function modelOf(body: Body): string {
  return typeof body.model === 'string' ? body.model : DEFAULT_MODEL;
}

function requestHash(body: Body): string {
  return sha256(JSON.stringify(body)).toString('hex').slice(0, 32);
}

function sha256(data: string | Uint8Array): Buffer {
  return createHash('sha256').update(data).digest();
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

function repeat<T>(count: number, make: (index: number) => T): T[] {
  return Array.from({ length: count }, (_, index) => make(index));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isPositiveInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value > 0;
}

function isTokenId(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0;
}
