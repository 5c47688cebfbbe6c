// A lane per upstream replica: its client, its adaptive concurrency limit,
// its optional rate limits. Lanes are grouped in pools, one per set of
// replicas that serve a model (upstreams/router.ts); a pool holds the queue of
// claimed requests, and the runner places each on one of its lanes when it is
// sent (placeIn below). The emulator and the embedded engine are pools of one.
// Lanes and pools are made on first use, when a claimed request names a model
// routed to them.
import type { Config } from '../config.ts';
import { createEchoUpstreamClient, createHttpUpstreamClient, type EngineBinding, type UpstreamClient } from '../upstreams/http-client.ts';
import type { ModelDiscovery } from '../upstreams/model-discovery.ts';
import { ModelRouter, type Route } from '../upstreams/router.ts';
import type { UpstreamReplica } from '../upstreams/replicas.ts';
import { AffinityRing, bySpareCapacity } from '../upstreams/pool-placement.ts';
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
    }
    return pool;
  }

  all(): Lane<Job>[] {
    return [...this.lanes.values()];
  }

  allPools(): Pool<Job>[] {
    return [...this.pools.values()];
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

/** Requests waiting for any pool `lane` serves: what it could take if it had room. */
export function queuedFor(lane: Lane<unknown>): number {
  let queued = 0;
  for (const pool of lane.pools) queued += pool.queue.length;
  return queued;
}

/**
 * The lane of a pool without affinity that a request goes to now, or undefined when none can take it (`canTake`
 * says which can: up, not paused, a free slot, rate budget): the one with the most spare room.
 */
export function placeIn<Job>(pool: Pool<Job>, canTake: (lane: Lane<Job>) => boolean): Lane<Job> | undefined {
  const { lanes } = pool;
  if (lanes.length === 1) return canTake(lanes[0]) ? lanes[0] : undefined;
  const order = bySpareCapacity(lanes.map((lane) => ({ inFlight: lane.limiter.inFlight, limit: Math.min(lane.limiter.limit, lane.limiter.cap), weight: lane.replica?.weight ?? 1 })));
  for (const index of order) if (canTake(lanes[index])) return lanes[index];
  return undefined;
}

/** What placement by affinity needs of a queued request. */
export interface Placeable<Job> {
  prefixHash?: number;
  /** The pool's lanes in ring order from prefixHash, worked out once. */
  ringOrder?: number[];
  /** Lanes it failed on in this claim (failover): not its home while another is up. */
  triedOn?: Set<Lane<Job>>;
  batch: { priority: number };
}

/**
 * How far past the head of a pool's queue a replica with room looks for a request of its own prefixes. Under
 * load every replica is full and slots free one at a time: sending the head wherever a slot freed put three
 * lines in four on a replica without their prefix (bench "pools", 4 replicas, 40 ms + 120 ms prefill: a 34% hit
 * rate, 1.29x over no affinity). Looking ahead for a line of its own, and spilling only along the ring, gave
 * 98.6-99.0% of a best 99.8% and 2.8-3.0x (80 ms + 240 ms prefill).
 */
const LOOKAHEAD = 128;

/** The lane a request with a prefix belongs on: the first on the ring from its hash that is up (and it has not failed on). */
export function homeOf<Job extends Placeable<Job>>(pool: Pool<Job>, job: Job): Lane<Job> | undefined {
  if (!pool.ring || job.prefixHash === undefined) return undefined;
  job.ringOrder ??= pool.ring.order(job.prefixHash);
  let firstUp: Lane<Job> | undefined;
  for (const index of job.ringOrder) {
    const lane = pool.lanes[index];
    if (lane.capacity.health?.down) continue;
    firstUp ??= lane;
    if (!job.triedOn?.has(lane)) return lane;
  }
  return firstUp;
}

/**
 * For a pool with affinity: the index in its queue of the request `lane` takes now, or -1 for none. A request
 * belongs first on its home (the first lane on the ring from its prefix), then on the next lane of the ring,
 * and so on; it may go to a lane only when every lane before it on its ring is full (`hasRoom`). Among the
 * requests within LOOKAHEAD of the head's priority, `lane` takes the one it is nearest the front of the ring
 * for: one whose home it is, else one whose home is full and for which it is next. So under load, where every
 * replica is full and slots free one at a time, a freed slot goes to a line of its own prefixes, and a prefix
 * that outgrows its home spills onto the next replica of its ring (whose cache then holds it too), not onto
 * whichever slot freed first. A request without a prefix goes anywhere.
 */
export function pickForLane<Job extends Placeable<Job>>(pool: Pool<Job>, lane: Lane<Job>, hasRoom: (lane: Lane<Job>) => boolean): number {
  const { queue, lanes } = pool;
  const room = lanes.map(hasRoom);
  const priority = queue[0]?.batch.priority;
  let best = -1;
  let bestRank = Infinity;
  for (let index = 0; index < queue.length && index < LOOKAHEAD; index++) {
    const job = queue[index];
    // Lines of a lower priority wait behind the head's, as everywhere else.
    if (job.batch.priority !== priority) break;
    if (job.prefixHash === undefined || !pool.ring) {
      if (!job.triedOn?.has(lane)) return index;
      continue;
    }
    job.ringOrder ??= pool.ring.order(job.prefixHash);
    // Lanes it failed on count as full while another is up, so a failover goes elsewhere.
    const untried = job.triedOn !== undefined && lanes.some((other) => !job.triedOn!.has(other) && !other.capacity.health?.down);
    let rank = 0;
    for (const at of job.ringOrder) {
      const candidate = lanes[at];
      if (candidate === lane) {
        if (untried && job.triedOn!.has(lane)) rank = Infinity;
        break;
      }
      // A lane out of service is skipped; one that is up and has room comes first, so this request is not ours.
      if (candidate.capacity.health?.down) continue;
      if (room[at] && !(untried && job.triedOn!.has(candidate))) {
        rank = Infinity;
        break;
      }
      rank += 1;
    }
    if (rank === 0) return index;
    if (rank < bestRank) {
      bestRank = rank;
      best = index;
    }
  }
  return best;
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
