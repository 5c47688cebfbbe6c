// The HTTP client behind `spool run`, `spool files` and `spool batches`. It
// speaks the OpenAI dialect (/openai/v1) of any Spool server with plain undici
// fetch, and turns every failure into a CliError whose exit code says what
// went wrong (unreachable, auth, not found, refused) and whose message is the
// server's own error envelope, so the user sees one readable line.
import { openAsBlob } from 'node:fs';
import { basename } from 'node:path';
import { fetch, FormData, type Response } from 'undici';
import { CliError, ExitCode, type ExitCodeValue } from './exit-codes.ts';

/** The OpenAI-dialect file object (CONTRACT.md), as far as the CLI reads it. */
export interface WireFile {
  id: string;
  object: 'file';
  bytes: number;
  created_at: number;
  filename: string;
  purpose: string;
  status?: string;
  expires_at?: number;
}

export interface WireUsage {
  start_date: string;
  end_date: string;
  user_id: string;
  data: Array<{
    date: string;
    model: string;
    user_id?: string;
    requests: number;
    input_tokens: number;
    output_tokens: number;
    total_tokens: number;
    cost: { amount: number; currency: string };
  }>;
}

export interface WireBatchError {
  code: string | null;
  message: string;
  param: string | null;
  line: number | null;
}

/** The OpenAI-dialect batch object (CONTRACT.md), as far as the CLI reads it. */
export interface WireBatch {
  id: string;
  object: 'batch';
  endpoint: string;
  status: string;
  input_file_id: string;
  output_file_id: string | null;
  error_file_id: string | null;
  completion_window: string;
  created_at: number;
  in_progress_at: number | null;
  completed_at: number | null;
  failed_at: number | null;
  expired_at: number | null;
  cancelled_at: number | null;
  expires_at: number | null;
  errors: { object: 'list'; data: WireBatchError[] } | null;
  request_counts: { total: number; completed: number; failed: number };
  usage?: { input_tokens: number; output_tokens: number; total_tokens: number };
  model?: string | null;
  metadata?: Record<string, string> | null;
  /** Set on a batch made by `retry`: the batch whose failed lines it reruns. */
  retry_of?: string | null;
  webhook_url?: string | null;
}

interface WireList<T> {
  object: 'list';
  data: T[];
  has_more?: boolean;
  last_id?: string | null;
}

export const DEFAULT_SERVER = 'http://127.0.0.1:8080';

// Metadata calls are small; a server that has not answered one in this long is treated as unreachable.
const CALL_TIMEOUT_MS = 30_000;
// OpenAI's batch list pages hold at most this many.
const PAGE_SIZE = 100;

/**
 * The server's origin plus any path prefix it is mounted under. Users paste
 * base URLs in every form (`…:8080`, `…/v1`, `…/openai/v1`); all mean the same server.
 */
export function normaliseServerUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new CliError(`--server "${raw}" is not a URL: pass something like ${DEFAULT_SERVER}`, ExitCode.usage);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new CliError(`--server "${raw}" must be an http:// or https:// URL`, ExitCode.usage);
  }
  const path = url.pathname.replace(/\/+$/, '').replace(/\/openai\/v1$|\/v1$/, '');
  return `${url.origin}${path}`;
}

export class SpoolClient {
  /** Base of the OpenAI-dialect routes, e.g. http://127.0.0.1:8080/openai/v1 */
  readonly apiBase: string;

  constructor(
    readonly serverUrl: string,
    private readonly apiKey: string,
  ) {
    this.apiBase = `${normaliseServerUrl(serverUrl)}/openai/v1`;
  }

  getBatch(id: string, signal?: AbortSignal): Promise<WireBatch> {
    return this.json('GET', `/batches/${encodeURIComponent(id)}`, { signal });
  }

