// A loopback inference server that behaves like llama.cpp's (or vLLM's) on a
// small machine: a fixed number of slots decode together in steps, one token
// per running request per step; a step takes longer the more requests run
// (they share the compute), so throughput grows with concurrency up to the
// slots, and requests beyond the slots wait. Waiting connections are not free:
// each one slows every step a little (as llama.cpp's throughput falls the
// more connections queue: 46.9 req/s at 4 concurrent, 35.4 at 8, 23.0 at 16,
// 6.1 at 64 on a 2-core machine, measured with a plain client loop). So the
// best concurrency is the slots, and every request sent beyond them costs
// throughput: the knee a client has to find.
//
// Variants: `props` answers llama.cpp's GET /props (total_slots) and
// GET /slots; `metrics` answers GET /metrics with llama.cpp's
// requests_processing / requests_deferred gauges; both off, it hides
// everything but the OpenAI routes (a gateway). `rejectWhenQueued` answers 429
// to a request that would have to wait (a gateway with no queue).
//
// Used in-process by unit-level tests, in a child process of its own by the
// end-to-end ones (startSimEngineProcess), and as a child process by the
// benchmark (bench/sim-engine.ts).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { fileURLToPath } from 'node:url';

export interface SimEngineOptions {
  slots: number;
  /** Duration of one decode step with one request running, ms. */
  stepMs: number;
  /** Extra step time per additional running request, as a fraction of stepMs (shared compute). */
  batchCost: number;
  /** Extra step time per waiting connection, as a fraction of stepMs (the per-connection overhead). */
  queueCost: number;
  /** Tokens generated per request when the request sets no max_tokens. */
  defaultTokens: number;
  /** Answer GET /props and GET /slots as llama.cpp does. */
  props: boolean;
  /** Answer GET /metrics as llama.cpp --metrics does. */
  metrics: boolean;
  /** Answer 429 (retry-after-ms) instead of queueing a request beyond the slots. */
  rejectWhenQueued: boolean;
}

export const SIM_ENGINE_DEFAULTS: SimEngineOptions = {
  slots: 4,
  stepMs: 2,
  batchCost: 0.3,
  queueCost: 0.09,
  defaultTokens: 16,
  props: false,
  metrics: false,
  rejectWhenQueued: false,
};

export interface SimEngineStats {
  arrivals: number;
  served: number;
  rejected: number;
  maxRunning: number;
  maxWaiting: number;
  /** Concurrency (running + waiting) seen at each arrival, summed, for the mean. */
  concurrencySum: number;
  firstArrivalAt: number | null;
  lastResponseAt: number | null;
  tokens: number;
}

export interface SimEngine {
  /** OpenAI-style base URL: http://127.0.0.1:PORT/v1 */
  baseUrl: string;
  port: number;
  stats(): SimEngineStats;
  reset(): void;
  /** Reads the stats anew (a child process's; in-process they are always current). */
  refreshStats(): Promise<SimEngineStats>;
  close(): Promise<void>;
}

interface Sequence {
  res: ServerResponse;
  left: number;
  tokens: number;
  prompt: number;
}

