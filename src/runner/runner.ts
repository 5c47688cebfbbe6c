// The worker: claims request lines under a lease, sends each to the upstream
// its model routes to, and records every outcome durably. Memory is bounded
// by the claim buffer (a few times the upstreams' concurrency), never by
// batch or file size.
//
//   claim loop ──► admit (read lines by byte range, route to a pool) ──► pool queue
//   pump ──► place on a replica's lane (up, a concurrency slot, rate budget; prefix affinity) ──► execute
//   execute ──► upstream ──► retry policy ──► request-lifecycle transition ──► result writer (group commit)
//                                         └─► a retryable failure with another replica up: back to the pool queue
//   heartbeat ──► renew leases; abort work of batches cancelled or expired meanwhile
import type { Kysely } from 'kysely';
import type { LifecycleContext } from '../runtime/context.ts';
import { leaseMs } from '../runtime/context.ts';
import { findFile } from '../store/sql/files.ts';
import {
  batchStatuses,
  claimRequests,
  listRunnableBatches,
  renewRequestLeases,
  type RequestOutcomeRecord,
  type RunnableBatch,
} from '../store/sql/request-claims.ts';
import type { Database, RequestRow } from '../store/sql/schema.ts';
import { describeStoreFailure } from '../store/errors.ts';
import { BlobNotFoundError } from '../store/blobs/types.ts';
import { AudioSourceError, loadAudio, MAX_AUDIO_BYTES } from '../upstreams/audio-source.ts';
import type { AudioPayload, UpstreamCall } from '../upstreams/http-client.ts';
import { GlobalCeilings } from './global-ceilings.ts';
import { Lanes, queuedFor, type EngineBinding, type Lane, type Pool } from './lanes.ts';
import { homeOf, LOOKAHEAD, pickForLane, placeIn } from './placement.ts';
import { prefixHashOf } from '../upstreams/prefix-key.ts';
import type { ModelDiscovery } from '../upstreams/model-discovery.ts';
import type { UpstreamCapacities } from '../upstreams/capacity/upstream-capacity.ts';
import type { LimitChange, LimitReason } from '../upstreams/capacity/adaptive-limiter.ts';
import type { EngineReport } from '../upstreams/capacity/engine-probe.ts';
import type { HealthStatus } from '../upstreams/capacity/upstream-health.ts';
import { readLines } from '../store/blobs/line-ranges.ts';
import { fail, release, retryLater, settle, type ClaimedRequest } from './request-lifecycle.ts';
import { ResultWriter, type WriterStall } from './result-writer.ts';
import { Pricing } from '../usage/pricing.ts';
import { bandOf, FairScheduler } from './scheduler.ts';
import { decide, retryDelay, type RetryPolicyOptions } from './retry-policy.ts';
import { retryCauseOf, UpstreamTally, type UpstreamTotals } from './upstream-tally.ts';

/** An attempt whose line goes back to its pool's queue instead of being recorded (see execute). */
type Requeue = 'wait' | 'failover' | 'failover-overload';

interface Job extends ClaimedRequest {
  row: RequestRow;
  batch: RunnableBatch;
  pool: Pool<Job>;
  /** Where its current attempt runs; set when it is sent. */
  lane?: Lane<Job>;
  /** Replicas it failed on during this claim: a failover tries the others first. */
  triedOn?: Set<Lane<Job>>;
  /** Its prefix, for placement by affinity (pools with a ring only), and the pool's lanes in ring order from it. */
  prefixHash?: number;
  ringOrder?: number[];
  input: Record<string, unknown>;
  abort: AbortController;
  abortReason?: 'cancelled' | 'expired' | 'shutdown';
}

export interface RunnerOptions {
  engine?: EngineBinding;
  /** This process's capacity per upstream, shared with its real-time routes; the runner makes its own when left out. */
  capacities?: UpstreamCapacities;
  /** How long stop() lets requests in flight finish before handing them back. Default: worker.shutdownGraceSeconds. */
  shutdownGraceMs?: number;
  /** What `models: "auto"` upstreams serve, shared with the real-time routes. */
  discovery?: ModelDiscovery;
}

