// Tenants sharing one Spool: no user's priorities, number of batches or
// backlog starves or blocks another user; admin keys see and cancel anyone's
// batches. Counts, not timings: how far one user's work had got when the
// other user's batch completed.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { sql } from 'kysely';
import { Runner } from '../../src/runner/runner.ts';
import {
  api,
  cancelBatch,
  chatLine,
  chatLines,
  cleanupAll,
  createBatch,
  endpointOf,
  getBatch,
  lifecycleContext,
  startHarness,
  submitBatch,
  uploadFile,
  waitForStatus,
  toJsonl,
  type Endpoint,
  type Json,
} from '../helpers/runner-harness.ts';

after(cleanupAll);

const doneOf = (batch: Json): number => batch.request_counts.completed + batch.request_counts.failed;

describe('fair share between users', () => {
  it('a user with five batches gets no more of the upstream than a user with one', async () => {
    const h = await startHarness({
      upstreams: [{ name: 'slowish', kind: 'slow', delayMs: 5, models: ['slowish-*'], maxConcurrency: 1, initialConcurrency: 1 }],
      worker: { claimBatchSize: 16 },
    });
    const alice: Endpoint = { base: h.openai, key: await h.keyFor('alice') };
    const bob: Endpoint = { base: h.openai, key: await h.keyFor('bob') };
    const aliceBatches: Json[] = [];
    for (let i = 0; i < 5; i++) aliceBatches.push(await submitBatch(alice, chatLines(200, 'slowish-llama', `alice-${i}`), { priority: 10 }));
    const bobs = await submitBatch(bob, chatLines(100, 'slowish-llama', 'bob'));
    const bobDone = await waitForStatus(bob, bobs.id, 'completed');
    assert.equal(bobDone.request_counts.completed, 100);
    let aliceDone = 0;
    for (const batch of aliceBatches) aliceDone += doneOf(await getBatch(alice, batch.id));
    // Turns per user: about bob's 100 lines of alice's (plus what was claimed before bob's batch arrived, and
    // a claim buffer's worth). Turns per batch, or priority across users, would have given alice 500 or more.
    assert.ok(aliceDone < 300, `alice had ${aliceDone} lines done when bob's 100 completed`);
    for (const batch of aliceBatches) await cancelBatch(alice, batch.id);
    await h.stop();
  });

  it('a claim reaches a batch behind any number of batches that have nothing due', async () => {
    // Before: only the first 32 runnable batches were looked at per claim, so the 33rd waited while the first
    // 32 had nothing due (all their lines waiting to retry).
    const h = await startHarness({ worker: { enabled: false } });
    const ep = endpointOf(h);
    const waiting: Json[] = [];
    for (let i = 0; i < 33; i++) waiting.push(await submitBatch(ep, [chatLine(`waiting-${i}`, 'echo')], { priority: 5 }));
    for (const batch of waiting) await waitForStatus(ep, batch.id, 'in_progress');
    // Every line of those 33 batches waits to be retried an hour from now.
    await sql`update requests set not_before = ${Date.now() + 3_600_000}`.execute(h.app.store.sql.db);
    const due = await submitBatch(ep, [chatLine('due', 'echo')]);
    await waitForStatus(ep, due.id, 'in_progress');
    const runner = new Runner(lifecycleContext(h.app.store, h.config)).start();
    try {
      const done = await waitForStatus(ep, due.id, 'completed');
      assert.equal(done.request_counts.completed, 1);
    } finally {
      await runner.stop();
    }
    await h.stop();
  });
});

describe('priority bounds', () => {
  it('keys that are not admin keys may set limits.priority only; admin keys may set any priority', async () => {
    const h = await startHarness({ config: { limits: { priority: { min: -3, max: 3 } } } });
    const user: Endpoint = { base: h.openai, key: await h.keyFor('carol') };
    const fileId = (await uploadFile(user, toJsonl([chatLine('p', 'echo')]))).id as string;
    for (const priority of [4, -4, 1_000_000]) {
      const res = await api(`${h.openai}/batches`, user.key, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ input_file_id: fileId, endpoint: '/v1/chat/completions', priority }),
      });
      assert.equal(res.status, 400, res.text);
      assert.equal(res.json.error.param, 'priority');
      assert.match(res.json.message, /from -3 to 3 for this key/);
    }
    assert.equal((await createBatch(user, fileId, { priority: 3 })).status, 'validating');
    const adminFile = (await uploadFile(endpointOf(h), toJsonl([chatLine('p', 'echo')]))).id as string;
    assert.equal((await createBatch(endpointOf(h), adminFile, { priority: 500 })).status, 'validating');
    await h.stop();
  });
});

