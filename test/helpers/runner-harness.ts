// Shared setup for the data-plane end-to-end tests (the runner, the lifecycle
// sweeps, restarts and crashes): a real Spool in-process or as a child
// process (`node bin/spool.js serve`), real loopback test upstreams, raw-HTTP
// helpers, result-file checks and a bounded poller. Independent of
// test/helpers/spool.ts on purpose. Everything started here is registered and
// torn down by `cleanupAll()` (call it from `after`), so `node --test` exits.
import { presentBatch } from '../../src/api/presenters/index.ts';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { call, pollUntil as basePollUntil } from './spool.ts';
import { startSpool, type SpoolApp } from '../../src/app.ts';
import { createApiKey } from '../../src/auth/keys.ts';
import type { LifecycleContext } from '../../src/runtime/context.ts';
import { parseConfig, type Config, type ConfigInput } from '../../src/config.ts';
import { newWorkerId } from '../../src/ids.ts';
import type { Store } from '../../src/store/index.ts';
import { echoAudio, echoJson } from '../../src/upstreams/echo.ts';
import { canonicalBodyKey, startUpstream, type TestUpstream, type UpstreamOptions } from './upstreams.ts';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const HARNESS_API_KEY = 'harness-key-0123456789';
/** Generous: a loaded CI machine may be slow, but a stuck batch must still fail the test. */
export const DEFAULT_DEADLINE_MS = 60_000;

export type Json = Record<string, any>;
type WorkerInput = NonNullable<ConfigInput['worker']>;

/** Small knobs so tests run in seconds: short leases, fast polls, short retry backoff. */
export const FAST_WORKER: WorkerInput = {
  leaseSeconds: 2,
  pollIntervalMs: 50,
  retryBaseDelayMs: 20,
  retryMaxDelayMs: 200,
  maxAttempts: 5,
  requestTimeoutMs: 10_000,
};

// ---------------------------------------------------------------- cleanup registry

const cleanups = new Set<() => Promise<void> | void>();

function register(cleanup: () => Promise<void> | void): () => void {
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

/** Stops every server, upstream and child started here and removes every temp dir. Idempotent. */
export async function cleanupAll(): Promise<void> {
  // Newest first: servers before the upstreams they talk to, temp dirs last.
  for (const cleanup of [...cleanups].reverse()) {
    cleanups.delete(cleanup);
    try {
      await cleanup();
    } catch {
      // Best effort: one failed teardown must not keep the rest alive.
    }
  }
}

export function makeTempDir(prefix = 'spool-dp-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  register(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------- upstreams

export interface UpstreamSpec extends UpstreamOptions {
  name: string;
  models: string[];
  maxConcurrency?: number;
  initialConcurrency?: number;
  requestsPerMinute?: number;
  tokensPerMinute?: number;
  /** Reach the upstream through a recording proxy (Harness.proxies[name]) that timestamps every attempt. */
  recorded?: boolean;
}

/** A loopback test upstream that is closed by cleanupAll(). */
export async function startTestUpstream(options: UpstreamOptions): Promise<TestUpstream> {
  const upstream = await startUpstream(options);
  register(() => upstream.close());
  return upstream;
}

// ---------------------------------------------------------------- in-process Spool

export interface HarnessOptions {
  upstreams?: UpstreamSpec[];
  worker?: WorkerInput;
  /** Reuse a data dir (restarts); a fresh temp dir otherwise. */
  dataDir?: string;
  /** Extra config keys, merged over the defaults (worker and upstreams come from their own options). */
  config?: Partial<ConfigInput>;
}

export interface Harness {
  app: SpoolApp;
  config: Config;
  url: string;
  /** Base of the OpenAI dialect: `${url}/openai/v1`. */
  openai: string;
  /** Base of the Together dialect: `${url}/v1`. */
  together: string;
  apiKey: string;
  dataDir: string;
  upstreams: Record<string, TestUpstream>;
  /** Recording proxies of the upstreams started with `recorded: true`. */
  proxies: Record<string, RecordingProxy>;
  /** A key for another (non-admin) user. */
  keyFor(userId: string): Promise<string>;
  /** Closes the server and its upstreams; the data dir stays until cleanupAll(). Idempotent. */
  stop(): Promise<void>;
}

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const dataDir = options.dataDir ?? makeTempDir();
  const upstreams: Record<string, TestUpstream> = {};
  const proxies: Record<string, RecordingProxy> = {};
  const configured: NonNullable<ConfigInput['upstreams']> = [];
  for (const spec of options.upstreams ?? []) {
    const { name, models, maxConcurrency, initialConcurrency, requestsPerMinute, tokensPerMinute, recorded, ...upstreamOptions } = spec;
    const upstream = await startTestUpstream(upstreamOptions);
    upstreams[name] = upstream;
    let baseUrl = upstream.url;
    if (recorded) {
      proxies[name] = await startRecordingProxy(upstream.url);
      baseUrl = proxies[name].url;
    }
    configured.push({ name, baseUrl, models, maxConcurrency, initialConcurrency, requestsPerMinute, tokensPerMinute });
  }
  const config = parseConfig({
    port: 0,
    dataDir,
    adminKey: HARNESS_API_KEY,
    ...options.config,
    log: { level: (process.env.SPOOL_TEST_LOG as 'silent' | undefined) ?? 'silent' },
    worker: { ...FAST_WORKER, ...options.worker },
    // Upstreams started here, then any given as they are in config (servers the test runs itself).
    upstreams: [...configured, ...(options.config?.upstreams ?? [])],
  });
  const app = await startSpool(config);
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      unregister();
      try {
        await app.close();
      } finally {
        await Promise.all([...Object.values(proxies), ...Object.values(upstreams)].map((u) => u.close()));
      }
    })());
  const unregister = register(stop);
  return {
    app,
    config,
    url: app.url,
    openai: `${app.url}/openai/v1`,
    together: `${app.url}/v1`,
    apiKey: HARNESS_API_KEY,
    dataDir,
    upstreams,
    proxies,
    keyFor: async (userId) => (await createApiKey(app.store.sql.db, userId, false)).key,
    stop,
  };
}

