// The operators' view of the work in flight, as one JSON object: per upstream
// the adaptive concurrency this process's worker runs at (its runner's
// lanes), the queue in the database, and how recent requests ended. The
// runner part is this process's alone (an API-only process has none); the
// database part covers every worker.
import type { UpstreamConfig } from '../config.ts';
import type { RunnerStats } from '../runner/runner.ts';
import type { StorePart, WriteProblem } from '../store/health.ts';
import type { ModelOutcomes, ModelQueueDepth } from '../store/sql/queue-stats.ts';
import type { ModelDiscovery } from '../upstreams/model-discovery.ts';
import { ModelRouter } from '../upstreams/router.ts';
import { replicasOf, type UpstreamReplica } from '../upstreams/replicas.ts';

export interface AdminStatusInputs {
  now: number;
  windowMs: number;
  runner: RunnerStats | undefined;
  /** Parts of the store that ran out of space lately (store/health.ts). */
  storage: Partial<Record<StorePart, WriteProblem>>;
  queue: ModelQueueDepth[];
  outcomes: ModelOutcomes[];
}

export interface OutcomeCounts {
  succeeded: number;
  failed: number;
  retries: number;
  /** failed / (succeeded + failed); null when nothing finished in the window. */
  error_rate: number | null;
}

export interface UpstreamStatus {
  /** The replica's name (a single-server entry's replica has the entry's name). */
  name: string;
  kind: 'upstream' | 'echo' | 'engine';
  /** The configured entry it is a replica of; null for the built-in lanes. */
  pool: string | null;
  /** Requests this process placed here by prefix affinity: on their home replica, or spilled from a full one. */
  affinity: { home: number; spilled: number; hit_rate: number | null } | null;
  /** Configured ceiling (maxConcurrency); null for the built-in lanes, whose ceiling is fixed. */
  max_concurrency: number | null;
  /** Current adaptive limit of this process's lane; null until the lane has served a request here. */
  concurrency_limit: number | null;
  in_flight: number;
  /** Claimed by this process and waiting for a concurrency slot. */
  queued: number;
  /** Unix ms until which the lane holds off after a 429 / Retry-After; null when it is not paused. */
  paused_until: number | null;
  /** Why the limit last moved (start, engine slots, throughput, latency, engine queue, overload) and when (unix ms); null until this process used the lane. */
  limit_reason: string | null;
  limit_changed_at: number | null;
  /** What the engine reports about itself (llama.cpp, vLLM, SGLang); null when it cannot be asked or said nothing. */
  engine: { kind: string; slots: number | null; running: number | null; waiting: number | null; kv_cache_usage: number | null } | null;
  /** Reachability (HTTP upstreams): down (ejected) after a few failures in a row, with why and since when (unix s). */
  health: { up: boolean; down_since: number | null; reason: string | null; ejections: number } | null;
  pending: number;
  running: number;
  recent: OutcomeCounts;
}

export interface ModelStatus {
  model: string;
  /** The upstream the model routes to (its replica, or its pool's entries joined by ","); null when nobody serves it (its lines fail with invalid_model). */
  upstream: string | null;
  /** The replicas that serve it; empty when nobody does. */
  replicas: string[];
  pending: number;
  running: number;
  recent: OutcomeCounts;
}

export interface AdminStatus {
  object: 'admin.status';
  generated_at: number;
  window_seconds: number;
  /**
   * This process's worker; null in an API-only process (`spool serve --no-worker`). `results_stalled` is set
   * while its results cannot be recorded (the database down or full): it claims nothing new meanwhile.
   */
  worker: {
    claimed: number;
    succeeded: number;
    failed: number;
    retried: number;
    in_flight: number;
    queued: number;
    results_stalled: { since: number; reason: string } | null;
  } | null;
  /** Each part of the store: "ok", or why writes to it fail for lack of space and since when (unix ms). */
  storage: Record<StorePart, 'ok' | { problem: string; since: number }>;
  upstreams: UpstreamStatus[];
  models: ModelStatus[];
}

type Lane = RunnerStats['lanes'][number];

const storageState = (problem: WriteProblem | undefined): 'ok' | { problem: string; since: number } =>
  problem ? { problem: problem.reason, since: problem.since } : 'ok';

export class AdminStatusBuilder {
  private readonly router: ModelRouter;

  private readonly replicas: readonly UpstreamReplica[];

  constructor(
    upstreams: readonly UpstreamConfig[],
    engineModels: readonly string[] = [],
    discovery?: ModelDiscovery,
  ) {
    // The runner's own routing rules, so a model is reported under the lanes that really serve it.
    this.router = new ModelRouter([...upstreams], { engineModels: [...engineModels], discovery });
    this.replicas = replicasOf(upstreams);
  }

  laneOf(model: string): { name: string; kind: UpstreamStatus['kind']; replicas: string[] } | null {
    const route = this.router.route(model);
    if (!route) return null;
    if (route.kind !== 'upstream') return { name: route.kind, kind: route.kind, replicas: [route.kind] };
    const replicas = route.pool.replicas;
    const name = replicas.length === 1 ? replicas[0].name : [...new Set(replicas.map((replica) => replica.entry))].join(',');
    return { name, kind: 'upstream', replicas: replicas.map((replica) => replica.name) };
  }

