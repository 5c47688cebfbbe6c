// recovery: how long a dead process costs a batch.
//   - Scale-out on PostgreSQL: 3 worker processes under one global ceiling of
//     8 against an upstream that takes 30 ms a request (8 / 30 ms = 267 req/s),
//     a 4,000-line batch, once undisturbed and once with one worker SIGKILLed
//     when 30% of the lines are done. Ratio: the killed run's time over the
//     undisturbed run's (in_progress_at -> completed_at, the database's record).
//   - One `spool serve` on SQLite, SIGKILLed at 30% and restarted on its data
//     dir: the time from the restart until the batch completes, less what its
//     remaining lines take at the ceiling's rate. (The first line done again
//     says little: lines nobody had claimed run at once even when the dead
//     process's claimed ones wait out their lease.)
// Leases are left at their default (60 s): before liveness, the dead process's
// lines and slots waited out that lease (61 s instead of ~15 s).
import { smallInput } from './inputs.ts';
import { batchTimes, connectAdmin, createDatabase, dropDatabase } from './lib/postgres.ts';
import { fmt, ratio, sleep, type BenchContext, type Row } from './lib/report.ts';
import { SpoolChild, type WireBatch } from './lib/spool.ts';
import { startSimChild } from './lib/upstream.ts';

const WORKERS = 3;
const CEILING = 8;
const LATENCY_MS = 30;
const KILL_AT = 0.3;
const RECOVERY_TARGET = 1.3;
const RESUME_TARGET_S = 5;

export async function benchRecovery(ctx: BenchContext): Promise<Row[]> {
  const lines = ctx.quick ? 1_000 : 4_000;
  const input = await ctx.inputFile(smallInput(lines));
  // The sim's own ceiling is the global one: 8 at a time, 8 more may queue, then 429.
  const sim = await startSimChild('recovery', { concurrency: CEILING, latencyMs: LATENCY_MS, queue: CEILING, responseBytes: 400 });
  const upstreams = [{ name: 'sim', baseUrl: sim.baseUrl, models: ['*'], maxConcurrency: CEILING, initialConcurrency: CEILING }];
  try {
    const rows: Row[] = [];
    const admin = await connectAdmin();
    try {
      const runs: Record<'undisturbed' | 'killed', number> = { undisturbed: NaN, killed: NaN };
      for (const kill of [false, true]) {
        const databaseUrl = await createDatabase(admin);
        try {
          const ms = await scaleOutRun(ctx, { databaseUrl, upstreams, inputPath: input.path, lines, kill });
          runs[kill ? 'killed' : 'undisturbed'] = ms;
          ctx.log(`recovery: ${WORKERS} workers, ${kill ? `one SIGKILLed at ${KILL_AT * 100}%` : 'undisturbed'}: ${fmt(lines)} lines in ${fmt(ms)} ms`);
        } finally {
          await dropDatabase(admin, databaseUrl);
        }
      }
      const r = runs.killed / runs.undisturbed;
      rows.push({
        metric: `recovery, ${WORKERS} workers on PostgreSQL, one SIGKILLed at ${KILL_AT * 100}% (${fmt(lines)} lines, ceiling ${CEILING} x ${LATENCY_MS} ms): time vs undisturbed`,
        spool: `${fmt(runs.killed / 1000, 1)} s`,
        reference: `${fmt(runs.undisturbed / 1000, 1)} s undisturbed`,
        ratio: ratio(runs.killed, runs.undisturbed),
        target: `<= ${RECOVERY_TARGET}`,
        pass: Number.isFinite(r) ? r <= RECOVERY_TARGET : false,
      });
    } finally {
      await admin.end();
    }
    const restart = await restartRun(ctx, { upstreams, inputPath: input.path, lines });
    // What the rest would take at the ceiling's rate; the time beyond it is what the crash cost after the restart.
    const idealMs = (restart.remaining * LATENCY_MS) / CEILING;
    const lostMs = restart.completeMs - idealMs;
    ctx.log(
      `recovery: spool serve restarted after SIGKILL: first line done ${fmt(restart.resumeMs)} ms after the restart, ` +
        `batch complete ${fmt(restart.completeMs)} ms after it (${fmt(restart.remaining)} lines left: ${fmt(idealMs)} ms at the ceiling's rate)`,
    );
    rows.push({
      metric: `recovery, one spool serve on SQLite SIGKILLed at ${KILL_AT * 100}% and restarted on its data dir: time lost after the restart (restart to complete, less the rest at the ceiling's rate)`,
      spool: `${fmt(lostMs / 1000, 1)} s`,
      reference: `${fmt(restart.completeMs / 1000, 1)} s to complete; ${fmt(idealMs / 1000, 1)} s ideal`,
      ratio: ratio(restart.completeMs, idealMs),
      target: `<= ${RESUME_TARGET_S} s`,
      pass: lostMs <= RESUME_TARGET_S * 1000,
    });
    return rows;
  } finally {
    await sim.stop();
  }
}