/** A lifecycle context on `store`, as another process would have: for running sweeps by hand. */
export function lifecycleContext(store: Store, config: Config, workerId = newWorkerId()): LifecycleContext {
  const quiet = () => undefined;
  return { store, config, workerId, presentBatch: (batch) => presentBatch(batch.dialect, batch), log: { info: quiet, warn: quiet, error: quiet } };
}

// ---------------------------------------------------------------- raw HTTP

export interface ApiAnswer {
  status: number;
  headers: Headers;
  text: string;
  json: any;
}

export async function api(url: string, key: string | null, init: RequestInit = {}): Promise<ApiAnswer> {
  return call(url, { ...init, key });
}

/** Where a client talks to one server: a dialect base URL and a key. */
export interface Endpoint {
  /** `${url}/openai/v1` (results are OpenAI batch objects). */
  base: string;
  key: string;
}

export const endpointOf = (h: Pick<Harness, 'openai' | 'apiKey'>, key = h.apiKey): Endpoint => ({ base: h.openai, key });

/** Multipart upload (the OpenAI shape); returns the file object. */
export async function uploadFile(
  ep: Endpoint,
  content: string | Uint8Array,
  fileName = 'input.jsonl',
  fields: Record<string, string> = { purpose: 'batch' },
): Promise<Json> {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  form.append('file', new Blob([content]), fileName);
  const res = await api(`${ep.base}/files`, ep.key, { method: 'POST', body: form });
  assert.equal(res.status, 200, `upload failed: ${res.status} ${res.text}`);
  return res.json;
}

export interface CreateOptions {
  endpoint?: string;
  priority?: number;
  completionWindow?: string;
  extra?: Json;
}

