// Real loopback HTTP servers that play an OpenAI-compatible inference server
// (vLLM, llama.cpp, Ollama...) for tests and benchmarks. Answers come from the
// in-process echo emulator; each `kind` adds one misbehaviour on top of it.
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Request } from 'undici';
import { echoAudio, echoJson } from '../../src/upstreams/echo.ts';

export type UpstreamKind = 'fast' | 'slow' | 'fail-then-succeed' | 'rate-limit' | 'reset' | 'hang' | 'bad-request' | 'capacity';

export interface UpstreamOptions {
  kind?: UpstreamKind;
  /** Delay before each answer. Default 100 for 'slow', 50 for 'capacity', 0 otherwise; applies to any kind when set. */
  delayMs?: number;
  /** fail-then-succeed: the first N attempts of each distinct request body answer 500, 503, 500... Default 2. */
  failuresPerRequest?: number;
  /** capacity: requests arriving while this many are being served get 429. Default 2. */
  capacity?: number;
  /** Sent as retry-after-ms (and retry-after, whole seconds rounded up) on every 429. Default 100. */
  retryAfterMs?: number;
  /** rate-limit: every Nth request (counting all requests) gets 429. Default 2. */
  rateLimitEvery?: number;
  /** When set, every request must carry `Authorization: Bearer <apiKey>`, else 401. */
  apiKey?: string;
  /** What GET /v1/models lists, asked each time (so a test can add a model); those asks are not counted in stats. */
  listModels?: () => string[];
  /** Listen on this loopback port (to come back where a stopped one was); default any free port. */
  port?: number;
}

export interface MultipartRecord {
  /** Text fields; a name sent more than once (timestamp_granularities[]) holds every value in order. */
  fields: Record<string, string | string[]>;
  fileName: string;
  fileBytes: Uint8Array;
}

export interface UpstreamStats {
  /** Every request received, whatever became of it. */
  requests: number;
  inFlight: number;
  maxInFlight: number;
  /** Responses actually sent, by status (reset and hung requests send none). */
  byStatus: Record<number, number>;
  /** Parsed JSON bodies, or MultipartRecord for audio requests, in arrival order. */
  bodies: unknown[];
  /** Attempts per canonical body: see `canonicalBodyKey`. */
  byBody: Map<string, number>;
}

export interface TestUpstream {
  /** Base URL ending in /v1, e.g. http://127.0.0.1:PORT/v1 */
  url: string;
  stats: UpstreamStats;
  close(): Promise<void>;
}

const JSON_ENDPOINTS = new Set(['/v1/chat/completions', '/v1/completions', '/v1/embeddings']);
const AUDIO_ENDPOINTS = new Map<string, 'transcriptions' | 'translations'>([
  ['/v1/audio/transcriptions', 'transcriptions'],
  ['/v1/audio/translations', 'translations'],
]);
const MAX_REQUEST_BYTES = 64 * 1024 * 1024;
const ENGINE_ENDPOINTS = new Set(['/props', '/slots', '/metrics']);

/**
 * The key `stats.byBody` counts attempts under: the body as JSON with object
 * keys sorted, so key order on the wire does not matter. Multipart requests are
 * keyed on {fields, fileName, fileSha256} (the file's sha256 in hex).
 */
export function canonicalBodyKey(body: unknown): string {
  if (isMultipartRecord(body)) {
    return canonicalJson({ fields: body.fields, fileName: body.fileName, fileSha256: sha256Hex(body.fileBytes) });
  }
  return canonicalJson(body);
}

