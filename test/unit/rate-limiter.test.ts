import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RateLimiter, type RateLimiterOptions } from '../../src/runner/rate-limiter.ts';

function fakeClock(start = 5_000_000): { now: () => number; advance: (ms: number) => void; set: (ms: number) => void } {
  let time = start;
  return { now: () => time, advance: (ms) => (time += ms), set: (ms) => (time = ms) };
}

function limiter(options: Omit<RateLimiterOptions, 'now'>) {
  const clock = fakeClock();
  return { r: new RateLimiter({ ...options, now: clock.now }), clock };
}

describe('RateLimiter without quotas', () => {
  it('lets everything through at once', () => {
    const { r } = limiter({});
    assert.equal(r.unlimited, true);
    for (let i = 0; i < 1000; i++) assert.equal(r.tryTake(1_000_000), true);
    assert.equal(r.waitMs(1e12), 0);
    r.refund(5, 1); // harmless
  });
});

describe('RateLimiter: requests per minute', () => {
  it('allows a burst of one minute’s requests, then one per 60000/rpm ms', () => {
    const { r, clock } = limiter({ requestsPerMinute: 60 });
    assert.equal(r.unlimited, false);
    for (let i = 0; i < 60; i++) assert.equal(r.tryTake(0), true, `request ${i}`);
    assert.equal(r.tryTake(0), false);
    assert.equal(r.waitMs(0), 1000);
    clock.advance(999);
    assert.equal(r.waitMs(0), 1);
    assert.equal(r.tryTake(0), false);
    clock.advance(1);
    assert.equal(r.waitMs(0), 0);
    assert.equal(r.tryTake(0), true);
    assert.equal(r.tryTake(0), false);
  });

  it('ignores token counts when only requests are limited', () => {
    const { r } = limiter({ requestsPerMinute: 2 });
    assert.equal(r.tryTake(1e9), true);
    assert.equal(r.waitMs(1e9), 0);
  });

  it('refills continuously and never beyond one minute’s worth', () => {
    const { r, clock } = limiter({ requestsPerMinute: 6 });
    for (let i = 0; i < 6; i++) r.tryTake(0);
    clock.advance(3600_000); // an hour idle
    let taken = 0;
    while (r.tryTake(0)) taken++;
    assert.equal(taken, 6);
  });

  it('refund(0, 1) returns a request slot for a take that was never sent', () => {
    const { r } = limiter({ requestsPerMinute: 1 });
    assert.equal(r.tryTake(0), true);
    assert.equal(r.tryTake(0), false);
    r.refund(0, 1);
    assert.equal(r.tryTake(0), true);
  });

  it('a request refund never overfills the bucket', () => {
    const { r } = limiter({ requestsPerMinute: 2 });
    r.refund(0, 10);
    assert.equal(r.tryTake(0), true);
    assert.equal(r.tryTake(0), true);
    assert.equal(r.tryTake(0), false);
  });
});

describe('RateLimiter: tokens per minute', () => {
  it('takes tokens until the bucket runs dry, then waits for refill', () => {
    const { r, clock } = limiter({ tokensPerMinute: 60_000 }); // 1 token per ms
    assert.equal(r.tryTake(40_000), true);
    assert.equal(r.tryTake(30_000), false, 'only 20000 left');
    assert.equal(r.waitMs(30_000), 10_000);
    assert.equal(r.tryTake(20_000), true);
    assert.equal(r.waitMs(500), 500);
    clock.advance(499);
    assert.equal(r.tryTake(500), false);
    clock.advance(1);
    assert.equal(r.tryTake(500), true);
  });

  it('a failed tryTake takes nothing', () => {
    const { r } = limiter({ tokensPerMinute: 1000, requestsPerMinute: 10 });
    assert.equal(r.tryTake(1000), true);
    for (let i = 0; i < 5; i++) assert.equal(r.tryTake(1), false, 'no tokens left');
    r.refund(1000);
    // The five refusals spent no request slots: 9 of 10 remain.
    let taken = 0;
    while (r.tryTake(0)) taken++;
    assert.equal(taken, 9);
  });

  it('a request bigger than the whole bucket passes once the bucket is full, then leaves a debt', () => {
    const { r, clock } = limiter({ tokensPerMinute: 6000 }); // 0.1 token per ms
    assert.equal(r.tryTake(1000), true);
    assert.equal(r.waitMs(15_000), 10_000, 'must wait until full again, not for 15000 tokens');
    assert.equal(r.tryTake(15_000), false);
    clock.advance(10_000);
    assert.equal(r.tryTake(15_000), true, 'full bucket admits the oversized request');
    // Level is now 6000 - 15000 = -9000: a debt the average rate must pay off.
    assert.equal(r.tryTake(1), false);
    assert.equal(r.waitMs(1), 90_010);
    assert.equal(r.waitMs(15_000), 150_000, 'the next oversized one waits for a full bucket');
    clock.advance(150_000);
    assert.equal(r.tryTake(15_000), true);
  });

  it('an oversized request never deadlocks, whatever came before it', () => {
    const { r, clock } = limiter({ tokensPerMinute: 100 });
    for (let round = 0; round < 5; round++) {
      while (!r.tryTake(1000)) {
        const wait = r.waitMs(1000);
        assert.ok(wait > 0 && Number.isFinite(wait));
        clock.advance(wait);
      }
    }
  });

  it('refund gives back unused tokens, capped at a full bucket', () => {
    const { r } = limiter({ tokensPerMinute: 1000 });
    assert.equal(r.tryTake(1000), true);
    assert.equal(r.tryTake(300), false);
    r.refund(300); // estimate 1000, upstream reported 700
    assert.equal(r.tryTake(300), true);
    r.refund(5000);
    assert.equal(r.tryTake(1000), true, 'refund filled to capacity');
    assert.equal(r.tryTake(1), false, 'but not beyond it');
  });

  it('a negative refund charges usage beyond the estimate', () => {
    const { r, clock } = limiter({ tokensPerMinute: 60_000 });
    assert.equal(r.tryTake(60_000), true);
    r.refund(-6000); // used 6000 more than estimated
    assert.equal(r.waitMs(1), 6001);
    clock.advance(6000);
    assert.equal(r.tryTake(1), false);
    clock.advance(1);
    assert.equal(r.tryTake(1), true);
  });

  it('accepts zero tokens and fractional counts', () => {
    const { r } = limiter({ tokensPerMinute: 10 });
    assert.equal(r.tryTake(9.5), true);
    assert.equal(r.tryTake(0), true);
    assert.equal(r.tryTake(0.5), true);
    assert.equal(r.tryTake(0.5), false);
  });
});

