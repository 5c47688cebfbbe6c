// pools: one model on 4 simulated replicas, each an engine with a prefix (KV)
// cache: a request whose system prompt the replica served lately skips the
// prefill, any other pays it. 20 system prompts of ~2 KB, in turn across the
// batch. Three runs of the same Spool on the same replicas:
//   affinity: prefix   lines that share a prompt go to one replica while it has room
//   affinity: none     each line to the replica with the most room
//   no prefix, no prefill: the pool against the sum of its replicas' ceilings
// Ratios within one run of the harness: prefix over none (target >= 1.5), the
// hit rate against the best a cache of this size allows (each prompt missed
// once per replica it lands on; at best once), and the pool's throughput over
// the sum of its replicas' ceilings (target >= 0.95).
import { smallInput, BENCH_MODEL } from './inputs.ts';
import { fmt, ratio, type BenchContext, type Row } from './lib/report.ts';
import { SpoolChild } from './lib/spool.ts';
import { startSimChild, steadyStateRate, type SimChild } from './lib/upstream.ts';
import type { SimUpstreamStats } from './sim-upstream.ts';

const REPLICAS = 4;
const SLOTS = 8;
const DECODE_MS = 80;
const PREFILL_MS = 240;
const CACHE_PREFIXES = 8;
const PROMPTS = 20;
const PROMPT_BYTES = 2048;

interface PoolRun {
  throughput: number;
  /** Batch start to the first request any replica saw, and the last answer to the batch's completion, ms. */
  rampMs: number;
  tailMs: number;
  /** Each replica's adaptive limit at the end. */
  limits: number[];
  /** The replicas' steady-state rates summed (10%-90% of each one's answers), req/s. */
  steady: number;
  hits: number;
  misses: number;
  perReplica: number[];
  failed: number;
}

export async function benchPools(ctx: BenchContext): Promise<Row[]> {
  const lines = ctx.quick ? 2_000 : 10_000;
  const prompted = await ctx.inputFile({ lines, lineBytes: 200, model: BENCH_MODEL, systemPrompts: { count: PROMPTS, bytes: PROMPT_BYTES } });
  const plain = await ctx.inputFile(smallInput(lines));
  const prefix = await runPool(ctx, 'prefix', prompted.path, { prefillMs: PREFILL_MS });
  const none = await runPool(ctx, 'none', prompted.path, { prefillMs: PREFILL_MS });
  const ceilingRun = await runPool(ctx, 'none', plain.path, { prefillMs: 0 });

  const ceiling = (REPLICAS * SLOTS) / (DECODE_MS / 1000);
  // Each prompt must be prefilled once somewhere; with room for every prompt in the replicas' caches together, that is the only miss.
  const bestHitRate = PROMPTS <= REPLICAS * CACHE_PREFIXES ? (lines - PROMPTS) / lines : NaN;
  const hitRate = (run: PoolRun) => run.hits / Math.max(1, run.hits + run.misses);
  ctx.log(
    `pools: prefix ${fmt(prefix.throughput, 1)} req/s, hit rate ${fmt(hitRate(prefix) * 100, 1)}% (per replica ${prefix.perReplica.join('/')}); ` +
      `none ${fmt(none.throughput, 1)} req/s, hit rate ${fmt(hitRate(none) * 100, 1)}% (${none.perReplica.join('/')}); ` +
      `no prefix ${fmt(ceilingRun.throughput, 1)} req/s of ${fmt(ceiling)} (${ceilingRun.perReplica.join('/')}); failed ${prefix.failed}/${none.failed}/${ceilingRun.failed}; ` +
      `first request / last answer to completed: ${[prefix, none, ceilingRun].map((run) => `${run.rampMs}/${run.tailMs} ms`).join(', ')}; final limits ${[prefix, none, ceilingRun].map((run) => run.limits.join('/')).join(', ')}; ` +
      `steady state ${[prefix, none, ceilingRun].map((run) => fmt(run.steady, 1)).join(', ')} req/s`,
  );
  const setup = `${REPLICAS} replicas x ${SLOTS} slots, ${DECODE_MS} ms + ${PREFILL_MS} ms prefill on a miss, LRU of ${CACHE_PREFIXES} prefixes each; ${fmt(lines)} lines, ${PROMPTS} system prompts of ${PROMPT_BYTES / 1024} KB`;
  return [
    {
      metric: `pools throughput, affinity prefix vs none (${setup})`,
      spool: `${fmt(prefix.throughput, 1)} req/s`,
      reference: `${fmt(none.throughput, 1)} req/s with none`,
      ratio: ratio(prefix.throughput, none.throughput),
      target: '>= 1.50',
      pass: prefix.throughput / none.throughput >= 1.5 && prefix.failed === 0 && none.failed === 0,
    },
    {
      metric: 'pools prefix-cache hit rate, affinity prefix (none for reference) vs the best this cache size allows',
      spool: `${fmt(hitRate(prefix) * 100, 1)}% (none ${fmt(hitRate(none) * 100, 1)}%)`,
      reference: `${fmt(bestHitRate * 100, 1)}% best`,
      ratio: ratio(hitRate(prefix), bestHitRate),
      target: 'within 10 points',
      pass: bestHitRate - hitRate(prefix) <= 0.1,
    },
    {
      metric: `pools throughput vs the sum of the replicas' ceilings (${REPLICAS} x ${SLOTS} slots x ${DECODE_MS} ms, no prefill; ${fmt(lines)} lines)`,
      spool: `${fmt(ceilingRun.throughput, 1)} req/s`,
      reference: `${fmt(ceiling)} req/s`,
      ratio: ratio(ceilingRun.throughput, ceiling),
      target: '>= 0.95',
      pass: ceilingRun.throughput / ceiling >= 0.95 && ceilingRun.failed === 0,
    },
    {
      metric: "pools replicas' steady state, no prefix (10%-90% of each replica's answers, summed)",
      spool: `${fmt(ceilingRun.steady, 1)} req/s`,
      reference: `${fmt(ceiling)} req/s`,
      ratio: ratio(ceilingRun.steady, ceiling),
      target: '',
      pass: null,
    },
  ];
}