export async function createBatch(ep: Endpoint, inputFileId: string, options: CreateOptions = {}): Promise<Json> {
  const body: Json = {
    input_file_id: inputFileId,
    endpoint: options.endpoint ?? '/v1/chat/completions',
    completion_window: options.completionWindow ?? '24h',
    ...options.extra,
  };
  if (options.priority !== undefined) body.priority = options.priority;
  const res = await api(`${ep.base}/batches`, ep.key, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  assert.equal(res.status, 200, `create batch failed: ${res.status} ${res.text}`);
  return res.json;
}

/** Uploads `lines` as JSONL and creates a batch on them. */
export async function submitBatch(ep: Endpoint, lines: Json[], options: CreateOptions & { fileName?: string } = {}): Promise<Json> {
  const file = await uploadFile(ep, toJsonl(lines), options.fileName ?? 'input.jsonl');
  return createBatch(ep, file.id, options);
}

export async function getBatch(ep: Endpoint, id: string): Promise<Json> {
  const res = await api(`${ep.base}/batches/${encodeURIComponent(id)}`, ep.key);
  assert.equal(res.status, 200, `GET batch ${id}: ${res.status} ${res.text}`);
  return res.json;
}

export async function cancelBatch(ep: Endpoint, id: string): Promise<Json> {
  const res = await api(`${ep.base}/batches/${encodeURIComponent(id)}/cancel`, ep.key, { method: 'POST' });
  assert.equal(res.status, 200, `cancel ${id}: ${res.status} ${res.text}`);
  return res.json;
}

export async function downloadText(ep: Endpoint, fileId: string): Promise<string> {
  const res = await api(`${ep.base}/files/${encodeURIComponent(fileId)}/content`, ep.key);
  assert.equal(res.status, 200, `download ${fileId}: ${res.status} ${res.text}`);
  return res.text;
}

// ---------------------------------------------------------------- polling

/** spool.ts's poller with this harness's longer default deadline (child processes restart mid-run). */
export function pollUntil<T>(
  read: () => Promise<T>,
  done: (value: T) => boolean,
  options: { deadlineMs?: number; intervalMs?: number; what?: string } = {},
): Promise<T> {
  return basePollUntil(read, done, { deadlineMs: DEFAULT_DEADLINE_MS, ...options });
}

const TERMINAL = ['completed', 'failed', 'expired', 'cancelled'];

/** Polls the OpenAI batch object until its status is one of `statuses`; a different terminal status fails at once. */
export async function waitForStatus(ep: Endpoint, id: string, statuses: string | string[], deadlineMs = DEFAULT_DEADLINE_MS): Promise<Json> {
  const wanted = Array.isArray(statuses) ? statuses : [statuses];
  const batch = await pollUntil(
    () => getBatch(ep, id),
    (b) => wanted.includes(b.status) || TERMINAL.includes(b.status),
    { deadlineMs, what: `batch ${id} to reach ${wanted.join('/')}` },
  );
  assert.ok(wanted.includes(batch.status), `batch ${id} ended ${batch.status}, expected ${wanted.join('/')}: ${clip(JSON.stringify(batch))}`);
  return batch;
}

/** Polls until at least `count` requests of the batch have an outcome (completed + failed). */
export async function waitForProgress(ep: Endpoint, id: string, count: number, deadlineMs = DEFAULT_DEADLINE_MS): Promise<Json> {
  return pollUntil(
    () => getBatch(ep, id),
    (b) => b.request_counts.completed + b.request_counts.failed >= count || TERMINAL.includes(b.status),
    { deadlineMs, what: `batch ${id} to have ${count} results` },
  );
}

function clip(text: string | undefined, max = 2000): string {
  if (text === undefined) return 'undefined';
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

// ---------------------------------------------------------------- fixtures

export function toJsonl(lines: Json[]): string {
  return lines.map((line) => JSON.stringify(line)).join('\n') + '\n';
}

export function parseJsonl(text: string): Json[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line));
}

export function chatLine(customId: string, model: string, extra: Json = {}): Json {
  return {
    custom_id: customId,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model, messages: [{ role: 'user', content: `Say hello to ${customId}, briefly.` }], max_tokens: 8, ...extra },
  };
}

export function chatLines(count: number, model: string, prefix = 'req'): Json[] {
  return Array.from({ length: count }, (_, i) => chatLine(`${prefix}-${i + 1}`, model));
}

/** An upstream answer without its `created` timestamp (the only part of an echo answer that varies). */
export function stripCreated(body: unknown): unknown {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return body;
  const { created: _created, ...rest } = body as Json;
  return rest;
}

/** What the echo emulator (in-process or behind a test upstream) answers for a JSON line, minus `created`. */
export function expectedEcho(endpoint: string, body: Json): unknown {
  const result = echoJson(endpoint, JSON.parse(JSON.stringify(body)));
  assert.equal(result.status, 200, `fixture is not a valid ${endpoint} request: ${JSON.stringify(result.body)}`);
  return stripCreated(result.body);
}

export function expectedEchoAudio(kind: 'transcriptions' | 'translations', fields: Record<string, string>, bytes: Uint8Array, fileName: string): unknown {
  const result = echoAudio(kind, fields, bytes, fileName);
  assert.equal(result.status, 200, `fixture is not a valid audio request: ${JSON.stringify(result.body)}`);
  return result.body;
}

// ---------------------------------------------------------------- results

export interface Results {
  batch: Json;
  output: Json[];
  errors: Json[];
  outputText: string;
  errorText: string;
}

