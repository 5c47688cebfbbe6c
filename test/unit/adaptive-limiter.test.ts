import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AdaptiveLimiter, type LimiterOptions } from '../../src/upstreams/capacity/adaptive-limiter.ts';

function fakeClock(start = 1_000_000): { now: () => number; advance: (ms: number) => void } {
  let time = start;
  return { now: () => time, advance: (ms) => (time += ms) };
}

function limiter(options: Partial<LimiterOptions> = {}) {
  const clock = fakeClock();
  const l = new AdaptiveLimiter({ initial: 4, max: 16, now: clock.now, ...options });
  return { l, clock };
}

function acquireAll(l: AdaptiveLimiter): number {
  let n = 0;
  while (l.tryAcquire()) n++;
  return n;
}

describe('AdaptiveLimiter: acquiring', () => {
  it('hands out exactly `limit` slots, and release frees one', () => {
    const { l } = limiter({ initial: 3 });
    assert.equal(l.available, 3);
    assert.equal(acquireAll(l), 3);
    assert.equal(l.inFlight, 3);
    assert.equal(l.available, 0);
    assert.equal(l.tryAcquire(), false);
    l.release();
    assert.equal(l.inFlight, 2);
    assert.equal(l.available, 1);
    assert.equal(l.tryAcquire(), true);
  });

  it('release without acquire throws instead of drifting below zero', () => {
    const { l } = limiter();
    assert.throws(() => l.release(), /nothing in flight/);
    assert.equal(l.tryAcquire(), true);
    l.release();
    assert.throws(() => l.release());
    assert.equal(l.inFlight, 0);
  });

  it('clamps initial into [min, max]', () => {
    assert.equal(new AdaptiveLimiter({ initial: 8, max: 4 }).limit, 4);
    assert.equal(new AdaptiveLimiter({ initial: 1, max: 10, min: 3 }).limit, 3);
    assert.equal(new AdaptiveLimiter({ initial: 5, max: 10 }).max, 10);
  });

  it('rejects nonsensical options', () => {
    assert.throws(() => new AdaptiveLimiter({ initial: 1, max: 0 }), RangeError);
    assert.throws(() => new AdaptiveLimiter({ initial: 1, max: 2.5 }), RangeError);
    assert.throws(() => new AdaptiveLimiter({ initial: 0, max: 2 }), RangeError);
    assert.throws(() => new AdaptiveLimiter({ initial: 1, max: 2, min: 3 }), RangeError);
    assert.throws(() => new AdaptiveLimiter({ initial: 1, max: 2, min: 0 }), RangeError);
    assert.throws(() => new AdaptiveLimiter({ initial: 1, max: 2, decreaseFactor: 1 }), RangeError);
    assert.throws(() => new AdaptiveLimiter({ initial: 1, max: 2, decreaseFactor: 0 }), RangeError);
    assert.throws(() => new AdaptiveLimiter({ initial: 1, max: 2, cooldownMs: -1 }), RangeError);
  });
});

