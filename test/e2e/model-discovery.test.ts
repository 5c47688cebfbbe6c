// models: "auto": an upstream's models are what its GET /v1/models lists,
// asked at start and every modelsRefreshSeconds. A model that appears there
// becomes routable, for batch lines and real-time requests, without a restart;
// one that nobody lists is an invalid_model error line, as before.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { api, chatLine, cleanupAll, endpointOf, pollUntil, readResults, startHarness, startTestUpstream, submitBatch, waitForStatus } from '../helpers/runner-harness.ts';

after(cleanupAll);

describe('model discovery (models: "auto")', () => {
  it('routes what the server lists, and a model it starts to list without a restart', async () => {
    const served = ['listed-a'];
    const upstream = await startTestUpstream({ kind: 'fast', listModels: () => served, apiKey: 'upstream-key' });
    const h = await startHarness({
      config: { upstreams: [{ name: 'vllm', baseUrl: upstream.url, apiKey: 'upstream-key', models: 'auto', modelsRefreshSeconds: 0.2 }] },
    });
    const ep = endpointOf(h);
    const chat = (model: string) =>
      api(`${h.openai}/chat/completions`, ep.key, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }),
      });

    const first = await waitForStatus(ep, (await submitBatch(ep, [chatLine('a1', 'listed-a'), chatLine('a2', 'listed-a'), chatLine('b1', 'later-b')])).id, 'completed');
    const results = await readResults(ep, first);
    assert.deepEqual(results.output.map((line) => line.custom_id).sort(), ['a1', 'a2'], 'the listed model ran on the upstream');
    assert.deepEqual(
      results.errors.map((line) => [line.custom_id, line.error.code]),
      [['b1', 'invalid_model']],
      'a model nobody lists is an invalid_model line',
    );
    assert.equal((await chat('later-b')).status, 404);

    // The server starts serving another model: Spool routes it once it has asked again, with no restart.
    served.push('later-b');
    await pollUntil(async () => (await chat('later-b')).status, (status) => status === 200, { what: 'later-b routable in real time' });
    const second = await waitForStatus(ep, (await submitBatch(ep, [chatLine('b2', 'later-b'), chatLine('b3', 'later-b')])).id, 'completed');
    const after = await readResults(ep, second);
    assert.deepEqual(after.output.map((line) => line.custom_id).sort(), ['b2', 'b3']);
    assert.equal(after.errors.length, 0);
    assert.ok(upstream.stats.bodies.some((body) => (body as { model?: string }).model === 'later-b'), 'the lines went to that upstream');

    // And a model it stops listing is no longer routed there.
    served.splice(0, served.length, 'later-b');
    await pollUntil(async () => (await chat('listed-a')).status, (status) => status === 404, { what: 'listed-a no longer routable' });
    await h.stop();
  });
});
