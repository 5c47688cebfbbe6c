// The client Spool talks to one OpenAI-compatible upstream (vLLM, llama.cpp,
// Ollama...) with. It never throws: every answer, HTTP error status included,
// comes back as a `response`, and every failure to get one as `timeout` or
// `network_error`; deciding what to retry is the caller's business.
import { randomBytes } from 'node:crypto';
import { Pool } from 'undici';
import { echoAudio, echoJson } from './echo.ts';
import { answeringMessages, MESSAGES_ENDPOINT } from './messages/client.ts';

export interface AudioPayload {
  bytes: Uint8Array;
  fileName: string;
  contentType?: string;
}

export interface UpstreamCall {
  /** '/v1/chat/completions', '/v1/audio/transcriptions'...; joined onto the upstream's baseUrl by `joinUpstreamUrl`. */
  endpoint: string;
  body: Record<string, unknown>;
  /**
   * `body` exactly as the input file holds it, when nothing rewrote it: sent as it is instead of serialising
   * `body` again (bytes in). Whoever changes `body` drops this.
   */
  bodyBytes?: Buffer;
  /** Audio endpoints: sent as multipart/form-data, `body`'s fields as text parts plus this as the `file` part. */
  audio?: AudioPayload;
  /** Covers the whole exchange: connecting, sending, the headers and the whole body. */
  timeoutMs: number;
  signal?: AbortSignal;
  /**
   * The caller's controller of `signal`, when it has one: the client then cuts the exchange short through it on
   * timeout too, instead of making a controller of its own and listening on `signal` (two allocations and a
   * listener per request, ~4% of the runner's CPU at thousands of requests a second: bench --cpu-prof).
   */
  controller?: AbortController;
  /**
   * Someone is waiting on this answer (a real-time API request), not a batch:
   * where the backend queues work itself (the embedded engine's sequences),
   * it goes ahead of queued batch requests. HTTP upstreams ignore it.
   */
  interactive?: boolean;
}

export type UpstreamOutcome =
  | {
      kind: 'response';
      status: number;
      /** Parsed JSON; the raw text when the response is not JSON. */
      body: unknown;
      /**
       * The body as received, when it is JSON on one line: results keep the upstream's own bytes instead of
       * serialising the parsed body again. Absent for other bodies (and from the emulator and the engine).
       */
      bodyText?: string;
      /** x-request-id header, else the body's `id`. */
      requestId: string | null;
      /** retry-after-ms header, else retry-after (seconds or HTTP date). */
      retryAfterMs: number | null;
    }
  | { kind: 'timeout'; message: string }
  | { kind: 'network_error'; message: string };

export interface UpstreamClient {
  readonly name: string;
  send(call: UpstreamCall): Promise<UpstreamOutcome>;
  close(): Promise<void>;
}

/** An in-process backend the runner's lanes and the real-time routes route to (the embedded engine): its client and the model names it serves. */
export interface EngineBinding {
  client: UpstreamClient;
  models: string[];
  maxConcurrency: number;
}

export interface HttpUpstreamClientConfig {
  name: string;
  baseUrl: string;
  apiKey?: string;
  maxConnections: number;
  /** Largest response body read; a bigger one is a network_error 'response too large'. Default 32 MiB. */
  maxResponseBytes?: number;
  /** The server answers /v1/messages itself; otherwise Messages calls are translated to chat completions. */
  messagesApi?: boolean;
}

const DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024;
const ANTHROPIC_VERSION = '2023-06-01';
const USER_AGENT = 'spool/0.1';
const KEEP_ALIVE_MS = 30_000;
/** How long close() lets in-flight requests finish before cutting them off. */
const CLOSE_GRACE_MS = 1_000;

/**
 * The URL for `endpoint` on an upstream whose base URL may or may not already
 * end in /v1: 'http://h:1/v1' and 'http://h:1' both give
 * 'http://h:1/v1/embeddings' for '/v1/embeddings'.
 */
