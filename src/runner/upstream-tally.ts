// What the runner counts per upstream for /metrics: request outcomes, retries
// by cause, tokens, and upstream latency in histogram buckets. Only number
// fields and one preallocated array: recording a request costs a few
// increments and never allocates (the runner handles thousands of requests
// a second), and the metrics layer copies the totals out at scrape time.
import type { RequestOutcomeRecord } from './request-lifecycle.ts';
import type { AttemptOutcome } from './retry-policy.ts';

/** Upper bounds, in seconds, of the upstream latency buckets (+Inf is implied): from a cached echo to a long generation. */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

/**
 * Why an attempt is retried, in few enough values to be a metric label:
 * 429, 503/529 (the upstream says it is overloaded), any other 5xx, a
 * timeout, a connection failure, another retryable status (408, 409, 425),
 * or an unexpected error inside Spool itself.
 */
export const RETRY_CAUSES = ['rate_limited', 'overloaded', 'server_error', 'timeout', 'network_error', 'other_status', 'internal'] as const;
export type RetryCause = (typeof RETRY_CAUSES)[number];

export function retryCauseOf(outcome: AttemptOutcome): RetryCause {
  if (outcome.kind === 'timeout') return 'timeout';
  if (outcome.kind === 'network_error') return 'network_error';
  if (outcome.status === 429) return 'rate_limited';
  if (outcome.status === 503 || outcome.status === 529) return 'overloaded';
  return outcome.status >= 500 ? 'server_error' : 'other_status';
}

/** A plain, JSON-friendly copy of a tally, as RunnerStats carries it. */
export interface UpstreamTotals {
  succeeded: number;
  failed: number;
  /** Attempts that will be tried again later. */
  retried: number;
  retriesByCause: Record<RetryCause, number>;
  inputTokens: number;
  outputTokens: number;
  latency: {
    /** LATENCY_BUCKETS_SECONDS. */
    bounds: readonly number[];
    /** Per bucket, not cumulative; one more than `bounds`: the last counts what took longer than every bound. */
    counts: number[];
    sumSeconds: number;
    count: number;
  };
}

export class UpstreamTally {
  private succeeded = 0;
  private failed = 0;
  private retried = 0;
  private inputTokens = 0;
  private outputTokens = 0;
  private readonly retries = new Float64Array(RETRY_CAUSES.length);
  private readonly latencyCounts = new Float64Array(LATENCY_BUCKETS_SECONDS.length + 1);
  private latencySum = 0;
  private latencyCount = 0;

  /** One recorded transition of a request line; a release (handed back at shutdown) is not an outcome. */
  countOutcome(record: RequestOutcomeRecord): void {
    switch (record.kind) {
      case 'succeeded':
        this.succeeded++;
        this.inputTokens += record.inputTokens;
        this.outputTokens += record.outputTokens;
        break;
      case 'failed':
        this.failed++;
        break;
      case 'retry':
        this.retried++;
        break;
      default:
        break;
    }
  }

  countRetry(cause: RetryCause): void {
    this.retries[RETRY_CAUSES.indexOf(cause)]++;
  }

  /** Time from sending a request upstream to having its whole answer. */
  observeLatency(seconds: number): void {
    let bucket = 0;
    while (bucket < LATENCY_BUCKETS_SECONDS.length && seconds > LATENCY_BUCKETS_SECONDS[bucket]) bucket++;
    this.latencyCounts[bucket]++;
    this.latencySum += seconds;
    this.latencyCount++;
  }

  totals(): UpstreamTotals {
    const retriesByCause = {} as Record<RetryCause, number>;
    RETRY_CAUSES.forEach((cause, i) => (retriesByCause[cause] = this.retries[i]));
    return {
      succeeded: this.succeeded,
      failed: this.failed,
      retried: this.retried,
      retriesByCause,
      inputTokens: this.inputTokens,
      outputTokens: this.outputTokens,
      latency: { bounds: LATENCY_BUCKETS_SECONDS, counts: Array.from(this.latencyCounts), sumSeconds: this.latencySum, count: this.latencyCount },
    };
  }
}
