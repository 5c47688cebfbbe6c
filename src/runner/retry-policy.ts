// What to do after one attempt at a request line: keep the result, try again
// later, or give up with an error code the batch's error file can carry. One
// place owns these rules so that the worker, its tests and the docs cannot
// drift apart on which statuses are worth another attempt.
import { STATUS_CODES } from 'node:http';
import { isOverload } from '../upstreams/capacity/overload.ts';

export type AttemptOutcome =
  | { kind: 'response'; status: number; body: unknown; bodyText?: string; requestId: string | null; retryAfterMs: number | null }
  | { kind: 'timeout'; message: string }
  | { kind: 'network_error'; message: string };

export interface RetryPolicyOptions {
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** Uniform in [0, 1); injectable so tests can pin the jitter. Default Math.random. */
  random?: () => number;
}

export type Decision =
  | { action: 'succeed' }
  | { action: 'retry'; delayMs: number; overload: boolean; reason: string }
  | { action: 'fail'; code: string; message: string; status: number | null; body: unknown | null };

/** A Retry-After beyond this is treated as this: a misconfigured server must not park a line for days. */
export const MAX_RETRY_AFTER_MS = 10 * 60_000;
/** Upstream error text kept in a failure message; bodies can be whole HTML pages. */
export const MAX_ERROR_MESSAGE_CHARS = 500;

// Worth another attempt because the same request may well succeed later:
// 408 request timeout, 409 conflict (vLLM/TGI use it for transient engine
// states), 425 too early, 429 rate limited; every 5xx is added below.
const RETRYABLE_4XX = new Set([408, 409, 425, 429]);

export function decide(outcome: AttemptOutcome, attempt: number, options: RetryPolicyOptions): Decision {
  checkArguments(attempt, options);
  if (outcome.kind === 'response' && outcome.status >= 200 && outcome.status < 300) {
    // Whatever the body is, the upstream accepted the request; the caller
    // records what it got rather than paying for the request twice.
    return { action: 'succeed' };
  }

  const failure = classify(outcome);
  if (!failure.retryable) {
    return { action: 'fail', code: failure.code, message: failure.message, status: failure.status, body: failure.body };
  }
  if (attempt < options.maxAttempts) {
    return { action: 'retry', delayMs: retryDelay(attempt, failure.retryAfterMs, options), overload: failure.overload, reason: failure.message };
  }
  const attempts = attempt === 1 ? '1 attempt' : `${attempt} attempts`;
  return {
    action: 'fail',
    code: failure.code,
    message: `Gave up after ${attempts}; last error: ${failure.message}`,
    status: failure.status,
    body: failure.body,
  };
}

/**
 * Exponential backoff with full jitter: uniform in [0, base * 2^(attempt-1)),
 * the window capped at maxDelayMs. Full jitter spreads out the lines that
 * failed together, so they do not all come back in the same instant. A
 * Retry-After is a floor, even above maxDelayMs: the server knows best.
 */
export function retryDelay(attempt: number, retryAfterMs: number | null, options: RetryPolicyOptions): number {
  const window = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** (attempt - 1));
  const random = options.random ?? Math.random;
  // Clamped so a sloppy random source cannot push past the window.
  const jittered = Math.floor(Math.min(Math.max(random(), 0), 1) * window);
  const floor = retryAfterMs != null && Number.isFinite(retryAfterMs) && retryAfterMs > 0 ? Math.ceil(Math.min(retryAfterMs, MAX_RETRY_AFTER_MS)) : 0;
  return Math.max(jittered, floor);
}

interface Failure {
  retryable: boolean;
  overload: boolean;
  /** The code to fail with: now if not retryable, or once attempts run out. */
  code: string;
  message: string;
  status: number | null;
  body: unknown | null;
  retryAfterMs: number | null;
}

