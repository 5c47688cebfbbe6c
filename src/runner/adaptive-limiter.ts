// How many requests one upstream gets at a time. Inference servers do not say
// how much load they can take, and it changes with prompt lengths and with
// whoever else shares them, so the limit is found by AIMD, as TCP finds a
// window: creep up by one while requests succeed, halve when the server says
// it is overloaded (429/503/529, timeouts). The caller owns waiting and
// scheduling; this class only counts.

export interface LimiterOptions {
  /** Starting limit; clamped into [min, max]. */
  initial: number;
  /** Hard ceiling (the upstream's maxConcurrency). */
  max: number;
  /** Floor for decreases; default 1, so an upstream is never starved to zero. */
  min?: number;
  /** Successes per +1 step. Default: the current limit, i.e. +1 per full window of successes (classic AIMD). */
  increaseEvery?: number;
  /** Multiplier applied on overload, in (0, 1); default 0.5. */
  decreaseFactor?: number;
  /** After a decrease, ignore further overload signals for this long, so one burst of 429s is one halving; default 1000. */
  cooldownMs?: number;
  /** Longest pause a single Retry-After can impose; default 10 minutes. */
  maxPauseMs?: number;
  now?: () => number;
  /** Double (instead of +1) per window of successes until the first overload signal; default false. */
  slowStart?: boolean;
}

export interface LimiterSnapshot {
  limit: number;
  inFlight: number;
  pausedUntil: number;
  successes: number;
  overloads: number;
}

const DEFAULT_DECREASE_FACTOR = 0.5;
const DEFAULT_COOLDOWN_MS = 1000;
const DEFAULT_MAX_PAUSE_MS = 10 * 60_000;

export class AdaptiveLimiter {
  readonly max: number;
  private readonly min: number;
  private readonly increaseEvery: number | null;
  private readonly decreaseFactor: number;
  private readonly cooldownMs: number;
  private readonly maxPauseMs: number;
  private readonly now: () => number;
  private readonly slowStart: boolean;

  // Always an integer in [min, max]: decreases round down, so "limit 2.5"
  // never has to be explained to anyone reading a snapshot.
  private currentLimit: number;
  private capValue = Number.POSITIVE_INFINITY;
  private active = 0;
  private pauseEnd = 0;
  private lastDecreaseAt = Number.NEGATIVE_INFINITY;
  private successesTowardStep = 0;
  private successCount = 0;
  private overloadCount = 0;

  constructor(options: LimiterOptions) {
    const min = options.min ?? 1;
    this.slowStart = options.slowStart ?? false;
    requireInteger('max', options.max, 1);
    requireInteger('min', min, 1);
    if (min > options.max) throw new RangeError(`min (${min}) must not exceed max (${options.max})`);
    requireInteger('initial', options.initial, 1);
    if (options.increaseEvery !== undefined) requireInteger('increaseEvery', options.increaseEvery, 1);
    const decreaseFactor = options.decreaseFactor ?? DEFAULT_DECREASE_FACTOR;
    if (!(decreaseFactor > 0 && decreaseFactor < 1)) throw new RangeError(`decreaseFactor must be in (0, 1), got ${decreaseFactor}`);
    const cooldownMs = options.cooldownMs ?? DEFAULT_COOLDOWN_MS;
    if (!(cooldownMs >= 0)) throw new RangeError(`cooldownMs must be >= 0, got ${cooldownMs}`);
    const maxPauseMs = options.maxPauseMs ?? DEFAULT_MAX_PAUSE_MS;
    if (!(maxPauseMs >= 0)) throw new RangeError(`maxPauseMs must be >= 0, got ${maxPauseMs}`);

    this.max = options.max;
    this.min = min;
    // Clamped rather than rejected: config defaults initialConcurrency to 8,
    // and an operator who only sets maxConcurrency: 4 means "at most 4".
    this.currentLimit = Math.min(options.max, Math.max(min, options.initial));
    this.increaseEvery = options.increaseEvery ?? null;
    this.decreaseFactor = decreaseFactor;
    this.cooldownMs = cooldownMs;
    this.maxPauseMs = maxPauseMs;
    this.now = options.now ?? Date.now;
  }

