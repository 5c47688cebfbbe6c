// The embedded engine as an upstream: createEngine() loads the models and
// hands back an UpstreamClient that answers /v1/chat/completions,
// /v1/completions and /v1/embeddings in-process, with the same outcomes an
// HTTP upstream gives. send() never throws: a bad request is a 400 response,
// an unknown model a 404, an engine failure a 500; the caller's timeout is a
// `timeout`, and its abort signal (or close()) a `network_error`.
//
// The runner's concurrency for the engine (maxConcurrency) is twice the
// number of sequences the models have: each sequence has one request running
// and one waiting in its pool, already parsed and tokenized, that starts the
// moment the sequence frees instead of after a round trip through the runner
// (recording the result, dispatching the next line). Waiting counts against
// the request's timeout. Real-time requests (call.interactive) are served
// before waiting batch requests, so they wait for at most one generation.
//
// With a whisper model (options.whisper), the engine also answers
// /v1/audio/transcriptions and /translations (whisper/serve.ts), one at a
// time in its own process; it adds one to maxConcurrency.
import type { EngineBinding, UpstreamCall, UpstreamClient, UpstreamOutcome } from '../http-client.ts';
import { answeringMessages } from '../messages/client.ts';
import { chatCompletion } from './chat.ts';
import { textCompletion } from './completions.ts';
import { embeddings } from './embeddings.ts';
import { ApiError, EngineLoadError, errorMessage, invalid, PromptTooLongError } from './errors.ts';
import type { EngineGpu } from './llama.ts';
import { defaultModelName, loadEngineModel, type EngineModel, type EngineModelInfo, type EngineModelOptions } from './model.ts';
import { isRecord } from './request.ts';
import type { HandlerResult } from './run.ts';
import { SequencePoolClosedError } from './sequence-pool.ts';
import { loadWhisperModel, type WhisperModel, type WhisperModelInfo, type WhisperModelOptions } from './whisper/model.ts';
import { isAudioEndpoint, notALanguageModel, serveAudio } from './whisper/serve.ts';

export interface EngineOptions {
  models: EngineModelOptions[];
  /** 'auto' (default): a GPU when its prebuilt node-llama-cpp package is installed and works, else the CPU. */
  gpu?: EngineGpu;
  /** The client's name; default 'engine'. */
  name?: string;
  /** A whisper.cpp model for the audio endpoints. */
  whisper?: WhisperModelOptions;
}

export interface Engine extends EngineBinding {
  /** What was loaded, per model: context size, sequences, chat template... */
  readonly info: EngineModelInfo[];
  /** The whisper model, when one is loaded. */
  readonly whisper: WhisperModelInfo | null;
  /** Stops taking requests, ends those in flight (they answer network_error) and frees the models. */
  close(): Promise<void>;
}

type Stop = 'timeout' | 'caller' | 'closed';

export async function createEngine(options: EngineOptions): Promise<Engine> {
  if (!Array.isArray(options.models) || (options.models.length === 0 && !options.whisper)) throw new EngineLoadError('INVALID_OPTIONS', 'the engine needs at least one model');
  const seen = new Set<string>();
  for (const model of [...options.models, ...(options.whisper ? [options.whisper] : [])]) {
    const name = model.name ?? defaultModelName(model.path ?? '');
    if (seen.has(name)) throw new EngineLoadError('INVALID_OPTIONS', `two models are named ${name}; give one a different name`);
    seen.add(name);
  }

  const loaded: EngineModel[] = [];
  let whisper: WhisperModel | null = null;
  try {
    for (const model of options.models) loaded.push(await loadEngineModel({ ...model, gpu: options.gpu }));
    if (options.whisper) whisper = await loadWhisperModel({ ...options.whisper, gpu: options.gpu });
  } catch (error) {
    await Promise.all(loaded.map((model) => model.dispose()));
    throw error;
  }
  return engineFor(loaded, whisper, options.name ?? 'engine');
}

