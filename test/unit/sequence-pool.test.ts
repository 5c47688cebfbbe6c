// The engine's sequence pool on stand-in sequences: first come, first served,
// except that urgent (real-time) waiters go ahead of the batch ones.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { LlamaContextSequence } from 'node-llama-cpp';
import { SequencePool, SequencePoolClosedError, type SequenceLease } from '../../src/upstreams/engine/sequence-pool.ts';

function fakeSequences(count: number): LlamaContextSequence[] {
  return Array.from({ length: count }, (_, id) => ({ id, compareContextTokens: () => ({ firstDifferentIndex: 0 }) }) as unknown as LlamaContextSequence);
}

describe('SequencePool', () => {
  it('serves urgent waiters before batch waiters, each group in arrival order', async () => {
    const pool = new SequencePool(fakeSequences(1));
    const first = await pool.acquire();
    const order: string[] = [];
    // Each holder records its turn and gives the sequence back on the next tick.
    const waiting = (name: string, urgent: boolean) =>
      pool.acquire({ urgent }).then((lease: SequenceLease) => {
        order.push(name);
        setImmediate(() => lease.release());
      });
    const served = [waiting('batch-1', false), waiting('batch-2', false), waiting('live-1', true), waiting('live-2', true)];
    assert.equal(pool.waiting, 4);
    first.release();
    await Promise.all(served);
    assert.deepEqual(order, ['live-1', 'live-2', 'batch-1', 'batch-2']);
  });

  it('rejects waiters on close', async () => {
    const pool = new SequencePool(fakeSequences(1));
    await pool.acquire();
    const waiter = pool.acquire({ urgent: true });
    pool.close();
    await assert.rejects(waiter, SequencePoolClosedError);
  });
});
