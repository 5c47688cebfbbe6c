// Spool with default settings in front of a loopback engine that behaves like
// llama.cpp on a small machine (test/helpers/sim-engine.ts: 4 slots, queued
// connections cost throughput, 200 to everything): the limit has to find the
// knee by itself, with the engine's /props and without, and still halves on
// 429. Outcomes only: where the limit settled, never how fast.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { EngineProbe, parseMetrics } from '../../src/upstreams/capacity/engine-probe.ts';
import { Runner } from '../../src/runner/runner.ts';
import {
  api,
  assertExactlyOnce,
  chatLines,
  cleanupAll,
  createPostgresDatabase,
  endpointOf,
  getBatch,
  lifecycleContext,
  pollUntil,
  readResults,
  SKIP_POSTGRES,
  startHarness,
  submitBatch,
  waitForStatus,
} from '../helpers/runner-harness.ts';
import { startSimEngine, startSimEngineProcess, type SimEngine } from '../helpers/sim-engine.ts';

const engines: SimEngine[] = [];
after(async () => {
  await Promise.all(engines.map((engine) => engine.close()));
  await cleanupAll();
});

/** The engine in a process of its own, as a real one runs (the probe tests use one in this process). */
async function engine(options: Parameters<typeof startSimEngine>[0], inProcess = false): Promise<SimEngine> {
  const started = inProcess ? await startSimEngine(options) : await startSimEngineProcess(options);
  engines.push(started);
  return started;
}

/**
 * Runs `lines` lines through Spool (this upstream's config given) and returns the lane's figures at the end, and
 * the limit it held most often over the second half of the run (sampled every 20 ms): where it settled, whatever
 * probe happened to be under way at the very end.
 */
async function runBatch(sim: SimEngine, upstream: Record<string, unknown>, lines = 800) {
  const h = await startHarness({
    config: { upstreams: [{ name: 'llama', baseUrl: sim.baseUrl, models: ['*'], ...upstream }] },
  });
  const ep = endpointOf(h);
  const input = chatLines(lines, 'sim-model', 'knee');
  const samples: number[] = [];
  const sampler = setInterval(() => {
    const lane = h.app.runner?.stats().lanes.find((l) => l.name === 'llama');
    if (lane && lane.inFlight > 0) samples.push(lane.limit);
  }, 20);
  let batch;
  try {
    batch = await waitForStatus(ep, (await submitBatch(ep, input)).id, 'completed', 120_000);
  } finally {
    clearInterval(sampler);
  }
  assertExactlyOnce(input.map((line) => line.custom_id), await readResults(ep, batch));
  await sim.refreshStats();
  const lane = h.app.runner!.stats().lanes.find((l) => l.name === 'llama')!;
  const status = await api(`${h.url}/v1/admin/status`, h.apiKey);
  await h.stop();
  return { lane, settled: mostOften(samples.slice(Math.floor(samples.length / 2))), status: status.json.upstreams.find((u: { name: string }) => u.name === 'llama') };
}

function mostOften(values: number[]): number {
  const counts = new Map<number, number>();
  for (const value of values) counts.set(value, (counts.get(value) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1])[0]?.[0] ?? NaN;
}

describe('adaptive concurrency in front of an engine that answers 200 to everything', () => {
  it('without /props (a gateway hides it): settles near the 4 slots on throughput alone, not at the ceiling of 64', async () => {
    const sim = await engine({ props: false });
    const { lane, settled } = await runBatch(sim, {});
    assert.ok(settled >= 2 && settled <= 6, `settled at ${settled} (at the end ${lane.limit}, last moved for ${lane.lastChange.reason})`);
    assert.ok(sim.stats().concurrencySum / sim.stats().arrivals <= 8, 'the engine was never drowned: its mean concurrency stayed near its slots');
    assert.equal(lane.ceiling, 64);
    assert.ok((lane.changes.throughput ?? 0) > 0, 'it moved on throughput');
    assert.equal(lane.engine, null, 'nothing to report');
  });

  it("with /props: starts from the engine's 4 slots and never goes past them", async () => {
    const sim = await engine({ props: true });
    const { lane, settled, status } = await runBatch(sim, {});
    assert.ok(settled >= 2 && settled <= 4, `settled at ${settled}`);
    assert.ok(lane.limit <= 4, `limit ${lane.limit}`);
    assert.ok(sim.stats().maxWaiting <= 1, `the engine queued ${sim.stats().maxWaiting} requests at most`);
    assert.equal(lane.engine?.slots, 4);
    assert.equal((lane.changes['engine slots'] ?? 0) >= 0, true);
    assert.equal(status.engine.kind, 'llama.cpp');
    assert.equal(status.engine.slots, 4);
    assert.equal(typeof status.limit_reason, 'string');
  });

  it('with /metrics: requests waiting in the engine bring the limit down (engine queue)', async () => {
    const sim = await engine({ metrics: true });
    const { lane } = await runBatch(sim, { initialConcurrency: 16 });
    assert.ok(lane.limit <= 8, `limit ${lane.limit}`);
    assert.ok((lane.changes['engine queue'] ?? 0) + (lane.changes.throughput ?? 0) + (lane.changes.latency ?? 0) > 0, JSON.stringify(lane.changes));
  });

  it('still halves on 429 (a gateway with no queue)', async () => {
    const sim = await engine({ rejectWhenQueued: true });
    const { lane } = await runBatch(sim, { initialConcurrency: 16 }, 300);
    assert.ok(sim.stats().rejected > 0, 'the engine refused some');
    assert.ok((lane.changes.overload ?? 0) > 0, `halved: ${JSON.stringify(lane.changes)}`);
    assert.ok(lane.limit <= 8, `limit ${lane.limit}`);
  });
});

