// How many requests one upstream gets at a time, and the rules no controller
// may break: never above the ceiling (maxConcurrency) or below the floor,
// halve when the server says it is overloaded (429/503/529, timeouts), pause
// for a Retry-After, never cancel what is already in flight, and stay under
// an outside cap (the slots of a ceiling shared by every worker). Where the
// limit goes between those, on throughput, latency and what the engine
// reports, is knee-finder.ts's decision, applied through adjust(). The caller
// owns waiting and scheduling; this class only counts.

export interface LimiterOptions {
  /** Starting limit; clamped into [min, max]. */
  initial: number;
  /** Hard ceiling (the upstream's maxConcurrency). */
  max: number;
  /** Floor for decreases; default 1, so an upstream is never starved to zero. */
  min?: number;
  /** Multiplier applied on overload, in (0, 1); default 0.5. */
  decreaseFactor?: number;
  /** After a decrease, ignore further overload signals for this long, so one burst of 429s is one halving; default 1000. */
  cooldownMs?: number;
  /** Longest pause a single Retry-After can impose; default 10 minutes. */
  maxPauseMs?: number;
  now?: () => number;
}

/** Why the limit last moved: the operations view and /metrics show it. */
export type LimitReason =
  /** Where it started: configured, or a modest default. */
  | 'start'
  /** The engine reported its slots (llama.cpp /props). */
  | 'engine slots'
  /** More concurrency gave more throughput, or less gave as much. */
  | 'throughput'
  /** Latency per token rose far above its floor: requests were queueing. */
  | 'latency'
  /** The engine reported requests waiting for a slot. */
  | 'engine queue'
  /** 429 / 503 / 529 or a timeout. */
  | 'overload';

export interface LimitChange {
  reason: LimitReason;
  from: number;
  to: number;
  at: number;
}

export interface LimiterSnapshot {
  limit: number;
  inFlight: number;
  pausedUntil: number;
  overloads: number;
  lastChange: LimitChange;
}

const DEFAULT_DECREASE_FACTOR = 0.5;
const DEFAULT_COOLDOWN_MS = 1000;
const DEFAULT_MAX_PAUSE_MS = 10 * 60_000;

export class AdaptiveLimiter {
  readonly max: number;
  readonly min: number;
  private readonly decreaseFactor: number;
  private readonly cooldownMs: number;
  private readonly maxPauseMs: number;
  private readonly now: () => number;

  // Always an integer in [min, max]: decreases round down, so "limit 2.5"
  // never has to be explained to anyone reading a snapshot.
  private currentLimit: number;
  private capValue = Number.POSITIVE_INFINITY;
  private active = 0;
  private pauseEnd = 0;
  private lastDecreaseAt = Number.NEGATIVE_INFINITY;
  private overloadCount = 0;
  private change: LimitChange;
  private readonly changes = new Map<LimitReason, number>();
  // Requests in flight integrated over time (request-milliseconds), so a window can tell whether the limit was in use.
  private busyArea = 0;
  private busyStamp: number;

  constructor(options: LimiterOptions) {
    const min = options.min ?? 1;
    requireInteger('max', options.max, 1);
    requireInteger('min', min, 1);
    if (min > options.max) throw new RangeError(`min (${min}) must not exceed max (${options.max})`);
    requireInteger('initial', options.initial, 1);
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
    this.decreaseFactor = decreaseFactor;
    this.cooldownMs = cooldownMs;
    this.maxPauseMs = maxPauseMs;
    this.now = options.now ?? Date.now;
    this.change = { reason: 'start', from: this.currentLimit, to: this.currentLimit, at: this.now() };
    this.busyStamp = this.now();
  }

  /** Requests in flight integrated over time since the start, in request-milliseconds. */
  busyIntegral(): number {
    this.accrue();
    return this.busyArea;
  }

  private accrue(): void {
    const now = this.now();
    this.busyArea += this.active * (now - this.busyStamp);
    this.busyStamp = now;
  }

  /** Why and when the limit last moved (or where it started). */
  get lastChange(): LimitChange {
    return this.change;
  }

  /** Moves the limit (clamped into [min, max]) for `reason`; true when it changed. Requests in flight are never cancelled. */
  adjust(limit: number, reason: LimitReason): boolean {
    const next = Math.min(this.max, Math.max(this.min, Math.round(limit)));
    if (next === this.currentLimit) return false;
    this.change = { reason, from: this.currentLimit, to: next, at: this.now() };
    this.changes.set(reason, (this.changes.get(reason) ?? 0) + 1);
    this.currentLimit = next;
    return true;
  }

  /** How many times the limit moved, by reason. */
  changeCounts(): ReadonlyMap<LimitReason, number> {
    return this.changes;
  }

  /** When the limit last came down for an overload (ms timestamp), or -Infinity. */
  get lastOverloadDecreaseAt(): number {
    return this.lastDecreaseAt;
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
    this.accrue();
    this.active += 1;
    return true;
  }

  /**
   * Takes a slot whatever the limit: for a request someone is waiting on (real-time). It counts like any other,
   * so batch work leaves the room it takes; pair it with one release().
   */
  acquireUnlimited(): void {
    this.accrue();
    this.active += 1;
  }

  release(): void {
    // A release without an acquire is a caller bug; letting the count drift
    // below zero would silently raise the real concurrency above the limit.
    if (this.active <= 0) throw new Error('AdaptiveLimiter.release() called with nothing in flight');
    this.accrue();
    this.active -= 1;
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
      this.adjust(Math.floor(this.currentLimit * this.decreaseFactor), 'overload');
      this.lastDecreaseAt = now;
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
      overloads: this.overloadCount,
      lastChange: this.change,
    };
  }
}

function requireInteger(name: string, value: number, least: number): void {
  if (!Number.isInteger(value) || value < least) throw new RangeError(`${name} must be an integer >= ${least}, got ${value}`);
}
