// A simulated OpenAI-compatible inference server on loopback, shaped like a
// continuous-batching engine (vLLM, SGLang): up to `concurrency` requests run
// at once, each taking `latencyMs`; up to `queue` more wait for a slot; any
// beyond that get 429 with retry-after-ms. Its ceiling is therefore
// concurrency / latency requests per second. latencyMs 0 with concurrency 0
// (unlimited) answers every request the moment its body has arrived.
//
// With prefillMs, it also plays an engine's prefix (KV) cache: a request whose
// leading messages (all but the last, as an engine's prefix caching sees them)
// are among the last `prefixCacheSize` prefixes it served skips the prefill
// and takes latencyMs; any other pays latencyMs + prefillMs and enters the cache.
//
// Run by the harness as a child process (options in SIM_UPSTREAM_OPTIONS), so
// its CPU is not the harness's; `startSimUpstream` also works in-process.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { serveParent } from './lib/child.ts';

export interface SimUpstreamOptions {
  /** Requests served at once; 0 = unlimited. */
  concurrency: number;
  /** Time each request takes once it has a slot, ms. */
  latencyMs: number;
  /** Requests that may wait for a slot; beyond this, 429. */
  queue: number;
  /** retry-after-ms sent with a 429. */
  retryAfterMs: number;
  /** Approximate size of a successful response body, bytes (at least ~300). */
  responseBytes: number;
  /** Extra time for a request whose prefix is not cached (the prefill); 0 = no prefix cache modelled. */
  prefillMs?: number;
  /** Prefixes the cache holds (LRU). */
  prefixCacheSize?: number;
}

export interface SimUpstreamStats {
  arrivals: number;
  served: number;
  rejected: number;
  maxActive: number;
  maxQueued: number;
  /** Date.now() of the first request's arrival and the last response, or null. */
  firstArrivalAt: number | null;
  lastResponseAt: number | null;
  /** Successful responses per BUCKET_MS since firstArrivalAt. */
  bucketMs: number;
  completions: number[];
  /** Requests whose prefix was cached, and those that paid the prefill (with prefillMs set). */
  prefixHits: number;
  prefixMisses: number;
}

export const DEFAULT_SIM_OPTIONS: SimUpstreamOptions = { concurrency: 32, latencyMs: 50, queue: 32, retryAfterMs: 50, responseBytes: 400 };
const BUCKET_MS = 10;

export interface SimUpstream {
  port: number;
  stats(): SimUpstreamStats;
  reset(): void;
  close(): Promise<void>;
}

/** A chat.completion body of about `bytes` bytes; only the id changes per response. */
function responseTemplate(bytes: number): { head: string; tail: string } {
  const head = '{"id":"chatcmpl-sim-';
  const before = '","object":"chat.completion","created":1700000000,"model":"sim","choices":[{"index":0,"message":{"role":"assistant","content":"';
  const after = '"},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":16,"total_tokens":40}}';
  const words = ['lorem', 'ipsum', 'dolor', 'sit', 'amet', 'consectetur', 'adipiscing', 'elit', 'sed', 'do', 'eiusmod', 'tempor'];
  let content = 'Simulated answer.';
  for (let i = 0; head.length + 8 + before.length + content.length + after.length < bytes; i++) content += ` ${words[i % words.length]}`;
  return { head, tail: before + content + after };
}

