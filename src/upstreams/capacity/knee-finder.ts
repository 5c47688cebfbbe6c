// Finds the concurrency at which an inference server gives the most
// throughput: its knee. An engine (llama.cpp, vLLM, SGLang) answers 200 to
// whatever it is sent and queues what its slots or batch cannot take; past
// the knee, throughput stays flat or falls (queued connections cost it CPU)
// while every request waits longer. Errors never say so, so the limit moves on
// throughput and latency, measured in windows of completed requests:
//
//   climb ──(throughput grew less than it could: near the knee)──► climb in small steps
//     │                                  │
//     └──(throughput did not grow: back to the last limit)──► hold
//   hold ──(every few windows)──► probe one step up, or down (one step, or
//                                  to where latency says nothing would queue)
//   probe up ──(5% more throughput)──► climb   │ (less) ──► back, hold
//   probe down ──(more throughput)──► probe down again │ (as much) ──► hold lower │ (less) ──► back, hold
//
// Throughput is tokens per second (requests per second when the server
// reports no usage), so long and short generations weigh alike, estimated by
// Little's law: requests in flight on average over the window, over the time
// per token of the requests that completed in it. A window
// counts only when the limit was in use (the caller had the work to fill it),
// and only from the first answer to a request sent after the last move (what
// completes before that ran at the old limit): no single slow generation
// moves the limit, and a batch of long generations only lengthens the windows. Guards act between windows:
//   - latency: time per token four times its floor means requests wait, so
//     the limit comes down by a step (reason "latency");
//   - the engine, when it reports (engine-probe.ts): its slots are where the
//     search starts and a ceiling it never climbs past; requests waiting in
//     its own queue bring the limit down by as many (at most by half at
//     once), and nothing climbs while any wait (reason "engine queue");
//   - overload (429/5xx/timeouts) is the limiter's halving; the search then
//     climbs back as TCP does after a loss: a small step per round of the
//     limit, kept unless throughput falls, up to just below where the server
//     pushed back (remembered for a minute).
import type { AdaptiveLimiter, LimitReason } from './adaptive-limiter.ts';
import type { EngineReport } from './engine-probe.ts';

export interface CompletionSample {
  /** Send to whole answer, ms. */
  latencyMs: number;
  /** completion_tokens of the answer's usage; 0 when it reports none. */
  outputTokens: number;
}

export type KneePhase = 'climb' | 'hold' | 'probe-up' | 'probe-down';

export interface KneeStatus {
  phase: KneePhase;
  /** Throughput at the limit held, in `unit` per second; null before the first measured window. */
  throughput: number | null;
  unit: 'tokens' | 'requests';
  /** Latency per token (or per request) at its lowest, ms; null before the first window. */
  latencyFloorMs: number | null;
  /** The engine's own ceiling (its slots), when it reported one. */
  engineCeiling: number | null;
}

export interface KneeFinderOptions {
  limiter: AdaptiveLimiter;
  /** initialConcurrency was configured: the engine's slots do not replace it as the start. */
  configuredStart: boolean;
  now?: () => number;
}

// A measured window holds at least this many completions, and so many per unit of limit (a climb decides on two
// rounds of the limit, a hold or a probe on three: fewer, larger decisions where noise matters most), up to the cap.
const MIN_WINDOW = 16;
// The cold first window and the windows of a fast climb (doubling while throughput doubles: a coarse signal) need fewer.
const MIN_FAST_WINDOW = 8;
const CLIMB_WINDOW_PER_LIMIT = 2;
const HOLD_WINDOW_PER_LIMIT = 3;
const MAX_WINDOW = 256;
// Below the knee throughput grows with the limit; at least this share of the proportional gain means "keep climbing fast".
const STRONG_GAIN = 0.5;
// Less than this much more throughput for a step up is no gain: noise, or the knee.
const MIN_GAIN = 0.05;
// A small step near the knee needs less: this share of its proportional gain (a 10% step, 3%), but at least 2%.
const FINE_GAIN_SHARE = 0.3;
const FINE_MIN_GAIN = 0.02;
// A step down that keeps this much of the throughput is as good (and queues less).
const DOWN_TOLERANCE = 0.01;
// A step down that gains this much means requests queued at a cost: the next step down is tried at once.
const DOWN_GAIN = 0.02;
// Doubling while throughput doubles with it: a fresh upstream is found in a few windows (as TCP's slow start).
const FAST_GROWTH = 2;
// Between two probes: at least PROBE_MIN_WINDOWS windows held, and PROBE_INTERVAL_MS or PROBE_MAX_WINDOWS windows,
// whichever comes first. Each probe costs a little throughput (a step down, or up past the knee); too few leave a
// limit found by a noisy window standing for long.
const PROBE_MIN_WINDOWS = 4;
const PROBE_MAX_WINDOWS = 16;
const PROBE_INTERVAL_MS = 2_000;
// Time per token this many times its floor: requests are waiting in the server.
const LATENCY_TOLERANCE = 4;
// Where the server last pushed back (429/5xx/timeouts) stays out of reach of climbs and probes for this long, so a
// probe does not trip the same overload, and its halving, every few seconds.
const OVERLOAD_MEMORY_MS = 60_000;
// The floor of latency per token drifts up by this factor per window, so a server that got slower for good is relearned.
const FLOOR_DRIFT = 1.02;