export async function startUpstream(options: UpstreamOptions = {}): Promise<TestUpstream> {
  const kind = options.kind ?? 'fast';
  const delayMs = options.delayMs ?? (kind === 'slow' ? 100 : kind === 'capacity' ? 50 : 0);
  const failuresPerRequest = options.failuresPerRequest ?? 2;
  const capacity = options.capacity ?? 2;
  const retryAfterMs = options.retryAfterMs ?? 100;
  const rateLimitEvery = options.rateLimitEvery ?? 2;

  const stats: UpstreamStats = { requests: 0, inFlight: 0, maxInFlight: 0, byStatus: {}, bodies: [], byBody: new Map() };
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let admitted = 0; // 'capacity': requests currently being served
  let resetCounter = 0;
  let closed = false;

  const wait = (ms: number) =>
    new Promise<void>((resolve) => {
      if (ms <= 0) return resolve();
      const timer = setTimeout(() => {
        timers.delete(timer);
        resolve();
      }, ms);
      timers.add(timer);
    });

  // A request stops counting as in flight when its answer is written (so stats
  // are settled by the time the client sees it) or when its socket goes away.
  const unsettled = new Set<ServerResponse>();
  const settle = (res: ServerResponse) => {
    if (!unsettled.delete(res)) return;
    stats.inFlight -= 1;
  };

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    if (res.destroyed || res.writableEnded) return;
    stats.byStatus[status] = (stats.byStatus[status] ?? 0) + 1;
    settle(res);
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(status, {
      'content-type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json',
      'content-length': Buffer.byteLength(text),
      ...headers,
    });
    res.end(text);
  };

  const rateLimited = (res: ServerResponse, message: string) =>
    send(res, 429, errorEnvelope(message, 'rate_limit_error', 'rate_limit_exceeded'), {
      'retry-after-ms': String(retryAfterMs),
      'retry-after': String(Math.ceil(retryAfterMs / 1000)),
    });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Spool asks every upstream for an inference engine's own load endpoints (llama.cpp, vLLM, SGLang). These
    // test upstreams are no such engine, as a gateway would hide them: a 404 that is not counted with the
    // OpenAI requests the tests look at.
    if (req.method === 'GET' && ENGINE_ENDPOINTS.has((req.url ?? '/').split('?')[0])) {
      return void send(res, 404, errorEnvelope('Not found.', 'invalid_request_error', 'not_found'));
    }
    if (options.listModels && req.method === 'GET' && (req.url ?? '/').split('?')[0] === '/v1/models') {
      if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
        return void send(res, 401, errorEnvelope('Incorrect API key provided.', 'invalid_request_error', 'invalid_api_key'));
      }
      return void send(res, 200, modelList(options.listModels()));
    }
    stats.requests += 1;
    const requestNumber = stats.requests;
    res.setHeader('x-request-id', `req_test_${requestNumber}`);
    stats.inFlight += 1;
    unsettled.add(res);
    stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
    res.on('close', () => settle(res));

    const raw = await readRequestBody(req);
    if (raw === null) return void send(res, 413, errorEnvelope('Request body too large.', 'invalid_request_error', null));
    const path = (req.url ?? '/').split('?')[0];

    if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
      return void send(res, 401, errorEnvelope('Incorrect API key provided.', 'invalid_request_error', 'invalid_api_key'));
    }

    // Route and parse before misbehaving: every kind records what it was sent.
    let answer: () => { status: number; body: unknown };
    let model: unknown;
    let attempt = 1; // of this exact body, this one included
    if (req.method === 'GET' && path === '/v1/models') {
      answer = () => ({ status: 200, body: modelList() });
    } else if (req.method === 'POST' && JSON_ENDPOINTS.has(path)) {
      let body: unknown;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        return void send(res, 400, errorEnvelope('Request body is not valid JSON.', 'invalid_request_error', null));
      }
      stats.bodies.push(body);
      attempt = countAttempt(body);
      if (!isRecord(body)) return void send(res, 400, errorEnvelope('Request body must be a JSON object.', 'invalid_request_error', null));
      model = body.model;
      answer = () => echoJson(path, body);
    } else if (req.method === 'POST' && AUDIO_ENDPOINTS.has(path)) {
      const audioKind = AUDIO_ENDPOINTS.get(path)!;
      const record = await parseMultipart(req.headers['content-type'], raw);
      if (typeof record === 'string') return void send(res, 400, errorEnvelope(record, 'invalid_request_error', null));
      stats.bodies.push(record);
      attempt = countAttempt(record);
      model = record.fields.model;
      const fields: Record<string, string> = {};
      for (const [name, value] of Object.entries(record.fields)) fields[name] = Array.isArray(value) ? value[value.length - 1] : value;
      answer = () => echoAudio(audioKind, fields, record.fileBytes, record.fileName);
    } else if (JSON_ENDPOINTS.has(path) || AUDIO_ENDPOINTS.has(path) || path === '/v1/models') {
      return void send(res, 405, errorEnvelope(`Method ${req.method} is not allowed on ${path}.`, 'invalid_request_error', null));
    } else {
      return void send(res, 404, errorEnvelope(`Unknown route ${req.method} ${path}.`, 'invalid_request_error', 'not_found'));
    }

    if (model === 'missing') {
      return void send(res, 404, {
        error: { message: 'The model `missing` does not exist.', type: 'invalid_request_error', code: 'model_not_found' },
      });
    }

    switch (kind) {
      case 'reset':
        resetCounter += 1;
        if (resetCounter % 2 === 1) return void req.socket.destroy();
        break;
      case 'hang':
        return; // answered by nobody; close() destroys the socket
      case 'rate-limit':
        if (requestNumber % rateLimitEvery === 0) return rateLimited(res, 'Rate limit reached for requests.');
        break;
      case 'fail-then-succeed': {
        if (attempt <= failuresPerRequest) {
          const status = attempt % 2 === 1 ? 500 : 503;
          const message = status === 500 ? 'Internal server error (injected).' : 'Service temporarily unavailable (injected).';
          return void send(res, status, errorEnvelope(message, 'server_error', null));
        }
        break;
      }
      case 'bad-request':
        if (model === 'bad') {
          return void send(res, 400, {
            error: { message: 'The model `bad` rejects every request.', type: 'invalid_request_error', param: 'model', code: 'bad_request' },
          });
        }
        break;
      case 'capacity':
        if (admitted >= capacity) return rateLimited(res, `Server is at capacity (${capacity} concurrent requests).`);
        break;
    }

    if (kind === 'capacity') {
      admitted += 1;
      let released = false;
      const release = () => {
        if (!released) admitted -= 1;
        released = true;
      };
      res.on('close', release);
      await wait(delayMs);
      const result = answer();
      send(res, result.status, result.body);
      release();
      return;
    }
    await wait(delayMs);
    const result = answer();
    send(res, result.status, result.body);
  }

  /** Records one more attempt of `body`; returns its attempt number. */
  function countAttempt(body: unknown): number {
    const key = canonicalBodyKey(body);
    const attempt = (stats.byBody.get(key) ?? 0) + 1;
    stats.byBody.set(key, attempt);
    return attempt;
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      send(res, 500, errorEnvelope(`test upstream crashed: ${(err as Error).message}`, 'server_error', null));
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    if (closed) socket.destroy();
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  let closing: Promise<void> | null = null;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    stats,
    close() {
      closing ??= new Promise<void>((resolve) => {
        closed = true;
        for (const timer of timers) clearTimeout(timer);
        timers.clear();
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
        for (const res of unsettled) settle(res);
      });
      return closing;
    },
  };
}