export async function startSimEngine(overrides: Partial<SimEngineOptions> = {}): Promise<SimEngine> {
  const options = { ...SIM_ENGINE_DEFAULTS, ...overrides };
  let stats: SimEngineStats;
  const reset = () => {
    stats = { arrivals: 0, served: 0, rejected: 0, maxRunning: 0, maxWaiting: 0, concurrencySum: 0, firstArrivalAt: null, lastResponseAt: null, tokens: 0 };
  };
  reset();
  const running: Sequence[] = [];
  const waiting: Sequence[] = [];
  let stepTimer: NodeJS.Timeout | undefined;
  let sequence = 0;

  const stepDuration = () => options.stepMs * (1 + options.batchCost * Math.max(0, running.length - 1) + options.queueCost * waiting.length);

  const step = () => {
    stepTimer = undefined;
    for (const seq of [...running]) {
      seq.left -= 1;
      if (seq.left > 0) continue;
      running.splice(running.indexOf(seq), 1);
      answer(seq);
    }
    while (running.length < options.slots && waiting.length > 0) running.push(waiting.shift()!);
    schedule();
  };
  const schedule = () => {
    if (stepTimer || running.length === 0) return;
    stepTimer = setTimeout(step, stepDuration());
  };

  const answer = (seq: Sequence) => {
    if (seq.res.destroyed) return;
    const body = JSON.stringify({
      id: `chatcmpl-sim-${(++sequence).toString(36)}`,
      object: 'chat.completion',
      created: 1_700_000_000,
      model: 'sim-engine',
      choices: [{ index: 0, message: { role: 'assistant', content: 'token '.repeat(Math.min(seq.tokens, 64)).trim() }, finish_reason: 'length' }],
      usage: { prompt_tokens: seq.prompt, completion_tokens: seq.tokens, total_tokens: seq.prompt + seq.tokens },
    });
    seq.res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
    stats.served += 1;
    stats.tokens += seq.tokens;
    stats.lastResponseAt = Date.now();
  };

  const admit = (res: ServerResponse, body: string) => {
    stats.arrivals += 1;
    stats.firstArrivalAt ??= Date.now();
    stats.concurrencySum += running.length + waiting.length + 1;
    let maxTokens = options.defaultTokens;
    let prompt = 8;
    try {
      const parsed = JSON.parse(body) as { max_tokens?: unknown; messages?: unknown };
      if (typeof parsed.max_tokens === 'number' && parsed.max_tokens > 0) maxTokens = Math.min(Math.floor(parsed.max_tokens), 4096);
      prompt = Math.max(1, Math.ceil(JSON.stringify(parsed.messages ?? '').length / 4));
    } catch {
      // Not JSON: the defaults.
    }
    const seq: Sequence = { res, left: maxTokens, tokens: maxTokens, prompt };
    if (running.length < options.slots) running.push(seq);
    else if (options.rejectWhenQueued) {
      stats.rejected += 1;
      const refusal = JSON.stringify({ error: { message: 'all slots are busy', type: 'rate_limit_error' } });
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after-ms': String(Math.round(options.stepMs * maxTokens)) }).end(refusal);
      return;
    } else waiting.push(seq);
    stats.maxRunning = Math.max(stats.maxRunning, running.length);
    stats.maxWaiting = Math.max(stats.maxWaiting, waiting.length);
    // A request that hangs up stops costing anything.
    res.on('close', () => {
      if (res.writableEnded) return;
      for (const list of [running, waiting]) {
        const at = list.indexOf(seq);
        if (at !== -1) list.splice(at, 1);
      }
    });
    schedule();
  };

  const json = (res: ServerResponse, status: number, value: unknown) => {
    const body = JSON.stringify(value);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
  };

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/props' && options.props) {
      return json(res, 200, { default_generation_settings: { n_ctx: 4096, params: { n_predict: -1 } }, total_slots: options.slots, model_path: 'sim.gguf', chat_template: '' });
    }
    if (req.method === 'GET' && path === '/slots' && options.props) {
      return json(res, 200, Array.from({ length: options.slots }, (_, id) => ({ id, id_task: -1, n_ctx: 4096, is_processing: id < running.length })));
    }
    if (req.method === 'GET' && path === '/metrics' && options.metrics) {
      const text =
        '# HELP llamacpp:requests_processing Number of requests processing.\n# TYPE llamacpp:requests_processing gauge\n' +
        `llamacpp:requests_processing ${running.length}\n` +
        '# HELP llamacpp:requests_deferred Number of requests deferred.\n# TYPE llamacpp:requests_deferred gauge\n' +
        `llamacpp:requests_deferred ${waiting.length}\n`;
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(text);
      return;
    }
    if (req.method !== 'POST' || !path.startsWith('/v1/')) return json(res, 404, { error: { message: `no route ${req.method} ${path}`, type: 'not_found' } });
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => admit(res, Buffer.concat(chunks).toString('utf8')));
  });
  server.keepAliveTimeout = 60_000;
  const sockets = new Set<Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    port,
    stats: () => stats,
    reset,
    refreshStats: async () => stats,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        if (stepTimer) clearTimeout(stepTimer);
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      })),
  };
}

/**
 * The engine in a child process of its own, as a real engine runs beside Spool: its steps are not delayed by
 * Spool's event loop (in the same process, every stall of Spool's would lengthen the engine's steps and blur the
 * very signal under test). Stats come back over IPC; `close()` stops the process.
 */
export async function startSimEngineProcess(overrides: Partial<SimEngineOptions> = {}): Promise<SimEngine> {
  const { fork } = await import('node:child_process');
  const child = fork(fileURLToPath(import.meta.url), [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, SIM_ENGINE_CHILD: JSON.stringify(overrides) },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (message) => resolve((message as { port: number }).port));
    child.once('exit', (code) => reject(new Error(`the simulated engine exited (${code}) before it listened`)));
  });
  let latest: SimEngineStats | undefined;
  const ask = (what: 'stats' | 'reset') =>
    new Promise<SimEngineStats>((resolve) => {
      child.once('message', (message) => resolve(message as SimEngineStats));
      child.send(what);
    });
  let closing: Promise<void> | undefined;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    port,
    // Synchronous in the interface: the last stats read; call refreshStats() first for fresh ones.
    stats: () => latest ?? emptyStats(),
    reset: () => void ask('reset'),
    refreshStats: async () => (latest = await ask('stats')),
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      })),
  } as SimEngine;
}

function emptyStats(): SimEngineStats {
  return { arrivals: 0, served: 0, rejected: 0, maxRunning: 0, maxWaiting: 0, concurrencySum: 0, firstArrivalAt: null, lastResponseAt: null, tokens: 0 };
}

if (process.env.SIM_ENGINE_CHILD && process.send && process.argv[1] === fileURLToPath(import.meta.url)) {
  const engine = await startSimEngine(JSON.parse(process.env.SIM_ENGINE_CHILD) as Partial<SimEngineOptions>);
  process.on('message', (message) => {
    if (message === 'reset') engine.reset();
    process.send!(engine.stats());
  });
  process.on('SIGTERM', () => void engine.close().then(() => process.exit(0)));
  process.send({ port: engine.port });
}