export interface RunnerStats {
  claimed: number;
  succeeded: number;
  failed: number;
  retried: number;
  inFlight: number;
  queued: number;
  lanes: {
    name: string;
    limit: number;
    /** The upstream's maxConcurrency: the adaptive limit never goes above it. */
    ceiling: number;
    inFlight: number;
    queued: number;
    pausedUntil: number;
    sharedSlots?: number;
    totals: UpstreamTotals;
    /** Why the limit last moved and when, how often it moved by reason, and what the engine reports (HTTP upstreams). */
    lastChange: LimitChange;
    changes: Partial<Record<LimitReason, number>>;
    engine: EngineReport | null;
    /** Whether the upstream can be reached (HTTP upstreams); null for the emulator and the embedded engine. */
    health: HealthStatus | null;
    /** The pool entry this replica belongs to (configured upstreams only). */
    entry?: string;
    /** Requests placed here by prefix affinity: home (this is their replica) or spilled (their home had no room). */
    affinity: { home: number; spilled: number };
  }[];
  /** Lines this process failed before any upstream was tried: no upstream serves the model, input gone, attempts used up. */
  unrouted: UpstreamTotals;
  /** Set while results cannot be recorded (database down or full): nothing new is claimed until they are. */
  resultsStalled?: WriterStall;
}

const AUDIO_ENDPOINTS = new Set(['/v1/audio/transcriptions', '/v1/audio/translations']);
// How long the list of runnable batches is reused between claims (a new batch pokes the runner, which drops it).
const RUNNABLE_LIST_MS = 250;
// How often in-flight work is checked against cancels and deadlines.
const STATUS_CHECK_MS = 1000;
// How often shared ceiling slots are rebalanced when nothing asks sooner: idle slots go back within this.
const CEILING_RECONCILE_MS = 250;

export class Runner {
  private readonly lanes: Lanes<Job>;
  private readonly ceilings: GlobalCeilings | undefined;
  private readonly writer: ResultWriter;
  private readonly policy: RetryPolicyOptions;
  private readonly pricing: Pricing;
  private readonly inFlight = new Set<Job>();
  private readonly executions = new Set<Promise<void>>();
  private readonly inputBlobKeys = new Map<string, string | null>();
  private readonly counters = { claimed: 0, succeeded: 0, failed: 0, retried: 0 };
  private readonly unrouted = new UpstreamTally();
  /** Claimed lines of each batch not yet recorded; reaching zero may mean the batch is done. */
  private readonly outstanding = new Map<string, number>();
  /** Batches whose last claim came back short: nothing more was due when we looked. */
  private readonly exhausted = new Set<string>();
  private stopping = false;
  private heartbeating = false;
  private readonly scheduler: FairScheduler;
  private runnable: { at: number; batches: RunnableBatch[] } | undefined;
  private admitting = 0;
  private claimLoopDone: Promise<void> | undefined;
  private timers: NodeJS.Timeout[] = [];
  private pumpTimer: NodeJS.Timeout | undefined;
  private pumpTimerAt = Infinity;
  private wakeClaimLoop: (() => void) | undefined;

  constructor(
    private readonly ctx: LifecycleContext,
    private readonly options: RunnerOptions = {},
  ) {
    const sharedCeilings = ctx.config.worker.globalCeilings ?? ctx.store.sql.dialect === 'postgres';
    this.lanes = new Lanes<Job>(ctx.config, options.engine, sharedCeilings, options.capacities, options.discovery, () => this.pump());
    this.ceilings = sharedCeilings
      ? new GlobalCeilings({
          db: this.db,
          owner: ctx.workerId,
          leaseMs: () => leaseMs(ctx),
          onError: (err, what) => ctx.log.warn({ err }, `${what} failed`),
          onSlots: () => this.pump(),
        })
      : undefined;
    this.writer = new ResultWriter(this.db, ctx.workerId, {
      onError: (err, failure) => {
        ctx.store.health.noteFailure('database', err);
        ctx.log.error({ err, failure }, 'recording results failed; claiming stops until they are recorded, and they are retried');
      },
      onRecovered: () => {
        ctx.store.health.noteSuccess('database');
        ctx.log.info({}, 'recording results works again; claiming resumes');
        this.wakeClaimLoop?.();
      },
      onRefused: (record, err, replacement) =>
        ctx.log.error(
          { err, batchId: record.batchId, line: record.line, recordedAs: replacement?.kind },
          replacement ? 'the database refused a result; the line is recorded as failed (result_not_stored)' : 'the database refused a result and its failure; the line is left to its lease',
        ),
    });
    this.scheduler = new FairScheduler(ctx.config.limits.priority);
    const { worker } = ctx.config;
    this.policy = { maxAttempts: worker.maxAttempts, baseDelayMs: worker.retryBaseDelayMs, maxDelayMs: worker.retryMaxDelayMs };
    this.pricing = new Pricing(ctx.config.billing);
  }

  private get db(): Kysely<Database> {
    return this.ctx.store.sql.db;
  }

