// The knee finder against modelled engines, on a fake clock: each completion
// arrives when the engine's throughput at the current limit says it would, so
// the outcome depends on the algorithm alone, never on the machine's speed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AdaptiveLimiter } from '../../src/upstreams/capacity/adaptive-limiter.ts';
import { KneeFinder } from '../../src/upstreams/capacity/knee-finder.ts';

/** An engine: requests per second at `concurrency` requests in flight. */
type Engine = (concurrency: number) => number;

/** llama.cpp-like: 4 slots share the compute (throughput grows less than linearly), waiting connections cost throughput. */
const fourSlots: Engine = (c) => {
  const running = Math.min(c, 4);
  const waiting = Math.max(0, c - 4);
  const step = 1 + 0.3 * (running - 1) + 0.09 * waiting;
  return (running / step) * 30;
};

/** vLLM-like with 32 places in its batch and a constant time per request: flat past 32, no cost for waiting. */
const thirtyTwoSlots: Engine = (c) => (Math.min(c, 32) / 0.05);

interface Run {
  limiter: AdaptiveLimiter;
  knee: KneeFinder;
  clock: { now: () => number; advance: (ms: number) => void };
  /** Limits seen after each completion. */
  trace: number[];
}

function setUp(initial: number, configuredStart: boolean, max = 64): Run {
  let time = 1_000_000;
  const clock = { now: () => time, advance: (ms: number) => void (time += ms) };
  const limiter = new AdaptiveLimiter({ initial, max, now: clock.now });
  const knee = new KneeFinder({ limiter, configuredStart, now: clock.now });
  return { limiter, knee, clock, trace: [] };
}

/**
 * Runs `completions` requests with the limit always in use: each completes 1/throughput after the one before,
 * with the latency Little's law gives (in flight / throughput, times `latencyFactor`), `tokens` each.
 */
function drive(run: Run, engine: Engine, completions: number, sample: (i: number) => { tokens?: number; latencyFactor?: number } = () => ({})): void {
  const { limiter, knee, clock } = run;
  for (let i = 0; i < completions; i++) {
    while (limiter.tryAcquire()) {
      /* fill the limit: the caller always has work */
    }
    const concurrency = limiter.inFlight;
    const rate = engine(concurrency);
    const { tokens = 16, latencyFactor = 1 } = sample(i);
    clock.advance(1000 / rate);
    limiter.release();
    knee.observe({ latencyMs: (concurrency / rate) * 1000 * latencyFactor, outputTokens: tokens });
    run.trace.push(limiter.limit);
  }
}

/** The limit most often held over the last `last` completions. */
function settled(run: Run, last = 400): number {
  const counts = new Map<number, number>();
  for (const limit of run.trace.slice(-last)) counts.set(limit, (counts.get(limit) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1])[0][0];
}