  createBatch(args: { inputFileId: string; endpoint: string; completionWindow: string; metadata?: Record<string, string> }, signal?: AbortSignal): Promise<WireBatch> {
    const body = { input_file_id: args.inputFileId, endpoint: args.endpoint, completion_window: args.completionWindow, metadata: args.metadata };
    return this.json('POST', '/batches', { body, signal });
  }

  cancelBatch(id: string, signal?: AbortSignal): Promise<WireBatch> {
    return this.json('POST', `/batches/${encodeURIComponent(id)}/cancel`, { signal });
  }

  /** A new batch of the failed lines of a finished one; resolves with the new batch. */
  retryBatch(id: string, signal?: AbortSignal): Promise<WireBatch> {
    return this.json('POST', `/batches/${encodeURIComponent(id)}/retry`, { signal });
  }

  /** Usage by day and model (GET /usage); `query` as the API takes it (start_date, end_date, user_id, group_by). */
  usage(query: Record<string, string | undefined>): Promise<WireUsage> {
    const params = new URLSearchParams(Object.entries(query).filter((entry): entry is [string, string] => entry[1] !== undefined));
    const search = params.size > 0 ? `?${params}` : '';
    return this.json('GET', `/usage${search}`);
  }

  /** Newest first; follows `has_more` pages until `limit` batches (or all of them) are read. */
  listBatches(limit = Infinity): Promise<WireBatch[]> {
    return this.paged<WireBatch>('/batches', limit);
  }

  listFiles(options: { purpose?: string; limit?: number } = {}): Promise<WireFile[]> {
    const query = options.purpose ? `?purpose=${encodeURIComponent(options.purpose)}` : '';
    return this.paged<WireFile>(`/files${query}`, options.limit ?? Infinity);
  }

  getFile(id: string): Promise<WireFile> {
    return this.json('GET', `/files/${encodeURIComponent(id)}`);
  }

  deleteFile(id: string): Promise<{ id: string; deleted: boolean }> {
    return this.json('DELETE', `/files/${encodeURIComponent(id)}`);
  }

  /**
   * Uploads a local file as multipart/form-data. openAsBlob gives a Blob
   * backed by the file on disk, so the body is streamed from disk with an
   * exact Content-Length and never held in memory, whatever its size.
   */
  async uploadFile(path: string, purpose: string, signal?: AbortSignal): Promise<WireFile> {
    const form = new FormData();
    form.append('purpose', purpose);
    form.append('file', await openAsBlob(path), basename(path));
    const response = await this.send('POST', '/files', { body: form, signal });
    return (await readJson(response, this.apiBase)) as WireFile;
  }

  /** Opens a batch's results so far (GET /batches/{id}/results): the lines recorded until now, or once it ended its file. */
  async openResults(id: string, errors: boolean, signal?: AbortSignal): Promise<{ body: ReadableStream<Uint8Array>; complete: boolean; status: string }> {
    const response = await this.send('GET', `/batches/${encodeURIComponent(id)}/results${errors ? '?errors=true' : ''}`, { signal });
    if (!response.body) throw new CliError(`the server sent no results for batch ${id}`, ExitCode.unreachable);
    return {
      body: response.body as ReadableStream<Uint8Array>,
      complete: response.headers.get('x-spool-results-complete') === 'true',
      status: response.headers.get('x-spool-batch-status') ?? 'unknown',
    };
  }

  /** Opens a file's content for streaming; the caller consumes `body` (a web ReadableStream). */
  async openContent(id: string, signal?: AbortSignal): Promise<{ body: ReadableStream<Uint8Array>; length: number | undefined }> {
    const response = await this.send('GET', `/files/${encodeURIComponent(id)}/content`, { signal, headers: { accept: 'application/octet-stream' } });
    const header = response.headers.get('content-length');
    if (!response.body) throw new CliError(`the server sent no content for file ${id}`, ExitCode.unreachable);
    return { body: response.body as ReadableStream<Uint8Array>, length: header === null ? undefined : Number(header) };
  }

