// Reading the generation parameters /v1/chat/completions and /v1/completions
// share, with the rules of an OpenAI-compatible server: what is supported is
// honoured, what would silently change the answer's meaning is a 400, and
// what is only bookkeeping is ignored.
//
// Honoured: max_tokens / max_completion_tokens, temperature (default 1),
// top_p (default 1), stop (strings), seed, n (1..8, generated one after the
// other on the same sequence; with a seed, choice i uses seed + i),
// frequency_penalty, presence_penalty, logit_bias, and vLLM's top_k, min_p
// and repetition_penalty.
// Rejected with 400: stream: true, logprobs / top_logprobs, tools /
// functions, a response_format other than text, modalities with audio, and
// for completions suffix and best_of other than n.
// Ignored: user, metadata, store, service_tier, parallel_tool_calls,
// stream_options, reasoning_effort and anything else unknown.
import { ApiError, invalid } from './errors.ts';
import { DEFAULT_SAMPLING, type Sampling } from './generate.ts';

export type Body = Record<string, unknown>;

export const MAX_CHOICES = 8;
const MAX_STOPS = 16;

export interface GenerationParams {
  /** null: until the context is full. */
  maxTokens: number | null;
  stops: string[];
  n: number;
  sampling: Sampling;
}

export interface ReadOptions {
  /** When the request names no max_tokens: 16 for completions (OpenAI's legacy default), null (the rest of the context) for chat. */
  defaultMaxTokens: number | null;
  vocabularySize: number;
  kind: 'chat' | 'completion';
}

export function readGenerationParams(body: Body, options: ReadOptions): GenerationParams | ApiError {
  const unsupported = unsupportedParams(body, options.kind);
  if (unsupported) return unsupported;

  for (const param of ['max_tokens', 'max_completion_tokens']) {
    const value = body[param];
    if (value !== undefined && value !== null && !isPositiveInteger(value)) return invalid(`${param} must be a positive integer.`, param);
  }
  // OpenAI's newer name wins when a client sends both.
  const maxTokens = (body.max_completion_tokens ?? body.max_tokens ?? options.defaultMaxTokens) as number | null;

  const n = body.n ?? 1;
  if (!isPositiveInteger(n) || n > MAX_CHOICES) return invalid(`n must be an integer from 1 to ${MAX_CHOICES}.`, 'n');

  const stops = readStops(body.stop);
  if (stops instanceof ApiError) return stops;

  const sampling = readSampling(body, options.vocabularySize);
  if (sampling instanceof ApiError) return sampling;
  return { maxTokens, stops, n, sampling };
}

/** The sampling for choice `index` of n: with a seed, each choice gets its own (seed + index), so they differ but reproduce. */
export function samplingForChoice(sampling: Sampling, index: number): Sampling {
  if (sampling.seed === undefined || index === 0) return sampling;
  return { ...sampling, seed: (sampling.seed + index) >>> 0 };
}

function unsupportedParams(body: Body, kind: ReadOptions['kind']): ApiError | null {
  if (body.stream === true) return invalid('stream is not supported by the embedded engine.', 'stream');
  if (kind === 'chat') {
    if (body.logprobs === true) return invalid('logprobs is not supported by the embedded engine.', 'logprobs');
    if (body.top_logprobs !== undefined && body.top_logprobs !== null) return invalid('top_logprobs is not supported by the embedded engine.', 'top_logprobs');
  } else if (body.logprobs !== undefined && body.logprobs !== null && body.logprobs !== false) {
    return invalid('logprobs is not supported by the embedded engine.', 'logprobs');
  }
  if (Array.isArray(body.tools) && body.tools.length > 0) return invalid('tools are not supported by the embedded engine.', 'tools');
  if (Array.isArray(body.functions) && body.functions.length > 0) return invalid('functions are not supported by the embedded engine.', 'functions');
  const toolChoice = body.tool_choice;
  if (toolChoice !== undefined && toolChoice !== null && toolChoice !== 'none' && toolChoice !== 'auto') {
    return invalid('tool_choice is not supported by the embedded engine.', 'tool_choice');
  }
  const format = body.response_format;
  if (format !== undefined && format !== null) {
    if (!isRecord(format) || format.type !== 'text') return invalid("response_format is not supported by the embedded engine (only {type: 'text'}).", 'response_format');
  }
  if (Array.isArray(body.modalities) && body.modalities.some((modality) => modality !== 'text')) {
    return invalid('only text output is supported by the embedded engine.', 'modalities');
  }
  if (kind === 'completion') {
    if (typeof body.suffix === 'string' && body.suffix.length > 0) return invalid('suffix is not supported by the embedded engine.', 'suffix');
    const bestOf = body.best_of;
    if (bestOf !== undefined && bestOf !== null && bestOf !== (body.n ?? 1)) return invalid('best_of is not supported by the embedded engine (it must equal n).', 'best_of');
    if (body.echo !== undefined && body.echo !== null && typeof body.echo !== 'boolean') return invalid('echo must be a boolean.', 'echo');
  }
  return null;
}

