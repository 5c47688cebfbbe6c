// The claim order: users take turns in the normal band whatever priorities
// they set; a user's priority orders that user's own batches; admins' urgent
// and background bands come before and after everyone; every batch is in the
// order, so a claim can reach any batch with work due.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FairScheduler, type SchedulableBatch } from '../../src/runner/scheduler.ts';

const BOUNDS = { min: -10, max: 10 };
const batch = (id: string, user_id: string, priority = 0): SchedulableBatch => ({ id, user_id, priority });

/** Serves the first batch of each order `claims` times; returns the user of each claim. */
function serve(scheduler: FairScheduler, batches: SchedulableBatch[], claims: number): string[] {
  const served: string[] = [];
  for (let i = 0; i < claims; i++) {
    const first = scheduler.order(batches)[0];
    scheduler.served(first);
    served.push(first.id);
  }
  return served;
}

describe('fair scheduler', () => {
  it('gives users turns, not batches: a user with five batches gets no more claims than one with one', () => {
    const scheduler = new FairScheduler(BOUNDS);
    const batches = [batch('a1', 'alice'), batch('a2', 'alice'), batch('a3', 'alice'), batch('a4', 'alice'), batch('a5', 'alice'), batch('b1', 'bob')];
    const served = serve(scheduler, batches, 10);
    assert.equal(served.filter((id) => id === 'b1').length, 5);
    assert.deepEqual(served.filter((id) => id.startsWith('a')), ['a1', 'a2', 'a3', 'a4', 'a5'], "alice's batches take turns among themselves");
  });

  it("a user's priority orders only that user's batches: alice at 10 does not get ahead of bob at 0", () => {
    const scheduler = new FairScheduler(BOUNDS);
    const batches = [batch('a-high', 'alice', 10), batch('a-low', 'alice', -10), batch('b', 'bob', 0)];
    const served = serve(scheduler, batches, 6);
    assert.equal(served.filter((id) => id === 'b').length, 3);
    assert.equal(served.filter((id) => id === 'a-low').length, 0, "alice's lower batch waits while her higher one has work");
  });

  it('admin priorities beyond the bounds: urgent before everyone, background after everyone', () => {
    const scheduler = new FairScheduler(BOUNDS);
    const order = scheduler.order([batch('bg', 'ops', -50), batch('n1', 'alice', 10), batch('urgent', 'ops', 11), batch('n2', 'bob'), batch('more-urgent', 'ops', 99)]);
    assert.deepEqual(order.map((b) => b.id), ['more-urgent', 'urgent', 'n1', 'n2', 'bg']);
  });

  it('lists every batch, so a claim that finds nothing due in the first ones reaches the rest', () => {
    const scheduler = new FairScheduler(BOUNDS);
    const batches = Array.from({ length: 500 }, (_, i) => batch(`b${String(i).padStart(3, '0')}`, `user-${i % 7}`, i % 3));
    const order = scheduler.order(batches);
    assert.equal(order.length, 500);
    assert.deepEqual(new Set(order.map((b) => b.id)).size, 500);
  });

  it('turns pass on from the user served last, also after a user leaves', () => {
    const scheduler = new FairScheduler(BOUNDS);
    const batches = [batch('a', 'alice'), batch('b', 'bob'), batch('c', 'carol')];
    scheduler.served(batches[1]);
    assert.deepEqual(scheduler.order(batches).map((b) => b.id), ['c', 'a', 'b']);
    assert.deepEqual(scheduler.order([batches[0], batches[2]]).map((b) => b.id), ['c', 'a'], 'bob gone: carol is still next');
  });
});
