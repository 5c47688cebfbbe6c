// scale: the scale-out shape on PostgreSQL. One API process (--no-worker)
// and 1, 2 and 4 worker processes run the same batch against a zero-latency
// upstream whose one global ceiling they share; end-to-end requests/s is
// read from the database (in_progress_at -> completed_at, ms). Then the
// chunk claim alone: 1, 2 and 4 claimers (each its own store and connection
// pool) draining a 20,000-line batch cut into 256-line chunks, one chunk a
// claim, each marked done (finishChunk) before the next claim as a worker's
// last segment commit does, with nothing else running.
// Every run gets a fresh database, dropped afterwards.
import { readdirSync, readFileSync } from 'node:fs';
import { sql } from 'kysely';
import pg from 'pg';
import { openSqlStore } from '../src/store/sql/database.ts';
import { claimChunk, finishChunk, insertChunks, newChunk } from '../src/store/sql/chunks.ts';
import type { NewChunk } from '../src/store/sql/schema.ts';
import { smallInput } from './inputs.ts';
import { batchTimes, connectAdmin, createDatabase, dropDatabase } from './lib/postgres.ts';
import { cpuSeconds } from './lib/proc.ts';
import { fmt, ratio, type BenchContext, type Row } from './lib/report.ts';
import { SpoolChild } from './lib/spool.ts';
import { startSimChild } from './lib/upstream.ts';

const WORKER_COUNTS = [1, 2, 4];
const CEILING = 64;
// Lines a chunk in the claim benchmark: validation's largest chunk (batches/chunking.ts), what a 20,000-line file gets.
const CHUNK_LINES = 256;

export async function benchScale(ctx: BenchContext): Promise<Row[]> {
  const admin = await connectAdmin();
  try {
    const rows: Row[] = [];
    const lines = ctx.quick ? 4_000 : 20_000;
    const input = await ctx.inputFile(smallInput(lines));
    const sim = await startSimChild('scale', { concurrency: 0, latencyMs: 0, queue: 0, responseBytes: 400 });
    try {
      let single = NaN;
      for (const workers of WORKER_COUNTS) {
        const databaseUrl = await createDatabase(admin);
        try {
          const run = await runBatch(ctx, { databaseUrl, simUrl: sim.baseUrl, simPid: sim.pid, inputPath: input.path, workers });
          if (workers === 1) single = run.rps;
          ctx.log(
            `scale: ${workers} worker(s): ${run.done}/${lines} in ${fmt(run.ms)} ms = ${fmt(run.rps)} req/s; ` +
              `worker CPU ${fmt(run.workerCpuS, 2)} s, API CPU ${fmt(run.apiCpuS, 2)} s, upstream CPU ${fmt(run.upstreamCpuS, 2)} s, PostgreSQL CPU ${fmt(run.postgresCpuS, 2)} s`,
          );
          if (workers === 1) {
            const total = [...run.rowWrites.values()].reduce((sum, n) => sum + n, 0);
            const byTable = [...run.rowWrites.entries()].filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
            ctx.log(`scale: PostgreSQL row writes, 1 worker: ${byTable.map(([table, n]) => `${table} ${fmt(n)}`).join(', ')}`);
            rows.push({
              metric: `PostgreSQL row writes per request (inserts + updates + deletes, pg_stat_user_tables; 1 worker, ${fmt(lines)} lines, validation through finalization)`,
              spool: `${fmt(total / lines, 2)} (${byTable.slice(0, 3).map(([table, n]) => `${table} ${fmt(n / lines, 2)}`).join(', ')})`,
              reference: '',
              ratio: '',
              // The data plane v2 target (chunks and result segments, no row per line).
              target: '<= 0.1',
              pass: total / lines <= 0.1,
            });
          }
          rows.push({
            metric: `scale-out end to end, ${workers} worker process${workers > 1 ? 'es' : ''} on PostgreSQL (${fmt(lines)} lines, zero-latency upstream, global ceiling ${CEILING})`,
            spool: `${fmt(run.rps)} req/s`,
            reference: workers === 1 ? '' : `${fmt(single)} req/s with 1`,
            ratio: workers === 1 ? '' : ratio(run.rps, single),
            target: '',
            pass: null,
          });
        } finally {
          await dropDatabase(admin, databaseUrl);
        }
      }
    } finally {
      await sim.stop();
    }
    for (const claimers of WORKER_COUNTS) {
      const databaseUrl = await createDatabase(admin);
      try {
        const claimLines = ctx.quick ? 5_000 : 20_000;
        const claim = await chunkClaimRate(databaseUrl, claimLines, claimers);
        ctx.log(
          `scale: chunk claims, ${claimers} claimer(s): ${fmt(claim.chunks)} chunks (${fmt(claim.lines)} lines) in ${fmt(claim.ms)} ms ` +
            `(claim ${fmt(claim.meanClaimMs, 2)} ms, finish ${fmt(claim.meanFinishMs, 2)} ms each)`,
        );
        rows.push({
          metric: `chunk claim on PostgreSQL, ${claimers} concurrent claimer${claimers > 1 ? 's' : ''} (${fmt(claimLines)} lines in ${CHUNK_LINES}-line chunks, one a claim, each marked done before the next claim)`,
          spool: `${fmt(claim.chunks / (claim.ms / 1000))} chunks/s (claim ${fmt(claim.meanClaimMs, 2)} ms each)`,
          reference: `${fmt(claim.lines / (claim.ms / 1000))} lines/s`,
          ratio: '',
          target: '',
          pass: null,
        });
      } finally {
        await dropDatabase(admin, databaseUrl);
      }
    }
    return rows;
  } finally {
    await admin.end();
  }
}