type Upstreams = Array<Record<string, unknown>>;

async function scaleOutRun(
  ctx: BenchContext,
  args: { databaseUrl: string; upstreams: Upstreams; inputPath: string; lines: number; kill: boolean },
): Promise<number> {
  const config = { databaseUrl: args.databaseUrl, upstreams: args.upstreams as never, worker: { globalCeilings: true } };
  const api = await SpoolChild.start(ctx, { label: 'recovery-api', config: { ...config, worker: { enabled: false } } });
  const workers: SpoolChild[] = [];
  try {
    for (let i = 0; i < WORKERS; i++) {
      // One blob directory for all, as one S3 bucket would be.
      workers.push(await SpoolChild.start(ctx, { label: `recovery-worker-${i + 1}`, role: 'worker', sharedDataDir: api.dataDir, config }));
    }
    const { fileId } = await api.upload(args.inputPath);
    const batch = await api.createBatch(fileId);
    if (args.kill) {
      await waitForDone(api, batch.id, Math.ceil(args.lines * KILL_AT));
      await workers[0].kill();
    }
    await api.waitFor(batch.id, ['completed'], 300_000, 100);
    const times = await batchTimes(args.databaseUrl, batch.id);
    if (times.request_completed !== args.lines) throw new Error(`recovery: ${times.request_completed} of ${args.lines} lines completed`);
    return times.completed_at - times.in_progress_at;
  } finally {
    for (const worker of workers) await worker.stop();
    await api.stop();
  }
}

async function restartRun(
  ctx: BenchContext,
  args: { upstreams: Upstreams; inputPath: string; lines: number },
): Promise<{ resumeMs: number; completeMs: number; remaining: number }> {
  const config = { upstreams: args.upstreams as never };
  const first = await SpoolChild.start(ctx, { label: 'recovery-serve', config });
  let second: SpoolChild | undefined;
  try {
    const { fileId } = await first.upload(args.inputPath);
    const batch = await first.createBatch(fileId);
    const before = await waitForDone(first, batch.id, Math.ceil(args.lines * KILL_AT));
    await first.kill();
    const restartedAt = performance.now();
    second = await SpoolChild.start(ctx, { label: 'recovery-serve-again', sharedDataDir: first.dataDir, config });
    // Progress recorded before the kill may still grow by what was committed in its last instant: resumed means
    // beyond what the new process itself found at start.
    const found = done(await second.getBatch(batch.id));
    await waitForDone(second, batch.id, Math.max(found, done(before)) + 1, 10);
    const resumeMs = performance.now() - restartedAt;
    await second.waitFor(batch.id, ['completed'], 300_000, 50);
    return { resumeMs, completeMs: performance.now() - restartedAt, remaining: args.lines - found };
  } finally {
    await second?.stop();
    await first.stop();
  }
}

const done = (batch: WireBatch): number => (batch.request_counts?.completed ?? 0) + (batch.request_counts?.failed ?? 0);

async function waitForDone(spool: SpoolChild, id: string, count: number, pollMs = 25): Promise<WireBatch> {
  const deadline = Date.now() + 300_000;
  for (;;) {
    const batch = await spool.getBatch(id);
    if (done(batch) >= count) return batch;
    if (['failed', 'completed', 'expired', 'cancelled'].includes(batch.status)) throw new Error(`recovery: batch ended ${batch.status} before ${count} lines were done`);
    if (Date.now() > deadline) throw new Error(`recovery: batch ${id} did not reach ${count} lines done`);
    await sleep(pollMs);
  }
}