function engineFor(models: EngineModel[], whisper: WhisperModel | null, name: string): Engine {
  const byName = new Map(models.map((model) => [model.info.name, model]));
  const inFlight = new Map<AbortController, Promise<unknown>>();
  const closeHooks = new Set<() => void>();
  let closed = false;
  let closing: Promise<void> | null = null;

  async function send(call: UpstreamCall): Promise<UpstreamOutcome> {
    try {
      return await exchange(call);
    } catch (error) {
      // Only a malformed call (no body, no endpoint string...) gets here.
      return { kind: 'network_error', message: `cannot send to the embedded engine: ${errorMessage(error)}` };
    }
  }

  async function exchange(call: UpstreamCall): Promise<UpstreamOutcome> {
    if (closed) return { kind: 'network_error', message: `upstream client ${name} is closed` };
    if (call.signal?.aborted) return { kind: 'network_error', message: 'aborted' };

    // One controller ends the work, whoever asks first: the clock, the caller, or close().
    const controller = new AbortController();
    let stoppedBy: Stop | null = null;
    let onStop: () => void = () => {};
    const stopped = new Promise<'stopped'>((resolve) => (onStop = () => resolve('stopped')));
    const stop = (why: Stop) => {
      if (stoppedBy !== null) return;
      stoppedBy = why;
      controller.abort(new Error(why === 'timeout' ? 'timeout' : 'aborted'));
      onStop();
    };
    const timer = setTimeout(() => stop('timeout'), Math.max(0, call.timeoutMs));
    const onCallerAbort = () => stop('caller');
    call.signal?.addEventListener('abort', onCallerAbort, { once: true });
    const closeThis = () => stop('closed');

    const work = handle(call, controller.signal);
    // The work may still be finishing its current step after we have answered.
    const settled = work.then(
      () => {},
      () => {},
    );
    inFlight.set(controller, settled);
    closeHooks.add(closeThis);
    try {
      const result = await Promise.race([work, stopped]);
      if (result === 'stopped' || stoppedBy !== null) return stoppedOutcome(stoppedBy ?? 'caller', call.timeoutMs, name);
      return toOutcome(result);
    } catch (error) {
      if (stoppedBy !== null) return stoppedOutcome(stoppedBy, call.timeoutMs, name);
      if (error instanceof SequencePoolClosedError) return { kind: 'network_error', message: `upstream client ${name} is closed` };
      return toOutcome(new ApiError(500, `The embedded engine failed: ${errorMessage(error)}`));
    } finally {
      clearTimeout(timer);
      call.signal?.removeEventListener('abort', onCallerAbort);
      closeHooks.delete(closeThis);
      void settled.finally(() => inFlight.delete(controller));
    }
  }

  async function handle(call: UpstreamCall, signal: AbortSignal): Promise<HandlerResult> {
    const endpoint = normaliseEndpoint(call.endpoint);
    if (call.audio || isAudioEndpoint(endpoint)) return serveAudio(whisper, byName, endpoint, call, signal);
    if (endpoint !== '/v1/chat/completions' && endpoint !== '/v1/completions' && endpoint !== '/v1/embeddings') {
      return invalid(`The embedded engine does not serve ${endpoint}.`, null);
    }
    const body = call.body;
    if (!isRecord(body)) return invalid('The request body must be a JSON object.', null);
    if (whisper && (body.model === whisper.info.name || models.length === 0)) return notALanguageModel(whisper, endpoint);
    const model = pickModel(body.model);
    if (model instanceof ApiError) return model;
    try {
      const interactive = call.interactive === true;
      if (endpoint === '/v1/chat/completions') return await chatCompletion(model, body, signal, interactive);
      if (endpoint === '/v1/completions') return await textCompletion(model, body, signal, interactive);
      return await embeddings(model, body, signal);
    } catch (error) {
      // The handlers check prompt lengths up front; this is the backstop.
      if (error instanceof PromptTooLongError) return invalid(error.message, null, 'context_length_exceeded');
      throw error;
    }
  }

  function pickModel(requested: unknown): EngineModel | ApiError {
    if (requested === undefined || requested === null) {
      if (models.length === 1) return models[0];
      return invalid(`model is required; this engine serves ${[...byName.keys()].join(', ')}.`, 'model');
    }
    if (typeof requested !== 'string') return invalid('model must be a string.', 'model');
    return byName.get(requested) ?? new ApiError(404, `The model \`${requested}\` does not exist.`, 'model', 'invalid_request_error', 'model_not_found');
  }

  return {
    // The engine runs chat completions; Messages requests are translated to them and back.
    client: answeringMessages({ name, send, close: () => close() } satisfies UpstreamClient, 'translate'),
    models: [...byName.keys(), ...(whisper ? [whisper.info.name] : [])],
    maxConcurrency: Math.max(1, 2 * models.reduce((sum, model) => sum + (model.pool?.size ?? 0), 0) + (whisper ? 1 : 0)),
    info: models.map((model) => model.info),
    whisper: whisper?.info ?? null,
    close,
  };

  function close(): Promise<void> {
    closed = true;
    closing ??= (async () => {
      for (const hook of [...closeHooks]) hook();
      for (const model of models) model.pool?.close();
      await Promise.all([...inFlight.values()]);
      await Promise.all([...models.map((model) => model.dispose()), whisper?.dispose()]);
    })();
    return closing;
  }
}

/** '/v1/chat/completions', 'chat/completions' and '/chat/completions' are one endpoint; a query string is dropped. */
function normaliseEndpoint(endpoint: string): string {
  let path = endpoint.split('?')[0].replace(/\/+$/, '');
  if (!path.startsWith('/')) path = `/${path}`;
  if (!path.startsWith('/v1/')) path = `/v1${path}`;
  return path;
}

function toOutcome(result: HandlerResult): UpstreamOutcome {
  if (result instanceof ApiError) return { kind: 'response', status: result.status, body: result.body, requestId: null, retryAfterMs: null };
  const id = isRecord(result.body) && typeof result.body.id === 'string' ? result.body.id : null;
  return { kind: 'response', status: result.status, body: result.body, requestId: id, retryAfterMs: null };
}

function stoppedOutcome(why: Stop, timeoutMs: number, name: string): UpstreamOutcome {
  if (why === 'timeout') return { kind: 'timeout', message: `no answer from the embedded engine within ${timeoutMs} ms` };
  if (why === 'closed') return { kind: 'network_error', message: `upstream client ${name} is closed` };
  return { kind: 'network_error', message: 'aborted' };
}
