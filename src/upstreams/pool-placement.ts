// The orders replicas of a pool are tried in, for batch lines (whose runner
// adds a look-ahead over its queue: runner/placement.ts) and real-time requests:
//
//   affinity  A request with a prefix hash (prefix-key.ts) walks a consistent-
//             hash ring from its hash: the first replica that can take it now
//             wins. Requests sharing a system prompt thus land on one replica
//             while it has room (its KV cache holds the prefix), spill to the
//             next on the ring when it has none, and only the prefixes of a
//             replica that leaves the pool move when it does.
//   spare     Otherwise the replica with the most spare capacity: fewest
//             requests in flight relative to its adaptive limit; the heavier
//             weight breaks a tie, then the order of configuration.
//
// The caller says what "can take it now" means (healthy, not paused, a free
// slot, rate budget); this module only orders candidates.
import { createHash } from 'node:crypto';

export interface PlacementReplica {
  name: string;
  weight: number;
}

// Points per unit of weight on the ring: enough that 20 prefixes over 4 replicas spread near evenly.
const POINTS_PER_WEIGHT = 64;

export class AffinityRing {
  private readonly points: Uint32Array;
  private readonly owners: Uint16Array;

  constructor(private readonly replicas: readonly PlacementReplica[]) {
    const entries: Array<{ point: number; owner: number }> = [];
    replicas.forEach((replica, owner) => {
      const count = Math.max(1, Math.round(POINTS_PER_WEIGHT * replica.weight));
      for (let i = 0; i < count; i++) entries.push({ point: hash32(`${replica.name}#${i}`), owner });
    });
    entries.sort((a, b) => a.point - b.point);
    this.points = Uint32Array.from(entries.map((e) => e.point));
    this.owners = Uint16Array.from(entries.map((e) => e.owner));
  }

  /** Replica indexes in ring order from `hash`: the home replica first, each replica once. */
  order(hash: number): number[] {
    const order: number[] = [];
    const seen = new Set<number>();
    let index = lowerBound(this.points, hash >>> 0);
    for (let step = 0; step < this.points.length && order.length < this.replicas.length; step++) {
      const owner = this.owners[(index + step) % this.points.length];
      if (!seen.has(owner)) {
        seen.add(owner);
        order.push(owner);
      }
    }
    return order;
  }
}

export interface LoadView {
  inFlight: number;
  limit: number;
  weight: number;
}

/** Replica indexes from most to least spare capacity (the order to try them in). */
export function bySpareCapacity(loads: readonly LoadView[]): number[] {
  const indexes = loads.map((_, index) => index);
  const usage = (load: LoadView) => load.inFlight / Math.max(1, load.limit);
  return indexes.sort((a, b) => usage(loads[a]) - usage(loads[b]) || loads[b].weight - loads[a].weight || a - b);
}

/** A stable 32-bit hash of a string or bytes (the first four bytes of SHA-1: evenly spread, and cheap at a few KB). */
export function hash32(data: string | Uint8Array): number {
  return createHash('sha1').update(data).digest().readUInt32BE(0);
}

function lowerBound(points: Uint32Array, value: number): number {
  let low = 0;
  let high = points.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (points[mid] < value) low = mid + 1;
    else high = mid;
  }
  return low === points.length ? 0 : low;
}