describe('RateLimiter: both quotas', () => {
  it('needs both to allow a take and waits for the slower one', () => {
    const { r, clock } = limiter({ requestsPerMinute: 2, tokensPerMinute: 600 }); // 1 request / 30 s, 1 token / 100 ms
    assert.equal(r.tryTake(100), true);
    assert.equal(r.tryTake(100), true);
    // Requests: empty, 30 s to the next. Tokens: 400 left.
    assert.equal(r.waitMs(100), 30_000);
    assert.equal(r.waitMs(600), 30_000, 'tokens need 20 s, requests 30 s');
    assert.equal(r.tryTake(1), false);
    clock.advance(30_000);
    assert.equal(r.tryTake(600), true);
    // Requests: 0 left; tokens: 0 left. Tokens now the slower one for a big ask.
    assert.equal(r.waitMs(600), 60_000);
  });

  it('a refusal from one bucket takes nothing from the other', () => {
    const { r, clock } = limiter({ requestsPerMinute: 1, tokensPerMinute: 100 });
    assert.equal(r.tryTake(0), true); // request bucket now empty, tokens full
    assert.equal(r.tryTake(100), false);
    clock.advance(60_000);
    assert.equal(r.tryTake(100), true, 'the refused attempt did not spend the tokens');
  });

  it('waiting exactly waitMs() is always enough', () => {
    const { r, clock } = limiter({ requestsPerMinute: 7, tokensPerMinute: 1234 });
    let seed = 42;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let i = 0; i < 500; i++) {
      const tokens = Math.floor(random() * 1500);
      const wait = r.waitMs(tokens);
      assert.ok(Number.isInteger(wait), `wait ${wait} is whole milliseconds`);
      clock.advance(wait);
      assert.equal(r.tryTake(tokens), true, `take ${i} of ${tokens} after ${wait} ms`);
    }
  });
});

describe('RateLimiter: clock and argument edge cases', () => {
  it('a clock stepping backwards refills nothing and is not counted twice later', () => {
    const { r, clock } = limiter({ requestsPerMinute: 60 });
    for (let i = 0; i < 60; i++) r.tryTake(0);
    const t = clock.now();
    clock.set(t - 10_000);
    assert.equal(r.tryTake(0), false);
    clock.set(t - 9_000); // 1 s forward from the stepped-back reading
    assert.equal(r.tryTake(0), true);
    assert.equal(r.tryTake(0), false);
  });

  it('rejects bad quotas and amounts', () => {
    assert.throws(() => new RateLimiter({ requestsPerMinute: 0 }), RangeError);
    assert.throws(() => new RateLimiter({ tokensPerMinute: -1 }), RangeError);
    assert.throws(() => new RateLimiter({ tokensPerMinute: Number.NaN }), RangeError);
    const r = new RateLimiter({ tokensPerMinute: 10 });
    assert.throws(() => r.tryTake(-1), RangeError);
    assert.throws(() => r.tryTake(Number.NaN), RangeError);
    assert.throws(() => r.waitMs(Number.POSITIVE_INFINITY), RangeError);
    assert.throws(() => r.refund(Number.NaN), RangeError);
    assert.throws(() => r.refund(1, -1), RangeError);
  });
});
