// How the engine answers an audio request: /v1/audio/transcriptions and
// /translations go to the whisper model when the engine has one, and are a
// clear 400 when it does not (the batch line becomes an error line saying how
// to load one), or when the line names one of the engine's language models.
import type { UpstreamCall } from '../../http-client.ts';
import { ApiError, invalid } from '../errors.ts';
import { isRecord } from '../request.ts';
import type { HandlerResult } from '../run.ts';
import type { WhisperModel } from './model.ts';
import type { AudioTask } from './request.ts';

const TASKS: Record<string, AudioTask> = {
  '/v1/audio/transcriptions': 'transcribe',
  '/v1/audio/translations': 'translate',
};

export function isAudioEndpoint(endpoint: string): boolean {
  return endpoint in TASKS;
}

/** `endpoint` normalised ('/v1/audio/...'); `languageModels`: the engine's other model names, for a precise refusal. */
export async function serveAudio(
  whisper: WhisperModel | null,
  languageModels: { has(name: string): boolean },
  endpoint: string,
  call: UpstreamCall,
  signal: AbortSignal,
): Promise<HandlerResult> {
  const task = TASKS[endpoint];
  if (!task) return invalid(`The embedded engine does not serve ${endpoint}.`, null);
  if (!whisper) {
    return invalid(`The embedded engine has no whisper model, so it cannot serve ${endpoint}; start Spool with --whisper-model PATH (a whisper.cpp ggml model file).`, 'model');
  }
  if (!call.audio) return invalid('file is required.', 'file');
  const body = call.body;
  if (!isRecord(body)) return invalid('The request body must be a JSON object.', null);
  const requested = body.model;
  if (requested !== undefined && requested !== null && requested !== whisper.info.name) {
    if (typeof requested !== 'string') return invalid('model must be a string.', 'model');
    if (languageModels.has(requested)) {
      return invalid(`The model \`${requested}\` is a language model, not a speech-to-text model; this engine transcribes with \`${whisper.info.name}\`.`, 'model');
    }
    return new ApiError(404, `The model \`${requested}\` does not exist.`, 'model', 'invalid_request_error', 'model_not_found');
  }
  return whisper.transcribe(task, body, call.audio, signal);
}

/** A 400 for a chat/completions/embeddings request naming the whisper model. */
export function notALanguageModel(whisper: WhisperModel, endpoint: string): ApiError {
  return invalid(`The model \`${whisper.info.name}\` is a whisper speech-to-text model; it serves /v1/audio/transcriptions and /v1/audio/translations, not ${endpoint}.`, 'model');
}
