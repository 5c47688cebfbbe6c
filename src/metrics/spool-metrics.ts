// The metrics one Spool app exposes at /metrics, in a registry of its own (not
// prom-client's global one), so several apps in one process (the tests, an
// embedded `spool run`) never collide. Nothing here is on the request path:
// the runner counts into plain fields (runner/upstream-tally.ts), and each
// scrape reads those and two grouped SQL queries once, into a snapshot every
// metric of that scrape reads. Only the per-batch lifecycle timings are
// observed as they happen.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { LifecycleMetrics } from '../runtime/context.ts';
import type { RunnerStats } from '../runner/runner.ts';
import { RETRY_CAUSES, type UpstreamTotals } from '../runner/upstream-tally.ts';
import type { SqlStore } from '../store/sql/database.ts';
import type { EngineReport } from '../upstreams/capacity/engine-probe.ts';
import { batchesByStatus } from '../store/sql/observability.ts';
import { queueDepthByModel, type ModelQueueDepth } from '../store/sql/queue-stats.ts';
import { OPEN_BATCH_STATUSES, TERMINAL_BATCH_STATUSES, type BatchStatus } from '../store/sql/schema.ts';
import { BucketedHistogram } from './bucketed-histogram.ts';

/** The `upstream` label of lines that failed before any upstream was tried (no upstream names contain parentheses). */
export const UNROUTED_UPSTREAM = '(none)';

// Validation streams a whole file (up to 50,000 lines); finalization writes two.
const LIFECYCLE_BUCKETS_SECONDS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
// Models remembered so a drained queue reads 0 instead of vanishing; bounded in case model names are unbounded.
const MAX_REMEMBERED_MODELS = 1000;

export interface SpoolMetricsOptions {
  sql: SqlStore;
  /** The runner in this process, if any: an API-only process has no upstream metrics. */
  runnerStats: () => RunnerStats | undefined;
  log: { warn(obj: object, msg?: string): void };
  /** How long the database aggregates are reused between scrapes (metrics.cacheSeconds). */
  cacheMs: number;
}

export interface SpoolMetrics {
  /** Handed to the lifecycle sweeps (LifecycleContext.metrics). */
  lifecycle: LifecycleMetrics;
  contentType: string;
  /** The Prometheus text exposition: this app's metrics and the process's (CPU, memory, event loop, GC). */
  render(): Promise<string>;
}

interface Snapshot {
  runner?: RunnerStats;
  queue?: ModelQueueDepth[];
  batches?: Map<BatchStatus, number>;
}

