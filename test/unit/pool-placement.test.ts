import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AffinityRing, bySpareCapacity, hash32 } from '../../src/upstreams/pool-placement.ts';
import { prefixHashOf } from '../../src/upstreams/prefix-key.ts';

const replicas = (names: string[], weights: number[] = names.map(() => 1)) => names.map((name, i) => ({ name, weight: weights[i] }));

describe('AffinityRing', () => {
  it('orders every replica once, starting from the same home for the same hash', () => {
    const ring = new AffinityRing(replicas(['a', 'b', 'c', 'd']));
    for (let i = 0; i < 200; i++) {
      const order = ring.order(hash32(`prefix ${i}`));
      assert.deepEqual([...order].sort(), [0, 1, 2, 3]);
      assert.deepEqual(ring.order(hash32(`prefix ${i}`)), order);
    }
  });

  it('spreads prefixes over replicas about by weight', () => {
    const ring = new AffinityRing(replicas(['a', 'b', 'c', 'd'], [1, 1, 1, 3]));
    const homes = [0, 0, 0, 0];
    for (let i = 0; i < 6000; i++) homes[ring.order(hash32(`p${i}`))[0]] += 1;
    for (const light of homes.slice(0, 3)) assert.ok(light > 500 && light < 1500, `a light replica is home to ${light} of 6000`);
    assert.ok(homes[3] > 2200, `the replica of weight 3 is home to ${homes[3]} of 6000`);
  });

  it('moves only the prefixes of a replica that leaves: the others keep their home', () => {
    const four = new AffinityRing(replicas(['a', 'b', 'c', 'd']));
    const three = new AffinityRing(replicas(['a', 'b', 'c']));
    for (let i = 0; i < 500; i++) {
      const hash = hash32(`q${i}`);
      const home = four.order(hash)[0];
      if (home !== 3) assert.equal(three.order(hash)[0], home);
      // A replica taken out hands its prefixes to the next on the ring, the same one everywhere.
      else assert.equal(three.order(hash)[0], four.order(hash)[1]);
    }
  });
});

describe('bySpareCapacity', () => {
  it('puts the replica with the least of its limit in use first, the heavier weight among equals', () => {
    assert.deepEqual(
      bySpareCapacity([
        { inFlight: 4, limit: 8, weight: 1 },
        { inFlight: 1, limit: 8, weight: 1 },
        { inFlight: 8, limit: 32, weight: 1 },
        { inFlight: 1, limit: 8, weight: 2 },
      ]),
      [3, 1, 2, 0],
    );
  });
});

describe('prefixHashOf', () => {
  const chat = (system: string, user: string) => ({ model: 'm', messages: [{ role: 'system', content: system }, { role: 'user', content: user }] });

  it('is the same for chat requests that share every message but the last', () => {
    assert.equal(prefixHashOf('/v1/chat/completions', chat('be brief', 'one')), prefixHashOf('/v1/chat/completions', chat('be brief', 'two')));
    assert.notEqual(prefixHashOf('/v1/chat/completions', chat('be brief', 'one')), prefixHashOf('/v1/chat/completions', chat('be long', 'one')));
  });

  it('is undefined when nothing is shared to key on', () => {
    assert.equal(prefixHashOf('/v1/chat/completions', { model: 'm', messages: [{ role: 'user', content: 'hi' }] }), undefined);
    assert.equal(prefixHashOf('/v1/completions', { model: 'm', prompt: 'short' }), undefined);
    assert.equal(prefixHashOf('/v1/embeddings', { model: 'm', input: 'x'.repeat(5000) }), undefined);
  });

  it('keys a long completion prompt on its leading text, and a different model apart', () => {
    const lead = 'Context: '.repeat(200);
    assert.equal(prefixHashOf('/v1/completions', { model: 'm', prompt: `${lead} question 1` }), prefixHashOf('/v1/completions', { model: 'm', prompt: `${lead} question 2` }));
    assert.notEqual(prefixHashOf('/v1/completions', { model: 'm', prompt: lead }), prefixHashOf('/v1/completions', { model: 'other', prompt: lead }));
  });

  it('hashes at most a bounded prefix: a huge system prompt costs no more than its first 8 KB', () => {
    const huge = 'x'.repeat(10_000_000);
    assert.equal(prefixHashOf('/v1/chat/completions', chat(`${huge}a`, 'q')), prefixHashOf('/v1/chat/completions', chat(`${huge}b`, 'q')));
  });
});