interface BatchRun {
  done: number;
  ms: number;
  rps: number;
  workerCpuS: number;
  apiCpuS: number;
  upstreamCpuS: number;
  postgresCpuS: number;
  /** Rows written per table during the batch, validation through finalization (and the heartbeats meanwhile). */
  rowWrites: Map<string, number>;
}

async function runBatch(
  ctx: BenchContext,
  args: { databaseUrl: string; simUrl: string; simPid: number; inputPath: string; workers: number },
): Promise<BatchRun> {
  const upstreams = [{ name: 'sim', baseUrl: args.simUrl, models: ['*'], maxConcurrency: CEILING, initialConcurrency: 8 }];
  let run!: BatchRun;
  let writesAtStart = new Map<string, number>();
  const api = await SpoolChild.start(ctx, { label: 'scale-api', config: { databaseUrl: args.databaseUrl, upstreams, worker: { enabled: false } } });
  const workers: SpoolChild[] = [];
  try {
    for (let i = 0; i < args.workers; i++) {
      // The workers read input blobs the API process wrote: one blob directory for all, as one S3 bucket would be.
      workers.push(
        await SpoolChild.start(ctx, { label: `scale-worker-${i + 1}`, role: 'worker', sharedDataDir: api.dataDir, config: { databaseUrl: args.databaseUrl, upstreams } }),
      );
    }
    const { fileId } = await api.upload(args.inputPath);
    const cpu = () => ({
      workers: workers.reduce((sum, w) => sum + (cpuSeconds(w.pid) ?? NaN), 0),
      api: cpuSeconds(api.pid) ?? NaN,
      upstream: cpuSeconds(args.simPid) ?? NaN,
      postgres: postgresCpuSeconds(),
    });
    const before = cpu();
    // Start-up's own writes (migrations, the upload's row) reach the counters up to a second late: let them land.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const writesBefore = await rowWrites(args.databaseUrl);
    const batch = await api.createBatch(fileId);
    await api.waitFor(batch.id, ['completed'], 300_000, 100);
    const after = cpu();
    const times = await batchTimes(args.databaseUrl, batch.id);
    const ms = times.completed_at - times.in_progress_at;
    run = {
      done: times.request_completed,
      ms,
      rps: times.request_completed / (ms / 1000),
      workerCpuS: after.workers - before.workers,
      apiCpuS: after.api - before.api,
      upstreamCpuS: after.upstream - before.upstream,
      postgresCpuS: after.postgres - before.postgres,
      rowWrites: new Map(),
    };
    writesAtStart = writesBefore;
  } finally {
    for (const worker of workers) await worker.stop();
    await api.stop();
  }
  // Read once every process has exited: a backend reports its table counters when it ends (or every second or so
  // while it works), so only then are all of a run's writes counted.
  const writesAfter = await rowWrites(args.databaseUrl);
  for (const [table, n] of writesAfter) run.rowWrites.set(table, n - (writesAtStart.get(table) ?? 0));
  return run;
}