describe('enqueued-token budget per user and model', () => {
  it("one user's backlog gives that user 429s, not everyone", async () => {
    const h = await startHarness({
      config: { limits: { maxEnqueuedTokensPerModel: 5_000, defaultMaxTokensEstimate: 1_000 } },
      upstreams: [{ name: 'stuck', kind: 'slow', delayMs: 60_000, models: ['stuck-*'], maxConcurrency: 1, initialConcurrency: 1 }],
    });
    const dave: Endpoint = { base: h.openai, key: await h.keyFor('dave') };
    const erin: Endpoint = { base: h.openai, key: await h.keyFor('erin') };
    // Four lines at ~1,000 tokens each (max_tokens) stay queued behind an upstream that takes a minute per request.
    const heavy = (id: string) => chatLine(id, 'stuck-model', { max_tokens: 1_000 });
    const backlog = await submitBatch(dave, [heavy('d1'), heavy('d2'), heavy('d3'), heavy('d4')]);
    await waitForStatus(dave, backlog.id, 'in_progress');
    // Create counts ~4 bytes a token of the file for model_id: ~1,500 more tokens, over dave's 5,000.
    const long = (id: string) => chatLine(id, 'stuck-model', { messages: [{ role: 'user', content: 'x'.repeat(3_000) }] });
    const daveFile = (await uploadFile(dave, toJsonl([long('dave-more-1'), long('dave-more-2')]))).id as string;
    const refused = await api(`${h.openai}/batches`, dave.key, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input_file_id: daveFile, endpoint: '/v1/chat/completions', model_id: 'stuck-model' }),
    });
    assert.equal(refused.status, 429, refused.text);
    assert.equal(refused.json.error.code, 'token_limit_exceeded');
    assert.match(refused.json.message, /per user and model/);
    const erinBatch = await submitBatch(erin, [long('erin-1'), long('erin-2')], { extra: { model_id: 'stuck-model' } });
    assert.equal((await waitForStatus(erin, erinBatch.id, 'in_progress')).status, 'in_progress', "another user's batch is not held to dave's budget");
    await cancelBatch(dave, backlog.id);
    await cancelBatch(erin, erinBatch.id);
    await h.stop();
  });
});

describe('admin keys across users', () => {
  it("list any user's batches (?user_id=NAME or *), read and cancel them; other keys cannot", async () => {
    const h = await startHarness({
      upstreams: [{ name: 'stuck', kind: 'slow', delayMs: 60_000, models: ['stuck-*'], maxConcurrency: 1, initialConcurrency: 1 }],
    });
    const admin = endpointOf(h);
    const frank: Endpoint = { base: h.openai, key: await h.keyFor('frank') };
    const grace: Endpoint = { base: h.openai, key: await h.keyFor('grace') };
    const franks = await submitBatch(frank, chatLines(2, 'stuck-model', 'frank'));
    const graces = await submitBatch(grace, chatLines(2, 'stuck-model', 'grace'));

    const own = await api(`${h.openai}/batches`, admin.key);
    assert.deepEqual(own.json.data, [], 'without user_id an admin lists its own batches, as anyone does');
    const ofFrank = await api(`${h.openai}/batches?user_id=frank`, admin.key);
    assert.deepEqual(ofFrank.json.data.map((b: Json) => b.id), [franks.id]);
    const everyone = await api(`${h.together}/batches?user_id=*`, admin.key);
    assert.deepEqual(everyone.json.map((b: Json) => b.id).sort(), [franks.id, graces.id].sort());
    assert.equal((await api(`${h.openai}/batches/${graces.id}`, admin.key)).status, 200);

    const denied = await api(`${h.openai}/batches?user_id=grace`, frank.key);
    assert.equal(denied.status, 403);
    assert.equal(denied.json.error.code, 'admin_required');
    assert.equal((await api(`${h.openai}/batches/${graces.id}`, frank.key)).status, 404);
    assert.equal((await api(`${h.openai}/batches/${graces.id}/cancel`, frank.key, { method: 'POST' })).status, 404);

    const cancelled = await api(`${h.openai}/batches/${graces.id}/cancel`, admin.key, { method: 'POST' });
    assert.equal(cancelled.status, 200, cancelled.text);
    assert.equal((await waitForStatus(grace, graces.id, 'cancelled')).status, 'cancelled');
    await cancelBatch(frank, franks.id);
    await h.stop();
  });
});