/** Downloads a finished batch's output and error files (both must exist). */
export async function readResults(ep: Endpoint, batch: Json): Promise<Results> {
  assert.ok(batch.output_file_id, `batch ${batch.id} (${batch.status}) has an output file`);
  assert.ok(batch.error_file_id, `batch ${batch.id} (${batch.status}) has an error file`);
  const outputText = await downloadText(ep, batch.output_file_id);
  const errorText = await downloadText(ep, batch.error_file_id);
  return { batch, output: parseJsonl(outputText), errors: parseJsonl(errorText), outputText, errorText };
}

/**
 * The invariant every batch keeps: each custom_id of the input is in exactly
 * one of the two files, exactly once, and the files hold nothing else; the
 * batch's request_counts agree with them.
 */
export function assertExactlyOnce(expectedIds: string[], results: Pick<Results, 'output' | 'errors' | 'batch'>): void {
  const seen = new Map<string, number>();
  for (const line of [...results.output, ...results.errors]) seen.set(line.custom_id, (seen.get(line.custom_id) ?? 0) + 1);
  const duplicated = [...seen].filter(([, n]) => n > 1).map(([id, n]) => `${id} x${n}`);
  assert.deepEqual(duplicated, [], 'no custom_id appears more than once across output and error files');
  const expected = new Set(expectedIds);
  const missing = expectedIds.filter((id) => !seen.has(id));
  assert.deepEqual(missing.slice(0, 20), [], `every custom_id has a result (${missing.length} missing)`);
  const extra = [...seen.keys()].filter((id) => !expected.has(id));
  assert.deepEqual(extra, [], 'no result for a custom_id that is not in the input');
  for (const line of results.output) {
    assert.equal(line.error, null, `output line ${line.custom_id} has error null`);
    assert.equal(typeof line.id, 'string');
    assert.ok(line.response && typeof line.response.status_code === 'number', `output line ${line.custom_id} has a response`);
  }
  for (const line of results.errors) {
    assert.equal(typeof line.id, 'string');
    assert.ok(line.error && typeof line.error.code === 'string' && typeof line.error.message === 'string', `error line ${line.custom_id} has error {code, message}`);
    assert.ok('response' in line, 'error lines carry "response" (an object or null)');
  }
  const ids = [...results.output, ...results.errors].map((line) => line.id);
  assert.equal(new Set(ids).size, ids.length, 'line ids are unique');
  const counts = results.batch.request_counts;
  if (counts) {
    assert.equal(counts.total, expectedIds.length, 'request_counts.total');
    assert.equal(counts.completed, results.output.length, 'request_counts.completed = output lines');
    assert.equal(counts.failed, results.errors.length, 'request_counts.failed = error lines');
  }
}

/** Output lines' usage, summed as the batch's usage should be. */
export function sumUsage(output: Json[]): { input: number; output: number } {
  let input = 0;
  let out = 0;
  for (const line of output) {
    const usage = line.response?.body?.usage;
    if (!usage) continue;
    input += usage.prompt_tokens ?? usage.input_tokens ?? 0;
    out += usage.completion_tokens ?? usage.output_tokens ?? 0;
  }
  return { input, output: out };
}

/** Every output line is a 200 whose body is what the echo emulator answers for that line's input. */
export function assertEchoOutput(endpoint: string, inputs: Map<string, Json>, output: Json[]): void {
  for (const line of output) {
    const input = inputs.get(line.custom_id);
    assert.ok(input, `output for unknown custom_id ${line.custom_id}`);
    assert.equal(line.response.status_code, 200, `status of ${line.custom_id}`);
    assert.deepEqual(stripCreated(line.response.body), expectedEcho(endpoint, input.body), `answer for ${line.custom_id}`);
  }
}

export const byCustomId = (lines: Json[]): Map<string, Json> => new Map(lines.map((line) => [line.custom_id, line]));

// ---------------------------------------------------------------- recording proxy

export interface ProxyEvent {
  /** canonicalBodyKey of the request body (JSON bodies); the raw text otherwise. */
  key: string;
  receivedAt: number;
  status: number | null;
  respondedAt: number | null;
}

export interface RecordingProxy {
  /** Base URL ending in /v1, like a TestUpstream's. */
  url: string;
  events: ProxyEvent[];
  close(): Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'content-encoding']);

/**
 * A loopback HTTP proxy in front of a test upstream that timestamps every
 * request and answer, so a test can check when retries came back. A request
 * the upstream never answered (a reset) is cut off the same way.
 */
