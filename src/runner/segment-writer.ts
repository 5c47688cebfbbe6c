// Group commit of finished lines as result segments (data plane v2).
// Results of many concurrent requests are gathered for a few milliseconds;
// then, per chunk, its lines (already in their final wire shape) are written
// to one segment blob (output lines, then error lines), and every segment of
// the group is committed in one SQL transaction that records it on its chunk
// with the chunk's counts (store/sql/segments.ts). A caller's promise resolves
// only after that commit: nothing is counted as done before it is durable.
//
// A commit applies only while this worker still holds the chunk; a segment of
// a chunk taken away meanwhile (reclaimed after a lapse, closed by a cancel)
// is not counted, and its blob is deleted. A blob store or database that is
// down or full keeps the group here, in order, retried with backoff: the
// writer reports itself stalled, so the runner stops claiming. Nothing of a
// request or response goes into SQL, so no value of an answer can make the
// database refuse a commit; a refused group is retried chunk by chunk, then
// without the stats (their model names are the only text from the input), and
// a chunk refused even so is given up and rerun elsewhere after its lease,
// never retried here in a loop.
import type { Kysely } from 'kysely';
import { blobKeyForSegment } from '../store/index.ts';
import type { BlobStore } from '../store/blobs/types.ts';
import { classifyStoreError, describeStoreFailure, type StoreFailure } from '../store/errors.ts';
import type { StorePart } from '../store/health.ts';
import { LineBitmap } from '../store/line-bitmap.ts';
import { LATENCY_BOUNDS_MS } from '../store/sql/batch-stats.ts';
import type { Database } from '../store/sql/schema.ts';
import { commitSegments, type SegmentCommit } from '../store/sql/segments.ts';
import type { UsageDelta } from '../store/sql/usage.ts';
import type { RequestOutcomeRecord } from './request-lifecycle.ts';

/** What the writer needs of a chunk the runner holds. */
export interface HeldChunkRef {
  readonly batchId: string;
  readonly chunk: number;
  /** The chunk's claim count at this claim: names this tenure's segment blobs. */
  readonly claim: number;
  readonly lineStart: number;
  readonly lineCount: number;
  readonly userId: string;
  readonly currency: string;
  /** Lines of this claim whose final result has not been handed to the writer yet. */
  open: number;
  /** This tenure's segments so far (names the next blob). */
  segmentsWritten: number;
  /** Set once a commit found the chunk taken away: its other results are dropped. */
  lost: boolean;
}

export type FinalRecord = Extract<RequestOutcomeRecord, { kind: 'succeeded' | 'failed' }>;

export interface LineResult {
  chunk: HeldChunkRef;
  record: FinalRecord;
  /** The output or error line, newline-terminated. */
  text: string;
  /** The line's model (failed records do not carry one). */
  model: string;
  /** Attempts beyond the first in this claim. */
  retries: number;
}

/** committed: in a segment; finished: in the segment that finished its chunk; lost: the chunk had been taken away. */
export type WriteOutcome = 'committed' | 'finished' | 'lost';

export interface SegmentWriterOptions {
  /** How long the first result of a group waits for company. */
  lingerMs?: number;
  /** Most results per group. */
  maxGroup?: number;
  /** A commit failed and will be retried (the database or blob store is down, busy or full); `part` is the one that failed. */
  onError?: (err: unknown, failure: Exclude<StoreFailure, 'refused'>, part: StorePart) => void;
  /** The first commit after a stall went through; `part` is the one that had failed. */
  onRecovered?: (part: StorePart) => void;
  /** The database refused a chunk's segment; the chunk is given up by this worker. */
  onRefused?: (chunk: HeldChunkRef, err: unknown) => void;
}

/** Why results are not being recorded, while they are not. */
export interface WriterStall {
  since: number;
  failure: Exclude<StoreFailure, 'refused'>;
  /** Short, safe to show: the error code, no paths or addresses. */
  reason: string;
  /** Which store refused: the segment blobs or the commit. */
  part: StorePart;
}

interface Pending {
  result: LineResult;
  resolve: (outcome: WriteOutcome) => void;
}

// A commit costs an fsync of the blob and one of the database (SQLite), ~1-3 ms on the event loop; against a
// slow upstream (the embedded engine) a 5 ms linger made that one commit per result, stalling the engine's
// token steps (bench --only engine: 0.85-0.90 of direct with 5 ms, 0.95 with 50 ms). A result counts at most
// 50 ms later, and the runner commits at once when nothing is left in flight.
const DEFAULT_LINGER_MS = 50;
const DEFAULT_MAX_GROUP = 1024;
const RETRY_DELAYS_MS = [50, 200, 1000, 5000];
// Segment blobs written at once per group: enough to overlap their fsyncs, few enough not to flood S3.
const BLOB_WRITES_AT_ONCE = 8;

