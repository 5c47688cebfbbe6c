// Keeps an upstream under its requests-per-minute and tokens-per-minute
// quotas, when the operator configured them. Each quota is a token bucket
// holding one minute's allowance and refilling continuously, so traffic may
// burst up to a minute's worth and then settles at the configured rate. The
// caller asks before sending and sleeps for waitMs(); this class never waits.

export interface RateLimiterOptions {
  requestsPerMinute?: number;
  tokensPerMinute?: number;
  now?: () => number;
}

const MINUTE_MS = 60_000;
// Refill is fractional arithmetic; without slack, waiting exactly waitMs()
// could leave a bucket a rounding error short and ask for 1 ms more.
const EPSILON = 1e-6;

class Bucket {
  private readonly ratePerMs: number;
  // May go negative: an oversized take or an after-the-fact charge leaves a
  // debt that refill must pay off before anything else passes, which keeps
  // the average rate honest.
  private level: number;
  private updatedAt: number;

  constructor(
    private readonly capacity: number,
    now: number,
  ) {
    this.ratePerMs = capacity / MINUTE_MS;
    // Starts full: a fresh upstream may use its first minute's allowance at once.
    this.level = capacity;
    this.updatedAt = now;
  }

  refill(now: number): void {
    // A clock that steps backwards refills nothing, and restarts the
    // reference point so the step is not counted twice when it moves forward.
    if (now > this.updatedAt) this.level = Math.min(this.capacity, this.level + (now - this.updatedAt) * this.ratePerMs);
    this.updatedAt = now;
  }

  /** What must be in the bucket to take `amount`: more than capacity could never be there, so a full bucket suffices. */
  private required(amount: number): number {
    return Math.min(amount, this.capacity);
  }

  canTake(amount: number): boolean {
    return this.level + EPSILON >= this.required(amount);
  }

  take(amount: number): void {
    this.level -= amount;
  }

  /** Adds back (or, when negative, charges) tokens; never beyond a full bucket. */
  adjust(amount: number): void {
    this.level = Math.min(this.capacity, this.level + amount);
  }

  waitMs(amount: number): number {
    const deficit = this.required(amount) - this.level;
    if (deficit <= EPSILON) return 0;
    // The same slack canTake() allows, so that 999.0000000001 ms of float
    // noise is 999 ms, not 1000; then make sure float noise did not leave the
    // answer a hair short of what canTake() will check.
    let wait = Math.ceil((deficit - EPSILON) / this.ratePerMs);
    if (deficit - wait * this.ratePerMs > EPSILON) wait += 1;
    return wait;
  }
}

export class RateLimiter {
  private readonly requests: Bucket | null;
  private readonly tokens: Bucket | null;
  private readonly now: () => number;

  constructor(options: RateLimiterOptions = {}) {
    this.now = options.now ?? Date.now;
    const start = this.now();
    this.requests = makeBucket('requestsPerMinute', options.requestsPerMinute, start);
    this.tokens = makeBucket('tokensPerMinute', options.tokensPerMinute, start);
  }

  /** True when neither quota is configured; callers can skip the bookkeeping. */
  get unlimited(): boolean {
    return this.requests === null && this.tokens === null;
  }

  /**
   * Takes one request and `tokens` tokens if both quotas allow it now; takes
   * nothing otherwise (never half of a pair). A request larger than the whole
   * token bucket passes once the bucket is full and leaves it in debt.
   */
  tryTake(tokens: number): boolean {
    requireAmount('tokens', tokens);
    this.refill();
    if (this.requests && !this.requests.canTake(1)) return false;
    if (this.tokens && !this.tokens.canTake(tokens)) return false;
    this.requests?.take(1);
    this.tokens?.take(tokens);
    return true;
  }

  /** Milliseconds until tryTake(tokens) would succeed, assuming nothing else takes meanwhile; 0 if it would now. */
  waitMs(tokens: number): number {
    requireAmount('tokens', tokens);
    this.refill();
    return Math.max(this.requests?.waitMs(1) ?? 0, this.tokens?.waitMs(tokens) ?? 0);
  }

  /**
   * Gives back `tokens` taken but not used: typically the estimate minus the
   * usage the upstream reported. A negative amount charges usage beyond the
   * estimate instead. `requests` returns request slots too, for a take that
   * was never sent.
   */
  refund(tokens: number, requests = 0): void {
    if (!Number.isFinite(tokens)) throw new RangeError(`tokens must be a finite number, got ${tokens}`);
    requireAmount('requests', requests);
    this.refill();
    this.tokens?.adjust(tokens);
    this.requests?.adjust(requests);
  }

  private refill(): void {
    const now = this.now();
    this.requests?.refill(now);
    this.tokens?.refill(now);
  }
}

function makeBucket(name: string, perMinute: number | undefined, now: number): Bucket | null {
  if (perMinute === undefined) return null;
  if (!Number.isFinite(perMinute) || perMinute <= 0) throw new RangeError(`${name} must be a positive number, got ${perMinute}`);
  return new Bucket(perMinute, now);
}

function requireAmount(name: string, value: number): void {
  if (!Number.isFinite(value) || value < 0) throw new RangeError(`${name} must be a finite number >= 0, got ${value}`);
}
