// Real-time inference: one request in, one answer out, routed by model name
// exactly as batch lines are (configured upstreams first, then the embedded
// engine, then the echo emulator). The API's inference routes use this; the
// runner has its own lanes, with retries, which a caller waiting on a single
// answer does not want. Both count against the same capacity per upstream
// (capacity/upstream-capacity.ts): a real-time request always goes at once,
// and the batch work in this process leaves it the room it takes, and its
// answer teaches the knee finder like any other.
//
// A pool's replica is chosen by the same ring and spare-capacity order as
// batch lines (pool-placement.ts): its prefix's home while that has room, else
// the most spare capacity, never one taken out for health. A request whose
// replica could not be connected to, did not answer in time, or answered
// 502/503/504 goes to another replica that is up, once each; any other answer
// (2xx, 4xx, a body too large) is the answer, since another replica would give
// the same.
//
// The embedded engine is not owned here: the same Engine (one model load)
// also serves the runner's engine lane, and app.ts closes it. The HTTP
// clients for configured upstreams are owned here, made on first use.
import type { UpstreamConfig } from '../config.ts';
import { createEchoUpstreamClient, createHttpUpstreamClient, type UpstreamCall, type UpstreamClient, type UpstreamOutcome } from './http-client.ts';
import type { ModelDiscovery } from './model-discovery.ts';
import { ModelRouter, type Route, type UpstreamPool } from './router.ts';
import { UpstreamCapacities, type UpstreamCapacity } from './capacity/upstream-capacity.ts';
import { isConnectionFailure } from './capacity/upstream-health.ts';
import type { UpstreamReplica } from './replicas.ts';
import { AffinityRing, bySpareCapacity } from './pool-placement.ts';
import { prefixHashOf } from './prefix-key.ts';

// Worth sending to another replica: nothing answered, or a gateway in front of the replica says it is not there.
const FAILOVER_STATUSES = new Set([502, 503, 504]);

/** What the gateway needs of the embedded engine: the client that answers and the model names it serves. */
export interface RealtimeEngine {
  client: UpstreamClient;
  models: string[];
}

export interface RealtimeGatewayOptions {
  upstreams: UpstreamConfig[];
  engine?: RealtimeEngine;
  /** This process's capacity per upstream, shared with the batch runner; the gateway makes its own when left out. */
  capacities?: UpstreamCapacities;
  /** What `models: "auto"` upstreams serve (shared with the batch runner). */
  discovery?: ModelDiscovery;
}

/** How long close() lets requests in flight finish before ending them, as the runner does for batch lines. */
const DEFAULT_CLOSE_GRACE_MS = 10_000;

export class RealtimeGateway {
  private readonly router: ModelRouter;
  private readonly echo = createEchoUpstreamClient();
  private readonly upstreamClients = new Map<string, UpstreamClient>();
  private readonly inFlight = new Map<AbortController, Promise<UpstreamOutcome>>();
  private readonly capacities: UpstreamCapacities;
  private readonly rings = new Map<string, AffinityRing>();
  private closing: Promise<void> | undefined;

  constructor(private readonly options: RealtimeGatewayOptions) {
    this.router = new ModelRouter(options.upstreams, { engineModels: options.engine?.models, discovery: options.discovery });
    this.capacities = options.capacities ?? new UpstreamCapacities();
  }

  /** Who serves `model`, or null when nobody does (after asking `models: "auto"` upstreams again, when there are any). */
  async route(model: string): Promise<Route | null> {
    const route = this.router.route(model);
    if (route || !this.options.discovery?.active) return route;
    await this.options.discovery.refreshOnMiss();
    return this.router.route(model);
  }

  /** True once close() has been called: requests answered from then on were cut short by the shutdown. */
  get closed(): boolean {
    return this.closing !== undefined;
  }

