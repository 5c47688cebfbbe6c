// A lane per upstream: its client, its adaptive concurrency limit, its
// optional rate limits, and the queue of claimed requests waiting for a slot.
// Lanes are made on first use, when a claimed request names a model routed to
// that upstream.
import type { Config } from '../config.ts';
import { createEchoUpstreamClient, createHttpUpstreamClient, type EngineBinding, type UpstreamClient } from '../upstreams/http-client.ts';
import type { ModelDiscovery } from '../upstreams/model-discovery.ts';
import { ModelRouter } from '../upstreams/router.ts';
import { AdaptiveLimiter } from '../upstreams/capacity/adaptive-limiter.ts';
import { UpstreamCapacities, type UpstreamCapacity } from '../upstreams/capacity/upstream-capacity.ts';
import type { EngineReport } from '../upstreams/capacity/engine-probe.ts';
import type { UpstreamHealth } from '../upstreams/capacity/upstream-health.ts';
import type { UpstreamOutcome } from '../upstreams/http-client.ts';
import { RateLimiter } from './rate-limiter.ts';
import { UpstreamTally } from './upstream-tally.ts';

/** What a lane reports each attempt to: the upstream's shared capacity (upstreams/capacity), or a fixed limit. */
export interface LaneCapacity {
  limiter: AdaptiveLimiter;
  onSuccess(latencyMs: number, body: unknown): void;
  onOverload(retryAfterMs: number | null): void;
  /** What the engine last reported about itself, where Spool can ask it. */
  engine?(): EngineReport | null;
  /** Whether the upstream can be reached at all; its lines wait while it cannot. */
  health?: UpstreamHealth;
  /** Every attempt's outcome, for `health`. */
  noteReachability?(outcome: UpstreamOutcome): void;
}

export interface Lane<Job> {
  name: string;
  client: UpstreamClient;
  limiter: AdaptiveLimiter;
  capacity: LaneCapacity;
  rate: RateLimiter;
  queue: Job[];
  /** Outcomes, retries, tokens and latency of this lane's requests, read by /metrics. */
  tally: UpstreamTally;
  /**
   * Set when the upstream's maxConcurrency is a ceiling shared by every worker (global-ceilings.ts): the
   * limiter is then capped to the slots this worker holds, starting at none.
   */
  sharedCeiling?: { upstream: string; max: number };
}

export type { EngineBinding } from '../upstreams/http-client.ts';

// The emulator answers in-process in microseconds; its limit only bounds how much is in flight at once.
const ECHO_CONCURRENCY = 256;

export class Lanes<Job> {
  private readonly router: ModelRouter;
  private readonly lanes = new Map<string, Lane<Job>>();
  private readonly unsubscribe: Array<() => void> = [];

  constructor(
    private readonly config: Config,
    private readonly engine?: EngineBinding,
    /** Whether configured upstreams' ceilings are shared across workers through the database. */
    private readonly sharedCeilings = false,
    /** This process's capacity per upstream, shared with the real-time routes. */
    private readonly capacities?: UpstreamCapacities,
    /** What `models: "auto"` upstreams serve. */
    private readonly discovery?: ModelDiscovery,
    /** Called when an unreachable upstream answers again, so the lines waiting for it are sent. */
    private readonly onUpstreamUp?: () => void,
  ) {
    this.router = new ModelRouter(config.upstreams, { engineModels: engine?.models, discovery });
  }

  /** Whether some upstream's models are discovered (so a model nobody serves now may be served after asking again). */
  get discovers(): boolean {
    return this.discovery?.active ?? false;
  }

  /** Asks `models: "auto"` upstreams again (at most every few seconds); resolves when they answered. */
  refreshModels(): Promise<void> {
    return this.discovery?.refreshOnMiss() ?? Promise.resolve();
  }

  /** The lane that serves `model`, or undefined when no upstream does. */
  forModel(model: string): Lane<Job> | undefined {
    const route = this.router.route(model);
    if (!route) return undefined;
    const key = route.kind === 'upstream' ? `upstream:${route.upstream.name}` : route.kind;
    let lane = this.lanes.get(key);
    if (!lane) {
      lane = this.makeLane(route);
      this.lanes.set(key, lane);
    }
    return lane;
  }

  all(): Lane<Job>[] {
    return [...this.lanes.values()];
  }

  async close(): Promise<void> {
    for (const stop of this.unsubscribe.splice(0)) stop();
    await Promise.all(this.all().map((lane) => lane.client.close()));
  }

  private makeLane(route: NonNullable<ReturnType<ModelRouter['route']>>): Lane<Job> {
    if (route.kind === 'echo') return this.fixedLane('echo', createEchoUpstreamClient(), ECHO_CONCURRENCY);
    if (route.kind === 'engine') {
      if (!this.engine) throw new Error('the router chose the embedded engine, but none is configured');
      return this.fixedLane('engine', this.engine.client, this.engine.maxConcurrency);
    }
    const upstream = route.upstream;
    const capacity = this.capacities?.for(upstream) ?? new UpstreamCapacities().for(upstream);
    if (this.sharedCeilings) capacity.limiter.setCap(0);
    if (capacity.health && this.onUpstreamUp) this.unsubscribe.push(capacity.health.onUp(this.onUpstreamUp));
    return {
      name: upstream.name,
      client: createHttpUpstreamClient({ name: upstream.name, baseUrl: upstream.baseUrl, apiKey: upstream.apiKey, maxConnections: upstream.maxConcurrency, messagesApi: upstream.messagesApi }),
      limiter: capacity.limiter,
      capacity,
      rate: new RateLimiter({ requestsPerMinute: upstream.requestsPerMinute, tokensPerMinute: upstream.tokensPerMinute }),
      queue: [],
      tally: new UpstreamTally(),
      sharedCeiling: this.sharedCeilings ? sharedCeilingOf(upstream.name, upstream.maxConcurrency, capacity) : undefined,
    };
  }

  /** The emulator and the embedded engine: a known limit (the engine's sequences), halved only on overload. */
  private fixedLane(name: string, client: UpstreamClient, max: number): Lane<Job> {
    const limiter = new AdaptiveLimiter({ initial: max, max });
    const capacity: LaneCapacity = { limiter, onSuccess: () => undefined, onOverload: (retryAfterMs) => limiter.onOverload(retryAfterMs) };
    return { name, client, limiter, capacity, rate: new RateLimiter(), queue: [], tally: new UpstreamTally() };
  }
}

/**
 * The ceiling every worker shares for an upstream: its maxConcurrency, or the engine's own slots when it reports
 * fewer (llama.cpp /props). Requests beyond the slots only wait in the engine, so all workers together stay within
 * them, not each worker separately.
 */
function sharedCeilingOf(upstream: string, maxConcurrency: number, capacity: UpstreamCapacity): { upstream: string; max: number } {
  return {
    upstream,
    get max() {
      const slots = capacity.engine()?.slots;
      return slots !== undefined ? Math.min(maxConcurrency, slots) : maxConcurrency;
    },
  };
}