  start(): this {
    this.claimLoopDone = this.claimLoop();
    const heartbeat = setInterval(() => void this.heartbeat(), Math.max(100, Math.floor(leaseMs(this.ctx) / 3)));
    const statusCheck = setInterval(() => void this.abortStoppedBatches(), Math.min(STATUS_CHECK_MS, leaseMs(this.ctx)));
    this.timers = [heartbeat, statusCheck];
    if (this.ceilings) this.timers.push(setInterval(() => void this.ceilings?.reconcile(this.lanes.all()), CEILING_RECONCILE_MS));
    return this;
  }

  /** Look for work now (a batch just became runnable). */
  poke(): void {
    this.runnable = undefined;
    this.wakeClaimLoop?.();
  }

  /** Check the batches of queued and in-flight work now rather than at the next status check (one was just cancelled here). */
  checkBatches(): void {
    void this.abortStoppedBatches();
  }

  stats(): RunnerStats {
    const lanes = this.lanes.all().map((lane) => ({
      name: lane.name,
      limit: lane.limiter.limit,
      ceiling: lane.limiter.max,
      inFlight: lane.limiter.inFlight,
      queued: queuedFor(lane),
      pausedUntil: lane.limiter.pausedUntil(),
      sharedSlots: lane.sharedCeiling ? this.ceilings?.heldFor(lane.sharedCeiling.upstream) : undefined,
      totals: lane.tally.totals(),
      lastChange: lane.limiter.lastChange,
      changes: Object.fromEntries(lane.limiter.changeCounts()),
      engine: lane.capacity.engine?.() ?? null,
      health: lane.capacity.health?.status() ?? null,
      entry: lane.replica?.entry,
      affinity: { ...lane.affinity },
    }));
    return {
      ...this.counters,
      inFlight: this.inFlight.size,
      queued: this.queued(),
      lanes,
      unrouted: this.unrouted.totals(),
      resultsStalled: this.writer.stall,
    };
  }

  /**
   * Stops claiming, lets requests in flight finish for the grace period,
   * then hands back what is left (queued and still in flight) so another
   * worker picks it up at once instead of waiting for the leases to lapse.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.wakeClaimLoop?.();
    await this.claimLoopDone;
    for (const pool of this.lanes.allPools()) {
      for (const job of pool.queue.splice(0)) void this.writer.write(release(job));
    }
    const grace = this.options.shutdownGraceMs ?? this.ctx.config.worker.shutdownGraceSeconds * 1000;
    const deadline = Date.now() + grace;
    while (this.executions.size > 0 && Date.now() < deadline) await Promise.race([...this.executions, delay(50)]);
    for (const job of this.inFlight) this.abortJob(job, 'shutdown');
    await Promise.all(this.executions);
    for (const timer of this.timers) clearInterval(timer);
    if (this.pumpTimer) clearTimeout(this.pumpTimer);
    await this.writer.drain();
    if (this.ceilings) {
      await this.ceilings.releaseAll(this.lanes.all()).catch((err: unknown) => this.ctx.log.warn({ err }, 'giving back shared concurrency slots failed; they lapse with their lease'));
    }
    await this.lanes.close();
  }

  // ------------------------------------------------------------------ claiming

  private queued(): number {
    let queued = 0;
    for (const pool of this.lanes.allPools()) queued += pool.queue.length;
    return queued;
  }

  private buffered(): number {
    return this.queued() + this.inFlight.size + this.admitting;
  }

  /** Claimed-but-unsent work is kept to about twice what the upstreams can take at once. */
  private bufferTarget(): number {
    const capacity = this.lanes.all().reduce((sum, lane) => sum + lane.limiter.limit, 0);
    return Math.max(this.ctx.config.worker.claimBatchSize, capacity * 2);
  }

  private async claimLoop(): Promise<void> {
    while (!this.stopping) {
      const room = this.bufferTarget() - this.buffered();
      let claimed = 0;
      // Claim in chunks, not one line per completion: each claim is a write transaction of its own.
      const worthClaiming = room >= Math.min(this.ctx.config.worker.claimBatchSize / 2, this.bufferTarget() / 2);
      // While results cannot be recorded, claiming more only piles up results in memory and leases nobody works on.
      if (this.writer.stall) {
        await this.idle(this.ctx.config.worker.pollIntervalMs);
        continue;
      }
      if (room > 0 && worthClaiming) {
        try {
          claimed = await this.claimOnce(Math.min(room, this.ctx.config.worker.claimBatchSize));
        } catch (err) {
          this.ctx.log.error({ err }, 'claiming requests failed');
        }
      }
      if (claimed === 0 && !this.stopping) await this.idle(room > 0 && worthClaiming ? this.ctx.config.worker.pollIntervalMs : 1000);
    }
  }