describe('knee finder', () => {
  it('climbs from a modest start to the knee of a 4-slot engine and holds there', () => {
    const run = setUp(4, false);
    drive(run, fourSlots, 2_000);
    const limit = settled(run);
    assert.ok(limit >= 3 && limit <= 5, `settled at ${limit}: ${run.trace.filter((_, i) => i % 50 === 0).join(' ')}`);
    assert.ok(Math.max(...run.trace) <= 8, 'it never strayed far past the knee');
  });

  it('comes down to the knee from a start far above it', () => {
    const run = setUp(32, true);
    drive(run, fourSlots, 4_000);
    const limit = settled(run);
    assert.ok(limit >= 3 && limit <= 6, `settled at ${limit}`);
  });

  it('climbs to a 32-place batch quickly and settles at or just above it', () => {
    const run = setUp(8, true);
    drive(run, thirtyTwoSlots, 3_000);
    const reached = run.trace.findIndex((limit) => limit >= 32);
    assert.ok(reached !== -1 && reached < 400, `reached 32 after ${reached} completions`);
    const limit = settled(run, 1_000);
    assert.ok(limit >= 32 && limit <= 40, `settled at ${limit}`);
  });

  it('a batch of long generations is not overload: tokens per second stay, so the limit stays', () => {
    const run = setUp(4, false);
    drive(run, fourSlots, 1_500);
    const before = settled(run);
    // Ten times the tokens and ten times the time per request: the same tokens per second.
    drive(run, (c) => fourSlots(c) / 10, 600, () => ({ tokens: 160 }));
    assert.ok(Math.abs(settled(run, 300) - before) <= 1, `held ${before}, then ${settled(run, 300)}`);
  });

  it('one slow generation does not move the limit', () => {
    const run = setUp(4, false);
    drive(run, fourSlots, 1_500);
    const before = run.limiter.limit;
    drive(run, fourSlots, 1, () => ({ latencyFactor: 50 }));
    assert.equal(run.limiter.limit, before);
  });

  it("starts from the engine's slots and never climbs past them", () => {
    const run = setUp(4, false);
    run.knee.onEngineReport({ engine: 'llama.cpp', slots: 6, at: run.clock.now() });
    assert.equal(run.limiter.limit, 6);
    assert.equal(run.limiter.lastChange.reason, 'engine slots');
    drive(run, (c) => Math.min(c, 12) * 10, 2_000);
    assert.ok(Math.max(...run.trace) <= 6, 'the engine has 6 slots: more would only wait');
  });

  it('a configured start is kept, and still capped to the slots', () => {
    const run = setUp(3, true);
    run.knee.onEngineReport({ engine: 'llama.cpp', slots: 6, at: run.clock.now() });
    assert.equal(run.limiter.limit, 3);
    run.limiter.adjust(10, 'throughput');
    run.knee.onEngineReport({ engine: 'llama.cpp', slots: 6, at: run.clock.now() });
    assert.equal(run.limiter.limit, 6);
  });

  it('requests waiting in the engine take the limit down by as many (at most half at once), and stop the climb', () => {
    const run = setUp(8, true);
    run.limiter.tryAcquire();
    run.knee.onEngineReport({ engine: 'vllm', running: 8, waiting: 3, at: run.clock.now() });
    assert.equal(run.limiter.limit, 5);
    assert.equal(run.limiter.lastChange.reason, 'engine queue');
    run.knee.onEngineReport({ engine: 'vllm', running: 5, waiting: 40, at: run.clock.now() });
    assert.equal(run.limiter.limit, 3, 'halved at most');
    drive(run, (c) => c * 10, 500);
    assert.ok(Math.max(...run.trace) <= 3, 'no climbing while requests wait in the engine');
    run.knee.onEngineReport({ engine: 'vllm', running: 3, waiting: 0, at: run.clock.now() });
    drive(run, (c) => c * 10, 500);
    assert.ok(run.limiter.limit > 3, 'climbing again once none wait');
  });

  it('latency per token far above its floor brings the limit down (the engine is queueing, for us or for others)', () => {
    const run = setUp(4, false);
    drive(run, fourSlots, 1_500);
    const latencyMoves = () => run.limiter.changeCounts().get('latency') ?? 0;
    assert.equal(latencyMoves(), 0);
    // Someone else loads the engine: each of our requests now waits, five times as long for the same work.
    drive(run, (c) => fourSlots(c) / 5, 100);
    assert.ok(latencyMoves() > 0, 'the limit came down for latency');
    assert.ok(run.limiter.limit < 4, `below the knee it had found: ${run.limiter.limit}`);
  });

  it('after an overload halving, climbs back in small steps only', () => {
    const run = setUp(32, true);
    run.limiter.onOverload();
    run.knee.onOverload(32);
    assert.equal(run.limiter.limit, 16);
    drive(run, thirtyTwoSlots, 600);
    const steps = run.trace.map((limit, i) => ({ from: run.trace[i - 1] ?? 16, to: limit })).filter(({ from, to }) => to > from);
    assert.ok(steps.length > 0, 'it climbs again');
    const large = steps.filter(({ from, to }) => to - from > Math.max(1, Math.round(from / 10)));
    assert.deepEqual(large, [], 'every step up is one tenth of the limit (at least one), no doubling');
  });
});