  /** Sends `call` to whoever `route` names (a replica of its pool, failing over to the others). Never throws, like every UpstreamClient. */
  async send(route: Route, call: UpstreamCall): Promise<UpstreamOutcome> {
    if (this.closed) return { kind: 'network_error', message: 'the server is shutting down' };
    if (route.kind !== 'upstream') {
      const client = route.kind === 'echo' ? this.echo : this.options.engine?.client;
      if (!client) return { kind: 'network_error', message: 'no embedded engine is running in this process' };
      return this.sendTo(client, undefined, call);
    }
    const order = this.replicaOrder(route.pool, call);
    let outcome: UpstreamOutcome = { kind: 'network_error', message: 'every replica of this model is down' };
    for (const replica of order) {
      outcome = await this.sendTo(this.clientFor(replica), this.capacities.for(replica), call);
      const worthAnother =
        outcome.kind === 'timeout' ||
        (outcome.kind === 'network_error' && isConnectionFailure(outcome.message)) ||
        (outcome.kind === 'response' && FAILOVER_STATUSES.has(outcome.status));
      if (!worthAnother || this.closed || call.signal?.aborted) break;
    }
    return outcome;
  }

  /** The replicas to try, first choice first: up ones only (all of them when none is, so the answer says why). */
  private replicaOrder(pool: UpstreamPool, call: UpstreamCall): UpstreamReplica[] {
    const { replicas } = pool;
    if (replicas.length === 1) return replicas;
    const capacities = replicas.map((replica) => this.capacities.for(replica));
    let order: number[];
    const prefixHash = pool.affinity ? prefixHashOf(call.endpoint, call.body) : undefined;
    if (prefixHash !== undefined) {
      let ring = this.rings.get(pool.key);
      if (!ring) this.rings.set(pool.key, (ring = new AffinityRing(replicas)));
      // Home first while it has room; a full home goes after the others, as a batch line would spill.
      const ringOrder = ring.order(prefixHash);
      const roomy = ringOrder.filter((index) => hasRoom(capacities[index]));
      order = [...roomy, ...ringOrder.filter((index) => !roomy.includes(index))];
    } else {
      order = bySpareCapacity(capacities.map((capacity, index) => ({ inFlight: capacity.limiter.inFlight, limit: capacity.limiter.limit, weight: replicas[index].weight })));
    }
    const up = order.filter((index) => !capacities[index].health?.down);
    return (up.length > 0 ? up : order).map((index) => replicas[index]);
  }

  private async sendTo(client: UpstreamClient, capacity: UpstreamCapacity | undefined, call: UpstreamCall): Promise<UpstreamOutcome> {
    // Our own controller, so close() can end what is still running after its grace period.
    const stop = new AbortController();
    const signal = call.signal ? AbortSignal.any([call.signal, stop.signal]) : stop.signal;
    capacity?.limiter.acquireUnlimited();
    const sentAt = performance.now();
    const sent = client.send({ ...call, signal });
    this.inFlight.set(stop, sent);
    try {
      const outcome = await sent;
      capacity?.observe(outcome, performance.now() - sentAt);
      return outcome;
    } finally {
      capacity?.limiter.release();
      this.inFlight.delete(stop);
    }
  }

  /**
   * Refuses new requests, lets those in flight finish for `graceMs`, ends the
   * rest, and closes the upstream clients this gateway made (not the engine:
   * it is shared with the runner, and app.ts closes it).
   */
  close(graceMs = DEFAULT_CLOSE_GRACE_MS): Promise<void> {
    this.closing ??= (async () => {
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
      await Promise.race([Promise.all(this.inFlight.values()), grace]);
      clearTimeout(timer);
      for (const stop of this.inFlight.keys()) stop.abort(new Error('the server is shutting down'));
      await Promise.all(this.inFlight.values());
      const clients = [...this.upstreamClients.values()];
      this.upstreamClients.clear();
      await Promise.all(clients.map((client) => client.close()));
    })();
    return this.closing;
  }

  private clientFor(upstream: UpstreamReplica): UpstreamClient {
    let client = this.upstreamClients.get(upstream.name);
    if (!client) {
      client = createHttpUpstreamClient({ name: upstream.name, baseUrl: upstream.baseUrl, apiKey: upstream.apiKey, maxConnections: upstream.maxConcurrency, messagesApi: upstream.messagesApi });
      this.upstreamClients.set(upstream.name, client);
    }
    return client;
  }
}

function hasRoom(capacity: UpstreamCapacity): boolean {
  return capacity.limiter.inFlight < capacity.limiter.limit;
}

/** Who serves a route, in words fit for logs: 'engine', 'echo' or 'upstream:<name>'. */
export function routeLabel(route: Route): string {
  return route.kind === 'upstream' ? `upstream:${route.pool.key}` : route.kind;
}
