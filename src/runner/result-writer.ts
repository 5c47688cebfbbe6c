// Group commit for request outcomes. Results from many concurrent requests
// are gathered for a few milliseconds and written in one transaction, so the
// cost of a durable commit (an fsync on SQLite, a round trip on PostgreSQL)
// is paid once per group rather than once per request. A caller's promise
// resolves only after its result is committed: nothing is counted as done
// before it is on disk.
//
// A group the database refuses (a value it cannot store) is split in halves
// until the refused record is alone; that record is replaced by a failure
// without the refused content, and every other record commits. A database that
// is down or full keeps the whole group here, in order, retried with backoff:
// the writer reports itself stalled meanwhile, so the runner stops claiming
// and readiness says why.
import { applyRequestOutcomes, type RequestOutcomeRecord } from '../store/sql/request-claims.ts';
import type { Kysely } from 'kysely';
import type { Database } from '../store/sql/schema.ts';
import { classifyStoreError, describeStoreFailure, type StoreFailure } from '../store/errors.ts';
import { failUnstorable } from './request-lifecycle.ts';

interface Pending {
  record: RequestOutcomeRecord;
  resolve: (applied: boolean) => void;
}

export interface ResultWriterOptions {
  /** Most records per transaction. */
  maxGroup?: number;
  /** How long the first record of a group waits for company. */
  lingerMs?: number;
  /** A commit failed and will be retried (the database is down, busy or full). */
  onError?: (err: unknown, failure: Exclude<StoreFailure, 'refused'>) => void;
  /** The first commit after a stall went through. */
  onRecovered?: () => void;
  /** The database refused `record`; `replacement` (a failure without the refused content) was recorded instead, if it could be. */
  onRefused?: (record: RequestOutcomeRecord, err: unknown, replacement: RequestOutcomeRecord | undefined) => void;
}

/** Why results are not being recorded, while they are not. */
export interface WriterStall {
  since: number;
  failure: Exclude<StoreFailure, 'refused'>;
  /** Short, safe to show: the error code, no paths or addresses. */
  reason: string;
}
const DEFAULT_MAX_GROUP = 256;
// A commit blocks the event loop for about a millisecond on SQLite (its fsync; 2-3 ms on this machine's slower
// afternoons). Against a slow upstream (the embedded engine: a result every ~20 ms per sequence) a 5 ms linger
// made that one commit per result, each stalling the engine's next token step (bench --only engine, generation
// at 1 sequence: 0.85-0.90 of node-llama-cpp direct with 5 ms, 0.95 with 50 ms; zero-latency and capacity
// unchanged). A result counts at most 50 ms later, and the runner commits at once when nothing is left in
// flight. 200 ms was tried: it looked better for the engine on a slow disk (two noisy rounds), but a batch
// finishing beside a busy one then counts as done up to 200 ms later, and priority.test.ts failed once in CI with
// it (46 of the busy batch's lines finished while the urgent one ran, against a bound of 40; 3 local runs passed).
const DEFAULT_LINGER_MS = 50;
const RETRY_DELAYS_MS = [50, 200, 1000, 5000];

/** Raised inside a split apply for a refusal that could not be isolated; never leaves this module. */
class Refused extends Error {}

export class ResultWriter {
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private readonly maxGroup: number;
  private readonly lingerMs: number;
  private stalled: WriterStall | undefined;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly owner: string,
    private readonly options: ResultWriterOptions = {},
  ) {
    this.maxGroup = options.maxGroup ?? DEFAULT_MAX_GROUP;
    this.lingerMs = options.lingerMs ?? DEFAULT_LINGER_MS;
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Set while commits fail for reasons other than the values (database down or full); undefined when recording works. */
  get stall(): WriterStall | undefined {
    return this.stalled;
  }

  /** Resolves true once committed, false if the claim had been lost (the outcome was not recorded). */
  write(record: RequestOutcomeRecord): Promise<boolean> {
    return new Promise((resolve) => {
      this.queue.push({ record, resolve });
      if (this.queue.length >= this.maxGroup) this.kick();
      else this.timer ??= setTimeout(() => this.kick(), this.lingerMs);
    });
  }

  /** Commits what is queued now instead of after the linger: the caller knows no more results are coming soon. */
  commitNow(): void {
    this.kick();
  }

  /** Writes everything queued so far. */
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
    const group = this.queue.splice(0, this.maxGroup);
    for (let attempt = 0; ; attempt++) {
      try {
        const applied = await this.applyIsolatingRefusals(group.map((pending) => pending.record));
        for (const pending of group) pending.resolve(applied.has(pending.record));
        if (this.stalled) {
          this.stalled = undefined;
          this.options.onRecovered?.();
        }
        return;
      } catch (err) {
        // The database is unreachable, busy or full. The results stay here, in order, until it is back: dropping
        // them would lose work; the leases they hold are renewed by the heartbeat meanwhile (or lapse and the
        // requests rerun elsewhere, whose results then win: these writes are conditional on the lease).
        const failure = classifyStoreError(err) === 'full' ? 'full' : 'unavailable';
        this.stalled ??= { since: Date.now(), failure, reason: describeStoreFailure(err) };
        this.stalled.failure = failure;
        this.stalled.reason = describeStoreFailure(err);
        this.options.onError?.(err, failure);
        await new Promise((r) => setTimeout(r, RETRY_DELAYS_MS[Math.min(attempt, RETRY_DELAYS_MS.length - 1)]));
      }
    }
  }

  /**
   * Commits `records` and returns those that applied. When the database refuses the group, the halves are tried
   * apart (each its own transaction; the refused one rolled back whole), down to single records, so one value the
   * database cannot hold costs its own line and never the results beside it. Throws only for failures that are
   * not about the values, which the caller retries as a whole.
   */
  private async applyIsolatingRefusals(records: RequestOutcomeRecord[]): Promise<Set<RequestOutcomeRecord>> {
    try {
      return new Set(await applyRequestOutcomes(this.db, this.owner, records, Date.now()));
    } catch (err) {
      if (classifyStoreError(err) !== 'refused') throw err;
      if (records.length > 1) {
        const middle = Math.ceil(records.length / 2);
        const first = await this.applyIsolatingRefusals(records.slice(0, middle));
        const second = await this.applyIsolatingRefusals(records.slice(middle));
        return new Set([...first, ...second]);
      }
      return this.applyReplacement(records[0], err);
    }
  }

  /** One refused record: record its failure without the content that was refused. */
  private async applyReplacement(record: RequestOutcomeRecord, refusal: unknown): Promise<Set<RequestOutcomeRecord>> {
    const replacement = failUnstorable(record, describeStoreFailure(refusal));
    try {
      const applied = await applyRequestOutcomes(this.db, this.owner, [replacement], Date.now());
      this.options.onRefused?.(record, refusal, replacement);
      // The line ended (as a failure), so the caller's record counts as applied: its lease is over either way.
      return applied.length > 0 ? new Set([record]) : new Set();
    } catch (err) {
      if (classifyStoreError(err) !== 'refused') throw err;
      // Not even a bare failure can be stored: leave the line to its lease. It lapses, the line is claimed again,
      // and after worker.maxAttempts claims it fails before reaching an upstream. Bounded, never a loop here.
      this.options.onRefused?.(record, refusal, undefined);
      return new Set();
    }
  }
}