export function joinUpstreamUrl(baseUrl: string, endpoint: string): string {
  const url = new URL(baseUrl);
  const basePath = url.pathname.replace(/\/+$/, '');
  let rest = endpoint.startsWith('/') ? endpoint : `/${endpoint}`;
  if (/\/v1$/.test(basePath) && (rest === '/v1' || rest.startsWith('/v1/'))) rest = rest.slice('/v1'.length);
  url.pathname = basePath + rest;
  return url.toString();
}

export function createHttpUpstreamClient(config: HttpUpstreamClientConfig): UpstreamClient {
  const origin = new URL(config.baseUrl).origin;
  const maxResponseBytes = config.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
  const pool = new Pool(origin, {
    connections: config.maxConnections,
    pipelining: 1,
    keepAliveTimeout: KEEP_ALIVE_MS,
    // Timeouts are enforced per call by send(); undici's own would cap them at 300 s.
    headersTimeout: 0,
    bodyTimeout: 0,
  });
  // Errors on idle keep-alive sockets surface on the next request; nothing to do here.
  pool.on('connectionError', () => {});
  let closed = false;
  let closing: Promise<void> | null = null;

  async function send(call: UpstreamCall): Promise<UpstreamOutcome> {
    if (closed) return { kind: 'network_error', message: `upstream client ${config.name} is closed` };
    if (call.signal?.aborted) return { kind: 'network_error', message: 'aborted' };

    let url: URL;
    let payload: { body: Buffer; contentType: string };
    try {
      url = new URL(joinUpstreamUrl(config.baseUrl, call.endpoint));
      payload = call.audio ? encodeMultipart(call.body, call.audio) : { body: call.bodyBytes ?? Buffer.from(JSON.stringify(call.body)), contentType: 'application/json' };
    } catch (err) {
      return { kind: 'network_error', message: `cannot build request: ${errorMessage(err)}` };
    }

    // One controller cuts the exchange short, whoever asks first: the clock or the caller.
    const shared = call.controller;
    const controller = shared ?? new AbortController();
    let timedOut = false;
    let callerStopped = false;
    const stoppedBy = (): 'timeout' | 'caller' | null => (timedOut ? 'timeout' : callerStopped || (shared !== undefined && shared.signal.aborted) ? 'caller' : null);
    const timer = setTimeout(() => {
      if (stoppedBy() === null) timedOut = true;
      controller.abort(new Error('timeout'));
    }, Math.max(0, call.timeoutMs));
    const onCallerAbort = () => {
      if (stoppedBy() === null) callerStopped = true;
      controller.abort(new Error('aborted'));
    };
    if (!shared) call.signal?.addEventListener('abort', onCallerAbort, { once: true });

    const headers: Record<string, string> = {
      'content-type': payload.contentType,
      accept: 'application/json',
      'user-agent': USER_AGENT,
    };
    if (config.apiKey) headers.authorization = `Bearer ${config.apiKey}`;
    // Servers of the Messages API (Anthropic's own among them) want a version, and may read the key from x-api-key.
    if (call.endpoint === MESSAGES_ENDPOINT) {
      headers['anthropic-version'] = ANTHROPIC_VERSION;
      if (config.apiKey) headers['x-api-key'] = config.apiKey;
    }

    try {
      const response = await pool.request({
        path: url.pathname + url.search,
        method: 'POST',
        headers,
        body: payload.body,
        signal: controller.signal,
      });
      const declared = Number(headerValue(response.headers['content-length']));
      if (Number.isFinite(declared) && declared > maxResponseBytes) {
        response.body.destroy();
        return { kind: 'network_error', message: `response too large: ${declared} bytes, the limit is ${maxResponseBytes}` };
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of response.body as AsyncIterable<Buffer>) {
        size += chunk.byteLength;
        if (size > maxResponseBytes) {
          response.body.destroy();
          return { kind: 'network_error', message: `response too large: over ${maxResponseBytes} bytes` };
        }
        chunks.push(chunk);
      }
      const stopped = stoppedBy();
      if (stopped !== null) return stoppedOutcome(stopped, call.timeoutMs);
      const text = Buffer.concat(chunks).toString('utf8');
      const body = parseBody(text, headerValue(response.headers['content-type']));
      return {
        kind: 'response',
        status: response.statusCode,
        body,
        bodyText: typeof body === 'object' && body !== null && isOneLine(text) ? text : undefined,
        requestId: requestIdOf(headerValue(response.headers['x-request-id']), body),
        retryAfterMs: retryAfterOf(response.headers),
      };
    } catch (err) {
      const stopped = stoppedBy();
      if (stopped !== null) return stoppedOutcome(stopped, call.timeoutMs);
      return { kind: 'network_error', message: describeNetworkError(err) };
    } finally {
      clearTimeout(timer);
      if (!shared) call.signal?.removeEventListener('abort', onCallerAbort);
    }
  }

  return answeringMessages({
    name: config.name,
    send,
    close() {
      closed = true;
      closing ??= (async () => {
        let grace: NodeJS.Timeout | undefined;
        const expired = new Promise<'expired'>((resolve) => {
          grace = setTimeout(() => resolve('expired'), CLOSE_GRACE_MS);
        });
        const result = await Promise.race([pool.close().then(() => 'closed' as const), expired]).catch(() => 'expired' as const);
        clearTimeout(grace);
        if (result !== 'closed') await pool.destroy().catch(() => {});
      })();
      return closing;
    },
  }, config.messagesApi ? 'native' : 'translate');
}

