// The worker: claims chunks of input lines under a lease, sends each line to
// the upstream its model routes to, and commits finished lines as result
// segments on their chunk. Memory is bounded by the claim buffer (a few times
// the upstreams' concurrency, plus lines waiting out a retry, capped), never
// by batch or file size.
//
//   claim loop ──► claim a chunk ──► admit (skip lines its committed segments hold; read its byte range once;
//                                    route each line to a pool) ──► pool queue
//   pump ──► place on a replica's lane (up, a concurrency slot, rate budget; prefix affinity) ──► execute
//   execute ──► upstream ──► retry policy ──► request-lifecycle transition ──► segment writer (group commit)
//                                         ├─► retryable: back to the pool queue after its backoff (chunk still held)
//                                         └─► a retryable failure with another replica up: back to the pool queue
//   heartbeat ──► renew chunk leases; release chunks of batches cancelled or expired meanwhile
import type { Kysely } from 'kysely';
import type { LifecycleContext } from '../runtime/context.ts';
import { leaseMs } from '../runtime/context.ts';
import { findFile } from '../store/sql/files.ts';
import { batchStatuses, claimChunk, finishChunk, listRunnableBatches, releaseChunk, renewChunkLeases, type RunnableBatch } from '../store/sql/chunks.ts';
import { chunkSegments } from '../store/sql/segments.ts';
import type { ChunkRow, Database } from '../store/sql/schema.ts';
import { LineBitmap } from '../store/line-bitmap.ts';
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
import { readChunkLines } from '../store/blobs/line-ranges.ts';
import { fail, release, settle, type ClaimedRequest, type RequestOutcomeRecord } from './request-lifecycle.ts';
import { SegmentWriter, type FinalRecord, type HeldChunkRef, type WriteOutcome, type WriterStall } from './segment-writer.ts';
import { errorLineText, outputLineText } from './wire-lines.ts';
import { bodyBytesOf } from './body-span.ts';
import { Pricing } from '../usage/pricing.ts';
import { bandOf, FairScheduler } from './scheduler.ts';
import { decide, retryDelay, type RetryPolicyOptions } from './retry-policy.ts';
import { retryCauseOf, UpstreamTally, type UpstreamTotals } from './upstream-tally.ts';

/** An attempt whose line goes back to its pool's queue instead of being recorded (see execute). */
type Requeue = 'wait' | 'failover' | 'failover-overload';

/** A chunk this worker holds, and what of it is still here. */
class HeldChunk implements HeldChunkRef {
  readonly batchId: string;
  readonly chunk: number;
  readonly claim: number;
  readonly lineStart: number;
  readonly lineCount: number;
  readonly userId: string;
  readonly currency: string;
  open: number;
  segmentsWritten = 0;
  lost = false;
  /** Lines here as jobs: queued, in flight or waiting out a retry. */
  active = 0;
  /** Final results handed to the writer and not yet committed. */
  uncommitted = 0;
  /** Whether any line of this claim was sent upstream (a chunk handed back unsent does not count the claim). */
  sent = false;
  /** Set when the chunk is to be handed back once nothing of it is active or uncommitted. */
  releasing = false;
  readonly retryTimers = new Set<NodeJS.Timeout>();
  /** Lines of the chunk already in committed segments, once read at admission. */
  done: LineBitmap | undefined;
  /** Prompt + max_tokens estimate per line, for rate budgets (validation keeps it per chunk). */
  readonly tokensPerLine: number;

  constructor(
    readonly row: ChunkRow,
    readonly batch: RunnableBatch,
  ) {
    this.batchId = row.batch_id;
    this.chunk = row.chunk;
    this.claim = row.claims;
    this.lineStart = row.line_start;
    this.lineCount = row.line_count;
    this.userId = batch.user_id;
    this.currency = batch.cost_currency;
    this.open = row.line_count;
    this.tokensPerLine = Math.max(1, Math.ceil(row.estimated_tokens / Math.max(1, row.line_count)));
  }
}

