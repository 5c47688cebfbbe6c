// How hard Spool drives one upstream, shared by everything in a process that
// sends to it: the batch runner's lane and the real-time routes count against
// the same limit and feed the same knee finder, so one mechanism decides for
// both (and later for each replica of a pool). The pieces:
//   adaptive-limiter.ts  the limit, its hard rules (ceiling, overload halving,
//                        Retry-After pauses, an outside cap) and the count
//   knee-finder.ts       where the limit goes on throughput and latency
//   engine-probe.ts      what the engine reports about its slots and queue
import { UpstreamHealth } from './upstream-health.ts';
import type { UpstreamReplica } from '../replicas.ts';
import type { UpstreamOutcome } from '../http-client.ts';
import { AdaptiveLimiter, type LimitChange } from './adaptive-limiter.ts';
import { EngineProbe, type EngineReport } from './engine-probe.ts';
import { KneeFinder, type KneeStatus } from './knee-finder.ts';
import { isOverload } from './overload.ts';

/** Where an upstream with no initialConcurrency starts when its engine reports no slots: modest, then climb. */
export const DEFAULT_START_CONCURRENCY = 4;

export interface CapacityStatus {
  limit: number;
  ceiling: number;
  inFlight: number;
  pausedUntil: number;
  lastChange: LimitChange;
  knee: KneeStatus;
  engine: EngineReport | null;
}

export class UpstreamCapacity {
  readonly limiter: AdaptiveLimiter;
  /** Whether it can be reached at all (upstream-health.ts); absent for upstreams built without an address. */
  readonly health: UpstreamHealth | undefined;
  private readonly knee: KneeFinder;
  private readonly probe: EngineProbe | undefined;
  private lastReportAt = 0;

  constructor(
    readonly name: string,
    options: {
      maxConcurrency: number;
      initialConcurrency?: number;
      engine?: { baseUrl: string; apiKey?: string };
      /** How health is judged: the probe's path, and whether 5xx and timeouts take it out (a replica of a pool). */
      health?: { probePath?: string; ejectOnServerErrors?: boolean };
      now?: () => number;
    },
  ) {
    this.limiter = new AdaptiveLimiter({ initial: options.initialConcurrency ?? DEFAULT_START_CONCURRENCY, max: options.maxConcurrency, now: options.now });
    this.knee = new KneeFinder({ limiter: this.limiter, configuredStart: options.initialConcurrency !== undefined, now: options.now });
    this.probe = options.engine && new EngineProbe({ ...options.engine, now: options.now });
    this.health = options.engine && new UpstreamHealth({ name, ...options.engine, ...options.health });
    // The first read starts now, so the engine's slots are known by the first requests or soon after.
    this.pollEngine();
  }

  /** A request answered 2xx in `latencyMs`; its usage (if any) weighs the sample. */
  onSuccess(latencyMs: number, body: unknown): void {
    this.knee.observe({ latencyMs, outputTokens: outputTokensOf(body) });
    this.pollEngine();
  }

  /** 429 / 503 / 529 or a timeout: halve (once per burst) and honour Retry-After. */
  onOverload(retryAfterMs: number | null): void {
    const before = this.limiter.limit;
    this.limiter.onOverload(retryAfterMs);
    if (this.limiter.limit < before) this.knee.onOverload(before);
    else this.knee.onPushback(before);
  }

  /** For callers without a retry policy of their own (real-time requests): success, overload, or neither. */
  observe(outcome: UpstreamOutcome, latencyMs: number): void {
    this.noteReachability(outcome);
    if (outcome.kind === 'response' && outcome.status >= 200 && outcome.status < 300) this.onSuccess(latencyMs, outcome.body);
    else if (isOverload(outcome)) this.onOverload(outcome.kind === 'response' ? outcome.retryAfterMs : null);
  }

  /** Every attempt's outcome: an answer below 500 says the upstream works; a failed connection, a 5xx or a timeout counts against it. */
  noteReachability(outcome: UpstreamOutcome): void {
    if (outcome.kind === 'response') {
      if (outcome.status < 500) this.health?.onAnswer();
      else this.health?.onServerError(`HTTP ${outcome.status}`, true);
    } else if (outcome.kind === 'network_error') this.health?.onNoAnswer(outcome.message);
    else this.health?.onServerError(outcome.message, false);
  }

  engine(): EngineReport | null {
    return this.probe?.report() ?? null;
  }

  status(): CapacityStatus {
    return {
      limit: this.limiter.limit,
      ceiling: this.limiter.max,
      inFlight: this.limiter.inFlight,
      pausedUntil: this.limiter.pausedUntil(),
      lastChange: this.limiter.lastChange,
      knee: this.knee.status(),
      engine: this.probe?.report() ?? null,
    };
  }

  /** Asks the engine again when it is due (the probe throttles itself); a new report goes to the knee finder. */
  private pollEngine(): void {
    if (!this.probe) return;
    void this.probe.refresh().then(() => {
      const report = this.probe!.report();
      if (!report || report.at === this.lastReportAt) return;
      this.lastReportAt = report.at;
      this.knee.onEngineReport(report);
    });
  }
}

/** One UpstreamCapacity per configured upstream, made on first use and shared by whoever sends to it. */
export class UpstreamCapacities {
  private readonly byName = new Map<string, UpstreamCapacity>();

  constructor(private readonly now?: () => number) {}

  for(
    upstream: Pick<UpstreamReplica, 'name' | 'baseUrl' | 'apiKey' | 'maxConcurrency' | 'initialConcurrency'> & Partial<Pick<UpstreamReplica, 'healthPath' | 'pooled'>>,
  ): UpstreamCapacity {
    let capacity = this.byName.get(upstream.name);
    if (!capacity) {
      capacity = new UpstreamCapacity(upstream.name, {
        maxConcurrency: upstream.maxConcurrency,
        initialConcurrency: upstream.initialConcurrency,
        engine: { baseUrl: upstream.baseUrl, apiKey: upstream.apiKey },
        health: { probePath: upstream.healthPath, ejectOnServerErrors: upstream.pooled },
        now: this.now,
      });
      this.byName.set(upstream.name, capacity);
    }
    return capacity;
  }

  all(): UpstreamCapacity[] {
    return [...this.byName.values()];
  }
}

function outputTokensOf(body: unknown): number {
  const usage = typeof body === 'object' && body !== null ? (body as { usage?: Record<string, unknown> }).usage : undefined;
  const tokens = usage?.completion_tokens ?? usage?.output_tokens;
  return typeof tokens === 'number' && Number.isFinite(tokens) && tokens > 0 ? Math.min(tokens, 1_000_000) : 0;
}