describe('AdaptiveLimiter: adjust (the knee finder moves the limit through it)', () => {
  it('clamps into [min, max], records why and from where, and reports whether it moved', () => {
    const { l, clock } = limiter({ initial: 4, max: 16, min: 2 });
    assert.deepEqual(l.lastChange, { reason: 'start', from: 4, to: 4, at: clock.now() });
    clock.advance(10);
    assert.equal(l.adjust(9.4, 'throughput'), true);
    assert.equal(l.limit, 9);
    assert.deepEqual(l.lastChange, { reason: 'throughput', from: 4, to: 9, at: clock.now() });
    assert.equal(l.adjust(9, 'latency'), false, 'no move, no new reason');
    assert.equal(l.lastChange.reason, 'throughput');
    l.adjust(100, 'throughput');
    assert.equal(l.limit, 16);
    l.adjust(0, 'engine queue');
    assert.equal(l.limit, 2);
  });

  it('a raised limit makes room for more acquisitions; a lowered one cancels nothing in flight', () => {
    const { l } = limiter({ initial: 1 });
    assert.equal(l.tryAcquire(), true);
    assert.equal(l.tryAcquire(), false);
    l.adjust(2, 'throughput');
    assert.equal(l.tryAcquire(), true);
    l.adjust(1, 'latency');
    assert.equal(l.inFlight, 2);
    assert.equal(l.available, 0);
  });

  it('acquireUnlimited counts past the limit (real-time requests), leaving batch work no room', () => {
    const { l } = limiter({ initial: 2 });
    assert.equal(l.tryAcquire(), true);
    l.acquireUnlimited();
    l.acquireUnlimited();
    assert.equal(l.inFlight, 3);
    assert.equal(l.tryAcquire(), false);
    l.release();
    l.release();
    assert.equal(l.tryAcquire(), true);
  });

  it('integrates requests in flight over time (busyIntegral), for telling a used limit from an idle one', () => {
    const { l, clock } = limiter({ initial: 4 });
    const start = l.busyIntegral();
    l.tryAcquire();
    l.tryAcquire();
    clock.advance(100);
    l.release();
    clock.advance(50);
    assert.equal(l.busyIntegral() - start, 2 * 100 + 1 * 50);
  });
});

describe('AdaptiveLimiter: multiplicative decrease', () => {
  it('halves by default, rounding down', () => {
    const { l, clock } = limiter({ initial: 15 });
    l.onOverload();
    assert.equal(l.limit, 7);
    clock.advance(1000);
    l.onOverload();
    assert.equal(l.limit, 3);
  });

  it('honours decreaseFactor', () => {
    const { l } = limiter({ initial: 10, decreaseFactor: 0.75 });
    l.onOverload();
    assert.equal(l.limit, 7);
  });

  it('never goes below min (default 1)', () => {
    const { l, clock } = limiter({ initial: 4, cooldownMs: 0 });
    for (let i = 0; i < 10; i++) {
      l.onOverload();
      clock.advance(1);
    }
    assert.equal(l.limit, 1);
    const { l: floored } = limiter({ initial: 16, min: 3, cooldownMs: 0 });
    floored.onOverload();
    floored.onOverload();
    floored.onOverload();
    assert.equal(floored.limit, 3);
  });

  it('one burst of overloads within the cooldown is one decrease', () => {
    const { l, clock } = limiter({ initial: 16, cooldownMs: 1000 });
    l.onOverload();
    assert.equal(l.limit, 8);
    for (let i = 0; i < 10; i++) {
      clock.advance(99);
      l.onOverload();
    }
    assert.equal(l.limit, 8, 'signals at +99 .. +990 ms are ignored');
    clock.advance(10); // exactly cooldownMs after the decrease
    l.onOverload();
    assert.equal(l.limit, 4);
    assert.equal(l.snapshot().overloads, 12, 'every signal is counted even when ignored');
  });

  it('cooldown is measured from the last decrease, not the last signal', () => {
    const { l, clock } = limiter({ initial: 16, cooldownMs: 1000 });
    l.onOverload();
    clock.advance(600);
    l.onOverload(); // ignored
    clock.advance(400);
    l.onOverload(); // 1000 ms after the decrease: counts
    assert.equal(l.limit, 4);
  });

  it('does not cancel requests in flight: available stays 0 until enough are released', () => {
    const { l } = limiter({ initial: 8 });
    assert.equal(acquireAll(l), 8);
    l.onOverload();
    assert.equal(l.limit, 4);
    assert.equal(l.inFlight, 8);
    assert.equal(l.available, 0);
    for (let i = 0; i < 4; i++) l.release();
    assert.equal(l.available, 0);
    l.release();
    assert.equal(l.available, 1);
  });
});

