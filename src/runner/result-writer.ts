// Group commit for request outcomes. Results from many concurrent requests
// are gathered for a few milliseconds and written in one transaction, so the
// cost of a durable commit (an fsync on SQLite, a round trip on PostgreSQL)
// is paid once per group rather than once per request. A caller's promise
// resolves only after its result is committed: nothing is counted as done
// before it is on disk.
import { applyRequestOutcomes, type RequestOutcomeRecord } from '../store/sql/request-claims.ts';
import type { Kysely } from 'kysely';
import type { Database } from '../store/sql/schema.ts';

interface Pending {
  record: RequestOutcomeRecord;
  resolve: (applied: boolean) => void;
}

export interface ResultWriterOptions {
  /** Most records per transaction. */
  maxGroup?: number;
  /** How long the first record of a group waits for company. */
  lingerMs?: number;
  onError?: (err: unknown) => void;
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

export class ResultWriter {
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private readonly maxGroup: number;
  private readonly lingerMs: number;

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
        const applied = new Set(await applyRequestOutcomes(this.db, this.owner, group.map((p) => p.record), Date.now()));
        for (const pending of group) pending.resolve(applied.has(pending.record));
        return;
      } catch (err) {
        // The database is unreachable or busy. The results stay here, in order, until it is back: dropping them
        // would lose work; the leases they hold are renewed by the heartbeat meanwhile (or lapse and the requests rerun).
        this.options.onError?.(err);
        await new Promise((r) => setTimeout(r, RETRY_DELAYS_MS[Math.min(attempt, RETRY_DELAYS_MS.length - 1)]));
      }
    }
  }
}