  private idle(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        if (self.wakeClaimLoop === done) self.wakeClaimLoop = undefined;
        resolve();
      }
      this.wakeClaimLoop = done;
    });
  }

  /**
   * Every in-progress batch with lines left, read at most every RUNNABLE_LIST_MS (and at once after a poke):
   * claims come many times a second, and the list only changes when a batch starts or ends.
   */
  private async runnableBatches(now: number): Promise<RunnableBatch[]> {
    if (!this.runnable || now - this.runnable.at > RUNNABLE_LIST_MS) {
      this.runnable = { at: now, batches: await listRunnableBatches(this.db, now) };
    }
    return this.runnable.batches.filter((batch) => batch.deadline_at > now);
  }

  /**
   * One claim, for the first batch in the scheduler's order (scheduler.ts: users take turns, then a user's
   * batches) that has lines due; a batch with nothing due (all waiting to retry) passes the turn on.
   */
  private async claimOnce(limit: number): Promise<number> {
    const now = Date.now();
    const batches = await this.runnableBatches(now);
    if (batches.length === 0) return 0;
    for (const batch of this.scheduler.order(batches)) {
      const rows = await claimRequests(this.db, this.ctx.store.sql.dialect, batch.id, this.ctx.workerId, leaseMs(this.ctx), now, limit);
      if (rows.length === 0) continue;
      this.scheduler.served(batch);
      this.counters.claimed += rows.length;
      this.outstanding.set(batch.id, (this.outstanding.get(batch.id) ?? 0) + rows.length);
      if (rows.length < limit) this.exhausted.add(batch.id);
      this.admitting += rows.length;
      try {
        await this.admitOrHandBack(batch, rows);
      } finally {
        this.admitting -= rows.length;
      }
      this.pump();
      return rows.length;
    }
    return 0;
  }

  private async inputBlobKey(batch: RunnableBatch): Promise<string | null> {
    if (!this.inputBlobKeys.has(batch.id)) {
      if (this.inputBlobKeys.size > 1000) this.inputBlobKeys.clear();
      const file = await findFile(this.db, batch.input_file_id);
      this.inputBlobKeys.set(batch.id, file?.blob_key ?? null);
    }
    return this.inputBlobKeys.get(batch.id) ?? null;
  }

  /**
   * Admits claimed lines; when admission itself fails (the input blob or the file row cannot be read: an S3
   * reset, EMFILE, a database blip), the lines not yet queued go back at once as retries with the retry
   * policy's backoff, instead of waiting under this worker's renewed lease until the batch expires. Each
   * claim counted as an attempt, so a failure that repeats forever ends in attempts used up, not in a loop.
   */
  private async admitOrHandBack(batch: RunnableBatch, rows: RequestRow[]): Promise<void> {
    const queued = new Set<RequestRow>();
    try {
      await this.admit(batch, rows, queued);
    } catch (err) {
      const left = rows.filter((row) => !queued.has(row));
      if (err instanceof BlobNotFoundError) {
        // The input's bytes are gone from the blob store: no retry brings them back.
        for (const row of left) this.record(fail(claimed(row, batch), 'missing_input', `The content of the batch's input file ${batch.input_file_id} is no longer in the blob store.`));
        return;
      }
      this.ctx.log.warn({ err, batchId: batch.id, lines: left.length }, 'reading claimed lines failed; they are handed back to be retried');
      this.inputBlobKeys.delete(batch.id);
      const now = Date.now();
      for (const row of left) {
        const delayMs = retryDelay(row.attempts, null, this.policy);
        this.record(retryLater(claimed(row, batch), delayMs, `reading the input line failed: ${describeStoreFailure(err)}`, now));
      }
    }
  }

  /** Reads the claimed lines and queues each on its lane; lines nobody can serve fail here. Queued rows go into `queued`. */
  private async admit(batch: RunnableBatch, rows: RequestRow[], queued: Set<RequestRow>): Promise<void> {
    // Lines whose attempts are used up fail before anything is read: a line whose reading fails forever ends here.
    const runnable: RequestRow[] = [];
    for (const row of rows) {
      if (row.attempts > this.policy.maxAttempts) {
        queued.add(row);
        this.record(fail(claimed(row, batch), 'upstream_error', `Gave up after ${row.attempts - 1} attempts: the workers handling this request stopped before it finished.`));
      } else runnable.push(row);
    }
    if (runnable.length === 0) return;
    const blobKey = await this.inputBlobKey(batch);
    if (!blobKey) {
      for (const row of runnable) {
        queued.add(row);
        this.record(fail(claimed(row, batch), 'missing_input', `The batch's input file ${batch.input_file_id} was deleted.`));
      }
      return;
    }
    const lines = await readLines(this.ctx.store.blobs, blobKey, runnable);
    // A model nobody serves may have just appeared on a `models: "auto"` upstream: ask before failing its lines.
    if (this.lanes.discovers && runnable.some((row) => !this.lanes.forModel(row.model))) await this.lanes.refreshModels();
    const jobs: Job[] = [];
    for (const row of runnable) {
      const request = claimed(row, batch);
      queued.add(row);
      const pool = this.lanes.forModel(row.model);
      if (!pool) {
        this.record(
          fail(request, 'invalid_model', `No upstream serves model "${row.model}". Configure an upstream whose "models" list matches it, or use model "echo".`),
        );
        continue;
      }
      const input = parseLineBody(lines.get(row.line));
      if (!input) {
        this.record(fail(request, 'invalid_request', `Line ${row.line} of the input file no longer holds the JSON request it held when the batch was validated.`));
        continue;
      }
      if (typeof input.model !== 'string') input.model = row.model;
      const prefixHash = pool.ring ? prefixHashOf(batch.endpoint, input) : undefined;
      jobs.push({ ...request, row, batch, pool, prefixHash, input, abort: new AbortController() });
    }
    // Lines that share a prefix are sent one after another, so the replica they go to sees a run of the same
    // prefix (its cache keeps it) rather than the input's interleaving. Stable: the input order stays within a prefix.
    if (jobs.some((job) => job.prefixHash !== undefined)) jobs.sort((a, b) => (a.prefixHash ?? -1) - (b.prefixHash ?? -1));
    for (const job of jobs) this.enqueue(job.pool.queue, job);
  }

  /**
   * Queues a claimed line on its lane, ahead of the queued lines it outranks, so work of an urgent batch (or a
   * user's own higher-priority batch) overtakes work already claimed: ahead of lines of a lower band (scheduler.ts),
   * and of the same user's lines of a lower priority; never ahead of another user's lines of the same band.
   */
  private enqueue(queue: Job[], job: Job): void {
    const bounds = this.ctx.config.limits.priority;
    const band = bandOf(job.batch.priority, bounds);
    const outranks = (other: Job): boolean => {
      const otherBand = bandOf(other.batch.priority, bounds);
      if (band !== otherBand) return band > otherBand;
      if (band === 1 && other.batch.user_id !== job.batch.user_id) return false;
      return job.batch.priority > other.batch.priority;
    };
    let index = queue.length;
    while (index > 0 && outranks(queue[index - 1])) index--;
    queue.splice(index, 0, job);
  }

  // ------------------------------------------------------------------ dispatching

  /** Starts every queued job that a replica of its pool can take now: up, not paused, a concurrency slot, rate budget. */
  private pump(): void {
    if (this.stopping) return;
    const now = Date.now();
    let wakeAt = Infinity;
    let wantSlots = false;
    // Lanes whose rate budget a line of this pump found short: full for the rest of it, so lines spill elsewhere.
    // Made only when one is: pump runs after every completion, and most never meet a rate limit.
    let rateShort: Set<Lane<Job>> | undefined;
    // A replica nobody can reach takes nothing: its lines wait for it (leases renewed, deadline applying) unless
    // another replica takes them; its coming back calls pump().
    const hasRoom = (lane: Lane<Job>): boolean => {
      if (lane.capacity.health?.down || rateShort?.has(lane)) return false;
      const paused = lane.limiter.pausedUntil();
      if (paused > now) {
        wakeAt = Math.min(wakeAt, paused);
        return false;
      }
      return lane.limiter.available > 0;
    };
    const rateAllows = (lane: Lane<Job>, job: Job): boolean => {
      if (lane.rate.tryTake(job.row.estimated_tokens)) return true;
      (rateShort ??= new Set()).add(lane);
      wakeAt = Math.min(wakeAt, now + Math.max(1, lane.rate.waitMs(job.row.estimated_tokens)));
      return false;
    };
    for (const pool of this.lanes.allPools()) {
      if (pool.queue.length === 0) continue;
      for (const lane of pool.lanes) {
        // Work waiting on a shared ceiling's slots, not on the lane's own limit: ask for more now, not at the next tick.
        if (lane.sharedCeiling && lane.limiter.inFlight >= lane.limiter.cap && lane.limiter.cap < lane.limiter.limit) wantSlots = true;
      }
      if (pool.ring) this.pumpByAffinity(pool, hasRoom, rateAllows);
      else this.pumpBySpareCapacity(pool, hasRoom, rateAllows);
    }
    if (wantSlots) void this.ceilings?.reconcile(this.lanes.all());
    this.wakePumpAt(wakeAt);
  }

  /** Pump again at `at` (a pause or a rate budget ends), unless a pump is already due sooner. */
  private wakePumpAt(at: number): void {
    if (at === Infinity || (this.pumpTimer && this.pumpTimerAt <= at)) return;
    clearTimeout(this.pumpTimer);
    this.pumpTimerAt = at;
    this.pumpTimer = setTimeout(() => {
      this.pumpTimer = undefined;
      this.pump();
    }, Math.max(0, at - Date.now()));
  }

  /**
   * The head goes to the replica with the most spare capacity that can take it, and so on down the queue until
   * none can. A line that failed over and waits for a replica it has not failed on lets the lines behind it pass.
   */
  private pumpBySpareCapacity(pool: Pool<Job>, hasRoom: (lane: Lane<Job>) => boolean, rateAllows: (lane: Lane<Job>, job: Job) => boolean): void {
    const priority = pool.queue[0]?.batch.priority;
    let index = 0;
    while (index < pool.queue.length && index < LOOKAHEAD) {
      const job = pool.queue[index];
      if (job.batch.priority !== priority) break;
      const lane = placeIn(pool, job, (candidate) => hasRoom(candidate) && rateAllows(candidate, job));
      if (lane) {
        pool.queue.splice(index, 1);
        this.dispatch(job, lane);
        continue;
      }
      // An ordinary line that no replica can take: none behind it can be taken either.
      if (!job.triedOn) break;
      index += 1;
    }
  }

  /** Each replica with room takes a line of its own prefixes, or one whose home is full (placement.ts pickForLane), until none can. */
  private pumpByAffinity(pool: Pool<Job>, hasRoom: (lane: Lane<Job>) => boolean, rateAllows: (lane: Lane<Job>, job: Job) => boolean): void {
    let progress = true;
    while (progress && pool.queue.length > 0) {
      progress = false;
      for (const lane of pool.lanes) {
        if (pool.queue.length === 0 || !hasRoom(lane)) continue;
        const index = pickForLane(pool, lane, pool.lanes.map(hasRoom));
        if (index < 0) continue;
        const job = pool.queue[index];
        if (!rateAllows(lane, job)) {
          progress = true; // the lane is full now; the line may spill to the next on its ring
          continue;
        }
        pool.queue.splice(index, 1);
        if (job.prefixHash !== undefined) {
          // Counted against the ring's home ignoring failovers: a line sent elsewhere after failing at home is a spill.
          if (homeOf(pool, job, true) === lane) lane.affinity.home += 1;
          else lane.affinity.spilled += 1;
        }
        this.dispatch(job, lane);
        progress = true;
      }
    }
  }

  private dispatch(job: Job, lane: Lane<Job>): void {
    lane.limiter.tryAcquire();
    job.lane = lane;
    this.track(this.execute(job, lane));
  }

  private track(execution: Promise<void>): void {
    this.executions.add(execution);
    void execution.finally(() => this.executions.delete(execution));
  }

  private async execute(job: Job, lane: Lane<Job>): Promise<void> {
    this.inFlight.add(job);
    let record: RequestOutcomeRecord | Requeue;
    try {
      record = await this.attempt(job, lane);
    } catch (err) {
      this.ctx.log.error({ err, batchId: job.batchId, line: job.line, custom_id: job.row.custom_id }, 'unexpected error running a request; it will be retried');
      lane.tally.countRetry('internal');
      record = settle(job, { kind: 'network_error', message: `internal error: ${(err as Error).message}` }, { action: 'retry', delayMs: this.policy.baseDelayMs, overload: false, reason: 'internal error' }, Date.now());
    } finally {
      lane.limiter.release();
      this.inFlight.delete(job);
    }
    if (typeof record === 'string') {
      // The line goes back to the head of its pool's queue. 'wait': the replica went unreachable under this
      // attempt; another replica takes it, or it waits for one to come back, this attempt not held against it
      // beyond the claim's. 'failover': a retryable failure, retried at once on another replica that is up, as
      // one more attempt. 'failover-overload': the replica was full (429/503); trying the next costs no attempt,
      // and each replica is tried once per claim, so a pool that is full everywhere ends in the usual backoff.
      if (record !== 'wait') {
        if (record === 'failover') job.attempts += 1;
        (job.triedOn ??= new Set()).add(lane);
      }
      // Stopping: the queues were handed back already, and nothing will send it; hand it back too.
      if (this.stopping) void this.writer.write(release(job));
      else {
        job.pool.queue.unshift(job);
        this.pump();
      }
      return;
    }
    this.pump();
    this.record(record, lane.tally);
    // Nothing else in flight or waiting here: no result is coming to share the commit, so do not linger for one.
    if (this.buffered() === 0) this.writer.commitNow();
    this.wakeClaimLoop?.();
  }

  private async attempt(job: Job, lane: Lane<Job>): Promise<RequestOutcomeRecord | Requeue> {
    let call: UpstreamCall;
    try {
      call = await this.buildCall(job, lane);
    } catch (err) {
      // A download cut short by a cancel, an expiry or a shutdown is that, not a bad audio source:
      // failing it as invalid_request would misreport a cancel and lose a line to a graceful stop.
      if (job.abortReason) return this.abortedRecord(job);
      if (err instanceof AudioSourceError) return fail(job, 'invalid_request', err.message);
      throw err;
    }
    const sentAt = performance.now();
    const outcome = await lane.client.send(call);
    const latencyMs = performance.now() - sentAt;
    lane.tally.observeLatency(latencyMs / 1000);
    if (job.abortReason) return this.abortedRecord(job);
    lane.capacity.noteReachability?.(outcome);
    if (outcome.kind === 'network_error' && lane.capacity.health?.down) return 'wait';
    let decision = decide(outcome, job.attempts, this.policy);
    const failover = decision.action === 'retry' && this.canFailOver(job, lane);
    // A retry that could only run after the deadline is a final failure now, with the upstream's last answer.
    if (decision.action === 'retry' && !failover && Date.now() + decision.delayMs >= job.batch.deadline_at) {
      decision = decide(outcome, this.policy.maxAttempts, this.policy);
    }
    if (decision.action === 'retry') lane.tally.countRetry(retryCauseOf(outcome));
    if (decision.action === 'succeed') lane.capacity.onSuccess(latencyMs, outcome.kind === 'response' ? outcome.body : undefined);
    else if (decision.action === 'retry' && decision.overload) lane.capacity.onOverload(outcome.kind === 'response' ? outcome.retryAfterMs : null);
    if (failover) return decision.action === 'retry' && decision.overload ? 'failover-overload' : 'failover';
    const record = settle(job, outcome, decision, Date.now(), this.pricing);
    if (record.kind === 'succeeded' || record.kind === 'failed') record.latencyMs = Math.round(latencyMs);
    return record;
  }

  /**
   * Whether a retryable failure on `lane` is better retried at once on another replica of the pool: one that is up
   * and that this line has not failed on yet. Each failover is an attempt, so maxAttempts still bounds them.
   */
  private canFailOver(job: Job, lane: Lane<Job>): boolean {
    const { lanes } = job.pool;
    if (lanes.length < 2) return false;
    return lanes.some((other) => other !== lane && !job.triedOn?.has(other) && !other.capacity.health?.down);
  }

  private async buildCall(job: Job, lane: Lane<Job>): Promise<UpstreamCall> {
    const endpoint = job.batch.endpoint;
    let audio: AudioPayload | undefined;
    let body = job.input;
    // vLLM's priority scheduling serves lower values first; Spool's priorities rank higher first.
    if (lane.replica?.sendPriority && body.priority === undefined && !AUDIO_ENDPOINTS.has(endpoint)) body = { ...body, priority: -job.batch.priority };
    if (AUDIO_ENDPOINTS.has(endpoint)) {
      audio = await loadAudio(job.input.file, (fileId) => this.readUserFile(job.batch.user_id, fileId), { ...this.ctx.config.audio, signal: job.abort.signal });
      const { file: _file, ...rest } = job.input;
      body = rest;
    }
    return { endpoint, body, audio, timeoutMs: this.ctx.config.worker.requestTimeoutMs, signal: job.abort.signal };
  }

  private async readUserFile(userId: string, fileId: string): Promise<AudioPayload | undefined> {
    const file = await findFile(this.db, fileId);
    if (!file || file.user_id !== userId || file.status !== 'processed' || !file.blob_key) return undefined;
    // The same cap as URL sources, checked before reading: an uploaded file may be up to maxFileBytes (100 MB),
    // and each in-flight audio line holds its audio in memory for the multipart body.
    if (file.bytes > MAX_AUDIO_BYTES) throw new AudioSourceError(`'body.file' ${fileId} is ${file.bytes} bytes; audio may be at most ${MAX_AUDIO_BYTES} bytes.`);
    const stream = await this.ctx.store.blobs.read(file.blob_key);
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return { bytes: Buffer.concat(chunks), fileName: file.filename };
  }

  private abortedRecord(job: Job): RequestOutcomeRecord {
    if (job.abortReason === 'cancelled') return fail(job, 'batch_cancelled', 'The batch was cancelled while this request was in flight.');
    if (job.abortReason === 'expired') return fail(job, 'batch_expired', "The batch's completion window ended while this request was in flight.");
    return release(job);
  }

  private abortJob(job: Job, reason: NonNullable<Job['abortReason']>): void {
    if (job.abortReason) return;
    job.abortReason = reason;
    job.abort.abort();
  }

  /** `tally`: the lane the line ran on; left out, the line never reached an upstream. */
  private record(record: RequestOutcomeRecord, tally: UpstreamTally = this.unrouted): void {
    tally.countOutcome(record);
    if (record.kind === 'succeeded') this.counters.succeeded++;
    else if (record.kind === 'failed') this.counters.failed++;
    else if (record.kind === 'retry') this.counters.retried++;
    void this.writer.write(record).then((applied) => {
      // A retry is due again after not_before: make sure the claim loop looks then.
      if (applied && record.kind === 'retry') setTimeout(() => this.wakeClaimLoop?.(), Math.max(0, record.notBefore - Date.now())).unref();
      const left = (this.outstanding.get(record.batchId) ?? 1) - 1;
      if (left > 0) this.outstanding.set(record.batchId, left);
      else {
        this.outstanding.delete(record.batchId);
        // The last claim found nothing more to take and nothing of the batch is left here: it may be done, so
        // finalize now rather than at the next poll. (Poking on every drain cost ~25% of throughput at 3k req/s.)
        if (this.exhausted.delete(record.batchId)) this.ctx.onBatchDrained?.();
      }
    });
  }

  // ------------------------------------------------------------------ leases and cancels

  private async heartbeat(): Promise<void> {
    // One at a time: on a slow database, overlapping renewals only queue up behind each other
    // and take every pooled connection the result writer and the claims need.
    if (this.heartbeating) return;
    this.heartbeating = true;
    try {
      await renewRequestLeases(this.db, this.ctx.workerId, leaseMs(this.ctx), Date.now());
      await this.ceilings?.renew(this.lanes.all());
    } catch (err) {
      this.ctx.log.warn({ err }, 'renewing request leases failed');
    } finally {
      this.heartbeating = false;
    }
  }

  /** Drops queued work and aborts requests in flight for batches no longer running. */
  private async abortStoppedBatches(): Promise<void> {
    const batchIds = new Set<string>();
    for (const job of this.inFlight) batchIds.add(job.batchId);
    for (const pool of this.lanes.allPools()) for (const job of pool.queue) batchIds.add(job.batchId);
    if (batchIds.size === 0) return;
    let statuses;
    try {
      statuses = await batchStatuses(this.db, [...batchIds]);
    } catch (err) {
      this.ctx.log.warn({ err }, 'checking batch statuses failed');
      return;
    }
    const now = Date.now();
    const reasonFor = (batchId: string): Job['abortReason'] => {
      const batch = statuses.get(batchId);
      if (!batch || batch.status === 'cancelling' || batch.status === 'cancelled') return 'cancelled';
      if (batch.deadline_at <= now || batch.status === 'expired') return 'expired';
      return batch.status === 'in_progress' ? undefined : 'cancelled';
    };
    for (const job of this.inFlight) {
      const reason = reasonFor(job.batchId);
      if (reason) this.abortJob(job, reason);
    }
    for (const pool of this.lanes.allPools()) {
      pool.queue = pool.queue.filter((job) => {
        const reason = reasonFor(job.batchId);
        if (!reason) return true;
        job.abortReason = reason;
        // Counted on the replica it last ran on; a line never sent counts as never having reached an upstream.
        this.record(this.abortedRecord(job), job.lane?.tally);
        return false;
      });
    }
  }
}



/** The line's request body, parsed here so it is this job's own object (nothing else holds it); undefined when the bytes are no longer a request. */
function parseLineBody(bytes: Buffer | undefined): Record<string, unknown> | undefined {
  if (!bytes) return undefined;
  try {
    const line = JSON.parse(bytes.toString('utf8')) as { body?: unknown };
    return typeof line.body === 'object' && line.body !== null && !Array.isArray(line.body) ? (line.body as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function claimed(row: RequestRow, batch: RunnableBatch): ClaimedRequest {
  return { batchId: row.batch_id, line: row.line, attempts: row.attempts, userId: batch.user_id, model: row.model };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
