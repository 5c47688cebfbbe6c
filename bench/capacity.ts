// 3. capacity: Spool against a simulated continuous-batching upstream with a
// known ceiling (concurrency / latency requests per second). Spool's own
// concurrency limit starts below that (initialConcurrency) and may go above
// it (maxConcurrency), so this measures how close the adaptive limiter and
// the claim/dispatch/record pipeline keep the upstream to saturated.
// Throughput = lines / (in_progress_at -> completed_at), the server's own
// timestamps; the ceiling is the reference.
import { smallInput } from './inputs.ts';
import { RssSampler } from './lib/proc.ts';
import { fmt, mib, ratio, type BenchContext, type Row } from './lib/report.ts';
import { SpoolChild, type BatchTimes } from './lib/spool.ts';
import { startSimChild, steadyStateRate, timeToCeiling } from './lib/upstream.ts';
import type { SimUpstreamStats } from './sim-upstream.ts';

export interface CapacityScenario {
  name: string;
  lines: number;
  /** Upstream: slots, latency per request, queue beyond the slots (then 429). */
  upstreamConcurrency: number;
  latencyMs: number;
  queue: number;
  /** Spool's upstream config. */
  maxConcurrency: number;
  initialConcurrency: number;
  target: number | null;
}

export function capacityScenario(quick: boolean): CapacityScenario {
  return {
    name: 'capacity',
    lines: quick ? 1_500 : 5_000,
    upstreamConcurrency: 32,
    latencyMs: 50,
    queue: 32,
    maxConcurrency: 64,
    initialConcurrency: 8,
    target: 0.97,
  };
}

/**
 * The same upstream behind a tight gateway: only 4 requests may wait, so
 * Spool's limiter (which may go to 64) does meet 429s and has to find the
 * ceiling by AIMD. What a burst of 429s costs; data plane v2 holds it to 0.85 of the ceiling.
 */
export function overloadScenario(quick: boolean): CapacityScenario {
  return { ...capacityScenario(quick), name: 'capacity-429', queue: 4, target: 0.85 };
}

export async function benchCapacity(ctx: BenchContext, scenario = capacityScenario(ctx.quick)): Promise<Row[]> {
  const ceiling = scenario.upstreamConcurrency / (scenario.latencyMs / 1000);
  const input = await ctx.inputFile(smallInput(scenario.lines));
  const sim = await startSimChild(scenario.name, {
    concurrency: scenario.upstreamConcurrency,
    latencyMs: scenario.latencyMs,
    queue: scenario.queue,
    retryAfterMs: scenario.latencyMs,
    responseBytes: 400,
  });
  let upstream: SimUpstreamStats;
  let times: Map<string, BatchTimes>;
  let batchId = '';
  let finalLimit = NaN;
  let limitMoves = "";
  let memory;
  try {
    const spool = await SpoolChild.start(ctx, {
      label: scenario.name,
      config: {
        upstreams: [
          { name: 'sim', baseUrl: sim.baseUrl, models: ['*'], maxConcurrency: scenario.maxConcurrency, initialConcurrency: scenario.initialConcurrency },
        ],
      },
    });
    try {
      const { fileId } = await spool.upload(input.path);
      const sampler = new RssSampler(spool.pid).start();
      batchId = (await spool.createBatch(fileId)).id;
      const idealS = scenario.lines / ceiling;
      await spool.waitFor(batchId, ['completed'], Math.round(idealS * 1000 * 5 + 60_000), 100);
      memory = sampler.stop();
      const lane = (await spool.stats()).runner?.lanes[0];
      finalLimit = lane?.limit ?? NaN;
      limitMoves = JSON.stringify(lane?.changes ?? {});
    } finally {
      times = await spool.stop(batchId ? [batchId] : []);
    }
    upstream = await sim.stats();
  } finally {
    await sim.stop();
  }
  const row = times.get(batchId);
  if (!row?.in_progress_at || !row.completed_at) throw new Error(`batch ${batchId} has no in_progress/completed timestamps`);
  const runMs = row.completed_at - row.in_progress_at;
  const achieved = row.request_completed / (runMs / 1000);
  const steady = steadyStateRate(upstream);
  const rampMs = (upstream.firstArrivalAt ?? NaN) - row.in_progress_at;
  const tailMs = row.completed_at - (upstream.lastResponseAt ?? NaN);
  const rampMsToCeiling = timeToCeiling(upstream, ceiling);
  const lostMs = runMs - (row.request_completed / ceiling) * 1000;
  ctx.log(
    `${scenario.name}: ${row.request_completed}/${row.request_total} ok, ${row.request_failed} failed, ${runMs} ms -> ${fmt(achieved, 1)} req/s ` +
      `(ceiling ${fmt(ceiling)}); upstream steady ${fmt(steady, 1)} req/s, max active ${upstream.maxActive}, max queued ${upstream.maxQueued}, ` +
      `429s ${upstream.rejected}; first request +${rampMs} ms, >=95% of ceiling after ${fmt(rampMsToCeiling)} ms, completed ${tailMs} ms after last response; ` +
      `${fmt(lostMs)} ms over the ideal ${fmt((row.request_completed / ceiling) * 1000)} ms; final limit ${finalLimit} (moves ${limitMoves}); ` +
      `spool CPU ${fmt(memory.cpuSeconds ?? NaN, 2)} s (${fmt((memory.cpuCores ?? NaN) * 100)}% of a core), peak RSS ${mib(memory.peakBytes)}`,
  );
  const label = `${scenario.upstreamConcurrency} slots x ${scenario.latencyMs} ms, queue ${scenario.queue}; Spool max ${scenario.maxConcurrency}, initial ${scenario.initialConcurrency}`;
  return [
    {
      metric: `${scenario.name} throughput (${fmt(row.request_total)} lines; ${label})`,
      spool: `${fmt(achieved, 1)} req/s`,
      reference: `${fmt(ceiling)} req/s ceiling`,
      ratio: ratio(achieved, ceiling),
      target: scenario.target === null ? '' : `>= ${fmt(scenario.target, 2)}`,
      pass: scenario.target === null ? null : achieved / ceiling >= scenario.target,
    },
    {
      metric: `${scenario.name} upstream steady state (10%-90% of responses)`,
      spool: `${fmt(steady, 1)} req/s`,
      reference: `${fmt(ceiling)} req/s ceiling`,
      ratio: ratio(steady, ceiling),
      target: '',
      pass: null,
    },
    {
      metric: `${scenario.name} time lost vs ideal: to 1st upstream req / ramp to 95% of ceiling / last response -> completed`,
      spool: `${fmt(lostMs)} ms: ${fmt(rampMs)} / ${fmt(rampMsToCeiling)} / ${fmt(tailMs)} ms${upstream.rejected > 0 ? `; ${fmt(upstream.rejected)} 429s, final limit ${finalLimit}` : ''}`,
      reference: '',
      ratio: '',
      target: '',
      pass: row.request_failed === 0 ? null : false,
    },
  ];
}