export async function startRecordingProxy(targetBaseUrl: string): Promise<RecordingProxy> {
  const origin = new URL(targetBaseUrl).origin;
  const events: ProxyEvent[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    void (async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk);
      const body = Buffer.concat(chunks);
      let key = body.toString('utf8');
      try {
        key = canonicalBodyKey(JSON.parse(key));
      } catch {
        // not JSON: keep the text
      }
      const event: ProxyEvent = { key, receivedAt: Date.now(), status: null, respondedAt: null };
      // Inference requests only: Spool's reads of an engine's own load endpoints (GET /props, /metrics) are not attempts.
      if (req.method !== 'GET') events.push(event);
      try {
        const headers: Record<string, string> = {};
        for (const name of ['content-type', 'authorization', 'accept']) {
          const value = req.headers[name];
          if (typeof value === 'string') headers[name] = value;
        }
        const answer = await fetch(`${origin}${req.url ?? '/'}`, { method: req.method, headers, body: req.method === 'GET' ? undefined : body });
        const bytes = Buffer.from(await answer.arrayBuffer());
        event.status = answer.status;
        event.respondedAt = Date.now();
        const out: Record<string, string> = {};
        answer.headers.forEach((value, name) => {
          if (!HOP_BY_HOP.has(name)) out[name] = value;
        });
        res.writeHead(answer.status, { ...out, 'content-length': String(bytes.length) });
        res.end(bytes);
      } catch {
        req.socket.destroy();
      }
    })();
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    }));
  register(close);
  return { url: `http://127.0.0.1:${port}/v1`, events, close };
}

export type StaticFile =
  | { bytes: Uint8Array; contentType: string; status?: number }
  /** Never answered. */
  | { hang: true }
  /** Answers `status` and starts a body it never finishes. */
  | { status: number; unfinishedBody: true };

/**
 * A loopback server answering GET /<name> with fixed bytes (audio fetched by
 * URL), or misbehaving as a StaticFile says; `requests` lists what arrived.
 */
export async function startStaticServer(files: Record<string, StaticFile>): Promise<{ url: string; requests: string[]; close(): Promise<void> }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    const name = (req.url ?? '/').split('?')[0].slice(1);
    requests.push(name);
    const file = files[name];
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    if ('hang' in file) return;
    if ('unfinishedBody' in file) {
      res.writeHead(file.status, { 'content-type': 'text/plain', 'content-length': '100000' });
      res.write('not found, and this body is never finished');
      return;
    }
    res.writeHead(file.status ?? 200, { 'content-type': file.contentType, 'content-length': String(file.bytes.length) });
    res.end(file.bytes);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }));
  register(close);
  return { url: `http://127.0.0.1:${port}`, requests, close };
}

// ---------------------------------------------------------------- PostgreSQL

/** As in test/store/sql-contract.test.ts: PostgreSQL tests run unless SPOOL_TEST_SKIP_POSTGRES=1. */
export const SKIP_POSTGRES = process.env.SPOOL_TEST_SKIP_POSTGRES === '1';

function postgresAdminUrls(): string[] {
  if (process.env.SPOOL_TEST_POSTGRES_URL) return [process.env.SPOOL_TEST_POSTGRES_URL];
  let osUser: string | undefined;
  try {
    osUser = userInfo().username;
  } catch {
    osUser = undefined;
  }
  const users = [process.env.PGUSER, osUser, 'postgres'].filter((u): u is string => Boolean(u));
  return [...new Set(users)].map((user) => `postgres://${encodeURIComponent(user)}@127.0.0.1:5432/postgres`);
}

/**
 * A fresh, empty PostgreSQL database for one test (dropped by cleanupAll()),
 * reached through SPOOL_TEST_POSTGRES_URL or the local server; returns its URL.
 */
export async function createPostgresDatabase(): Promise<string> {
  const failures: string[] = [];
  for (const adminUrl of postgresAdminUrls()) {
    const admin = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 5000 });
    try {
      await admin.connect();
    } catch (err) {
      failures.push(`${adminUrl}: ${(err as Error).message}`);
      await admin.end().catch(() => undefined);
      continue;
    }
    const name = `spool_dp_${randomBytes(8).toString('hex')}`;
    await admin.query(`CREATE DATABASE ${name}`);
    register(async () => {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
      await admin.end().catch(() => undefined);
    });
    const url = new URL(adminUrl);
    url.pathname = `/${name}`;
    return url.toString();
  }
  return assert.fail(
    `PostgreSQL is unreachable:\n  ${failures.join('\n  ')}\nStart PostgreSQL (or set SPOOL_TEST_POSTGRES_URL), or set SPOOL_TEST_SKIP_POSTGRES=1 to skip these tests.`,
  );
}

