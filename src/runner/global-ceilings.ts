// This worker's share of each upstream's global concurrency ceiling. The
// ceiling lives in the database as slot rows (store/sql/upstream-slots.ts);
// this class takes slots when a lane has more work than slots, gives back
// the ones it is not using, renews them with the heartbeat, and caps each
// lane's limiter to what it holds. A lane never sends more than it holds,
// and a slot goes back to the database only once the request using it has
// ended, so the requests in flight to an upstream, summed over all workers,
// stay within its ceiling.
//
// Slots are not balanced between workers: a busy worker keeps what it uses
// and the others wait for what it gives back. The upstream sees the same
// total either way; the ceiling is what matters to it.
import type { Kysely } from 'kysely';
import type { Database } from '../store/sql/schema.ts';
import {
  acquireUpstreamSlots,
  ensureUpstreamSlots,
  releaseAllUpstreamSlots,
  releaseUpstreamSlots,
  renewUpstreamSlots,
} from '../store/sql/upstream-slots.ts';
import { queuedFor, type Lane } from './lanes.ts';

interface Options {
  db: Kysely<Database>;
  owner: string;
  leaseMs: () => number;
  onError: (err: unknown, what: string) => void;
  /** Called after slots were taken, so queued work can start. */
  onSlots: () => void;
}

export class GlobalCeilings {
  private readonly held = new Map<string, Set<number>>();
  private readonly ensured = new Set<string>();
  private running: Promise<void> | undefined;
  private again = false;

  constructor(private readonly options: Options) {}

  /** Slots held for the upstream right now. */
  heldFor(upstream: string): number {
    return this.held.get(upstream)?.size ?? 0;
  }

  /**
   * Brings every shared lane's holding in line with its demand: min(adaptive
   * limit, queued + in flight). Calls made while one runs fold into one more
   * run after it, so a burst of calls costs at most two round trips.
   */
  reconcile(lanes: readonly Lane<unknown>[]): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    // The finally runs as a microtask, after `running` is set, even when there is nothing to do and the loop
    // finishes synchronously; clearing it inline would leave a settled promise in `running` for good.
    const run = this.reconcileAll(lanes).finally(() => {
      if (this.running === run) this.running = undefined;
    });
    this.running = run;
    return run;
  }

  private async reconcileAll(lanes: readonly Lane<unknown>[]): Promise<void> {
    do {
      this.again = false;
      for (const lane of lanes) if (lane.sharedCeiling) await this.reconcileLane(lane, lane.sharedCeiling);
    } while (this.again);
  }

  /** Renews the leases on all held slots; a slot another worker took meanwhile is dropped from the holding. */
  async renew(lanes: readonly Lane<unknown>[]): Promise<void> {
    if (this.held.size === 0) return;
    // Only slots held before the renewal can have been lost: ones a reconcile took meanwhile are not in its answer.
    const before = new Map([...this.held].map(([upstream, slots]) => [upstream, [...slots]]));
    const still = await renewUpstreamSlots(this.options.db, this.options.owner, this.options.leaseMs(), Date.now());
    for (const [upstream, slots] of before) {
      const kept = new Set(still.get(upstream) ?? []);
      for (const slot of slots) if (!kept.has(slot)) this.held.get(upstream)?.delete(slot);
    }
    for (const lane of lanes) if (lane.sharedCeiling) lane.limiter.setCap(this.heldFor(lane.sharedCeiling.upstream));
  }

  /** Gives every slot back (a graceful stop, after the last request ended). */
  async releaseAll(lanes: readonly Lane<unknown>[]): Promise<void> {
    await this.running;
    await releaseAllUpstreamSlots(this.options.db, this.options.owner);
    this.held.clear();
    for (const lane of lanes) if (lane.sharedCeiling) lane.limiter.setCap(0);
  }

  private async reconcileLane(lane: Lane<unknown>, ceiling: { upstream: string; max: number }): Promise<void> {
    const { db, owner } = this.options;
    const slots = this.held.get(ceiling.upstream) ?? new Set<number>();
    this.held.set(ceiling.upstream, slots);
    const inFlight = lane.limiter.inFlight;
    const demand = Math.min(lane.limiter.limit, queuedFor(lane) + inFlight);
    try {
      // The ceiling came down (the engine reported fewer slots than maxConcurrency): slots at or above it go back at
      // once; requests already using them finish, and nothing new starts on them.
      const over = [...slots].filter((slot) => slot >= ceiling.max);
      if (over.length > 0) {
        for (const slot of over) slots.delete(slot);
        lane.limiter.setCap(slots.size);
        await releaseUpstreamSlots(db, { upstream: ceiling.upstream, owner, slots: over });
      }
      if (slots.size < demand) {
        if (!this.ensured.has(ceiling.upstream)) {
          await ensureUpstreamSlots(db, ceiling.upstream, ceiling.max);
          this.ensured.add(ceiling.upstream);
        }
        const taken = await acquireUpstreamSlots(db, {
          upstream: ceiling.upstream,
          ceiling: ceiling.max,
          owner,
          count: demand - slots.size,
          leaseMs: this.options.leaseMs(),
          now: Date.now(),
        });
        for (const slot of taken) slots.add(slot);
        lane.limiter.setCap(slots.size);
        if (taken.length > 0) this.options.onSlots();
        return;
      }
      // Only slots no request is using go back: the cap drops first, so none of them is used while the release runs.
      const spare = slots.size - Math.max(demand, lane.limiter.inFlight);
      if (spare <= 0) return;
      const giveBack = [...slots].sort((a, b) => b - a).slice(0, spare);
      for (const slot of giveBack) slots.delete(slot);
      lane.limiter.setCap(slots.size);
      await releaseUpstreamSlots(db, { upstream: ceiling.upstream, owner, slots: giveBack });
    } catch (err) {
      this.options.onError(err, `balancing ${ceiling.upstream}'s shared concurrency slots`);
    } finally {
      lane.limiter.setCap(slots.size);
    }
  }
}