/** The built-in `echo` model, answered in-process by the emulator, with the same outcomes an HTTP upstream gives. */
export function createEchoUpstreamClient(): UpstreamClient {
  return answeringMessages(echoClient(), 'translate');
}

function echoClient(): UpstreamClient {
  return {
    name: 'echo',
    async send(call: UpstreamCall): Promise<UpstreamOutcome> {
      if (call.signal?.aborted) return { kind: 'network_error', message: 'aborted' };
      try {
        const endpoint = joinUpstreamUrl('http://echo.invalid/v1', call.endpoint).slice('http://echo.invalid'.length);
        let result: { status: number; body: unknown };
        if (call.audio) {
          const kind = endpoint === '/v1/audio/translations' ? 'translations' : endpoint === '/v1/audio/transcriptions' ? 'transcriptions' : null;
          if (kind === null) {
            result = echoJson(endpoint, call.body); // answers 400: the emulator does not serve it
          } else {
            const fields: Record<string, string> = {};
            for (const [name, value] of formFields(call.body)) fields[name] = value;
            result = echoAudio(kind, fields, call.audio.bytes, call.audio.fileName);
          }
        } else {
          // A round trip through JSON, as over the wire: the caller's objects are never shared.
          result = echoJson(endpoint, JSON.parse(JSON.stringify(call.body)) as Record<string, unknown>);
        }
        return { kind: 'response', status: result.status, body: result.body, requestId: requestIdOf(undefined, result.body), retryAfterMs: null };
      } catch (err) {
        return { kind: 'network_error', message: `echo failed: ${errorMessage(err)}` };
      }
    },
    async close() {},
  };
}

// ---------------------------------------------------------------- request bodies

/**
 * The text parts an audio request carries: strings as they are, other values
 * JSON-encoded, arrays as one part per item under `name[]` (OpenAI's
 * `timestamp_granularities[]`). null/undefined are left out, and so is `file`:
 * the audio payload is the file part.
 */
function formFields(body: Record<string, unknown>): [string, string][] {
  const out: [string, string][] = [];
  const text = (value: unknown) => (typeof value === 'string' ? value : JSON.stringify(value));
  for (const [name, value] of Object.entries(body)) {
    if (value === undefined || value === null || name === 'file') continue;
    if (Array.isArray(value)) {
      const partName = name.endsWith('[]') ? name : `${name}[]`;
      for (const item of value) if (item !== undefined && item !== null) out.push([partName, text(item)]);
    } else {
      out.push([name, text(value)]);
    }
  }
  return out;
}