async function runPool(ctx: BenchContext, affinity: 'prefix' | 'none', inputPath: string, sim: { prefillMs: number }): Promise<PoolRun> {
  const replicas: SimChild[] = [];
  try {
    for (let i = 0; i < REPLICAS; i++) {
      replicas.push(
        await startSimChild(`pool-${affinity}-${i + 1}`, {
          concurrency: SLOTS,
          latencyMs: DECODE_MS,
          queue: SLOTS,
          retryAfterMs: DECODE_MS,
          responseBytes: 400,
          prefillMs: sim.prefillMs,
          prefixCacheSize: CACHE_PREFIXES,
        }),
      );
    }
    const spool = await SpoolChild.start(ctx, {
      label: `pools-${affinity}`,
      config: {
        upstreams: [
          {
            name: 'pool',
            models: ['*'],
            affinity,
            // As an engine is run: Spool starts at the replica's slots and may queue as many again in it (the knee
            // finder decides how many); the replica's own queue then never runs dry between two of Spool's sends.
            maxConcurrency: 2 * SLOTS,
            initialConcurrency: SLOTS,
            replicas: replicas.map((replica) => ({ baseUrl: replica.baseUrl })),
          },
        ],
      },
    });
    let batchId = '';
    let times;
    let limits: number[] = [];
    try {
      const { fileId } = await spool.upload(inputPath);
      batchId = (await spool.createBatch(fileId)).id;
      await spool.waitFor(batchId, ['completed'], 10 * 60_000, 100);
      limits = ((await spool.stats()).runner?.lanes ?? []).map((lane) => lane.limit);
    } finally {
      times = await spool.stop(batchId ? [batchId] : []);
    }
    const row = times.get(batchId);
    if (!row?.in_progress_at || !row.completed_at) throw new Error(`batch ${batchId} has no in_progress/completed timestamps`);
    const stats: SimUpstreamStats[] = await Promise.all(replicas.map((replica) => replica.stats()));
    const first = Math.min(...stats.map((s) => s.firstArrivalAt ?? Infinity));
    const last = Math.max(...stats.map((s) => s.lastResponseAt ?? -Infinity));
    return {
      throughput: row.request_completed / ((row.completed_at - row.in_progress_at) / 1000),
      rampMs: first - row.in_progress_at,
      steady: stats.reduce((sum, s) => sum + steadyStateRate(s), 0),
      tailMs: row.completed_at - last,
      limits,
      hits: stats.reduce((sum, s) => sum + s.prefixHits, 0),
      misses: stats.reduce((sum, s) => sum + s.prefixMisses, 0),
      perReplica: stats.map((s) => s.served),
      failed: row.request_failed,
    };
  } finally {
    await Promise.all(replicas.map((replica) => replica.stop()));
  }
}