function readStops(value: unknown): string[] | ApiError {
  if (value === undefined || value === null) return [];
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || !list.every((stop) => typeof stop === 'string')) return invalid('stop must be a string or an array of strings.', 'stop');
  if (list.length > MAX_STOPS) return invalid(`stop may hold at most ${MAX_STOPS} sequences.`, 'stop');
  // An empty stop sequence would match at offset 0 and erase every answer.
  return (list as string[]).filter((stop) => stop.length > 0);
}

function readSampling(body: Body, vocabularySize: number): Sampling | ApiError {
  const sampling: Sampling = { ...DEFAULT_SAMPLING };

  const number = (param: string, min: number, max: number, minExclusive = false): number | null | ApiError => {
    const value = body[param];
    if (value === undefined || value === null) return null;
    if (typeof value !== 'number' || !Number.isFinite(value) || value > max || (minExclusive ? value <= min : value < min)) {
      return invalid(`${param} must be a number ${minExclusive ? 'greater than' : 'from'} ${min} ${minExclusive ? 'and at most' : 'to'} ${max}.`, param);
    }
    return value;
  };

  const temperature = number('temperature', 0, 2);
  if (temperature instanceof ApiError) return temperature;
  if (temperature !== null) sampling.temperature = temperature;

  const topP = number('top_p', 0, 1, true);
  if (topP instanceof ApiError) return topP;
  if (topP !== null) sampling.topP = topP;

  const minP = number('min_p', 0, 1);
  if (minP instanceof ApiError) return minP;
  if (minP !== null) sampling.minP = minP;

  const topK = body.top_k;
  if (topK !== undefined && topK !== null) {
    if (typeof topK !== 'number' || !Number.isInteger(topK) || topK < -1) return invalid('top_k must be an integer: -1 or 0 to disable, else at least 1.', 'top_k');
    sampling.topK = Math.max(0, topK);
  }

  for (const [param, key] of [
    ['frequency_penalty', 'frequencyPenalty'],
    ['presence_penalty', 'presencePenalty'],
  ] as const) {
    const value = number(param, -2, 2);
    if (value instanceof ApiError) return value;
    if (value !== null) sampling[key] = value;
  }

  const repetition = number('repetition_penalty', 0, 2, true);
  if (repetition instanceof ApiError) return repetition;
  if (repetition !== null) sampling.repetitionPenalty = repetition;

  const seed = body.seed;
  if (seed !== undefined && seed !== null) {
    if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) return invalid('seed must be an integer.', 'seed');
    // llama.cpp seeds are 32-bit; larger and negative seeds wrap.
    sampling.seed = ((seed % 2 ** 32) + 2 ** 32) % 2 ** 32;
  }

  const logitBias = body.logit_bias;
  if (logitBias !== undefined && logitBias !== null) {
    if (!isRecord(logitBias)) return invalid('logit_bias must be an object mapping token ids to numbers.', 'logit_bias');
    const biases = new Map<number, number>();
    for (const [key, bias] of Object.entries(logitBias)) {
      const token = Number(key);
      if (!/^\d+$/.test(key) || token >= vocabularySize) return invalid(`logit_bias: ${JSON.stringify(key)} is not a token id of this model.`, 'logit_bias');
      if (typeof bias !== 'number' || !Number.isFinite(bias) || bias < -100 || bias > 100) return invalid('logit_bias values must be numbers from -100 to 100.', 'logit_bias');
      biases.set(token, bias);
    }
    sampling.logitBias = biases;
  }
  return sampling;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function isPositiveInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value > 0;
}

export function isTokenId(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0;
}