  get limit(): number {
    return this.currentLimit;
  }

  get inFlight(): number {
    return this.active;
  }

  /** A bound set from outside the AIMD loop: the slots of a global ceiling this worker holds (runner/global-ceilings.ts). */
  get cap(): number {
    return this.capValue;
  }

  setCap(cap: number): void {
    this.capValue = Math.max(0, cap);
  }

  /** Slots free right now. Can be 0 with inFlight above the limit: a decrease never cancels requests already sent. */
  get available(): number {
    if (this.pausedUntil() !== 0) return 0;
    return Math.max(0, Math.min(Math.floor(this.currentLimit), this.capValue) - this.active);
  }

  /** Takes a slot if one is free and the upstream is not paused; pair every true with one release(). */
  tryAcquire(): boolean {
    if (this.available <= 0) return false;
    this.active += 1;
    return true;
  }

  release(): void {
    // A release without an acquire is a caller bug; letting the count drift
    // below zero would silently raise the real concurrency above the limit.
    if (this.active <= 0) throw new Error('AdaptiveLimiter.release() called with nothing in flight');
    this.active -= 1;
  }

  /** Additive increase: +1 after every `increaseEvery` successes (default: one window's worth), never above max. */
  onSuccess(): void {
    this.successCount += 1;
    if (this.currentLimit >= this.max) {
      // Nothing to grow into; do not bank credit that would cause a jump
      // straight back up right after the next decrease.
      this.successesTowardStep = 0;
      return;
    }
    this.successesTowardStep += 1;
    const step = this.increaseEvery ?? this.currentLimit;
    if (this.successesTowardStep >= step) {
      // Slow start, as in TCP: until the server first pushes back, a full window of successes doubles the
      // limit rather than adding one, so a fresh upstream is saturated in a few windows, not dozens.
      const next = this.slowStart && this.overloadCount === 0 ? this.currentLimit * 2 : this.currentLimit + 1;
      this.currentLimit = Math.min(this.max, next);
      this.successesTowardStep = 0;
    }
  }

  /**
   * Multiplicative decrease. Requests already in flight when the server
   * started refusing all come back overloaded at about the same time; only
   * the first one within cooldownMs shrinks the limit, or a single burst
   * would take it straight to the floor. A Retry-After (ms) pauses all new
   * acquisitions until it passes, cooldown or not: the server asked.
   */
  onOverload(retryAfterMs?: number | null): void {
    this.overloadCount += 1;
    const now = this.now();
    if (now - this.lastDecreaseAt >= this.cooldownMs) {
      this.currentLimit = Math.max(this.min, Math.floor(this.currentLimit * this.decreaseFactor));
      this.lastDecreaseAt = now;
      this.successesTowardStep = 0;
    }
    if (retryAfterMs != null && Number.isFinite(retryAfterMs) && retryAfterMs > 0) {
      // Never shorten a pause already in force; a later, shorter Retry-After
      // does not mean the earlier one was wrong.
      this.pauseEnd = Math.max(this.pauseEnd, now + Math.min(retryAfterMs, this.maxPauseMs));
    }
  }

  /** When acquisitions may resume (ms timestamp), or 0 if they may now. */
  pausedUntil(): number {
    if (this.pauseEnd !== 0 && this.now() >= this.pauseEnd) this.pauseEnd = 0;
    return this.pauseEnd;
  }

  snapshot(): LimiterSnapshot {
    return {
      limit: this.currentLimit,
      inFlight: this.active,
      pausedUntil: this.pausedUntil(),
      successes: this.successCount,
      overloads: this.overloadCount,
    };
  }
}

function requireInteger(name: string, value: number, least: number): void {
  if (!Number.isInteger(value) || value < least) throw new RangeError(`${name} must be an integer >= ${least}, got ${value}`);
}