export async function startSimUpstream(options: SimUpstreamOptions): Promise<SimUpstream> {
  const unlimited = options.concurrency <= 0;
  const template = responseTemplate(options.responseBytes);
  const rejectBody = Buffer.from(
    JSON.stringify({ error: { message: 'The server is overloaded; retry later.', type: 'rate_limit_error', code: 'rate_limited' } }),
  );
  let stats: SimUpstreamStats;
  const prefillMs = options.prefillMs ?? 0;
  const prefixCache = new Map<string, true>();
  const reset = () => {
    stats = { arrivals: 0, served: 0, rejected: 0, maxActive: 0, maxQueued: 0, firstArrivalAt: null, lastResponseAt: null, bucketMs: BUCKET_MS, completions: [], prefixHits: 0, prefixMisses: 0 };
    prefixCache.clear();
  };
  reset();
  let active = 0;
  const waiting: ServerResponse[] = [];
  let sequence = 0;

  const respond = (res: ServerResponse) => {
    const body = Buffer.from(template.head + (++sequence).toString(36).padStart(8, '0') + template.tail);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
    res.end(body);
    const now = Date.now();
    stats.served += 1;
    stats.lastResponseAt = now;
    const bucket = Math.floor((now - (stats.firstArrivalAt ?? now)) / BUCKET_MS);
    while (stats.completions.length <= bucket) stats.completions.push(0);
    stats.completions[bucket] += 1;
  };
  const finish = (res: ServerResponse) => {
    active -= 1;
    respond(res);
    const next = waiting.shift();
    if (next) begin(next);
  };
  // Time a request takes once it has a slot: the prefill is paid by a prefix the cache does not hold.
  const serviceMs = (res: ServerResponse): number => {
    if (prefillMs <= 0) return options.latencyMs;
    const prefix = prefixes.get(res);
    prefixes.delete(res);
    if (prefix !== undefined && prefixCache.has(prefix)) {
      prefixCache.delete(prefix);
      prefixCache.set(prefix, true);
      stats.prefixHits += 1;
      return options.latencyMs;
    }
    stats.prefixMisses += 1;
    if (prefix !== undefined) {
      prefixCache.set(prefix, true);
      if (prefixCache.size > (options.prefixCacheSize ?? 0)) prefixCache.delete(prefixCache.keys().next().value as string);
    }
    return options.latencyMs + prefillMs;
  };
  const begin = (res: ServerResponse) => {
    active += 1;
    if (active > stats.maxActive) stats.maxActive = active;
    const ms = serviceMs(res);
    if (ms <= 0) finish(res);
    else setTimeout(finish, ms, res);
  };
  const prefixes = new WeakMap<ServerResponse, string>();
  const admit = (res: ServerResponse) => {
    stats.arrivals += 1;
    stats.firstArrivalAt ??= Date.now();
    if (unlimited || active < options.concurrency) begin(res);
    else if (waiting.length < options.queue) {
      waiting.push(res);
      if (waiting.length > stats.maxQueued) stats.maxQueued = waiting.length;
    } else {
      stats.rejected += 1;
      res.writeHead(429, { 'content-type': 'application/json', 'content-length': rejectBody.length, 'retry-after-ms': String(options.retryAfterMs) });
      res.end(rejectBody);
    }
  };

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.method !== 'POST') {
      res.writeHead(404).end();
      return;
    }
    if (prefillMs <= 0) {
      req.on('data', () => {});
      req.on('end', () => admit(res));
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const prefix = prefixOf(Buffer.concat(chunks));
      if (prefix !== undefined) prefixes.set(res, prefix);
      admit(res);
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    stats: () => stats,
    reset,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The leading messages (all but the last) as text, or undefined for a one-message request or a body that is not chat. */
function prefixOf(body: Buffer): string | undefined {
  try {
    const messages = (JSON.parse(body.toString('utf8')) as { messages?: unknown[] }).messages;
    return Array.isArray(messages) && messages.length > 1 ? JSON.stringify(messages.slice(0, -1)) : undefined;
  } catch {
    return undefined;
  }
}

// Child-process entry point.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const options: SimUpstreamOptions = { ...DEFAULT_SIM_OPTIONS, ...(JSON.parse(process.env.SIM_UPSTREAM_OPTIONS ?? '{}') as Partial<SimUpstreamOptions>) };
  const sim = await startSimUpstream(options);
  serveParent({ port: sim.port }, { stats: () => sim.stats(), reset: () => sim.reset() }, () => sim.close());
}