function encodeMultipart(body: Record<string, unknown>, audio: AudioPayload): { body: Buffer; contentType: string } {
  const boundary = `----spool-${randomBytes(12).toString('hex')}`;
  const parts: Buffer[] = [];
  for (const [name, value] of formFields(body)) {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${escapeQuoted(name)}"\r\n\r\n${value}\r\n`));
  }
  const fileType = audio.contentType ?? guessAudioType(audio.fileName);
  parts.push(
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${escapeQuoted(audio.fileName)}"\r\nContent-Type: ${fileType}\r\n\r\n`,
    ),
    Buffer.from(audio.bytes.buffer, audio.bytes.byteOffset, audio.bytes.byteLength),
    Buffer.from(`\r\n--${boundary}--\r\n`),
  );
  return { body: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${boundary}` };
}

/** Quoted-string escaping for names in Content-Disposition, as browsers do it. */
function escapeQuoted(value: string): string {
  return value.replace(/\r/g, '%0D').replace(/\n/g, '%0A').replace(/"/g, '%22');
}

const AUDIO_TYPES: Record<string, string> = {
  flac: 'audio/flac',
  m4a: 'audio/mp4',
  mp3: 'audio/mpeg',
  mp4: 'audio/mp4',
  mpeg: 'audio/mpeg',
  mpga: 'audio/mpeg',
  oga: 'audio/ogg',
  ogg: 'audio/ogg',
  wav: 'audio/wav',
  webm: 'audio/webm',
};

function guessAudioType(fileName: string): string {
  const extension = /\.([A-Za-z0-9]+)$/.exec(fileName)?.[1]?.toLowerCase();
  return (extension && AUDIO_TYPES[extension]) || 'application/octet-stream';
}

// ---------------------------------------------------------------- responses

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** Whether JSON text can be spliced into a JSONL line as it is: no line break in it (pretty-printed JSON has some). */
function isOneLine(text: string): boolean {
  return text.indexOf('\n') < 0 && text.indexOf('\r') < 0;
}

/** JSON when it parses (text/plain is kept as text); otherwise the raw text. */
function parseBody(text: string, contentType: string | undefined): unknown {
  const type = contentType?.toLowerCase() ?? '';
  if (text.length === 0 || type.startsWith('text/')) return text;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function requestIdOf(header: string | undefined, body: unknown): string | null {
  if (header) return header;
  if (typeof body === 'object' && body !== null && !Array.isArray(body)) {
    const id = (body as Record<string, unknown>).id;
    if (typeof id === 'string' && id.length > 0) return id;
  }
  return null;
}

function retryAfterOf(headers: Record<string, string | string[] | undefined>): number | null {
  const ms = headerValue(headers['retry-after-ms'])?.trim();
  if (ms && /^\d+(\.\d+)?$/.test(ms)) return Math.round(Number(ms));
  const after = headerValue(headers['retry-after'])?.trim();
  if (!after) return null;
  if (/^\d+(\.\d+)?$/.test(after)) return Math.round(Number(after) * 1000);
  const date = Date.parse(after);
  if (Number.isNaN(date)) return null;
  return Math.max(0, date - Date.now());
}

function stoppedOutcome(stoppedBy: 'timeout' | 'caller', timeoutMs: number): UpstreamOutcome {
  return stoppedBy === 'timeout'
    ? { kind: 'timeout', message: `no complete response within ${timeoutMs} ms` }
    : { kind: 'network_error', message: 'aborted' };
}

function describeNetworkError(err: unknown): string {
  const parts: string[] = [];
  let current: unknown = err;
  // undici wraps socket errors; the cause usually holds the useful code (ECONNREFUSED...).
  for (let depth = 0; current && depth < 3; depth += 1) {
    const code = (current as { code?: unknown }).code;
    const message = errorMessage(current);
    const piece = typeof code === 'string' && !message.includes(code) ? `${code}: ${message}` : message;
    if (piece && !parts.includes(piece)) parts.push(piece);
    current = (current as { cause?: unknown }).cause;
  }
  return parts.join(' <- ') || 'network error';
}

function errorMessage(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) return err.errors.map(errorMessage).join('; ');
  return err instanceof Error ? err.message : String(err);
}
