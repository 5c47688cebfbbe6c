// Real-time inference: one request in, one answer out, routed by model name
// exactly as batch lines are (configured upstreams first, then the embedded
// engine, then the echo emulator). The API's inference routes use this; the
// runner has its own lanes, with retries, which a caller waiting on a single
// answer does not want. Both count against the same capacity per upstream
// (capacity/upstream-capacity.ts): a real-time request always goes at once,
// and the batch work in this process leaves it the room it takes, and its
// answer teaches the knee finder like any other.
//
// The embedded engine is not owned here: the same Engine (one model load)
// also serves the runner's engine lane, and app.ts closes it. The HTTP
// clients for configured upstreams are owned here, made on first use.
import type { UpstreamConfig } from '../config.ts';
import { createEchoUpstreamClient, createHttpUpstreamClient, type UpstreamCall, type UpstreamClient, type UpstreamOutcome } from './http-client.ts';
import type { ModelDiscovery } from './model-discovery.ts';
import { ModelRouter, type Route } from './router.ts';
import { UpstreamCapacities } from './capacity/upstream-capacity.ts';

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

  /** Sends `call` to whoever `route` names. Never throws, like every UpstreamClient. */
  async send(route: Route, call: UpstreamCall): Promise<UpstreamOutcome> {
    if (this.closed) return { kind: 'network_error', message: 'the server is shutting down' };
    const client = this.clientFor(route);
    if (!client) return { kind: 'network_error', message: 'no embedded engine is running in this process' };
    // Our own controller, so close() can end what is still running after its grace period.
    const stop = new AbortController();
    const signal = call.signal ? AbortSignal.any([call.signal, stop.signal]) : stop.signal;
    const capacity = route.kind === 'upstream' ? this.capacities.for(route.upstream) : undefined;
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

  private clientFor(route: Route): UpstreamClient | undefined {
    if (route.kind === 'echo') return this.echo;
    if (route.kind === 'engine') return this.options.engine?.client;
    const { upstream } = route;
    let client = this.upstreamClients.get(upstream.name);
    if (!client) {
      client = createHttpUpstreamClient({ name: upstream.name, baseUrl: upstream.baseUrl, apiKey: upstream.apiKey, maxConnections: upstream.maxConcurrency, messagesApi: upstream.messagesApi });
      this.upstreamClients.set(upstream.name, client);
    }
    return client;
  }
}

/** Who serves a route, in words fit for logs: 'engine', 'echo' or 'upstream:<name>'. */
export function routeLabel(route: Route): string {
  return route.kind === 'upstream' ? `upstream:${route.upstream.name}` : route.kind;
}
