// Shared setup for the end-to-end tests: a real Spool server on 127.0.0.1
// port 0 over a fresh temporary data directory (SQLite), keys for extra
// users, JSONL fixtures, and a bounded status poller. Everything started here
// is torn down by `stop()`, so `node --test` exits with no handles left.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSpool, type SpoolApp } from '../../src/app.ts';
import { createApiKey } from '../../src/auth/keys.ts';
import { parseConfig, type ConfigInput } from '../../src/config.ts';
import { revokeApiKey } from '../../src/store/sql/keys.ts';
import { startUpstream, type TestUpstream } from './upstreams.ts';

export const TEST_API_KEY = 'test-key-123456';

/**
 * Model the fixtures name by default. It routes to a slow loopback upstream
 * (one request at a time, SLOW_UPSTREAM_DELAY_MS each), so once a worker runs
 * requests a small batch still stays IN_PROGRESS long enough to be observed
 * and cancelled; today (no runner yet) it stays IN_PROGRESS anyway.
 */
export const SLOW_MODEL = 'slow-model';
export const SLOW_UPSTREAM_DELAY_MS = 250;

/** Generous: a loaded CI machine may be slow, but a stuck batch must still fail the test. */
export const DEFAULT_DEADLINE_MS = 30_000;

export interface TestSpool {
  app: SpoolApp;
  upstream: TestUpstream;
  url: string;
  dataDir: string;
  apiKey: string;
  /** Closes the server (and removes the data dir unless `keepDataDir`). Idempotent. */
  stop(options?: { keepDataDir?: boolean }): Promise<void>;
  /** A fresh key for another (non-admin) user. */
  keyFor(userId: string): Promise<string>;
  revokeKey(key: string): Promise<void>;
}

export interface StartOptions {
  /** Reuse a data dir (restart tests); otherwise a fresh temp dir is made. */
  dataDir?: string;
  /** Deep-merged over the test defaults. */
  config?: Partial<ConfigInput>;
  /** Delay of the slow upstream per request; default SLOW_UPSTREAM_DELAY_MS. */
  upstreamDelayMs?: number;
}

const tempDirs = new Set<string>();