  private async paged<T extends { id: string }>(path: string, limit: number): Promise<T[]> {
    const items: T[] = [];
    let after: string | undefined;
    for (;;) {
      const separator = path.includes('?') ? '&' : '?';
      const pageSize = Math.min(PAGE_SIZE, limit - items.length);
      const page = await this.json<WireList<T>>('GET', `${path}${separator}limit=${pageSize}${after ? `&after=${encodeURIComponent(after)}` : ''}`);
      items.push(...page.data);
      const last = page.data.at(-1);
      if (!page.has_more || !last || items.length >= limit) return items;
      after = last.id;
    }
  }

  private async json<T>(method: string, path: string, options: { body?: unknown; signal?: AbortSignal } = {}): Promise<T> {
    const timeout = AbortSignal.timeout(CALL_TIMEOUT_MS);
    const response = await this.send(method, path, {
      signal: options.signal ? AbortSignal.any([options.signal, timeout]) : timeout,
      headers: options.body === undefined ? {} : { 'content-type': 'application/json' },
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
    return (await readJson(response, this.apiBase)) as T;
  }

  /** One request; resolves only with a 2xx response, otherwise throws a CliError. */
  private async send(method: string, path: string, init: { body?: string | FormData; signal?: AbortSignal; headers?: Record<string, string> }): Promise<Response> {
    const url = `${this.apiBase}${path}`;
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        body: init.body,
        signal: init.signal,
        headers: { authorization: `Bearer ${this.apiKey}`, 'user-agent': 'spool-cli', ...init.headers },
        redirect: 'manual',
      });
    } catch (err) {
      throw networkError(err, this.serverUrl);
    }
    if (response.status >= 200 && response.status < 300) return response;
    throw await httpError(response, method, url);
  }
}

function networkError(err: unknown, server: string): Error {
  const error = err as Error & { cause?: { code?: string; message?: string } };
  // A caller's own abort (Ctrl-C) is not a network failure: let it through as is.
  if (error?.name === 'AbortError') return error;
  if (error?.name === 'TimeoutError') return new CliError(`Spool at ${server} did not answer within ${CALL_TIMEOUT_MS / 1000} s`, ExitCode.unreachable);
  const reason = error?.cause?.message ?? error?.cause?.code ?? error?.message ?? String(err);
  return new CliError(`cannot reach Spool at ${server}: ${reason}`, ExitCode.unreachable);
}

async function readJson(response: Response, base: string): Promise<unknown> {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new CliError(`${base} answered HTTP ${response.status} with a body that is not JSON: is it a Spool server?`, ExitCode.unreachable);
  }
}

/** Maps an error response to a CliError carrying the envelope's message, the status and the error code. */
async function httpError(response: Response, method: string, url: string): Promise<CliError> {
  const text = await response.text().catch(() => '');
  let envelope: { message?: unknown; error?: { message?: unknown; code?: unknown } } | undefined;
  try {
    envelope = JSON.parse(text);
  } catch {
    envelope = undefined;
  }
  const message = typeof envelope?.message === 'string' ? envelope.message : typeof envelope?.error?.message === 'string' ? envelope.error.message : undefined;
  if (message === undefined) {
    // Not Spool's envelope: a proxy, another service on that port, or a crash page.
    return new CliError(`${method} ${url} answered HTTP ${response.status} ${response.statusText} without a Spool error body: is --server a Spool server?`, ExitCode.unreachable);
  }
  const code = typeof envelope?.error?.code === 'string' ? ` ${envelope.error.code}` : '';
  return new CliError(`${message} (HTTP ${response.status}${code})`, exitCodeForStatus(response.status));
}

export function exitCodeForStatus(status: number): ExitCodeValue {
  if (status === 401 || status === 403) return ExitCode.auth;
  if (status === 404) return ExitCode.notFound;
  if (status >= 500) return ExitCode.unreachable;
  return ExitCode.usage;
}