/** Rows inserted, updated and deleted so far per table of the database (pg_stat_user_tables). */
async function rowWrites(databaseUrl: string): Promise<Map<string, number>> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const result = await client.query('SELECT relname, n_tup_ins + n_tup_upd + n_tup_del AS writes FROM pg_stat_user_tables');
    return new Map(result.rows.map((row: { relname: string; writes: string }) => [row.relname, Number(row.writes)]));
  } finally {
    await client.end();
  }
}

/**
 * Drains a batch of `lines` lines in CHUNK_LINES-line pending chunks with `claimers` concurrent claimers, each on its
 * own store (connection pool) as separate workers are: claimChunk, then finishChunk, until nothing is left to claim.
 * Nothing else touches the database.
 */
async function chunkClaimRate(
  databaseUrl: string,
  lines: number,
  claimers: number,
): Promise<{ chunks: number; lines: number; ms: number; meanClaimMs: number; meanFinishMs: number }> {
  const batchId = `batch-claim-bench-${claimers}`;
  // Opened (and migrated) first, then the claimers' stores one after another: no two migrate at once.
  const setup = await openSqlStore({ dataDir: '', databaseUrl });
  const stores: Awaited<ReturnType<typeof openSqlStore>>[] = [];
  try {
    // Rows as validation writes them (batches/chunking.ts): consecutive lines, byte ranges, models JSON
    // model -> [lines, estimated tokens], pending with nothing counted yet.
    const LINE_BYTES = 240;
    const TOKENS_A_LINE = 10;
    const rows: NewChunk[] = [];
    for (let chunk = 0, first = 1; first <= lines; chunk++, first += CHUNK_LINES) {
      const count = Math.min(CHUNK_LINES, lines - first + 1);
      rows.push(
        newChunk({
          batch_id: batchId,
          chunk,
          line_start: first,
          line_count: count,
          byte_start: (first - 1) * LINE_BYTES,
          byte_end: (first - 1 + count) * LINE_BYTES,
          models: JSON.stringify({ 'bench-model': [count, count * TOKENS_A_LINE] }),
          estimated_tokens: count * TOKENS_A_LINE,
        }),
      );
    }
    await insertChunks(setup.db, rows);
    // Fresh statistics, as autovacuum would have after a real validation inserted the rows.
    await sql`ANALYZE chunks`.execute(setup.db);
    for (let i = 0; i < claimers; i++) stores.push(await openSqlStore({ dataDir: '', databaseUrl }));
    let chunks = 0;
    let claimedLines = 0;
    let claimMs = 0;
    let claimCalls = 0;
    let finishMs = 0;
    const started = performance.now();
    await Promise.all(
      stores.map(async (store, i) => {
        const owner = `claimer-${i}`;
        for (;;) {
          let at = performance.now();
          const got = await claimChunk(store.db, store.dialect, batchId, owner, 60_000, Date.now());
          claimMs += performance.now() - at;
          claimCalls += 1;
          if (!got) return;
          chunks += 1;
          claimedLines += got.line_count;
          // Done at once, as the chunk's last segment commit marks it in a real run: what a worker holds stays
          // bounded, so the claim's scan for lapsed leases looks at a few running chunks, not at everything claimed.
          at = performance.now();
          const finished = await finishChunk(store.db, batchId, got.chunk, owner, Date.now());
          finishMs += performance.now() - at;
          if (!finished) throw new Error(`claimer ${owner} lost chunk ${got.chunk} before finishing it`);
        }
      }),
    );
    const ms = performance.now() - started;
    if (chunks !== rows.length || claimedLines !== lines) {
      throw new Error(`claimers took ${chunks} chunks (${claimedLines} lines) of ${rows.length} (${lines} lines): a chunk was claimed twice or missed`);
    }
    return { chunks, lines: claimedLines, ms, meanClaimMs: claimMs / claimCalls, meanFinishMs: finishMs / Math.max(chunks, 1) };
  } finally {
    for (const store of stores) await store.close();
    await setup.close();
  }
}

/** CPU seconds of every PostgreSQL backend on the machine (they are the server's processes; 0 where /proc is unreadable). */
function postgresCpuSeconds(): number {
  let total = 0;
  for (const pid of postgresPids()) total += cpuSeconds(pid) ?? 0;
  return total;
}

function postgresPids(): number[] {
  try {
    return readdirSync('/proc')
      .filter((name) => /^\d+$/.test(name))
      .filter((pid) => {
        try {
          return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'postgres';
        } catch {
          return false;
        }
      })
      .map(Number);
  } catch {
    return [];
  }
}
