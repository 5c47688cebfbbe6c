// Which queued line goes to which replica (runner/placement.ts), on lanes
// reduced to what placement reads: load, limit, health, weight.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Lane, Pool } from '../../src/runner/lanes.ts';
import { homeOf, mayUse, pickForLane, placeIn, type Placeable } from '../../src/runner/placement.ts';
import { AffinityRing, hash32 } from '../../src/upstreams/pool-placement.ts';

interface TestJob extends Placeable<TestJob> {
  id: string;
}

function lane(name: string, options: { inFlight?: number; limit?: number; down?: boolean; weight?: number } = {}): Lane<TestJob> {
  const limit = options.limit ?? 4;
  const inFlight = options.inFlight ?? 0;
  return {
    name,
    limiter: { inFlight, limit, cap: Infinity, available: Math.max(0, limit - inFlight) },
    capacity: { health: { down: options.down ?? false } },
    replica: { weight: options.weight ?? 1 },
  } as unknown as Lane<TestJob>;
}

function pool(lanes: Lane<TestJob>[], queue: TestJob[], affinity: boolean): Pool<TestJob> {
  return { key: lanes.map((l) => l.name).join(','), lanes, queue, ring: affinity ? new AffinityRing(lanes.map((l) => ({ name: l.name, weight: 1 }))) : undefined };
}

const job = (id: string, prefix?: string, triedOn?: Lane<TestJob>[]): TestJob => ({
  id,
  prefixHash: prefix === undefined ? undefined : hash32(prefix),
  triedOn: triedOn && new Set(triedOn),
  batch: { priority: 0 },
});

describe('placement', () => {
  it('a line that failed on a replica goes back to it only when no other replica is up', () => {
    const a = lane('a');
    const b = lane('b', { down: true });
    const failed = job('x', undefined, [a]);
    assert.equal(mayUse(failed, a, [a, b]), true, 'b is down: a may be tried again');
    const c = lane('c');
    assert.equal(mayUse(failed, a, [a, b, c]), false, 'c is up and untried');
  });

  it('without a prefix, in a pool with affinity, a failed-over line is not stranded when the other replica goes down', () => {
    const a = lane('a');
    const b = lane('b', { down: true });
    const p = pool([a, b], [job('no-prefix', undefined, [a])], true);
    assert.equal(pickForLane(p, a, [true, false]), 0);
  });

  it('without a prefix, in a pool with affinity, a line goes to the replica with the most spare capacity', () => {
    const busy = lane('busy', { inFlight: 3, limit: 4 });
    const idle = lane('idle', { inFlight: 0, limit: 4 });
    const p = pool([busy, idle], [job('q')], true);
    assert.equal(pickForLane(p, busy, [true, true]), -1, 'left for the idle replica');
    assert.equal(pickForLane(p, idle, [true, true]), 0);
    assert.equal(pickForLane(p, busy, [true, false]), 0, 'taken by the busy one when the idle one has no room');
  });

  it('a replica with room takes a line of its own prefix from behind the head, and spills only along the ring', () => {
    const lanes = [lane('a'), lane('b'), lane('c'), lane('d')];
    const ring = new AffinityRing(lanes.map((l) => ({ name: l.name, weight: 1 })));
    // Prefixes by home: find one whose home is lanes[0] and one whose home is elsewhere.
    const homeIs = (index: number) => {
      for (let i = 0; ; i++) if (ring.order(hash32(`p${i}`))[0] === index) return `p${i}`;
    };
    const foreign = homeIs(1);
    const own = homeIs(0);
    const p = pool(lanes, [job('head', foreign), job('second', foreign), job('mine', own)], true);
    const allRoom = [true, true, true, true];
    assert.equal(pickForLane(p, lanes[0], allRoom), 2, 'its own line, past two lines whose home has room');
    const homeFull = [true, false, true, true];
    const order = ring.order(hash32(foreign));
    const next = order[1];
    const p2 = pool(lanes, [job('head', foreign)], true);
    assert.equal(pickForLane(p2, lanes[next], homeFull), 0, 'the next on the ring takes it when its home is full');
    const notNext = order.find((index) => index !== order[0] && index !== next)!;
    assert.equal(pickForLane(p2, lanes[notNext], homeFull), -1, 'a replica further round the ring waits while the next has room');
    assert.equal(homeOf(p2, p2.queue[0]), lanes[order[0]]);
  });

  it('without affinity, the replica with the most spare capacity that the line may use', () => {
    const a = lane('a', { inFlight: 1 });
    const b = lane('b', { inFlight: 3 });
    const p = pool([a, b], [], false);
    assert.equal(placeIn(p, job('q'), () => true), a);
    assert.equal(placeIn(p, job('q', undefined, [a]), () => true), b, 'a failed-over line goes elsewhere');
    assert.equal(placeIn(p, job('q', undefined, [a]), (l) => l !== b), undefined, 'and waits for it rather than going back to a');
  });
});
