// An upstream that goes away for longer than the retry budget (a vLLM
// restart): after a few connection failures in a row it is taken out, its
// lines wait instead of spending their attempts, a probe notices it back, and
// the batch completes with every line once and no error line. The admin status
// and /metrics say it was down. Without this the same outage turned the lines
// in flight into upstream_error lines.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import {
  api,
  assertExactlyOnce,
  chatLines,
  cleanupAll,
  endpointOf,
  getBatch,
  pollUntil,
  readResults,
  sleep,
  startHarness,
  startTestUpstream,
  submitBatch,
  waitForStatus,
  type Json,
} from '../helpers/runner-harness.ts';

after(cleanupAll);

describe('an upstream that goes away and comes back', () => {
  it('lines wait while it is unreachable (longer than their retry budget), then all complete, each once', async () => {
    let upstream = await startTestUpstream({ kind: 'fast', delayMs: 20 });
    const port = Number(new URL(upstream.url).port);
    const h = await startHarness({
      config: { upstreams: [{ name: 'vllm', baseUrl: upstream.url, models: ['loop-*'], maxConcurrency: 4, initialConcurrency: 4 }] },
      // Three attempts, 20-100 ms apart: without health checks an outage of a second fails every line in flight.
      worker: { maxAttempts: 3, retryBaseDelayMs: 20, retryMaxDelayMs: 100 },
    });
    const ep = endpointOf(h);
    const lines = chatLines(300, 'loop-model', 'line');
    const created = await submitBatch(ep, lines);
    await pollUntil(() => getBatch(ep, created.id), (batch) => batch.request_counts.completed >= 40, { what: 'some lines done before the outage' });

    await upstream.close();
    const status = () => api(`${h.url}/v1/admin/status`, h.apiKey).then((answer) => answer.json.upstreams.find((u: Json) => u.name === 'vllm'));
    const down = await pollUntil(status, (entry) => entry?.health?.up === false, { what: 'the upstream taken out' });
    assert.match(down.health.reason, /ECONNREFUSED|ECONNRESET|other side closed|socket/i);
    const ready = await api(`${h.url}/readyz`, null);
    assert.equal(ready.status, 200, 'still ready: the lines wait, everything else works');
    assert.match(ready.json.upstreams.vllm, /^unreachable \((E[A-Z]+|UND_ERR_[A-Z_]+)\)$|^unreachable$/, 'down, with the error code and no address');
    const metrics = await api(`${h.url}/metrics`, h.apiKey);
    assert.match(metrics.text, /spool_upstream_up\{upstream="vllm"\} 0/);
    // Down for well over the retry budget; nothing fails meanwhile.
    await sleep(1500);
    const during = await getBatch(ep, created.id);
    assert.equal(during.request_counts.failed, 0, 'no line failed while the upstream was away');
    assert.equal(during.status, 'in_progress');

    upstream = await startTestUpstream({ kind: 'fast', delayMs: 20, port });
    const batch = await waitForStatus(ep, created.id, 'completed');
    const results = await readResults(ep, batch);
    assertExactlyOnce(
      lines.map((line) => line.custom_id),
      results,
    );
    assert.equal(results.errors.length, 0, `no error line: ${JSON.stringify(results.errors[0])}`);
    assert.deepEqual((await api(`${h.url}/readyz`, null)).json.upstreams, { vllm: 'ok' });
    const back = await status();
    assert.equal(back.health.up, true);
    assert.ok(back.health.ejections >= 1);
    await h.stop();
  });
});
