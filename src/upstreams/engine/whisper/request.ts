// Reads the fields of a /v1/audio/transcriptions or /translations request as
// OpenAI defines them. Batch lines carry them as JSON, but clients often copy
// multipart habits (every value a string), so "0.2" and "true" are read too.
// What whisper.cpp through this binding cannot do is refused with a 400
// naming the parameter: word timestamps, logprobs, streaming.
import { ApiError, invalid } from '../errors.ts';
import type { Body } from '../request.ts';

export type AudioTask = 'transcribe' | 'translate';
export const RESPONSE_FORMATS = ['json', 'text', 'srt', 'verbose_json', 'vtt'] as const;
export type ResponseFormat = (typeof RESPONSE_FORMATS)[number];

export interface TranscriptionParams {
  task: AudioTask;
  format: ResponseFormat;
  /** An ISO-639-1 code or whisper's language name, lower case; null: detect it (multilingual models) or English. */
  language: string | null;
  /** Text whisper continues from (spellings, style); empty for none. */
  prompt: string;
  temperature: number;
}

// Codes ("de") or whisper's names ("german"); whisper itself checks the language is one it knows.
const LANGUAGE = /^(?:[a-z]{2,3}|[a-z][a-z ]{2,30})$/;

export function readTranscriptionParams(body: Body, task: AudioTask): TranscriptionParams | ApiError {
  if (body.stream === true || body.stream === 'true') return invalid('stream is not supported by the embedded engine.', 'stream');

  const format = body.response_format ?? 'json';
  if (typeof format !== 'string' || !(RESPONSE_FORMATS as readonly string[]).includes(format)) {
    return invalid(`response_format must be one of ${RESPONSE_FORMATS.join(', ')}.`, 'response_format');
  }

  const granularities = body['timestamp_granularities[]'] ?? body.timestamp_granularities;
  if (granularities !== undefined && granularities !== null) {
    const list = Array.isArray(granularities) ? granularities : [granularities];
    for (const item of list) {
      if (item === 'word') return invalid('word timestamps are not supported by the embedded engine; use the "segment" granularity.', 'timestamp_granularities');
      if (item !== 'segment') return invalid("timestamp_granularities items must be 'word' or 'segment'.", 'timestamp_granularities');
    }
  }

  const include = body['include[]'] ?? body.include;
  if (include !== undefined && include !== null && (Array.isArray(include) ? include.length > 0 : true)) {
    return invalid('include (logprobs) is not supported by the embedded engine.', 'include');
  }

  let language: string | null = null;
  // OpenAI's translations take no language: the source language is detected and the output is English.
  if (task === 'transcribe' && body.language !== undefined && body.language !== null && body.language !== '') {
    if (typeof body.language !== 'string' || !LANGUAGE.test(body.language.toLowerCase())) {
      return invalid('language must be an ISO-639-1 code such as "en" or "de".', 'language');
    }
    language = body.language.toLowerCase();
  }

  let prompt = '';
  if (body.prompt !== undefined && body.prompt !== null) {
    if (typeof body.prompt !== 'string') return invalid('prompt must be a string.', 'prompt');
    // whisper.cpp takes C strings: a NUL would cut the prompt short (or worse).
    prompt = body.prompt.replaceAll('\u0000', '');
  }

  let temperature = 0;
  if (body.temperature !== undefined && body.temperature !== null && body.temperature !== '') {
    const value = typeof body.temperature === 'string' ? Number(body.temperature) : body.temperature;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 1) return invalid('temperature must be a number from 0 to 1.', 'temperature');
    temperature = value;
  }

  return { task, format: format as ResponseFormat, language, prompt, temperature };
}