interface Window {
  openedAt: number;
  limit: number;
  completions: number;
  tokens: number;
  latencyMs: number;
  allHadTokens: boolean;
  busyAtOpen: number;
  settle: boolean;
}

interface Measure {
  limit: number;
  throughput: number;
  unit: 'tokens' | 'requests';
  /** Latency per token (or request), ms. */
  perUnit: number;
}

export class KneeFinder {
  private readonly limiter: AdaptiveLimiter;
  private readonly now: () => number;
  private phase: KneePhase = 'climb';
  private window: Window;
  /** The last measured window before the current limit (climb), or the limit held when a probe started. */
  private previous: Measure | undefined;
  private held: Measure | undefined;
  private windowsHeld = 0;
  private heldSince = 0;
  private warm = false;
  /**
   * Where the search started (configured, the engine's slots, or the default): a step down below it must gain
   * throughput, not merely keep it. A client that is itself the bottleneck (an upstream answering in a
   * millisecond) sees latency grow with concurrency whatever the upstream does, and would otherwise talk itself
   * down to a limit that starves its own pipeline.
   */
  private start: number;
  private nextProbe: 'up' | 'down' = 'down';
  private latencyFloor: number | undefined;
  private engineCeiling: number | undefined;
  private engineSlotsApplied = false;
  /** Near the knee (a partial gain was seen, a probe or an overload happened): climb in small steps only. */
  private fine = false;
  /**
   * Climbing back after an overload, as TCP's additive increase: a step per round of the limit, kept unless
   * throughput fell, until the server pushes back again or throughput stops following.
   */
  private recovering = false;
  /** Requests the engine last said were waiting in its own queue: while any are, nothing climbs. */
  private engineQueue = 0;
  /** The limit at which the server last pushed back: for a while, nothing climbs to it again. */
  private overloadedAt: { limit: number; at: number } | undefined;

  constructor(private readonly options: KneeFinderOptions) {
    this.limiter = options.limiter;
    this.now = options.now ?? Date.now;
    this.start = this.limiter.limit;
    // Nothing was sent before: no settling needed.
    this.window = this.openWindow(false);
  }

  status(): KneeStatus {
    return {
      phase: this.phase,
      throughput: this.held?.throughput ?? this.previous?.throughput ?? null,
      unit: this.held?.unit ?? this.previous?.unit ?? 'tokens',
      latencyFloorMs: this.latencyFloor ?? null,
      engineCeiling: this.engineCeiling ?? null,
    };
  }

  /** A request answered successfully. */
  observe(sample: CompletionSample): void {
    // The limit moved under us (an overload's halving, or another caller's adjust): start over at the new one.
    if (this.limiter.limit !== this.window.limit) this.restartWindow();
    if (this.window.settle) {
      // Settled once a request sent after the move has come back: from here on, what completes ran at the new limit.
      if (this.now() - sample.latencyMs >= this.window.openedAt) this.window = this.openWindow(false);
      return;
    }
    const window = this.window;
    window.completions += 1;
    window.tokens += sample.outputTokens;
    window.latencyMs += sample.latencyMs;
    if (sample.outputTokens <= 0) window.allHadTokens = false;
    // Doubling while far below the knee needs only a clear signal: one round of the limit. Near it, more.
    const fast = !this.warm || (this.phase === 'climb' && !this.fine);
    const perLimit = fast || this.recovering ? 1 : this.phase === 'climb' ? CLIMB_WINDOW_PER_LIMIT : HOLD_WINDOW_PER_LIMIT;
    const needed = Math.min(MAX_WINDOW, Math.max(fast ? MIN_FAST_WINDOW : MIN_WINDOW, perLimit * window.limit));
    if (window.completions >= needed) this.closeWindow();
  }

  /**
   * The limiter halved for an overload. As TCP after a loss: from the halved limit, climb again in small steps
   * only, each kept while it adds throughput, so the limit settles below where the overload happened.
   */
  onOverload(limitBefore: number): void {
    this.fine = true;
    this.recovering = true;
    this.overloadedAt = { limit: limitBefore, at: this.now() };
    this.previous = undefined;
    this.held = undefined;
    this.phase = 'climb';
    // Requests sent before the halving are still coming back: settle before measuring.
    this.restartWindow();
  }