describe('AdaptiveLimiter: Retry-After pauses', () => {
  it('pauses every acquisition until now + retryAfterMs', () => {
    const { l, clock } = limiter({ initial: 8 });
    const start = clock.now();
    l.onOverload(2000);
    assert.equal(l.pausedUntil(), start + 2000);
    assert.equal(l.available, 0);
    assert.equal(l.tryAcquire(), false);
    clock.advance(1999);
    assert.equal(l.tryAcquire(), false);
    clock.advance(1);
    assert.equal(l.pausedUntil(), 0);
    assert.equal(l.available, 4);
    assert.equal(l.tryAcquire(), true);
  });

  it('pauses even when the decrease is swallowed by the cooldown', () => {
    const { l, clock } = limiter({ initial: 8 });
    l.onOverload();
    clock.advance(10);
    l.onOverload(500);
    assert.equal(l.limit, 4);
    assert.equal(l.pausedUntil(), clock.now() + 500);
  });

  it('a later, shorter Retry-After never shortens a pause; a longer one extends it', () => {
    const { l, clock } = limiter();
    const start = clock.now();
    l.onOverload(5000);
    clock.advance(100);
    l.onOverload(1000);
    assert.equal(l.pausedUntil(), start + 5000);
    l.onOverload(8000);
    assert.equal(l.pausedUntil(), start + 100 + 8000);
  });

  it('ignores null, undefined, zero, negative and non-finite retry-after values', () => {
    const { l } = limiter({ cooldownMs: 0 });
    for (const value of [null, undefined, 0, -5, Number.NaN, Number.POSITIVE_INFINITY]) {
      l.onOverload(value);
      assert.equal(l.pausedUntil(), 0, String(value));
    }
  });

  it('caps a single pause at maxPauseMs (default 10 minutes)', () => {
    const { l, clock } = limiter();
    l.onOverload(24 * 3600_000);
    assert.equal(l.pausedUntil(), clock.now() + 600_000);
    const { l: short, clock: shortClock } = limiter({ maxPauseMs: 1000 });
    short.onOverload(5000);
    assert.equal(short.pausedUntil(), shortClock.now() + 1000);
  });

  it('release still works while paused', () => {
    const { l } = limiter();
    assert.equal(l.tryAcquire(), true);
    l.onOverload(1000);
    l.release();
    assert.equal(l.inFlight, 0);
    assert.equal(l.available, 0);
  });
});

describe('AdaptiveLimiter: snapshot', () => {
  it('reports limit, in-flight, pause and counters', () => {
    const { l, clock } = limiter({ initial: 4 });
    l.tryAcquire();
    l.tryAcquire();
    l.onOverload(300);
    assert.deepEqual(l.snapshot(), {
      limit: 2,
      inFlight: 2,
      pausedUntil: clock.now() + 300,
      overloads: 1,
      lastChange: { reason: 'overload', from: 4, to: 2, at: clock.now() },
    });
    clock.advance(300);
    assert.equal(l.snapshot().pausedUntil, 0);
  });

  it('uses Date.now when no clock is injected', () => {
    const l = new AdaptiveLimiter({ initial: 2, max: 4 });
    const before = Date.now();
    l.onOverload(60_000);
    assert.ok(l.pausedUntil() >= before + 60_000);
  });
});

describe('AdaptiveLimiter: an outside cap (slots of a shared ceiling)', () => {
  it('bounds acquisitions below the adaptive limit; lowering it never cancels requests in flight', () => {
    const limiter = new AdaptiveLimiter({ initial: 8, max: 8, now: () => 0 });
    limiter.setCap(0);
    assert.equal(limiter.tryAcquire(), false, 'no slots held, nothing may start');
    limiter.setCap(3);
    assert.equal([1, 2, 3, 4].filter(() => limiter.tryAcquire()).length, 3);
    limiter.setCap(1);
    assert.equal(limiter.inFlight, 3);
    assert.equal(limiter.available, 0);
    limiter.release();
    limiter.release();
    assert.equal(limiter.tryAcquire(), false, 'still one in flight against a cap of one');
    limiter.release();
    assert.equal(limiter.tryAcquire(), true);
    assert.equal(limiter.limit, 8, 'the adaptive limit itself is untouched');
  });
});