function classify(outcome: AttemptOutcome): Failure {
  if (outcome.kind === 'timeout') {
    return { retryable: true, overload: true, code: 'request_timeout', message: `Request timed out: ${clip(outcome.message)}`, status: null, body: null, retryAfterMs: null };
  }
  if (outcome.kind === 'network_error') {
    return {
      retryable: true,
      overload: false,
      code: 'upstream_error',
      message: `Could not reach the upstream: ${clip(outcome.message)}`,
      status: null,
      body: null,
      retryAfterMs: null,
    };
  }

  const { status, body, retryAfterMs } = outcome;
  const detail = extractErrorMessage(body);
  const said = `${describeStatus(status)}${detail ? `: ${detail}` : ''}`;
  const base = { status, body, retryAfterMs };

  if (status >= 500 || RETRYABLE_4XX.has(status)) {
    const code = status === 429 ? 'rate_limited' : status === 408 ? 'request_timeout' : 'upstream_error';
    return { ...base, retryable: true, overload: isOverload(outcome), code, message: `Upstream returned ${said}` };
  }
  const fail = (code: string, message: string): Failure => ({ ...base, retryable: false, overload: false, code, message });
  if (isModelNotFound(status, body)) return fail('invalid_model', `Upstream does not serve this model (${said})`);
  if (status === 400 || status === 422) return fail('invalid_request', `Upstream rejected the request as invalid (${said})`);
  if (status === 401 || status === 403) {
    return fail('upstream_auth_error', `Upstream refused our credentials (${said}); check the apiKey configured for this upstream`);
  }
  if (status === 404) return fail('upstream_error', `Upstream returned ${said}; check the upstream's baseUrl`);
  // Other 4xx, and the 1xx/3xx that should never reach here: retrying the
  // same request would get the same answer.
  return fail('upstream_error', `Upstream returned ${said}`);
}

/**
 * OpenAI says code "model_not_found"; vLLM, SGLang and llama.cpp say 404 with
 * "The model `x` does not exist". A 404 that does not mention a model is more
 * likely a wrong baseUrl, which is the operator's problem, not the line's.
 */
function isModelNotFound(status: number, body: unknown): boolean {
  if (errorCode(body) === 'model_not_found') return true;
  return status === 404 && /model/i.test(bodyText(body));
}

function errorCode(body: unknown): unknown {
  if (!isObject(body)) return undefined;
  if (isObject(body.error) && body.error.code !== undefined) return body.error.code;
  return body.code;
}

/**
 * The human-readable part of an error body, from the shapes servers actually
 * send: OpenAI's {error: {message}}, {error: "..."}, vLLM's {message},
 * FastAPI's {detail} (a string or a list of {msg}), or a plain string. Other
 * objects are shown as JSON. Whitespace is collapsed and the result clipped
 * to MAX_ERROR_MESSAGE_CHARS; null when there is nothing to show.
 */
export function extractErrorMessage(body: unknown): string | null {
  const text = messageOf(body);
  if (text === null) return null;
  const clipped = clip(text);
  return clipped === '' ? null : clipped;
}

function messageOf(body: unknown): string | null {
  if (typeof body === 'string') return body;
  if (body === null || body === undefined) return null;
  if (isObject(body)) {
    const { error } = body;
    if (isObject(error) && typeof error.message === 'string' && error.message.trim() !== '') return error.message;
    if (typeof error === 'string' && error.trim() !== '') return error;
    if (typeof body.message === 'string' && body.message.trim() !== '') return body.message;
    if (typeof body.detail === 'string' && body.detail.trim() !== '') return body.detail;
    if (Array.isArray(body.detail)) {
      const parts = body.detail.map((item) => (isObject(item) && typeof item.msg === 'string' ? item.msg : null)).filter((m) => m !== null);
      if (parts.length > 0) return parts.join('; ');
    }
  }
  const json = safeJson(body);
  return json === '{}' ? null : json;
}

function bodyText(body: unknown): string {
  return typeof body === 'string' ? body : (safeJson(body) ?? '');
}

function safeJson(value: unknown): string | null {
  try {
    return JSON.stringify(value) ?? null;
  } catch {
    return null;
  }
}

function clip(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  if (flat.length <= MAX_ERROR_MESSAGE_CHARS) return flat;
  let cut = flat.slice(0, MAX_ERROR_MESSAGE_CHARS - 1);
  // Do not leave half of a surrogate pair (an emoji, say) at the end.
  if (/[\uD800-\uDBFF]$/.test(cut)) cut = cut.slice(0, -1);
  return `${cut}…`;
}

function describeStatus(status: number): string {
  const phrase = STATUS_CODES[status];
  return phrase ? `HTTP ${status} (${phrase})` : `HTTP ${status}`;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkArguments(attempt: number, options: RetryPolicyOptions): void {
  if (!Number.isInteger(attempt) || attempt < 1) throw new RangeError(`attempt must be an integer >= 1, got ${attempt}`);
  if (!Number.isInteger(options.maxAttempts) || options.maxAttempts < 1) {
    throw new RangeError(`maxAttempts must be an integer >= 1, got ${options.maxAttempts}`);
  }
  if (!(options.baseDelayMs >= 0)) throw new RangeError(`baseDelayMs must be >= 0, got ${options.baseDelayMs}`);
  if (!(options.maxDelayMs >= 0)) throw new RangeError(`maxDelayMs must be >= 0, got ${options.maxDelayMs}`);
}