  build(inputs: AdminStatusInputs): AdminStatus {
    const models = this.models(inputs);
    const upstreams = new Map<string, UpstreamStatus>();
    const entry = (name: string, kind: UpstreamStatus['kind']): UpstreamStatus => {
      let status = upstreams.get(name);
      if (!status) {
        const configured = kind === 'upstream' ? this.replicas.find((u) => u.name === name) : undefined;
        status = {
          name,
          kind,
          pool: configured?.entry ?? null,
          affinity: null,
          max_concurrency: configured?.maxConcurrency ?? null,
          concurrency_limit: null,
          in_flight: 0,
          queued: 0,
          paused_until: null,
          limit_reason: null,
          limit_changed_at: null,
          engine: null,
          health: null,
          pending: 0,
          running: 0,
          recent: outcomeCounts(0, 0, 0),
        };
        upstreams.set(name, status);
      }
      return status;
    };
    // Configured upstreams first and always, so an idle one still shows its ceiling.
    for (const upstream of this.replicas) entry(upstream.name, 'upstream');
    for (const lane of inputs.runner?.lanes ?? []) applyLane(entry(lane.name, kindOfLane(lane.name, this.replicas)), lane, inputs.now);
    for (const model of models) {
      // A pool's replicas share its queue: its lines are counted under the model, not under one replica.
      if (!model.upstream || model.replicas.length !== 1) continue;
      const status = entry(model.upstream, this.laneOf(model.model)!.kind);
      status.pending += model.pending;
      status.running += model.running;
      status.recent = outcomeCounts(
        status.recent.succeeded + model.recent.succeeded,
        status.recent.failed + model.recent.failed,
        status.recent.retries + model.recent.retries,
      );
    }
    const runner = inputs.runner;
    return {
      object: 'admin.status',
      generated_at: Math.floor(inputs.now / 1000),
      window_seconds: Math.round(inputs.windowMs / 1000),
      worker: runner
        ? {
            claimed: runner.claimed,
            succeeded: runner.succeeded,
            failed: runner.failed,
            retried: runner.retried,
            in_flight: runner.inFlight,
            queued: runner.queued,
            results_stalled: runner.resultsStalled ? { since: runner.resultsStalled.since, reason: runner.resultsStalled.reason } : null,
          }
        : null,
      storage: {
        database: storageState(inputs.storage.database),
        blob_store: storageState(inputs.storage.blob_store),
      },
      upstreams: [...upstreams.values()],
      models,
    };
  }

  private models(inputs: AdminStatusInputs): ModelStatus[] {
    const byModel = new Map<string, ModelStatus>();
    const entry = (model: string): ModelStatus => {
      let status = byModel.get(model);
      if (!status) {
        const lane = this.laneOf(model);
        status = { model, upstream: lane?.name ?? null, replicas: lane?.replicas ?? [], pending: 0, running: 0, recent: outcomeCounts(0, 0, 0) };
        byModel.set(model, status);
      }
      return status;
    };
    for (const depth of inputs.queue) Object.assign(entry(depth.model), { pending: depth.pending, running: depth.running });
    for (const outcome of inputs.outcomes) entry(outcome.model).recent = outcomeCounts(outcome.succeeded, outcome.failed, outcome.retries);
    return [...byModel.values()].sort((a, b) => a.model.localeCompare(b.model));
  }
}

function applyLane(status: UpstreamStatus, lane: Lane, now: number): void {
  status.concurrency_limit = lane.limit;
  const placed = lane.affinity.home + lane.affinity.spilled;
  status.affinity = placed > 0 ? { ...lane.affinity, hit_rate: lane.affinity.home / placed } : null;
  status.in_flight = lane.inFlight;
  status.queued = lane.queued;
  status.paused_until = lane.pausedUntil > now ? lane.pausedUntil : null;
  status.limit_reason = lane.lastChange.reason;
  status.limit_changed_at = lane.lastChange.at;
  status.health = lane.health
    ? { up: lane.health.up, down_since: lane.health.downSince === null ? null : Math.floor(lane.health.downSince / 1000), reason: lane.health.reason, ejections: lane.health.ejections }
    : null;
  const engine = lane.engine;
  status.engine = engine
    ? { kind: engine.engine, slots: engine.slots ?? null, running: engine.running ?? null, waiting: engine.waiting ?? null, kv_cache_usage: engine.kvCacheUsage ?? null }
    : null;
}

// Lane names are the replica's name, or "echo" / "engine" for the built-in ones (runner/lanes.ts).
function kindOfLane(name: string, upstreams: readonly UpstreamReplica[]): UpstreamStatus['kind'] {
  if (upstreams.some((u) => u.name === name)) return 'upstream';
  return name === 'engine' ? 'engine' : name === 'echo' ? 'echo' : 'upstream';
}

function outcomeCounts(succeeded: number, failed: number, retries: number): OutcomeCounts {
  const finished = succeeded + failed;
  return { succeeded, failed, retries, error_rate: finished === 0 ? null : failed / finished };
}
