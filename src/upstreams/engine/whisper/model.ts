// A whisper.cpp speech-to-text model in the embedded engine: checked and
// loaded at start-up (a bad file stops start-up with a one-line reason, as
// GGUF models do), then serving /v1/audio/transcriptions and /translations.
import { resolve } from 'node:path';
import type { AudioPayload } from '../../http-client.ts';
import { ApiError, EngineLoadError, invalid } from '../errors.ts';
import { defaultModelName, defaultThreads } from '../model.ts';
import type { Body } from '../request.ts';
import type { HandlerResult } from '../run.ts';
import { AudioDecodeError, prepareAudio } from './audio.ts';
import { renderTranscript } from './formats.ts';
import { checkWhisperFile } from './model-file.ts';
import { WhisperProcess, WhisperRequestError } from './process.ts';
import { readTranscriptionParams, type AudioTask } from './request.ts';

export interface WhisperModelOptions {
  /** A whisper.cpp ggml model file (ggml-base.en.bin...). */
  path: string;
  /** The model name audio lines use; default the file name without its extension. */
  name?: string;
  /** CPU threads per transcription; default (or 0) every core but one. */
  threads?: number;
}

export interface WhisperModelInfo {
  name: string;
  path: string;
  /** English-only models (".en") can neither translate nor transcribe other languages. */
  multilingual: boolean;
  threads: number;
}

export interface WhisperModel {
  readonly info: WhisperModelInfo;
  transcribe(task: AudioTask, body: Body, audio: AudioPayload, signal: AbortSignal): Promise<HandlerResult>;
  dispose(): Promise<void>;
}

export async function loadWhisperModel(options: WhisperModelOptions & { gpu?: 'auto' | false }): Promise<WhisperModel> {
  if (typeof options.path !== 'string' || options.path.length === 0) throw new EngineLoadError('INVALID_OPTIONS', 'whisper model path is required');
  if (options.threads !== undefined && (!Number.isInteger(options.threads) || options.threads < 0)) {
    throw new EngineLoadError('INVALID_OPTIONS', `whisper model ${options.path}: threads must be a non-negative integer, got ${options.threads}`);
  }
  const path = resolve(options.path);
  const name = options.name ?? defaultModelName(path);
  const file = await checkWhisperFile(path);
  const whisper = await WhisperProcess.start({ modelPath: path, useGpu: options.gpu !== false });
  const info: WhisperModelInfo = { name, path, multilingual: file.multilingual, threads: options.threads || defaultThreads() };

  return {
    info,
    async transcribe(task, body, audio, signal) {
      const params = readTranscriptionParams(body, task);
      if (params instanceof ApiError) return params;
      if (!info.multilingual) {
        if (task === 'translate') return invalid(`The model \`${name}\` is English-only; translations need a multilingual whisper model.`, 'model');
        if (params.language !== null && params.language !== 'en' && params.language !== 'english') {
          return invalid(`The model \`${name}\` is English-only; it cannot transcribe language "${params.language}".`, 'language');
        }
      }
      let duration = 0;
      try {
        const prepared = prepareAudio(audio);
        const decode = async () => {
          const decoded = await prepared.decode(signal);
          duration = decoded.seconds;
          return decoded.samples;
        };
        const result = await whisper.transcribe(
          decode,
          {
            language: params.language ?? (info.multilingual ? 'auto' : 'en'),
            translate: task === 'translate',
            prompt: params.prompt,
            temperature: params.temperature,
            threads: info.threads,
          },
          signal,
        );
        return { status: 200, body: renderTranscript(params, { ...result, duration }) };
      } catch (error) {
        if (error instanceof AudioDecodeError) return invalid(error.message, 'file');
        if (error instanceof WhisperRequestError) return invalid(error.message, error.param);
        throw error;
      }
    },
    dispose: () => whisper.close(),
  };
}
