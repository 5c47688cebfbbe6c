// A lane per upstream replica: its client, its adaptive concurrency limit,
// its optional rate limits. Lanes are grouped in pools, one per set of
// replicas that serve a model (upstreams/router.ts); a pool holds the queue of
// claimed requests, and the runner places each on one of its lanes when it is
// sent (placement.ts). The emulator and the embedded engine are pools of one.
// Lanes and pools are made on first use, when a claimed request names a model
// routed to them.
import type { Config } from '../config.ts';
import { createEchoUpstreamClient, createHttpUpstreamClient, type EngineBinding, type UpstreamClient } from '../upstreams/http-client.ts';
import type { ModelDiscovery } from '../upstreams/model-discovery.ts';
import { ModelRouter, type Route } from '../upstreams/router.ts';
import type { UpstreamReplica } from '../upstreams/replicas.ts';
import { AffinityRing } from '../upstreams/pool-placement.ts';
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
  /** Whether the upstream can be reached at all; its lines wait (or go to other replicas) while it cannot. */
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
  /** Outcomes, retries, tokens and latency of this lane's requests, read by /metrics. */
  tally: UpstreamTally;
  /** The configured replica behind it; absent for the emulator and the embedded engine. */
  replica?: UpstreamReplica;
  /** Requests placed by prefix affinity: on their home replica, or spilled to another because home had no room. */
  affinity: { home: number; spilled: number };
  /** The pools it serves: their queued work is what it could take. */
  pools: Pool<Job>[];
  /**
   * Set when the upstream's maxConcurrency is a ceiling shared by every worker (global-ceilings.ts): the
   * limiter is then capped to the slots this worker holds, starting at none.
   */
  sharedCeiling?: { upstream: string; max: number };
}

/** The replicas that serve a set of models, and the claimed requests waiting for one of them. */
export interface Pool<Job> {
  key: string;
  lanes: Lane<Job>[];
  queue: Job[];
  /** Set when requests that share a prefix should go to the same replica. */
  ring?: AffinityRing;
}

export type { EngineBinding } from '../upstreams/http-client.ts';

// The emulator answers in-process in microseconds; its limit only bounds how much is in flight at once.
const ECHO_CONCURRENCY = 256;

export class Lanes<Job> {
  private readonly router: ModelRouter;
  private readonly lanes = new Map<string, Lane<Job>>();
  private readonly pools = new Map<string, Pool<Job>>();
  // The maps' values as arrays: the runner walks them after every request, and a copy each time adds up.
  private readonly laneList: Lane<Job>[] = [];
  private readonly poolList: Pool<Job>[] = [];
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

  /** The pool that serves `model`, or undefined when nobody does. */
  forModel(model: string): Pool<Job> | undefined {
    const route = this.router.route(model);
    if (!route) return undefined;
    const key = route.kind === 'upstream' ? `upstream:${route.pool.key}` : route.kind;
    let pool = this.pools.get(key);
    if (!pool) {
      pool = this.makePool(key, route);
      this.pools.set(key, pool);
      this.poolList.push(pool);
    }
    return pool;
  }

  /** Every lane made so far (the same array, grown as lanes are made: read it, do not keep it). */
  all(): readonly Lane<Job>[] {
    return this.laneList;
  }

  /** Every pool made so far (the same array, grown as pools are made). */
  allPools(): readonly Pool<Job>[] {
    return this.poolList;
  }

  async close(): Promise<void> {
    for (const stop of this.unsubscribe.splice(0)) stop();
    await Promise.all(this.all().map((lane) => lane.client.close()));
  }

  private makePool(key: string, route: Route): Pool<Job> {
    const pool: Pool<Job> = { key, lanes: [], queue: [] };
    if (route.kind === 'upstream') {
      pool.lanes = route.pool.replicas.map((replica) => this.laneFor(`upstream:${replica.name}`, () => this.upstreamLane(replica)));
      if (route.pool.affinity) pool.ring = new AffinityRing(route.pool.replicas);
    } else if (route.kind === 'echo') {
      pool.lanes = [this.laneFor('echo', () => this.fixedLane('echo', createEchoUpstreamClient(), ECHO_CONCURRENCY))];
    } else {
      const engine = this.engine;
      if (!engine) throw new Error('the router chose the embedded engine, but none is configured');
      pool.lanes = [this.laneFor('engine', () => this.fixedLane('engine', engine.client, engine.maxConcurrency))];
    }
    for (const lane of pool.lanes) lane.pools.push(pool);
    return pool;
  }

  private laneFor(key: string, make: () => Lane<Job>): Lane<Job> {
    let lane = this.lanes.get(key);
    if (!lane) {
      lane = make();
      this.lanes.set(key, lane);
      this.laneList.push(lane);
    }
    return lane;
  }

  private upstreamLane(replica: UpstreamReplica): Lane<Job> {
    const capacity = this.capacities?.for(replica) ?? new UpstreamCapacities().for(replica);
    if (this.sharedCeilings) capacity.limiter.setCap(0);
    if (capacity.health && this.onUpstreamUp) this.unsubscribe.push(capacity.health.onUp(this.onUpstreamUp));
    return {
      name: replica.name,
      client: createHttpUpstreamClient({ name: replica.name, baseUrl: replica.baseUrl, apiKey: replica.apiKey, maxConnections: replica.maxConcurrency, messagesApi: replica.messagesApi }),
      limiter: capacity.limiter,
      capacity,
      rate: new RateLimiter({ requestsPerMinute: replica.requestsPerMinute, tokensPerMinute: replica.tokensPerMinute }),
      tally: new UpstreamTally(),
      replica,
      affinity: { home: 0, spilled: 0 },
      pools: [],
      sharedCeiling: this.sharedCeilings ? sharedCeilingOf(replica.name, replica.maxConcurrency, capacity) : undefined,
    };
  }

  /** The emulator and the embedded engine: a known limit (the engine's sequences), halved only on overload. */
  private fixedLane(name: string, client: UpstreamClient, max: number): Lane<Job> {
    const limiter = new AdaptiveLimiter({ initial: max, max });
    const capacity: LaneCapacity = { limiter, onSuccess: () => undefined, onOverload: (retryAfterMs) => limiter.onOverload(retryAfterMs) };
    return { name, client, limiter, capacity, rate: new RateLimiter(), tally: new UpstreamTally(), affinity: { home: 0, spilled: 0 }, pools: [] };
  }
}

/**
 * This lane's share of the requests waiting for the pools it serves: what it could take if it had room. A pool's
 * queue is shared by its replicas in proportion to their limits, so a worker does not ask a shared ceiling for
 * slots on every replica for the same lines (and hold them while another worker waits).
 */
export function queuedFor(lane: Lane<unknown>): number {
  let queued = 0;
  for (const pool of lane.pools) {
    if (pool.queue.length === 0) continue;
    if (pool.lanes.length === 1) {
      queued += pool.queue.length;
      continue;
    }
    let total = 0;
    for (const other of pool.lanes) if (!other.capacity.health?.down) total += other.limiter.limit;
    queued += Math.ceil((pool.queue.length * lane.limiter.limit) / Math.max(1, total));
  }
  return queued;
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