  /**
   * An overload signal the limiter did not halve for (it came within the cooldown of the last halving): the server
   * still pushes back at this limit, so nothing climbs to it again for a while, and a climb under way stops below it.
   */
  onPushback(limit: number): void {
    if (!this.overloadedAt || this.now() - this.overloadedAt.at >= OVERLOAD_MEMORY_MS || limit < this.overloadedAt.limit) {
      this.overloadedAt = { limit, at: this.now() };
    }
    if (this.phase === 'climb' && this.limiter.limit >= limit) this.move(limit - 1, 'overload', 'hold');
  }

  /** What the engine said about itself (engine-probe.ts). */
  onEngineReport(report: EngineReport): void {
    if (report.slots !== undefined) {
      this.engineCeiling = report.slots;
      if (!this.engineSlotsApplied && !this.options.configuredStart) {
        this.engineSlotsApplied = true;
        this.start = Math.min(this.limiter.max, report.slots);
        this.move(report.slots, 'engine slots', 'hold');
        return;
      }
      if (this.limiter.limit > report.slots) {
        this.move(report.slots, 'engine slots', 'hold');
        return;
      }
    }
    // Requests waiting in the engine while we send: we are past its knee (or others share it). Back off by as many
    // as wait, at most by half at once, and climb no further while any wait.
    this.engineQueue = report.waiting ?? 0;
    if (this.engineQueue >= 1 && this.limiter.inFlight >= 1 && this.limiter.limit > this.limiter.min) {
      const limit = this.limiter.limit;
      this.move(Math.max(Math.ceil(limit / 2), limit - Math.ceil(this.engineQueue)), 'engine queue', 'hold');
    }
  }

  private closeWindow(): void {
    const window = this.window;
    const now = this.now();
    // Was the limit in use? Mean requests in flight over the window, from the limiter's own count.
    const busy = (this.limiter.busyIntegral() - window.busyAtOpen) / (now - window.openedAt || 1);
    const usable = Math.min(window.limit, this.limiter.cap);
    const saturated = busy >= 0.75 * usable;
    if (!saturated) {
      this.window = this.openWindow(false);
      return;
    }
    const unit = window.allHadTokens ? 'tokens' : 'requests';
    // Throughput by Little's law, requests in flight over time per request (or token): counting completions over
    // the window's wall time instead swings with where the window cuts a burst of answers that were sent together.
    const units = unit === 'tokens' ? window.tokens : window.completions;
    const perUnit = window.latencyMs / Math.max(1, units);
    const measure: Measure = { limit: window.limit, throughput: (busy * units) / Math.max(0.001, window.latencyMs / 1000), unit, perUnit };
    this.latencyFloor = this.latencyFloor === undefined ? perUnit : Math.min(this.latencyFloor * FLOOR_DRIFT, perUnit);
    this.window = this.openWindow(false);
    if (usable < window.limit) return; // Capped from outside (a shared ceiling): nothing about this limit was measured.
    // The very first window runs cold (connections opening, code not yet optimised, on both sides): it sets the
    // latency floor but is no base for a decision.
    if (!this.warm) {
      this.warm = true;
      return;
    }
    if (perUnit > LATENCY_TOLERANCE * this.latencyFloor && window.limit > this.limiter.min) {
      this.move(window.limit - this.step(window.limit), 'latency', 'hold');
      return;
    }
    this.decide(measure);
  }