// ---------------------------------------------------------------- helpers

function errorEnvelope(message: string, type: string, code: string | null) {
  return { error: { message, type, param: null, code } };
}

function modelList(ids = ['echo', 'bad']) {
  return {
    object: 'list',
    data: ids.map((id) => ({ id, object: 'model', created: 1_700_000_000, owned_by: 'spool-test' })),
  };
}

/** The whole request body, or null when it exceeds MAX_REQUEST_BYTES. */
async function readRequestBody(req: IncomingMessage): Promise<Buffer | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  let tooLarge = false;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.byteLength;
    if (size > MAX_REQUEST_BYTES) tooLarge = true;
    else chunks.push(chunk);
  }
  return tooLarge ? null : Buffer.concat(chunks);
}

/** A MultipartRecord, or an error message. Parsing is undici's own multipart/form-data parser. */
async function parseMultipart(contentType: string | undefined, raw: Buffer): Promise<MultipartRecord | string> {
  if (!contentType || !contentType.toLowerCase().startsWith('multipart/form-data')) {
    return 'Content-Type must be multipart/form-data.';
  }
  let form: Awaited<ReturnType<Request['formData']>>;
  try {
    form = await new Request('http://upstream.invalid/', { method: 'POST', headers: { 'content-type': contentType }, body: raw }).formData();
  } catch (err) {
    return `Malformed multipart body: ${(err as Error).message}`;
  }
  const fields: Record<string, string | string[]> = {};
  let fileName: string | null = null;
  let fileBytes: Uint8Array | null = null;
  for (const [name, value] of form.entries()) {
    if (typeof value === 'string') {
      const previous = fields[name];
      if (previous === undefined) fields[name] = value;
      else fields[name] = Array.isArray(previous) ? [...previous, value] : [previous, value];
    } else if (name === 'file') {
      fileName = value.name;
      fileBytes = new Uint8Array(await value.arrayBuffer());
    }
  }
  if (fileBytes === null || fileName === null) return 'file is required.';
  return { fields, fileName, fileBytes };
}

function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (isRecord(value)) {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) out[key] = sortKeys(value[key]);
    return out;
  }
  return value;
}

function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}

function isMultipartRecord(value: unknown): value is MultipartRecord {
  return isRecord(value) && value.fileBytes instanceof Uint8Array && typeof value.fileName === 'string' && isRecord(value.fields);
}