describe('several workers in front of one engine (PostgreSQL, global ceilings)', { skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : false }, () => {
  it("stay within the engine's slots together, not each on its own", async () => {
    const sim = await engine({ props: true });
    const databaseUrl = await createPostgresDatabase();
    const h = await startHarness({ config: { databaseUrl, upstreams: [{ name: 'llama', baseUrl: sim.baseUrl, models: ['*'] }] } });
    // A second worker on the same database: its own runner, its own knee finder, the same shared ceiling.
    const other = new Runner(lifecycleContext(h.app.store, h.config)).start();
    try {
      const ep = endpointOf(h);
      const input = chatLines(600, 'sim-model', 'shared');
      const batch = await submitBatch(ep, input);
      // Both have read the engine's slots once some answers are in; from then on the engine sees no queue.
      await pollUntil(() => getBatch(ep, batch.id), (b) => b.request_counts.completed >= 60, { what: 'the first answers' });
      sim.reset();
      const done = await waitForStatus(ep, batch.id, 'completed', 120_000);
      assertExactlyOnce(input.map((line) => line.custom_id), await readResults(ep, done));
      const stats = await sim.refreshStats();
      assert.ok(stats.served > 0);
      assert.equal(stats.maxWaiting, 0, `at most 4 in flight across both workers; the engine had up to ${stats.maxWaiting} waiting`);
      assert.ok(stats.maxRunning <= 4);
    } finally {
      await other.stop();
      await h.stop();
    }
  });
});

describe('engine probe', () => {
  it("reads llama.cpp's /props and /metrics, and leaves an upstream without them alone", async () => {
    const sim = await engine({ props: true, metrics: true }, true);
    const probe = new EngineProbe({ baseUrl: sim.baseUrl });
    await probe.refresh();
    assert.deepEqual(probe.report(), { engine: 'llama.cpp', running: 0, waiting: 0, kvCacheUsage: undefined, slots: 4, at: probe.report()!.at });
    const hidden = await engine({}, true);
    const none = new EngineProbe({ baseUrl: hidden.baseUrl, intervalMs: 0 });
    await none.refresh();
    await none.refresh();
    assert.equal(none.report(), undefined);
  });

  it("parses vLLM's and SGLang's Prometheus gauges, summing label sets", () => {
    const vllm = [
      '# HELP vllm:num_requests_running Number of requests currently running on GPU.',
      '# TYPE vllm:num_requests_running gauge',
      'vllm:num_requests_running{model_name="a"} 12.0',
      'vllm:num_requests_running{model_name="b"} 3.0',
      'vllm:num_requests_waiting{model_name="a"} 5.0',
      'vllm:gpu_cache_usage_perc{model_name="a"} 0.91',
    ].join('\n');
    assert.deepEqual(parseMetrics(vllm, 1), { engine: 'vllm', running: 15, waiting: 5, kvCacheUsage: 0.91, at: 1 });
    const sglang = 'sglang:num_running_reqs{name="m"} 7\nsglang:num_queue_reqs{name="m"} 0\nsglang:token_usage{name="m"} 0.4\n';
    assert.deepEqual(parseMetrics(sglang, 2), { engine: 'sglang', running: 7, waiting: 0, kvCacheUsage: 0.4, at: 2 });
    assert.equal(parseMetrics('process_cpu_seconds_total 12\n', 3), undefined, 'some other exporter');
  });
});
