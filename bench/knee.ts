// 8. knee: Spool with default settings (only the upstream's URL) in front of a
// simulated engine that behaves like llama.cpp on a small machine
// (test/helpers/sim-engine.ts: 4 slots decode together, waiting connections
// slow every step, 200 to everything), against the best a plain client loop
// gets from the same engine at any fixed concurrency (1 to 64, searched in the
// same run). Twice: with the engine's /props (llama.cpp reports total_slots)
// and without (a gateway hides it: throughput and latency alone). Spool's time
// is the batch's in_progress_at -> completed_at, its own timestamps.
import { readFileSync } from 'node:fs';
import { createHttpUpstreamClient } from '../src/upstreams/http-client.ts';
import type { SimEngineOptions, SimEngineStats } from '../test/helpers/sim-engine.ts';
import { smallInput } from './inputs.ts';
import { spawnChild } from './lib/child.ts';
import { fmt, ratio, type BenchContext, type Row } from './lib/report.ts';
import { SpoolChild, type BatchTimes } from './lib/spool.ts';

const RATIO_TARGET = 0.9;
const CONCURRENCIES = [1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64];
// 4 slots; one 16-token request alone takes 16 steps of 3 ms (48 ms), four together 16 steps of 5.7 ms.
const ENGINE: Partial<SimEngineOptions> = { slots: 4, stepMs: 3, batchCost: 0.3, queueCost: 0.09 };

export async function benchKnee(ctx: BenchContext): Promise<Row[]> {
  const lines = ctx.quick ? 600 : 2_000;
  const sweepRequests = ctx.quick ? 100 : 200;
  const input = await ctx.inputFile(smallInput(lines));
  const bodies = readFileSync(input.path, 'utf8')
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => (JSON.parse(line) as { body: Record<string, unknown> }).body);
  const rows: Row[] = [];
  // The engine's throughput does not depend on whether it answers /props: one sweep serves both rows.
  let best: { concurrency: number; rps: number } | undefined;
  for (const props of [true, false]) {
    const label = props ? 'with /props' : 'without /props';
    const engine = await startEngineChild(props ? 'knee-props' : 'knee-hidden', { ...ENGINE, props });
    try {
      if (!best) {
        const sweep: { concurrency: number; rps: number }[] = [];
        for (const concurrency of CONCURRENCIES) sweep.push({ concurrency, rps: await plainLoop(engine.baseUrl, bodies.slice(0, sweepRequests), concurrency) });
        best = sweep.reduce((a, b) => (b.rps > a.rps ? b : a));
        ctx.log(`knee: plain loop ${sweep.map((s) => `${s.concurrency}:${fmt(s.rps, 1)}`).join(' ')} req/s; best ${best.concurrency}`);
      }
      await engine.reset();
      const run = await runSpool(ctx, engine.baseUrl, input.path, props ? 'knee-props' : 'knee-hidden');
      const stats = await engine.stats();
      ctx.log(
        `knee ${label}: Spool ${run.row.request_completed}/${run.row.request_total} in ${run.runMs} ms = ${fmt(run.rps, 1)} req/s; ` +
          `final limit ${run.limit} (${run.reason}); engine mean concurrency ${fmt(stats.concurrencySum / Math.max(1, stats.arrivals), 1)}, max waiting ${stats.maxWaiting}`,
      );
      rows.push({
        metric: `knee, Spool defaults vs best fixed concurrency of a plain loop (4-slot simulated llama.cpp ${label}, ${fmt(lines)} lines; limit ${run.limit}, best ${best.concurrency})`,
        spool: `${fmt(run.rps, 1)} req/s`,
        reference: `${fmt(best.rps, 1)} req/s`,
        ratio: ratio(run.rps, best.rps),
        target: `>= ${fmt(RATIO_TARGET, 2)}`,
        pass: run.rps / best.rps >= RATIO_TARGET,
      });
    } finally {
      await engine.stop();
    }
  }
  return rows;
}

interface EngineChild {
  baseUrl: string;
  stats(): Promise<SimEngineStats>;
  reset(): Promise<void>;
  stop(): Promise<void>;
}

async function startEngineChild(label: string, options: Partial<SimEngineOptions>): Promise<EngineChild> {
  const child = await spawnChild<{ port: number }>(`sim-engine(${label})`, 'bench/sim-engine.ts', { env: { SIM_ENGINE_OPTIONS: JSON.stringify(options) } });
  return {
    baseUrl: `http://127.0.0.1:${child.ready.port}/v1`,
    stats: () => child.call<SimEngineStats>('stats'),
    reset: () => child.call<void>('reset'),
    stop: async () => {
      await child.stop();
    },
  };
}

/** One batch through a fresh Spool child configured with nothing but the upstream's URL. */
async function runSpool(ctx: BenchContext, baseUrl: string, inputPath: string, label: string) {
  const spool = await SpoolChild.start(ctx, { label, config: { upstreams: [{ name: 'engine', baseUrl, models: ['*'] }] } });
  let batchId = '';
  let times: Map<string, BatchTimes>;
  let limit = NaN;
  let reason = '';
  try {
    const { fileId } = await spool.upload(inputPath);
    batchId = (await spool.createBatch(fileId)).id;
    await spool.waitFor(batchId, ['completed'], 600_000, 200);
    const lane = (await spool.stats()).runner?.lanes[0];
    limit = lane?.limit ?? NaN;
    reason = lane?.lastChange?.reason ?? '';
  } finally {
    times = await spool.stop(batchId ? [batchId] : []);
  }
  const row = times.get(batchId);
  if (!row?.in_progress_at || !row.completed_at) throw new Error(`batch ${batchId} has no in_progress/completed timestamps`);
  const runMs = row.completed_at - row.in_progress_at;
  return { row, runMs, rps: row.request_completed / (runMs / 1000), limit, reason };
}

/** Sends every body once, `concurrency` at a time; requests/s. */
async function plainLoop(baseUrl: string, bodies: Record<string, unknown>[], concurrency: number): Promise<number> {
  const client = createHttpUpstreamClient({ name: 'baseline', baseUrl, maxConnections: concurrency });
  let next = 0;
  let ok = 0;
  const started = performance.now();
  const worker = async () => {
    while (next < bodies.length) {
      const body = bodies[next++];
      const outcome = await client.send({ endpoint: '/v1/chat/completions', body, timeoutMs: 120_000 });
      if (outcome.kind === 'response' && outcome.status === 200) ok++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (performance.now() - started) / 1000;
  await client.close();
  if (ok !== bodies.length) throw new Error(`plain loop: only ${ok} of ${bodies.length} requests succeeded`);
  return ok / seconds;
}
