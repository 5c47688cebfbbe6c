// Which claimed line goes to which replica of its pool, and when. The runner
// asks after every completion (pump), so these rules run thousands of times a
// second: they look at a bounded window of the queue and the pool's few lanes.
// The pieces they rest on (the consistent-hash ring, the spare-capacity order)
// are upstreams/pool-placement.ts, which real-time requests use too.
//
//   a line that failed on a replica in this claim (failover) goes elsewhere
//   while another replica is up; with none up it may go back.
//   pool without affinity: the line at the head goes to the replica with the
//     most spare capacity that can take it; a failed-over line that cannot go
//     anywhere yet lets the lines behind it pass.
//   pool with affinity (pickForLane): each replica with room takes a line of
//     its own prefixes, else the line for which it is next on the ring with
//     every replica before it full; a line without a prefix goes to the
//     replica with the most spare capacity.
import { bySpareCapacity } from '../upstreams/pool-placement.ts';
import type { Lane, Pool } from './lanes.ts';

/** What placement needs of a queued line. */
export interface Placeable<Job> {
  prefixHash?: number;
  /** The pool's lanes in ring order from prefixHash, worked out once. */
  ringOrder?: number[];
  /** Lanes it failed on in this claim (failover). */
  triedOn?: Set<Lane<Job>>;
  batch: { priority: number };
}

/**
 * How far past the head of a pool's queue a replica with room looks for a line of its own prefixes. Under load
 * every replica is full and slots free one at a time: sending the head wherever a slot freed put three lines in
 * four on a replica without their prefix (bench "pools", 4 replicas, 40 ms + 120 ms prefill: a 34% hit rate,
 * 1.29x over no affinity). Looking ahead for a line of its own, and spilling only along the ring, gave
 * 98.6-99.0% of a best 99.8% and 2.8-3.0x (80 ms + 240 ms prefill).
 */
export const LOOKAHEAD = 128;

/** Whether `job` may go to `lane`: one it has not failed on in this claim, or any while none of those is up. */
export function mayUse<Job extends Placeable<Job>>(job: Job, lane: Lane<Job>, lanes: readonly Lane<Job>[]): boolean {
  const tried = job.triedOn;
  if (!tried?.has(lane)) return true;
  return !lanes.some((other) => !tried.has(other) && !other.capacity.health?.down);
}

/** Lane indexes from most to least spare capacity (in flight for its limit; the heavier weight among equals). */
export function spareOrder(lanes: readonly Lane<unknown>[]): number[] {
  if (lanes.length === 1) return [0];
  return bySpareCapacity(lanes.map((lane) => ({ inFlight: lane.limiter.inFlight, limit: Math.min(lane.limiter.limit, lane.limiter.cap), weight: lane.replica?.weight ?? 1 })));
}

/** Pools without affinity: the lane `job` goes to now, or undefined when none it may use can take it (`canTake`). */
export function placeIn<Job extends Placeable<Job>>(pool: Pool<Job>, job: Job, canTake: (lane: Lane<Job>) => boolean): Lane<Job> | undefined {
  const { lanes } = pool;
  if (lanes.length === 1) return canTake(lanes[0]) ? lanes[0] : undefined;
  for (const index of spareOrder(lanes)) {
    const lane = lanes[index];
    if (mayUse(job, lane, lanes) && canTake(lane)) return lane;
  }
  return undefined;
}

/**
 * The lane a line with a prefix belongs on: the first on the ring from its hash that is up (and, unless
 * `ignoreTried`, that it may use). Undefined for a line without a prefix or a pool without a ring.
 */
export function homeOf<Job extends Placeable<Job>>(pool: Pool<Job>, job: Job, ignoreTried = false): Lane<Job> | undefined {
  if (!pool.ring || job.prefixHash === undefined) return undefined;
  job.ringOrder ??= pool.ring.order(job.prefixHash);
  for (const index of job.ringOrder) {
    const lane = pool.lanes[index];
    if (lane.capacity.health?.down) continue;
    if (ignoreTried || mayUse(job, lane, pool.lanes)) return lane;
  }
  return undefined;
}

/**
 * For a pool with affinity: the index in its queue of the line `lane` takes now, or -1 for none. `room` says
 * which lanes can take a line now (up, not paused, a free slot, rate budget), by index.
 *
 * A line belongs first on its home (the first lane on the ring from its prefix), then on the next lane of the
 * ring, and so on; it may go to a lane only when every lane before it on its ring is full. Among the lines
 * within LOOKAHEAD of the head's priority, `lane` takes the one it is nearest the front of the ring for: one
 * whose home it is, else one whose home is full and for which it is next. So under load a freed slot goes to a
 * line of its own prefixes, and a prefix that outgrows its home spills onto the next replica of its ring (whose
 * cache then holds it too), not onto whichever slot freed first. A line without a prefix goes to the lane with
 * the most spare capacity that has room. A line bound for another lane with room is left to that lane, which
 * takes it in the same pump.
 */
export function pickForLane<Job extends Placeable<Job>>(pool: Pool<Job>, lane: Lane<Job>, room: readonly boolean[]): number {
  const { queue, lanes } = pool;
  const priority = queue[0]?.batch.priority;
  let spare: number[] | undefined;
  let best = -1;
  let bestRank = Infinity;
  for (let index = 0; index < queue.length && index < LOOKAHEAD; index++) {
    const job = queue[index];
    // Lines of a lower priority wait behind the head's, as everywhere else.
    if (job.batch.priority !== priority) break;
    if (!mayUse(job, lane, lanes)) continue;
    if (job.prefixHash === undefined || !pool.ring) {
      spare ??= spareOrder(lanes);
      const target = spare.find((at) => room[at] && mayUse(job, lanes[at], lanes));
      if (target !== undefined && lanes[target] === lane) return index;
      continue;
    }
    job.ringOrder ??= pool.ring.order(job.prefixHash);
    let rank = 0;
    for (const at of job.ringOrder) {
      const candidate = lanes[at];
      if (candidate === lane) break;
      // A lane out of service (or one it may not use) is passed over; one before this lane with room comes first.
      if (candidate.capacity.health?.down || !mayUse(job, candidate, lanes)) continue;
      if (room[at]) {
        rank = Infinity;
        break;
      }
      rank += 1;
    }
    if (rank === 0) return index;
    if (rank < bestRank) {
      bestRank = rank;
      best = index;
    }
  }
  return best;
}