export class SegmentWriter {
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private stalled: WriterStall | undefined;
  private readonly lingerMs: number;
  private readonly maxGroup: number;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly blobs: BlobStore,
    private readonly owner: string,
    private readonly options: SegmentWriterOptions = {},
  ) {
    this.lingerMs = options.lingerMs ?? DEFAULT_LINGER_MS;
    this.maxGroup = options.maxGroup ?? DEFAULT_MAX_GROUP;
  }

  get pending(): number {
    return this.queue.length;
  }

  get stall(): WriterStall | undefined {
    return this.stalled;
  }

  /** Resolves once the line is committed in a segment, or known lost with its chunk. */
  write(result: LineResult): Promise<WriteOutcome> {
    return new Promise((resolve) => {
      this.queue.push({ result, resolve });
      if (this.queue.length >= this.maxGroup) this.kick();
      else this.timer ??= setTimeout(() => this.kick(), this.lingerMs);
    });
  }

  /** Commits what is queued now instead of after the linger. */
  commitNow(): void {
    this.kick();
  }

  async drain(): Promise<void> {
    while (this.queue.length > 0 || this.flushing) {
      this.kick();
      await this.flushing;
    }
  }

  private kick(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.flushing || this.queue.length === 0) return;
    this.flushing = this.flush().finally(() => {
      this.flushing = undefined;
      if (this.queue.length > 0) this.kick();
    });
  }

  private async flush(): Promise<void> {
    // A chunk's results are never split across groups, so "its last line is in this group" is exact.
    const group = this.takeGroup();
    const byChunk = new Map<HeldChunkRef, Pending[]>();
    for (const pending of group) {
      const chunk = pending.result.chunk;
      if (chunk.lost) {
        pending.resolve('lost');
        continue;
      }
      const list = byChunk.get(chunk);
      if (list) list.push(pending);
      else byChunk.set(chunk, [pending]);
    }
    if (byChunk.size === 0) return;
    // Each chunk's segment is made and named once: a retry after a failure that may have committed (a connection
    // cut during COMMIT) commits the same segment, which the store recognises by its blob key, so it never counts
    // twice, and no blob a committed segment names is ever deleted here.
    const commits = new Map<HeldChunkRef, SegmentCommit>();
    for (const [chunk, list] of byChunk) commits.set(chunk, this.segmentOf(chunk, list));
    const written = new Set<SegmentCommit>();
    for (let attempt = 0; ; attempt++) {
      let part: StorePart = 'blob_store';
      try {
        await this.writeBlobs(byChunk, commits, written);
        part = 'database';
        const applied = await this.commitIsolatingRefusals(commits, attempt > 0);
        for (const [chunk, list] of byChunk) {
          const commit = commits.get(chunk)!;
          const outcome: WriteOutcome = applied.has(commit) ? (commit.finishesChunk ? 'finished' : 'committed') : 'lost';
          if (outcome === 'lost') {
            chunk.lost = true;
            // Known not committed (the store answered, and no row names it): garbage.
            void this.blobs.delete(commit.blobKey).catch(() => undefined);
          }
          for (const pending of list) pending.resolve(outcome);
        }
        if (this.stalled) {
          const { part: failed } = this.stalled;
          this.stalled = undefined;
          this.options.onRecovered?.(failed);
        }
        return;
      } catch (err) {
        // The store is unreachable, busy or full. The results stay here, in order, until it is back: dropping
        // them would lose work. The chunks' leases are renewed by the heartbeat meanwhile (or lapse, and the
        // chunks rerun elsewhere, whose segments then win: these commits are conditional on the lease).
        const failure = classifyStoreError(err) === 'full' ? 'full' : 'unavailable';
        this.stalled ??= { since: Date.now(), failure, reason: describeStoreFailure(err), part };
        this.stalled.failure = failure;
        this.stalled.reason = describeStoreFailure(err);
        this.stalled.part = part;
        this.options.onError?.(err, failure, part);
        await new Promise((r) => setTimeout(r, RETRY_DELAYS_MS[Math.min(attempt, RETRY_DELAYS_MS.length - 1)]));
      }
    }
  }

  /** Up to maxGroup results, extended to the end of the last chunk it reaches, so no chunk is split across groups. */
  private takeGroup(): Pending[] {
    if (this.queue.length <= this.maxGroup) return this.queue.splice(0);
    const chunks = new Set(this.queue.slice(0, this.maxGroup).map((pending) => pending.result.chunk));
    const group: Pending[] = [];
    const rest: Pending[] = [];
    for (const pending of this.queue) (chunks.has(pending.result.chunk) ? group : rest).push(pending);
    this.queue = rest;
    return group;
  }

  /** Writes the segment blobs not written yet, a few at a time. */
  private async writeBlobs(byChunk: Map<HeldChunkRef, Pending[]>, commits: Map<HeldChunkRef, SegmentCommit>, written: Set<SegmentCommit>): Promise<void> {
    const entries = [...byChunk].filter(([chunk]) => !written.has(commits.get(chunk)!));
    for (let i = 0; i < entries.length; i += BLOB_WRITES_AT_ONCE) {
      await Promise.all(
        entries.slice(i, i + BLOB_WRITES_AT_ONCE).map(async ([chunk, list]) => {
          const commit = commits.get(chunk)!;
          const output = list.filter((p) => p.result.record.kind === 'succeeded').map((p) => p.result.text);
          const errors = list.filter((p) => p.result.record.kind === 'failed').map((p) => p.result.text);
          await this.blobs.write(commit.blobKey, once(Buffer.from(output.join('') + errors.join(''))));
          written.add(commit);
        }),
      );
    }
  }

  private segmentOf(chunk: HeldChunkRef, list: Pending[]): SegmentCommit {
    const done = new LineBitmap(chunk.lineCount);
    const failed = new LineBitmap(chunk.lineCount);
    const latency = new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0);
    const errors: Record<string, number> = {};
    const models: Record<string, [number, number, number]> = {};
    const usage = new Map<string, UsageDelta>();
    let outputBytes = 0;
    let errorBytes = 0;
    let outputLines = 0;
    let errorLines = 0;
    let inputTokens = 0;
    let outputTokens = 0;
    let costNanos = 0;
    for (const { result } of list) {
      const { record } = result;
      const index = record.line - chunk.lineStart;
      done.set(index);
      const perModel = (models[result.model] ??= [0, 0, 0]);
      perModel[2] += result.retries;
      if (record.latencyMs !== undefined) latency[latencyBucket(record.latencyMs)] += 1;
      const bytes = Buffer.byteLength(result.text);
      if (record.kind === 'succeeded') {
        outputBytes += bytes;
        outputLines += 1;
        perModel[0] += 1;
        inputTokens += record.inputTokens;
        outputTokens += record.outputTokens;
        costNanos += record.costNanos;
        const delta = usage.get(record.model) ?? { batchId: chunk.batchId, userId: chunk.userId, model: record.model, requests: 0, input: 0, output: 0, cost: 0 };
        delta.requests += 1;
        delta.input += record.inputTokens;
        delta.output += record.outputTokens;
        delta.cost += record.costNanos;
        usage.set(record.model, delta);
      } else {
        failed.set(index);
        errorBytes += bytes;
        errorLines += 1;
        perModel[1] += 1;
        errors[record.code] = (errors[record.code] ?? 0) + 1;
      }
    }
    const seq = chunk.segmentsWritten++;
    return {
      batchId: chunk.batchId,
      chunk: chunk.chunk,
      blobKey: blobKeyForSegment(chunk.batchId, chunk.chunk, chunk.claim, seq, this.owner),
      outputBytes,
      errorBytes,
      outputLines,
      errorLines,
      doneBits: done.toHex(),
      failedBits: failed.toHex(),
      stats: JSON.stringify({ latency, errors, models }),
      inputTokens,
      outputTokens,
      costNanos,
      finishesChunk: chunk.open === 0,
      claim: chunk.claim,
      usage: [...usage.values()],
    };
  }

  /** Commits the group; a refused group is committed chunk by chunk, and a chunk refused alone is given up. */
  private async commitIsolatingRefusals(commits: Map<HeldChunkRef, SegmentCommit>, recheck: boolean): Promise<Set<SegmentCommit>> {
    const currencies = new Map([...commits.keys()].map((chunk) => [chunk.batchId, chunk.currency]));
    try {
      return await commitSegments(this.db, this.owner, [...commits.values()], currencies, Date.now(), recheck);
    } catch (err) {
      if (classifyStoreError(err) !== 'refused' || commits.size === 0) throw err;
    }
    const applied = new Set<SegmentCommit>();
    for (const [chunk, commit] of commits) {
      try {
        for (const one of await commitSegments(this.db, this.owner, [commit], currencies, Date.now(), true)) applied.add(one);
        continue;
      } catch (err) {
        if (classifyStoreError(err) !== 'refused') throw err;
      }
      // The only text of a segment row taken from the input is its stats (model names): without them, the lines
      // still count (the dashboard's breakdown misses them). Refused even so, the chunk is given up.
      try {
        const bare = { ...commit, stats: '{}' };
        if ((await commitSegments(this.db, this.owner, [bare], currencies, Date.now(), true)).has(bare)) applied.add(commit);
      } catch (err) {
        if (classifyStoreError(err) !== 'refused') throw err;
        this.options.onRefused?.(chunk, err);
      }
    }
    return applied;
  }
}

function latencyBucket(ms: number): number {
  for (let i = 0; i < LATENCY_BOUNDS_MS.length; i++) if (ms <= LATENCY_BOUNDS_MS[i]) return i;
  return LATENCY_BOUNDS_MS.length;
}

async function* once(bytes: Buffer): AsyncGenerator<Buffer> {
  yield bytes;
}