// ---------------------------------------------------------------- child process

export interface ChildProcessHandle {
  child: ChildProcess;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** stdout and stderr so far. */
  output(): string;
  /** SIGKILL and wait for the exit. */
  kill(): Promise<void>;
}

export interface ChildSpool extends ChildProcessHandle {
  url: string;
  openai: string;
}

export interface ChildOptions {
  dataDir: string;
  /** Config file contents (JSON); written to a temp file. */
  config: Json;
  apiKey?: string;
  /** PostgreSQL instead of SQLite in the data dir (passed as DATABASE_URL). */
  databaseUrl?: string;
  /** More `spool serve` flags, e.g. ['--no-worker']. */
  extraArgs?: string[];
  startDeadlineMs?: number;
  /**
   * The child's environment: by default only what it needs, with no SPOOL_* variable of the test process.
   * `inherit` passes this process's whole environment on unstripped, as a user's shell or a pod would, plus `env`.
   */
  environment?: 'clean' | 'inherit';
  /** More variables, set after the rest (both environments). */
  env?: NodeJS.ProcessEnv;
}

/** Spawns `node bin/spool.js <args>` with a clean SPOOL_* environment; resolves once `ready` matches its stdout. */
export async function spawnSpool(args: string[], options: ChildOptions, ready: RegExp): Promise<ChildProcessHandle & { match: RegExpExecArray }> {
  const configPath = join(makeTempDir('spool-cfg-'), 'spool.config.json');
  writeFileSync(configPath, JSON.stringify(options.config));
  let env: NodeJS.ProcessEnv = {};
  if (options.environment === 'inherit') env = { ...process.env };
  else {
    // Only what the child needs: no SPOOL_* settings of the test process leak in.
    for (const [name, value] of Object.entries(process.env)) if (!name.startsWith('SPOOL_') && name !== 'DATABASE_URL') env[name] = value;
    env.SPOOL_ADMIN_KEY = options.apiKey ?? HARNESS_API_KEY;
    env.SPOOL_LOG_LEVEL = process.env.SPOOL_TEST_CHILD_LOG ?? 'silent';
  }
  if (options.databaseUrl) env.DATABASE_URL = options.databaseUrl;
  Object.assign(env, options.env);
  const child = spawn(process.execPath, ['bin/spool.js', ...args, '--data-dir', options.dataDir, '--config', configPath, ...(options.extraArgs ?? [])], {
    cwd: REPO_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  let gone = false;
  void exited.then(() => (gone = true));
  const kill = async () => {
    if (!gone) child.kill('SIGKILL');
    await exited;
  };
  const unregister = register(kill);
  void exited.then(unregister);

  const what = `spool ${args[0]}`;
  const deadline = Date.now() + (options.startDeadlineMs ?? 30_000);
  for (;;) {
    const match = ready.exec(text);
    if (match) return { child, exited, output: () => text, kill, match };
    if (gone) assert.fail(`${what} exited before it was ready: ${clip(text)}`);
    if (Date.now() > deadline) {
      await kill();
      assert.fail(`${what} was not ready in time: ${clip(text)}`);
    }
    await sleep(20);
  }
}

/**
 * `node bin/spool.js serve --port 0 --data-dir D --config C` with
 * SPOOL_ADMIN_KEY set and logs silenced; resolves once it prints its URL.
 */
export async function startChildSpool(options: ChildOptions): Promise<ChildSpool> {
  const { match, ...handle } = await spawnSpool(['serve', '--port', '0'], options, /Spool listening on (http:\/\/[^\s]+)/);
  const url = match[1];
  return { ...handle, url, openai: `${url}/openai/v1` };
}

/** `node bin/spool.js worker --data-dir D --config C` (runner and sweeps, no HTTP); resolves once it is running. */
export async function startChildWorker(options: ChildOptions): Promise<ChildProcessHandle> {
  const { match: _match, ...handle } = await spawnSpool(['worker'], options, /Spool worker running/);
  return handle;
}

/** Resolves with the exit, or fails the test (and SIGKILLs the child) once `deadlineMs` passes. */
export async function waitForExit(spool: ChildProcessHandle, deadlineMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), deadlineMs);
  });
  const result = await Promise.race([spool.exited, timeout]);
  clearTimeout(timer);
  if (result === 'timeout') {
    await spool.kill();
    assert.fail(`the process did not exit within ${deadlineMs} ms; output: ${clip(spool.output())}`);
  }
  return result;
}