interface Job extends ClaimedRequest {
  held: HeldChunk;
  customId: string;
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
  /** `input` as the line's own bytes, when the line names its model (nothing to fill in): sent as they are. */
  inputBytes?: Buffer;
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
// Lines held (queued, in flight, waiting out a retry) at most, in multiples of the claim buffer.
const MAX_HELD_PER_BUFFER = 8;
// How often shared ceiling slots are rebalanced when nothing asks sooner: idle slots go back within this.
const CEILING_RECONCILE_MS = 250;

export class Runner {
  private readonly lanes: Lanes<Job>;
  private readonly ceilings: GlobalCeilings | undefined;
  private readonly writer: SegmentWriter;
  private readonly policy: RetryPolicyOptions;
  private readonly pricing: Pricing;
  private readonly inFlight = new Set<Job>();
  private readonly executions = new Set<Promise<void>>();
  private readonly inputBlobKeys = new Map<string, string | null>();
  private readonly counters = { claimed: 0, succeeded: 0, failed: 0, retried: 0 };
  private readonly unrouted = new UpstreamTally();
  /** Chunks held, per batch; a batch reaching none may be done. */
  private readonly held = new Map<string, Set<HeldChunk>>();
  private readonly handBacks = new Set<Promise<void>>();
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
    this.writer = new SegmentWriter(this.db, ctx.store.blobs, ctx.workerId, {
      onError: (err, failure, part) => {
        ctx.store.health.noteFailure(part, err);
        ctx.log.error({ err, failure, part }, 'recording results failed; claiming stops until they are recorded, and they are retried');
      },
      onRecovered: (part) => {
        ctx.store.health.noteSuccess(part);
        ctx.log.info({}, 'recording results works again; claiming resumes');
        this.wakeClaimLoop?.();
      },
      onRefused: (chunk, err) =>
        ctx.log.error({ err, batchId: chunk.batchId, chunk: chunk.chunk }, 'the database refused a result segment; this worker gives the chunk up, and it reruns after its lease'),
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
    // Every held chunk goes back once its lines in flight have landed (or been aborted) and its results are committed.
    for (const held of this.heldChunks()) {
      held.releasing = true;
      for (const timer of held.retryTimers) clearTimeout(timer);
      held.active -= held.retryTimers.size;
      held.retryTimers.clear();
    }
    for (const pool of this.lanes.allPools()) for (const job of pool.queue.splice(0)) this.drop(job);
    const grace = this.options.shutdownGraceMs ?? this.ctx.config.worker.shutdownGraceSeconds * 1000;
    const deadline = Date.now() + grace;
    while (this.executions.size > 0 && Date.now() < deadline) await Promise.race([...this.executions, delay(50)]);
    for (const job of this.inFlight) this.abortJob(job, 'shutdown');
    await Promise.all(this.executions);
    for (const timer of this.timers) clearInterval(timer);
    if (this.pumpTimer) clearTimeout(this.pumpTimer);
    await this.writer.drain();
    for (const held of this.heldChunks()) this.maybeHandBack(held);
    await Promise.all(this.handBacks);
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

  /** Lines of held chunks still here as jobs, including those waiting out a retry. */
  private heldLines(): number {
    let lines = 0;
    for (const chunks of this.held.values()) for (const held of chunks) lines += held.active;
    return lines;
  }

  /** Claimed-but-unsent work is kept to about twice what the upstreams can take at once. */
  private bufferTarget(): number {
    const capacity = this.lanes.all().reduce((sum, lane) => sum + lane.limiter.limit, 0);
    return Math.max(this.ctx.config.worker.claimBatchSize, capacity * 2);
  }

  /**
   * A claim is a write transaction of its own, and a chunk is many lines: claim once there is room for a good part
   * of one. Lines waiting out a retry are not counted as buffered (they wait, the upstream is free), but are bounded:
   * an upstream failing every line must not make this worker claim chunk after chunk into memory.
   */
  private worthClaiming(): boolean {
    const target = this.bufferTarget();
    const room = target - this.buffered();
    return room >= Math.min(this.ctx.config.worker.claimBatchSize / 2, target / 2) && this.heldLines() < target * MAX_HELD_PER_BUFFER;
  }

  private async claimLoop(): Promise<void> {
    while (!this.stopping) {
      let claimed = 0;
      const worthClaiming = this.worthClaiming();
      // While results cannot be recorded, claiming more only piles up results in memory and leases nobody works on.
      if (this.writer.stall) {
        await this.idle(this.ctx.config.worker.pollIntervalMs);
        continue;
      }
      if (worthClaiming) {
        try {
          claimed = await this.claimOnce();
        } catch (err) {
          this.ctx.log.error({ err }, 'claiming a chunk failed');
        }
      }
      if (claimed === 0 && !this.stopping) await this.idle(worthClaiming ? this.ctx.config.worker.pollIntervalMs : 1000);
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
   * Every in-progress batch with a chunk to claim, read at most every RUNNABLE_LIST_MS (and at once after a poke):
   * claims come many times a second, and the list only changes when a batch starts or ends.
   */
  private async runnableBatches(now: number): Promise<RunnableBatch[]> {
    if (!this.runnable || now - this.runnable.at > RUNNABLE_LIST_MS) {
      this.runnable = { at: now, batches: await listRunnableBatches(this.db, now) };
    }
    return this.runnable.batches.filter((batch) => batch.deadline_at > now);
  }

  /**
   * Claims one chunk, of the first batch in the scheduler's order (scheduler.ts: users take turns, then a user's
   * batches) that has one to claim; returns its line count (0: nothing claimed).
   */
  private async claimOnce(): Promise<number> {
    const now = Date.now();
    const batches = await this.runnableBatches(now);
    if (batches.length === 0) return 0;
    for (const batch of this.scheduler.order(batches)) {
      const row = await claimChunk(this.db, this.ctx.store.sql.dialect, batch.id, this.ctx.workerId, leaseMs(this.ctx), now);
      if (!row) continue;
      this.scheduler.served(batch);
      this.counters.claimed += row.line_count;
      const held = new HeldChunk(row, batch);
      let chunks = this.held.get(batch.id);
      if (!chunks) this.held.set(batch.id, (chunks = new Set()));
      chunks.add(held);
      this.admitting += row.line_count;
      try {
        await this.admitOrRetry(held, 1);
      } finally {
        this.admitting -= row.line_count;
      }
      this.pump();
      // Handed straight back (its segments could not be read): let the loop idle rather than claim it again at once.
      return held.lost && held.releasing ? 0 : row.line_count;
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
   * Admits a claimed chunk. When admission itself fails (the input blob or the segment rows cannot be read: an S3
   * reset, EMFILE, a database blip), it is tried again after the retry policy's backoff while the chunk stays held
   * (its lease renewed), and after worker.maxAttempts failures its lines fail saying why: bounded, never a hot loop
   * of claims and releases.
   */
  private async admitOrRetry(held: HeldChunk, attempt: number): Promise<void> {
    try {
      await this.admit(held);
    } catch (err) {
      if (held.lost || held.releasing) return;
      if (!held.done) {
        // Not even its committed segments could be read, so which lines are done is unknown: hand it back (as a
        // claim, so a chunk that can never be read ends in its lines given up) for a later claim to try.
        this.ctx.log.warn({ err, batchId: held.batchId, chunk: held.chunk }, 'reading a claimed chunk\'s segments failed; it is handed back');
        held.releasing = true;
        held.sent = true;
        this.maybeHandBack(held);
        return;
      }
      if (err instanceof BlobNotFoundError) {
        // The input's bytes are gone from the blob store: no retry brings them back.
        this.failUnread(held, 'missing_input', `The content of the batch's input file ${held.batch.input_file_id} is no longer in the blob store.`);
        return;
      }
      this.inputBlobKeys.delete(held.batchId);
      if (attempt >= this.policy.maxAttempts) {
        this.failUnread(held, 'upstream_error', `Reading this request from the input file failed ${attempt} times (${describeStoreFailure(err)}).`);
        return;
      }
      const delayMs = retryDelay(attempt, null, this.policy);
      this.ctx.log.warn({ err, batchId: held.batchId, chunk: held.chunk, retryInMs: delayMs }, 'reading a claimed chunk failed; it is tried again');
      held.active += 1; // the pending admission keeps the chunk from being handed back as finished
      const timer = setTimeout(() => {
        held.retryTimers.delete(timer);
        held.active -= 1;
        if (this.stopping || held.lost || held.releasing) return this.maybeHandBack(held);
        void this.admitOrRetry(held, attempt + 1).then(() => this.pump());
      }, delayMs);
      held.retryTimers.add(timer);
    }
  }

  /** Reads the chunk's lines its committed segments do not hold yet, and queues each on its pool; lines nobody can serve fail here. */
  private async admit(held: HeldChunk): Promise<void> {
    const { row, batch } = held;
    const done = new LineBitmap(row.line_count);
    if (row.segments > 0) for (const segment of await chunkSegments(this.db, row.batch_id, row.chunk)) done.addAll(LineBitmap.fromHex(segment.done_bits, row.line_count));
    held.done = done;
    held.open = row.line_count - done.count();
    if (held.open === 0) {
      // Every line is in a committed segment already (its last owner died between its last commit and marking it done).
      await finishChunk(this.db, row.batch_id, row.chunk, this.ctx.workerId, Date.now(), row.claims);
      this.forget(held);
      return;
    }
    const blobKey = await this.inputBlobKey(batch);
    if (!blobKey) {
      this.failUnread(held, 'missing_input', `The batch's input file ${batch.input_file_id} was deleted.`);
      return;
    }
    const lines = await readChunkLines(this.ctx.store.blobs, blobKey, row.byte_start, row.byte_end);
    const runnable: { line: number; customId: string; model: string; input: Record<string, unknown>; inputBytes?: Buffer }[] = [];
    const failures: { line: number; customId: string; model: string; code: string; message: string }[] = [];
    // A chunk claimed again and again (its workers keep dying mid-chunk) gives up on its lines rather than loop.
    const givenUp = row.claims > this.policy.maxAttempts;
    for (let index = 0; index < row.line_count; index++) {
      if (done.has(index)) continue;
      const line = row.line_start + index;
      const parsed = parseLine(lines[index]);
      if (!parsed) {
        const message = `Line ${line} of the input file no longer holds the JSON request it held when the batch was validated.`;
        failures.push({ line, customId: unreadableCustomId(line), model: batch.model_id ?? '', code: 'invalid_request', message });
        continue;
      }
      // Validation let a line name no model only when the batch has a model_id: the line runs on that.
      const namesModel = typeof parsed.body.model === 'string';
      if (!namesModel && batch.model_id !== null) parsed.body.model = batch.model_id;
      const model = typeof parsed.body.model === 'string' ? parsed.body.model : '';
      if (givenUp) {
        const message = `Gave up after ${row.claims - 1} attempts: the workers handling this request stopped before it finished.`;
        failures.push({ line, customId: parsed.customId, model, code: 'upstream_error', message });
        continue;
      }
      runnable.push({ line, customId: parsed.customId, model, input: parsed.body, inputBytes: namesModel ? bodyBytesOf(lines[index]) : undefined });
    }
    // A model nobody serves may have just appeared on a `models: "auto"` upstream: ask before failing its lines.
    if (this.lanes.discovers && runnable.some((line) => !this.lanes.forModel(line.model))) await this.lanes.refreshModels();
    const routed: Job[] = [];
    for (const { line, customId, model, input, inputBytes } of runnable) {
      const pool = this.lanes.forModel(model);
      if (!pool) {
        const message = `No upstream serves model "${model}". Configure an upstream whose "models" list matches it, or use model "echo".`;
        failures.push({ line, customId, model, code: 'invalid_model', message });
        continue;
      }
      const prefixHash = pool.ring ? prefixHashOf(batch.endpoint, input) : undefined;
      routed.push({ batchId: batch.id, line, attempts: 1, userId: batch.user_id, model, customId, held, batch, pool, prefixHash, input, inputBytes, abort: new AbortController() });
    }
    held.active += routed.length + failures.length;
    for (const failure of failures) {
      const request = { batchId: batch.id, line: failure.line, attempts: 0, userId: batch.user_id, model: failure.model };
      const record = fail(request, failure.code, failure.message) as FinalRecord;
      this.unrouted.countOutcome(record);
      this.recordFinal(held, failure.customId, failure.model, 0, record);
    }
    // Lines that share a prefix are sent one after another, so the replica they go to sees a run of the same
    // prefix (its cache keeps it) rather than the input's interleaving. Stable: the input order stays within a prefix.
    if (routed.some((job) => job.prefixHash !== undefined)) routed.sort((a, b) => (a.prefixHash ?? -1) - (b.prefixHash ?? -1));
    for (const job of routed) this.enqueue(job.pool.queue, job);
  }

  /** Fails every line of a held chunk not in a committed segment, without its input (which could not be read). */
  private failUnread(held: HeldChunk, code: string, message: string): void {
    const done = held.done ?? new LineBitmap(held.lineCount);
    for (let index = 0; index < held.lineCount; index++) {
      if (done.has(index)) continue;
      const line = held.lineStart + index;
      held.active += 1;
      const request = { batchId: held.batchId, line, attempts: 0, userId: held.userId, model: '' };
      const record = fail(request, code, message) as FinalRecord;
      this.unrouted.countOutcome(record);
      this.recordFinal(held, unreadableCustomId(line), '', 0, record);
    }
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
      if (lane.rate.tryTake(job.held.tokensPerLine)) return true;
      (rateShort ??= new Set()).add(lane);
      wakeAt = Math.min(wakeAt, now + Math.max(1, lane.rate.waitMs(job.held.tokensPerLine)));
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
    job.held.sent = true;
    // The client aborts the job's controller on a timeout (it shares it: buildCall); a failover sends it again.
    if (job.abort.signal.aborted && !job.abortReason) job.abort = new AbortController();
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
      this.ctx.log.error({ err, batchId: job.batchId, line: job.line, custom_id: job.customId }, 'unexpected error running a request; it will be retried');
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
      // Stopping, or its chunk is being handed back: nothing will send it; it is left for the chunk's next owner.
      if (this.stopping || job.held.lost || job.held.releasing) this.drop(job);
      else {
        job.pool.queue.unshift(job);
        this.pump();
      }
      return;
    }
    this.pump();
    this.record(job, record, lane.tally);
    // Nothing else in flight or waiting here: no result is coming to share the commit, so do not linger for one.
    if (this.buffered() === 0) this.writer.commitNow();
    // Only when a claim is due: at thousands of completions a second, waking the loop for each cost a timer and a
    // promise apiece, and the loop went back to sleep.
    if (this.wakeClaimLoop && this.worthClaiming()) this.wakeClaimLoop();
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
    let bodyBytes = job.inputBytes;
    // vLLM's priority scheduling serves lower values first; Spool's priorities rank higher first.
    if (lane.replica?.sendPriority && body.priority === undefined && !AUDIO_ENDPOINTS.has(endpoint)) {
      body = { ...body, priority: -job.batch.priority };
      bodyBytes = undefined;
    }
    if (AUDIO_ENDPOINTS.has(endpoint)) {
      audio = await loadAudio(job.input.file, (fileId) => this.readUserFile(job.batch.user_id, fileId), { ...this.ctx.config.audio, signal: job.abort.signal });
      const { file: _file, ...rest } = job.input;
      body = rest;
    }
    if (AUDIO_ENDPOINTS.has(endpoint)) bodyBytes = undefined;
    return { endpoint, body, bodyBytes, audio, timeoutMs: this.ctx.config.worker.requestTimeoutMs, signal: job.abort.signal, controller: job.abort };
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

  /** A line stopped by a cancel, an expiry, a shutdown or its chunk being lost: in no segment, so the chunk's next owner or finalization (batch_cancelled / batch_expired) accounts for it. */
  private abortedRecord(job: Job): RequestOutcomeRecord {
    return release(job);
  }

  private abortJob(job: Job, reason: NonNullable<Job['abortReason']>): void {
    if (job.abortReason) return;
    job.abortReason = reason;
    job.abort.abort();
  }

  /** `tally`: the lane the line ran on. */
  private record(job: Job, record: RequestOutcomeRecord, tally: UpstreamTally): void {
    tally.countOutcome(record);
    switch (record.kind) {
      case 'succeeded':
      case 'failed':
        this.recordFinal(job.held, job.customId, job.model, job.attempts - 1, record);
        return;
      case 'retry':
        this.counters.retried++;
        this.retryLater(job, Math.max(0, record.notBefore - Date.now()));
        return;
      case 'released':
        this.drop(job);
    }
  }

  /** The line goes back to its pool's queue after its backoff, as one more attempt; its chunk stays held meanwhile. */
  private retryLater(job: Job, delayMs: number): void {
    const { held } = job;
    if (this.stopping || held.lost || held.releasing) return this.drop(job);
    const timer = setTimeout(() => {
      held.retryTimers.delete(timer);
      if (this.stopping || held.lost || held.releasing) return this.drop(job);
      job.attempts += 1;
      job.triedOn = undefined;
      job.lane = undefined;
      this.enqueue(job.pool.queue, job);
      this.pump();
    }, delayMs);
    held.retryTimers.add(timer);
  }

  /** A line's final result, to its chunk's next segment. */
  private recordFinal(held: HeldChunk, customId: string, model: string, retries: number, record: FinalRecord): void {
    if (record.kind === 'succeeded') this.counters.succeeded++;
    else this.counters.failed++;
    held.open -= 1;
    held.active -= 1;
    held.uncommitted += 1;
    const text =
      record.kind === 'succeeded'
        ? outputLineText(record.batchId, record.line, customId, { status: record.status, requestId: record.requestId, body: record.body })
        : errorLineText(record.batchId, record.line, customId, record.code, record.message, record.status === null ? null : { status: record.status, requestId: record.requestId, body: record.body ?? 'null' });
    void this.writer.write({ chunk: held, record, text, model, retries }).then((outcome) => this.committed(held, outcome));
  }

  private committed(held: HeldChunk, outcome: WriteOutcome): void {
    held.uncommitted -= 1;
    if (outcome === 'finished') {
      this.forget(held);
      this.wakeClaimLoop?.();
    } else if (outcome === 'lost') this.lose(held);
    else this.maybeHandBack(held);
  }

  /** A line that ends here without a result (handed back): its chunk may now be free to go back. */
  private drop(job: Job): void {
    job.held.active -= 1;
    this.maybeHandBack(job.held);
  }

  /** The chunk was taken from this worker (reclaimed after a lapse, or closed): its remaining work stops. */
  private lose(held: HeldChunk): void {
    if (held.lost) return;
    held.lost = true;
    this.stopChunkWork(held, 'shutdown');
    this.forget(held);
    // Taken away (reclaimed, closed): this changes nothing, being conditional on this very claim. Given up after a
    // refused segment: it goes back to pending for a later claim, instead of being renewed by this worker's
    // heartbeat for as long as it lives. Each claim counts, so a chunk refused every time ends in its lines given up.
    void releaseChunk(this.db, held.batchId, held.chunk, this.ctx.workerId, false, held.claim).catch((err: unknown) =>
      this.ctx.log.warn({ err, batchId: held.batchId, chunk: held.chunk }, 'handing a given-up chunk back failed'),
    );
  }

  /** Stops what is left of a chunk here: retries waiting, queued lines, lines in flight (aborted, then dropped). */
  private stopChunkWork(held: HeldChunk, reason: NonNullable<Job['abortReason']>): void {
    for (const timer of held.retryTimers) clearTimeout(timer);
    held.active -= held.retryTimers.size;
    held.retryTimers.clear();
    for (const pool of this.lanes.allPools()) {
      if (!pool.queue.some((job) => job.held === held)) continue;
      pool.queue = pool.queue.filter((job) => {
        if (job.held !== held) return true;
        held.active -= 1;
        return false;
      });
    }
    for (const job of this.inFlight) if (job.held === held) this.abortJob(job, reason);
  }

  /** Hands a chunk back once it is marked releasing and nothing of it is left here. */
  private maybeHandBack(held: HeldChunk): void {
    if (!held.releasing || held.lost || held.active > 0 || held.uncommitted > 0) return;
    held.lost = true;
    this.forget(held);
    const handBack = releaseChunk(this.db, held.batchId, held.chunk, this.ctx.workerId, !held.sent, held.claim).then(
      () => this.ctx.onBatchDrained?.(),
      (err: unknown) => this.ctx.log.warn({ err, batchId: held.batchId, chunk: held.chunk }, 'handing a chunk back failed; it goes back when its lease lapses'),
    );
    this.handBacks.add(handBack);
    void handBack.finally(() => this.handBacks.delete(handBack));
  }

  private forget(held: HeldChunk): void {
    const chunks = this.held.get(held.batchId);
    if (!chunks?.delete(held)) return;
    if (chunks.size > 0) return;
    this.held.delete(held.batchId);
    // Nothing of the batch is left here: it may be done, so look now rather than at the next sweep.
    this.ctx.onBatchDrained?.();
  }

  private heldChunks(): HeldChunk[] {
    return [...this.held.values()].flatMap((chunks) => [...chunks]);
  }

  // ------------------------------------------------------------------ leases and cancels

  private async heartbeat(): Promise<void> {
    // One at a time: on a slow database, overlapping renewals only queue up behind each other
    // and take every pooled connection the segment writer and the claims need.
    if (this.heartbeating) return;
    this.heartbeating = true;
    try {
      await renewChunkLeases(this.db, this.ctx.workerId, leaseMs(this.ctx), Date.now());
      await this.ceilings?.renew(this.lanes.all());
    } catch (err) {
      this.ctx.log.warn({ err }, 'renewing chunk leases failed');
    } finally {
      this.heartbeating = false;
    }
  }

  /** Stops the work of held chunks whose batch is no longer running, and hands those chunks back once their finished lines are committed. */
  private async abortStoppedBatches(): Promise<void> {
    const batchIds = [...this.held.keys()];
    if (batchIds.length === 0) return;
    let statuses;
    try {
      statuses = await batchStatuses(this.db, batchIds);
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
    for (const held of this.heldChunks()) {
      const reason = reasonFor(held.batchId);
      if (!reason || held.releasing) continue;
      held.releasing = true;
      this.stopChunkWork(held, reason);
      this.maybeHandBack(held);
    }
  }
}



/** The line's custom_id and request body, parsed here so the body is this job's own object; undefined when the bytes are no longer a request. */
function parseLine(bytes: Buffer | undefined): { customId: string; body: Record<string, unknown> } | undefined {
  if (!bytes) return undefined;
  try {
    const line = JSON.parse(bytes.toString('utf8')) as { custom_id?: unknown; body?: unknown };
    if (typeof line.custom_id !== 'string' || typeof line.body !== 'object' || line.body === null || Array.isArray(line.body)) return undefined;
    return { customId: line.custom_id, body: line.body as Record<string, unknown> };
  } catch {
    return undefined;
  }
}

/** Stands in for the custom_id of a line whose input could not be read (the file's bytes went missing). */
function unreadableCustomId(line: number): string {
  return `input-line-${line}`;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