  private decide(measure: Measure): void {
    const comparable = (other: Measure | undefined): other is Measure => other !== undefined && other.unit === measure.unit;
    switch (this.phase) {
      case 'climb': {
        const before = this.previous;
        this.previous = measure;
        if (!comparable(before) || before.limit >= measure.limit) return void this.climb(measure.limit, true);
        const gain = measure.throughput / before.throughput - 1;
        const proportional = measure.limit / before.limit - 1;
        if (!this.fine && gain >= STRONG_GAIN * proportional && gain >= MIN_GAIN) return void this.climb(measure.limit, true);
        const enough = this.recovering ? -DOWN_TOLERANCE : this.fine ? Math.max(FINE_MIN_GAIN, FINE_GAIN_SHARE * proportional) : MIN_GAIN;
        if (gain >= enough) {
          this.fine = true;
          return void this.climb(measure.limit, false);
        }
        this.recovering = false;
        // No gain for the step: the knee is the limit before it.
        this.held = before;
        this.move(before.limit, 'throughput', 'hold');
        return;
      }
      case 'hold': {
        this.held = comparable(this.held) && this.held.limit === measure.limit ? blend(this.held, measure) : measure;
        this.windowsHeld += 1;
        if (this.windowsHeld >= PROBE_MAX_WINDOWS || (this.windowsHeld >= PROBE_MIN_WINDOWS && this.now() - this.heldSince >= PROBE_INTERVAL_MS)) this.probe();
        return;
      }
      case 'probe-up': {
        const base = this.held;
        if (comparable(base) && measure.throughput >= base.throughput * (1 + MIN_GAIN)) {
          this.previous = measure;
          this.phase = 'climb';
          this.climb(measure.limit, false);
        } else if (base) this.move(base.limit, 'throughput', 'hold');
        return;
      }
      case 'probe-down': {
        const base = this.held;
        if (comparable(base) && measure.throughput >= base.throughput * (1 + DOWN_GAIN)) {
          // More for less: requests were queueing to no gain. Keep it, and look lower still at once.
          this.held = measure;
          this.nextProbe = 'down';
          this.probe();
        } else if (comparable(base) && measure.limit >= this.start && measure.throughput >= base.throughput * (1 - DOWN_TOLERANCE)) {
          // As much for less: keep it, and look again only at the next probe (a few queued requests cover the
          // gaps between one answer and the next request, where queueing costs the engine nothing).
          this.held = measure;
          this.phase = 'hold';
          this.startHolding();
          this.nextProbe = 'up';
        } else if (base) this.move(base.limit, 'throughput', 'hold');
        return;
      }
    }
  }

  private climb(from: number, fast: boolean): void {
    const ceiling = this.climbCeiling();
    const next = Math.min(ceiling, fast && !this.fine ? Math.max(from + 1, Math.round(from * FAST_GROWTH)) : from + this.step(from));
    if (next <= from) {
      // Nowhere to climb: hold here.
      this.held = this.previous;
      this.phase = 'hold';
      this.startHolding();
      return;
    }
    this.move(next, 'throughput', 'climb');
  }

  private startHolding(): void {
    this.windowsHeld = 0;
    this.heldSince = this.now();
  }

  private probe(): void {
    this.startHolding();
    const limit = this.limiter.limit;
    const direction = this.nextProbe;
    this.nextProbe = direction === 'up' ? 'down' : 'up';
    const target = direction === 'up' ? Math.min(this.climbCeiling(), limit + this.step(limit)) : this.downTarget(limit);
    if (target === limit) return;
    this.move(target, 'throughput', direction === 'up' ? 'probe-up' : 'probe-down');
  }

  /**
   * One step down; or, when latency says requests queue well past it, straight to the limit at which they would
   * not (Vegas' estimate: the limit times the latency floor over the latency held), so a limit found too high is
   * left in one probe, not one step per probe. A probe there that loses throughput is simply undone.
   */
  private downTarget(limit: number): number {
    const step = Math.max(this.limiter.min, limit - this.step(limit));
    const held = this.held;
    if (!held || this.latencyFloor === undefined || held.perUnit <= 0) return step;
    const vegas = Math.max(this.limiter.min, Math.min(limit - 1, this.start), Math.round((limit * this.latencyFloor) / held.perUnit));
    return vegas < step - 1 ? vegas : step;
  }

  private climbCeiling(): number {
    if (this.engineQueue >= 1) return Math.min(this.limiter.max, this.limiter.limit);
    const overload = this.overloadedAt && this.now() - this.overloadedAt.at < OVERLOAD_MEMORY_MS ? this.overloadedAt.limit - 1 : Number.POSITIVE_INFINITY;
    return Math.max(this.limiter.min, Math.min(this.limiter.max, this.engineCeiling ?? Number.POSITIVE_INFINITY, overload));
  }

  private step(limit: number): number {
    return Math.max(1, Math.round(limit / 10));
  }

  private move(limit: number, reason: LimitReason, phase: KneePhase): void {
    this.phase = phase;
    if (phase !== 'climb') {
      this.fine = true;
      this.recovering = false;
    }
    if (phase === 'hold') this.startHolding();
    this.limiter.adjust(limit, reason);
    // Recovering from an overload steps up every round of the limit, as AIMD does, with no settling window.
    this.window = this.openWindow(!this.recovering);
  }

  private restartWindow(): void {
    this.window = this.openWindow(true);
  }

  private openWindow(settle: boolean): Window {
    return {
      openedAt: this.now(),
      limit: this.limiter.limit,
      completions: 0,
      tokens: 0,
      latencyMs: 0,
      allHadTokens: true,
      busyAtOpen: this.limiter.busyIntegral(),
      settle,
    };
  }
}

/** The held measure, updated with a new window of the same limit (a running average, so noise settles). */
function blend(held: Measure, measure: Measure): Measure {
  return { ...held, throughput: held.throughput * 0.7 + measure.throughput * 0.3, perUnit: held.perUnit * 0.7 + measure.perUnit * 0.3 };
}