export function makeTempDir(prefix = 'spool-e2e-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/** Removes every temp dir this process made that is still around (call from `after`). */
export function removeAllTempDirs(): void {
  for (const dir of [...tempDirs]) removeTempDir(dir);
}

export async function startTestSpool(options: StartOptions = {}): Promise<TestSpool> {
  const dataDir = options.dataDir ?? makeTempDir();
  const extra = options.config ?? {};
  const upstream = await startUpstream({ kind: 'slow', delayMs: options.upstreamDelayMs ?? SLOW_UPSTREAM_DELAY_MS });
  let app: SpoolApp;
  try {
    const config = parseConfig({
      port: 0,
      dataDir,
      adminKey: TEST_API_KEY,
      upstreams: [{ name: 'slow', baseUrl: upstream.url, models: ['slow-*'], maxConcurrency: 1, initialConcurrency: 1 }],
      ...extra,
      log: { level: (process.env.SPOOL_TEST_LOG as 'silent' | undefined) ?? 'silent', ...(extra.log ?? {}) },
      worker: { pollIntervalMs: 50, ...(extra.worker ?? {}) },
    });
    app = await startSpool(config);
  } catch (err) {
    await upstream.close();
    throw err;
  }
  let stopped = false;
  return {
    app,
    upstream,
    url: app.url,
    dataDir,
    apiKey: TEST_API_KEY,
    async stop({ keepDataDir = false } = {}) {
      if (!stopped) {
        stopped = true;
        try {
          await app.close();
        } finally {
          await upstream.close();
        }
      }
      if (!keepDataDir) removeTempDir(dataDir);
    },
    async keyFor(userId: string) {
      return (await createApiKey(app.store.sql.db, userId, false)).key;
    },
    async revokeKey(key: string) {
      const prefix = key.slice(0, 'spool_'.length + 6);
      const revoked = await revokeApiKey(app.store.sql.db, prefix, Date.now());
      assert.equal(revoked, 1, 'expected to revoke exactly one key');
    },
  };
}

// ---------------------------------------------------------------- fixtures

export interface ChatLineOptions {
  model?: string;
  /** Include the OpenAI-form "method" and "url". */
  openaiForm?: boolean;
}

export function chatLine(customId: string, options: ChatLineOptions = {}): Record<string, unknown> {
  const line: Record<string, unknown> = {
    custom_id: customId,
    body: { model: options.model ?? SLOW_MODEL, messages: [{ role: 'user', content: `hello from ${customId}` }], max_tokens: 16 },
  };
  if (options.openaiForm) {
    line.method = 'POST';
    line.url = '/v1/chat/completions';
  }
  return line;
}

/** Serialises lines (objects are JSON-encoded, strings kept verbatim) one per line, newline-terminated. */
export function jsonl(lines: Array<Record<string, unknown> | string>): string {
  return lines.map((line) => (typeof line === 'string' ? line : JSON.stringify(line))).join('\n') + '\n';
}

export function chatJsonl(count: number, options: ChatLineOptions & { prefix?: string } = {}): string {
  return jsonl(Array.from({ length: count }, (_, i) => chatLine(`${options.prefix ?? 'req'}-${i + 1}`, options)));
}

/** Writes `content` to `<dir>/<name>` and returns the path. */
export function writeFixture(dir: string, name: string, content: string | Buffer): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

// ---------------------------------------------------------------- HTTP

export type Json = Record<string, any>;

export interface ApiCall {
  status: number;
  headers: Headers;
  text: string;
  /** Parsed JSON body, or undefined when the body is not JSON. */
  json: any;
}

/** One HTTP call with fetch; never throws on a status. */
export async function call(url: string, init: RequestInit & { key?: string | null } = {}): Promise<ApiCall> {
  const { key, ...rest } = init;
  const headers = new Headers(rest.headers);
  if (key) headers.set('authorization', `Bearer ${key}`);
  const response = await fetch(url, { ...rest, headers, redirect: 'manual' });
  const text = await response.text();
  let json: any;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

/** JSON POST/GET convenience. */
export function callJson(url: string, key: string | null, method: string, body?: unknown, extraHeaders: Record<string, string> = {}): Promise<ApiCall> {
  return call(url, {
    method,
    key,
    headers: body === undefined ? extraHeaders : { 'content-type': 'application/json', ...extraHeaders },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

/** Multipart upload of `content` as the "file" part (OpenAI shape); returns the raw call. */
export function uploadMultipart(
  baseUrl: string,
  key: string,
  content: string | Buffer,
  fields: Record<string, string> = { purpose: 'batch' },
  fileName = 'input.jsonl',
  path = '/files',
): Promise<ApiCall> {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  form.append('file', new Blob([content]), fileName);
  return call(`${baseUrl}${path}`, { method: 'POST', key, body: form });
}

/** Uploads a batch input file through /openai/v1 and returns its id. */
export async function uploadBatchFile(spool: TestSpool, content: string, key = spool.apiKey, fileName = 'input.jsonl'): Promise<string> {
  const res = await uploadMultipart(`${spool.url}/openai/v1`, key, content, { purpose: 'batch' }, fileName);
  assert.equal(res.status, 200, `upload failed: ${res.status} ${res.text}`);
  return res.json.id as string;
}

/** Creates a batch through /openai/v1 and returns the OpenAI batch object. */
export async function createBatch(spool: TestSpool, inputFileId: string, key = spool.apiKey, extra: Json = {}): Promise<Json> {
  const res = await callJson(`${spool.url}/openai/v1/batches`, key, 'POST', {
    input_file_id: inputFileId,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
    ...extra,
  });
  assert.equal(res.status, 200, `create batch failed: ${res.status} ${res.text}`);
  return res.json;
}

// ---------------------------------------------------------------- polling

/**
 * Calls `read` until `done(value)` holds, sleeping `intervalMs` between
 * calls; fails with the last value seen once `deadlineMs` has passed.
 */
export async function pollUntil<T>(
  read: () => Promise<T>,
  done: (value: T) => boolean,
  { deadlineMs = DEFAULT_DEADLINE_MS, intervalMs = 25, what = 'condition' }: { deadlineMs?: number; intervalMs?: number; what?: string } = {},
): Promise<T> {
  const giveUpAt = Date.now() + deadlineMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > giveUpAt) {
      assert.fail(`timed out after ${deadlineMs} ms waiting for ${what}; last value: ${JSON.stringify(value)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/**
 * Polls GET <base>/batches/<id> (raw HTTP) until its status is one of
 * `statuses` (compared as given: lowercase for OpenAI, UPPERCASE for Together).
 */
export async function waitForBatchStatus(
  baseUrl: string,
  key: string,
  batchId: string,
  statuses: string | string[],
  options: { deadlineMs?: number } = {},
): Promise<Json> {
  const wanted = Array.isArray(statuses) ? statuses : [statuses];
  const res = await pollUntil(
    () => callJson(`${baseUrl}/batches/${encodeURIComponent(batchId)}`, key, 'GET'),
    (r) => r.status !== 200 || wanted.includes(r.json?.status),
    { ...options, what: `batch ${batchId} to reach ${wanted.join(' or ')}` },
  );
  assert.equal(res.status, 200, `GET batch ${batchId}: ${res.status} ${res.text}`);
  return res.json;
}

/** Every regular file under `dir`, recursively (relative paths). Missing dir = []. */
export function listFilesRecursive(dir: string, prefix = ''): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const name of names) {
    const path = join(dir, name);
    const rel = prefix ? `${prefix}/${name}` : name;
    if (statSync(path).isDirectory()) out.push(...listFilesRecursive(path, rel));
    else out.push(rel);
  }
  return out;
}

/** Asserts the CONTRACT.md error envelope and returns it. */
export function assertEnvelope(res: ApiCall, status: number, options: { param?: string | null; code?: string | null; messageMatch?: RegExp } = {}): Json {
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${res.text}`);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/, 'error bodies are JSON');
  const body = res.json;
  assert.ok(body && typeof body === 'object', `error body is a JSON object: ${res.text}`);
  assert.equal(typeof body.message, 'string');
  assert.ok(body.message.length > 10, `message says what to fix: ${body.message}`);
  assert.ok(body.error && typeof body.error === 'object', 'error is an object');
  assert.equal(body.error.message, body.message);
  assert.equal(typeof body.error.type, 'string');
  assert.ok(body.error.param === null || typeof body.error.param === 'string', 'param is a string or null');
  assert.ok(body.error.code === null || typeof body.error.code === 'string', `code is a string or null, got ${JSON.stringify(body.error.code)}`);
  if (options.param !== undefined) assert.equal(body.error.param, options.param, `param of: ${body.message}`);
  if (options.code !== undefined) assert.equal(body.error.code, options.code, `code of: ${body.message}`);
  if (options.messageMatch) assert.match(body.message, options.messageMatch);
  return body;
}

/** Parses a JSONL text into objects (blank lines skipped). */
export function parseJsonl(text: string): Json[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line));
}
