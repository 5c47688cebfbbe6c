// The engine's failures, as values and as the OpenAI error bodies a real
// OpenAI-compatible server answers with. Handlers return an ApiError instead
// of throwing, so every request path stays a straight line and the client
// can never mistake a bad request for a crash.

/** An answer other than 200: the status and OpenAI's `{ error: {...} }` envelope. */
export class ApiError {
  constructor(
    readonly status: number,
    readonly message: string,
    readonly param: string | null = null,
    readonly type: string = status >= 500 ? 'server_error' : 'invalid_request_error',
    readonly code: string | null = null,
  ) {}

  get body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** 400 invalid_request_error: the request itself is wrong and retrying it cannot help. */
export function invalid(message: string, param: string | null = null, code: string | null = null): ApiError {
  return new ApiError(400, message, param, 'invalid_request_error', code);
}

/** Why a model could not be loaded; `message` is always one line, fit for a start-up error. */
export class EngineLoadError extends Error {
  constructor(
    readonly code: 'INVALID_OPTIONS' | 'NOT_FOUND' | 'NOT_A_FILE' | 'NOT_GGUF' | 'NOT_WHISPER' | 'LOAD_FAILED' | 'CONTEXT_FAILED',
    message: string,
  ) {
    super(oneLine(message));
    this.name = 'EngineLoadError';
  }
}

/** The prompt leaves no room in the context for even one generated token. */
export class PromptTooLongError extends Error {
  constructor(
    readonly promptTokens: number,
    readonly contextSize: number,
  ) {
    super(`This model's maximum context length is ${contextSize} tokens. However, your prompt is ${promptTokens} tokens, which leaves no room for a completion. Please reduce the length of the prompt.`);
    this.name = 'PromptTooLongError';
  }
}

/** The first line of an error's message, trimmed: native errors can be paragraphs. */
export function oneLine(message: string): string {
  const first = message.split(/\r?\n/).map((line) => line.trim()).find((line) => line.length > 0) ?? '';
  return first.length > 0 ? first : 'unknown error';
}

export function errorMessage(error: unknown): string {
  return oneLine(error instanceof Error ? error.message : String(error));
}