export function createSpoolMetrics(options: SpoolMetricsOptions): SpoolMetrics {
  const registry = new Registry();
  let aggregates: { at: number; read: Promise<[ModelQueueDepth[] | undefined, Map<BatchStatus, number> | undefined]> } | undefined;
  // Replaced by each scrape, never cleared: a scrape running alongside another reads the newer one, never none.
  let snapshot: Snapshot = {};
  const upstreams = (): Array<{ name: string; totals: UpstreamTotals }> => {
    if (!snapshot.runner) return [];
    const lanes = snapshot.runner.lanes.map((lane) => ({ name: lane.name, totals: lane.totals }));
    const { unrouted } = snapshot.runner;
    if (unrouted.succeeded + unrouted.failed + unrouted.retried > 0) lanes.push({ name: UNROUTED_UPSTREAM, totals: unrouted });
    return lanes;
  };
  const registers = [registry];

  new Counter({
    name: 'spool_upstream_requests_total',
    help: 'Request line attempts recorded by this process, by upstream and outcome (succeeded, failed, retried: tried again later).',
    labelNames: ['upstream', 'outcome'] as const,
    registers,
    collect() {
      this.reset();
      for (const { name, totals } of upstreams()) {
        this.inc({ upstream: name, outcome: 'succeeded' }, totals.succeeded);
        this.inc({ upstream: name, outcome: 'failed' }, totals.failed);
        this.inc({ upstream: name, outcome: 'retried' }, totals.retried);
      }
    },
  });

  new Counter({
    name: 'spool_upstream_retries_total',
    help: 'Attempts that will be retried, by upstream and cause (rate_limited, overloaded, server_error, timeout, network_error, other_status, internal).',
    labelNames: ['upstream', 'cause'] as const,
    registers,
    collect() {
      this.reset();
      for (const { name, totals } of upstreams()) {
        for (const cause of RETRY_CAUSES) this.inc({ upstream: name, cause }, totals.retriesByCause[cause]);
      }
    },
  });

  new Counter({
    name: 'spool_upstream_tokens_total',
    help: 'Tokens the upstreams reported in the usage of successful answers, by upstream and direction (input, output).',
    labelNames: ['upstream', 'direction'] as const,
    registers,
    collect() {
      this.reset();
      for (const { name, totals } of upstreams()) {
        this.inc({ upstream: name, direction: 'input' }, totals.inputTokens);
        this.inc({ upstream: name, direction: 'output' }, totals.outputTokens);
      }
    },
  });

  // One series per lane; a lane for which `pick` has no value (no engine report, no health) has none.
  const laneGauge = (name: string, help: string, pick: (lane: RunnerStats['lanes'][number]) => number | undefined) =>
    new Gauge({
      name,
      help,
      labelNames: ['upstream'] as const,
      registers,
      collect() {
        this.reset();
        for (const lane of snapshot.runner?.lanes ?? []) {
          const value = pick(lane);
          if (value !== undefined) this.set({ upstream: lane.name }, value);
        }
      },
    });
  laneGauge('spool_upstream_in_flight', 'Requests this process has sent to the upstream and not yet had answered.', (lane) => lane.inFlight);
  laneGauge(
    'spool_upstream_up',
    'Whether the upstream can be reached (0 after a few connection failures in a row, until a probe gets an answer); its lines wait meanwhile.',
    (lane) => (lane.health ? Number(lane.health.up) : undefined),
  );
  laneGauge('spool_upstream_queued', 'Claimed request lines waiting in this process for a concurrency slot or rate budget of the upstream.', (lane) => lane.queued);
  laneGauge(
    'spool_upstream_concurrency_limit',
    "Current adaptive concurrency limit of this process for the upstream: moved on throughput and latency toward the engine's knee, halved on 429/5xx/timeouts.",
    (lane) => lane.limit,
  );
  new Gauge({
    name: 'spool_upstream_concurrency_limit_reason',
    help: 'Why the concurrency limit last moved (1 for the current reason): start, engine slots, throughput, latency, engine queue, overload.',
    labelNames: ['upstream', 'reason'] as const,
    registers,
    collect() {
      this.reset();
      for (const lane of snapshot.runner?.lanes ?? []) this.set({ upstream: lane.name, reason: lane.lastChange.reason }, 1);
    },
  });
  new Counter({
    name: 'spool_upstream_concurrency_limit_changes_total',
    help: 'Moves of the concurrency limit by this process, by reason.',
    labelNames: ['upstream', 'reason'] as const,
    registers,
    collect() {
      this.reset();
      for (const lane of snapshot.runner?.lanes ?? []) {
        for (const [reason, count] of Object.entries(lane.changes)) this.inc({ upstream: lane.name, reason }, count ?? 0);
      }
    },
  });
  new Counter({
    name: 'spool_upstream_ejections_total',
    help: 'Times this replica was taken out of its pool for failures in a row (connection failures; for replicas of a pool also 5xx and timeouts).',
    labelNames: ['upstream'] as const,
    registers,
    collect() {
      this.reset();
      for (const lane of snapshot.runner?.lanes ?? []) if (lane.health) this.inc({ upstream: lane.name }, lane.health.ejections);
    },
  });
  new Counter({
    name: 'spool_upstream_affinity_placements_total',
    help: 'Requests placed on this replica by prefix affinity: "home" when it is their prefix\'s replica, "spilled" when their home had no room.',
    labelNames: ['upstream', 'placement'] as const,
    registers,
    collect() {
      this.reset();
      for (const lane of snapshot.runner?.lanes ?? []) {
        if (lane.affinity.home + lane.affinity.spilled === 0) continue;
        this.inc({ upstream: lane.name, placement: 'home' }, lane.affinity.home);
        this.inc({ upstream: lane.name, placement: 'spilled' }, lane.affinity.spilled);
      }
    },
  });
  const engineGauge = (name: string, help: string, pick: (engine: EngineReport) => number | undefined) =>
    laneGauge(name, help, (lane) => (lane.engine ? pick(lane.engine) : undefined));
  engineGauge('spool_upstream_engine_slots', 'Requests the engine says it runs at once (llama.cpp total_slots); absent when it does not say.', (e) => e.slots);
  engineGauge('spool_upstream_engine_running', 'Requests the engine says it is running (all its clients).', (e) => e.running);
  engineGauge('spool_upstream_engine_waiting', "Requests the engine says wait in its own queue (llama.cpp deferred, vLLM waiting, SGLang queued).", (e) => e.waiting);
  engineGauge('spool_upstream_engine_kv_cache_usage', "The engine's KV-cache use, 0 to 1, where it says.", (e) => e.kvCacheUsage);
  laneGauge('spool_upstream_concurrency_ceiling', "The upstream's configured maxConcurrency: the adaptive limit never exceeds it.", (lane) => lane.ceiling);

  new BucketedHistogram('spool_upstream_request_duration_seconds', 'Time from sending a request to the upstream to having its whole answer, by upstream.', () =>
    (snapshot.runner?.lanes ?? []).map((lane) => ({
      labels: { upstream: lane.name },
      bounds: lane.totals.latency.bounds,
      counts: lane.totals.latency.counts,
      sum: lane.totals.latency.sumSeconds,
      count: lane.totals.latency.count,
    })),
  ).register(registry);

  const seenModels = new Set<string>();
  const modelGauge = (name: string, help: string, pick: (depth: ModelQueueDepth) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['model'] as const,
      registers,
      collect() {
        this.reset();
        if (!snapshot.queue) return;
        for (const depth of snapshot.queue) {
          if (seenModels.size < MAX_REMEMBERED_MODELS) seenModels.add(depth.model);
          this.set({ model: depth.model }, pick(depth));
        }
        const present = new Set(snapshot.queue.map((depth) => depth.model));
        for (const model of seenModels) if (!present.has(model)) this.set({ model }, 0);
      },
    });
  modelGauge('spool_queue_depth', 'Request lines waiting for a worker (all processes sharing the database), by model.', (depth) => depth.pending);
  modelGauge('spool_requests_running', 'Request lines held by a worker, sent upstream or about to be (all processes), by model.', (depth) => depth.running);

  new Gauge({
    name: 'spool_batches',
    help: 'Batches by internal status (validating, in_progress, finalizing, cancelling, completed, failed, expired, cancelled), all users.',
    labelNames: ['status'] as const,
    registers,
    collect() {
      this.reset();
      const { batches } = snapshot;
      if (!batches) return;
      for (const status of [...OPEN_BATCH_STATUSES, ...TERMINAL_BATCH_STATUSES]) this.set({ status }, batches.get(status) ?? 0);
    },
  });

  const validation = new Histogram({
    name: 'spool_batch_validation_duration_seconds',
    help: 'Time to validate one batch input file and store its request rows, by outcome (valid, invalid).',
    labelNames: ['outcome'] as const,
    buckets: LIFECYCLE_BUCKETS_SECONDS,
    registers,
  });
  const finalization = new Histogram({
    name: 'spool_batch_finalization_duration_seconds',
    help: 'Time to write one batch output and error files and move it to its final status, by that status.',
    labelNames: ['status'] as const,
    buckets: LIFECYCLE_BUCKETS_SECONDS,
    registers,
  });

  return {
    lifecycle: {
      validated: (outcome, seconds) => validation.observe({ outcome }, seconds),
      finalized: (status, seconds) => finalization.observe({ status }, seconds),
    },
    contentType: registry.contentType,
    async render() {
      // A database that fails to answer costs its gauges for this scrape, not the whole scrape: the runner's
      // numbers matter most exactly then. (/readyz reports the database itself.)
      const warn = (what: string) => (err: unknown) => {
        options.log.warn({ err }, `metrics: reading ${what} failed`);
        return undefined;
      };
      // The two aggregate queries (over every request line and batch) are read at most once per
      // metrics.cacheSeconds, however often anyone scrapes: several Prometheus replicas, or someone polling the
      // endpoint in a loop, cost the database no more than one read every few seconds.
      const now = Date.now();
      if (!aggregates || now - aggregates.at >= options.cacheMs) {
        aggregates = {
          at: now,
          read: Promise.all([queueDepthByModel(options.sql.db).catch(warn('queue depth')), batchesByStatus(options.sql.db).catch(warn('batch counts'))]),
        };
      }
      const [queue, batches] = await aggregates.read;
      snapshot = { runner: options.runnerStats(), queue, batches };
      return Registry.merge([processRegistry(), registry]).metrics();
    },
  };
}

let processMetrics: Registry | undefined;

/**
 * CPU, memory, event loop lag, GC and handles describe the process, not an
 * app, and collecting them installs observers that cannot be removed: one
 * registry per process, shared by every app in it.
 */
function processRegistry(): Registry {
  if (!processMetrics) {
    processMetrics = new Registry();
    collectDefaultMetrics({ register: processMetrics });
  }
  return processMetrics;
}
