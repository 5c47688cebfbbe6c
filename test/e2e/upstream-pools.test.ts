// One model on several replicas: lines go to the replica with room, a replica
// that dies is taken out and its lines go to the others, it comes back after
// probes pass, a retryable failure on one replica is retried on another at
// once, lines that share a prefix land on one replica while it has room, and a
// replica that starts listing a model serves it without a restart. Real
// loopback upstream servers throughout; assertions are on outcomes and counts,
// never on elapsed time.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import {
  api,
  assertEchoOutput,
  assertExactlyOnce,
  byCustomId,
  chatLine,
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
import type { TestUpstream } from '../helpers/upstreams.ts';

after(cleanupAll);

const statusOf = async (url: string, key: string, name: string): Promise<Json | undefined> =>
  (await api(`${url}/v1/admin/status`, key)).json.upstreams.find((u: Json) => u.name === name);

/** Which replica answered each body: the system prompt (or user message) each replica was sent. */
const systemPrompts = (upstream: TestUpstream): string[] =>
  upstream.stats.bodies.map((body) => ((body as Json).messages as Json[])[0].content as string);

describe('upstream pools', () => {
  it('three replicas, one killed mid-batch and restarted, one slow: every line once, no error line, no replica over its ceiling', async () => {
    const fast = await startTestUpstream({ kind: 'fast', delayMs: 40 });
    const slow = await startTestUpstream({ kind: 'fast', delayMs: 150 });
    let flaky = await startTestUpstream({ kind: 'fast', delayMs: 40 });
    const flakyPort = Number(new URL(flaky.url).port);
    const flakyInstances = [flaky];
    const h = await startHarness({
      config: {
        upstreams: [
          {
            name: 'vllm',
            models: ['pool-*'],
            initialConcurrency: 2,
            replicas: [
              { name: 'fast', baseUrl: fast.url, maxConcurrency: 2 },
              { name: 'slow', baseUrl: slow.url, maxConcurrency: 2 },
              { name: 'flaky', baseUrl: flaky.url, maxConcurrency: 3, initialConcurrency: 3 },
            ],
          },
        ],
      },
      // Three attempts 20-100 ms apart: without ejection, the killed replica's lines would use them up.
      worker: { maxAttempts: 3, retryBaseDelayMs: 20, retryMaxDelayMs: 100 },
    });
    const ep = endpointOf(h);
    const lines = chatLines(1000, 'pool-model', 'line');
    const created = await submitBatch(ep, lines);
    await pollUntil(() => getBatch(ep, created.id), (batch) => batch.request_counts.completed >= 150, { what: 'some lines done before the kill' });
    assert.ok(flaky.stats.requests > 0, 'the replica to be killed served lines before');

    await flaky.close();
    const ejected = (await pollUntil(() => statusOf(h.url, h.apiKey, 'flaky'), (entry) => entry?.health?.up === false, { what: 'the killed replica ejected' }))!;
    assert.equal(ejected.pool, 'vllm');
    assert.match(ejected.health.reason, /ECONNREFUSED|ECONNRESET|other side closed|socket/i);
    const ready = await api(`${h.url}/readyz`, null);
    assert.equal(ready.status, 200, 'still ready: the other replicas serve');
    assert.match(ready.json.upstreams.flaky, /^unreachable/);
    assert.equal(ready.json.upstreams.fast, 'ok');
    const during = await getBatch(ep, created.id);
    assert.equal(during.request_counts.failed, 0, 'no line failed while a replica was away');
    assert.equal(during.status, 'in_progress', 'lines were left for the restarted replica');

    flaky = await startTestUpstream({ kind: 'fast', delayMs: 40, port: flakyPort });
    flakyInstances.push(flaky);
    const back = (await pollUntil(() => statusOf(h.url, h.apiKey, 'flaky'), (entry) => entry?.health?.up === true, { what: 'the restarted replica re-admitted' }))!;
    assert.ok(back.health.ejections >= 1);

    const batch = await waitForStatus(ep, created.id, 'completed');
    const results = await readResults(ep, batch);
    assertExactlyOnce(lines.map((line) => line.custom_id), results);
    assert.equal(results.errors.length, 0, 'no error line');
    assertEchoOutput('/v1/chat/completions', byCustomId(lines), results.output);
    assert.ok(fast.stats.requests > 0 && slow.stats.requests > 0, 'every replica served');
    assert.ok(flaky.stats.requests > 0, 'the re-admitted replica served again');
    assert.ok(fast.stats.maxInFlight <= 2, `fast saw ${fast.stats.maxInFlight} at once, over its ceiling of 2`);
    assert.ok(slow.stats.maxInFlight <= 2, `slow saw ${slow.stats.maxInFlight} at once, over its ceiling of 2`);
    for (const instance of flakyInstances) assert.ok(instance.stats.maxInFlight <= 3, `flaky saw ${instance.stats.maxInFlight} at once, over its ceiling of 3`);
    assert.ok(fast.stats.requests > slow.stats.requests, 'the replica with more room took more lines');

    const metrics = await api(`${h.url}/metrics`, h.apiKey);
    assert.match(metrics.text, /spool_upstream_ejections_total\{upstream="flaky"\} [1-9]/);
    assert.match(metrics.text, /spool_upstream_up\{upstream="flaky"\} 1/);
    await h.stop();
    await Promise.all([fast.close(), slow.close(), flaky.close()]);
  });

  it('a retryable failure on one replica is retried on another within its attempts', async () => {
    // Every request's first two attempts on "broken" answer 500 then 503; "healthy" answers at once.
    const broken = await startTestUpstream({ kind: 'fail-then-succeed', failuresPerRequest: 1000 });
    const healthy = await startTestUpstream({ kind: 'fast', delayMs: 5 });
    const h = await startHarness({
      config: {
        upstreams: [
          { name: 'broken', baseUrl: broken.url, models: ['same-model'], maxConcurrency: 4, initialConcurrency: 4, sendPriority: true },
          { name: 'healthy', baseUrl: healthy.url, models: ['same-model'], maxConcurrency: 4, initialConcurrency: 4, sendPriority: true },
        ],
      },
      // Long backoff: a retry that waited for it would not be the failover this test is about.
      worker: { maxAttempts: 2, retryBaseDelayMs: 30_000, retryMaxDelayMs: 30_000 },
    });
    const ep = endpointOf(h);
    const lines = chatLines(60, 'same-model', 'failover');
    const created = await submitBatch(ep, lines, { priority: 3 });
    const batch = await waitForStatus(ep, created.id, 'completed');
    const results = await readResults(ep, batch);
    assertExactlyOnce(lines.map((line) => line.custom_id), results);
    assert.equal(results.errors.length, 0, 'every line that failed on "broken" succeeded on "healthy"');
    assert.ok(broken.stats.requests > 0, 'some lines were tried on the broken replica first');
    const failedOver = new Set(broken.stats.bodies.map((body) => ((body as Json).messages as Json[])[0].content));
    const servedByHealthy = new Set(systemPrompts(healthy));
    for (const prompt of failedOver) assert.ok(servedByHealthy.has(prompt), `a line that failed on broken was answered by healthy: ${prompt}`);
    assert.equal(healthy.stats.requests, lines.length, 'healthy answered each line once');
    for (const body of healthy.stats.bodies) assert.equal((body as Json).priority, -3, "the batch's priority goes to the engine, negated");
    const status = await statusOf(h.url, h.apiKey, 'broken');
    assert.equal(status?.health?.up, false, 'five hundreds in a row take a replica of a pool out');
    assert.ok(broken.stats.requests < lines.length, 'once out, it was sent nothing more');
    await h.stop();
    await Promise.all([broken.close(), healthy.close()]);
  });

  it('lines that share a prefix go to one replica while it has room, and spread when it is full', async () => {
    const a = await startTestUpstream({ kind: 'fast', delayMs: 5 });
    const b = await startTestUpstream({ kind: 'fast', delayMs: 5 });
    const roomy = await startHarness({
      config: {
        upstreams: [{ name: 'pool', models: ['*'], maxConcurrency: 128, initialConcurrency: 128, replicas: [{ baseUrl: a.url }, { baseUrl: b.url }] }],
      },
    });
    const prompts = ['You are terse. '.repeat(100), 'You answer in French. '.repeat(100), 'You are a pirate. '.repeat(100), 'You count. '.repeat(100)];
    const withPrefix = (id: string, system: string) =>
      chatLine(id, 'm', { messages: [{ role: 'system', content: system }, { role: 'user', content: `question ${id}` }] });
    const lines = Array.from({ length: 120 }, (_, i) => withPrefix(`p-${i}`, prompts[i % prompts.length]));
    let ep = endpointOf(roomy);
    let batch = await waitForStatus(ep, (await submitBatch(ep, lines)).id, 'completed');
    assertExactlyOnce(lines.map((line) => line.custom_id), await readResults(ep, batch));
    for (const prompt of prompts) {
      const onA = systemPrompts(a).filter((p) => p === prompt).length;
      const onB = systemPrompts(b).filter((p) => p === prompt).length;
      assert.equal(onA + onB, 30);
      assert.ok(onA === 0 || onB === 0, `every line of a prefix on one replica while it has room (${onA} on a, ${onB} on b)`);
    }
    const hits = await statusOf(roomy.url, roomy.apiKey, 'pool-1');
    const hitsB = await statusOf(roomy.url, roomy.apiKey, 'pool-2');
    const spilled = (hits?.affinity?.spilled ?? 0) + (hitsB?.affinity?.spilled ?? 0);
    assert.equal(spilled, 0, 'nothing spilled');
    await roomy.stop();

    // A home replica with room for two at a time: the rest of its prefix spills to the other.
    const c = await startTestUpstream({ kind: 'fast', delayMs: 50 });
    const d = await startTestUpstream({ kind: 'fast', delayMs: 50 });
    const tight = await startHarness({
      config: {
        upstreams: [{ name: 'tight', models: ['*'], maxConcurrency: 2, initialConcurrency: 2, replicas: [{ baseUrl: c.url }, { baseUrl: d.url }] }],
      },
    });
    ep = endpointOf(tight);
    const sameLines = Array.from({ length: 40 }, (_, i) => withPrefix(`s-${i}`, prompts[0]));
    batch = await waitForStatus(ep, (await submitBatch(ep, sameLines)).id, 'completed');
    assertExactlyOnce(sameLines.map((line) => line.custom_id), await readResults(ep, batch));
    assert.ok(c.stats.requests > 0 && d.stats.requests > 0, `a full home spills to the next replica (${c.stats.requests} and ${d.stats.requests})`);
    assert.ok(c.stats.maxInFlight <= 2 && d.stats.maxInFlight <= 2, 'and no replica goes over its ceiling');
    const placements = [await statusOf(tight.url, tight.apiKey, 'tight-1'), await statusOf(tight.url, tight.apiKey, 'tight-2')];
    assert.ok(placements.some((entry) => (entry?.affinity?.spilled ?? 0) > 0), 'the admin status counts the spills');
    assert.ok(placements.some((entry) => (entry?.affinity?.home ?? 0) > 0), 'and the lines placed at home');
    await tight.stop();
    await Promise.all([a.close(), b.close(), c.close(), d.close()]);
  });

  it('with models "auto", a model goes only to the replicas that list it', async () => {
    const listedByOne = ['base-model'];
    const listedByOther = ['base-model', 'new-model'];
    const one = await startTestUpstream({ kind: 'fast', listModels: () => listedByOne });
    const other = await startTestUpstream({ kind: 'fast', listModels: () => listedByOther });
    const h = await startHarness({
      config: { upstreams: [{ name: 'auto', models: 'auto', replicas: [{ name: 'one', baseUrl: one.url }, { name: 'other', baseUrl: other.url }] }] },
    });
    const ep = endpointOf(h);
    const lines = chatLines(30, 'new-model', 'new');
    const batch = await waitForStatus(ep, (await submitBatch(ep, lines)).id, 'completed');
    const results = await readResults(ep, batch);
    assertExactlyOnce(lines.map((line) => line.custom_id), results);
    assert.equal(results.errors.length, 0);
    assert.equal(other.stats.requests, 30, 'the replica that lists it served every line');
    assert.equal(one.stats.requests, 0, 'the one that does not list it served none');
    await h.stop();
    await Promise.all([one.close(), other.close()]);
  });

  it('real-time requests go to a replica that is up, failing over from one that does not answer', async () => {
    const dead = await startTestUpstream({ kind: 'fast' });
    const deadUrl = dead.url;
    await dead.close();
    const live = await startTestUpstream({ kind: 'fast' });
    const h = await startHarness({
      config: { upstreams: [{ name: 'rt', models: ['rt-*'], affinity: 'none', replicas: [{ baseUrl: deadUrl }, { baseUrl: live.url }] }] },
    });
    for (let i = 0; i < 6; i++) {
      const answer = await api(`${h.url}/v1/chat/completions`, h.apiKey, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'rt-model', messages: [{ role: 'user', content: `hello ${i}` }] }),
      });
      assert.equal(answer.status, 200, `request ${i}: ${answer.text}`);
    }
    assert.equal(live.stats.requests, 6);
    await h.stop();
    await live.close();
  });
});
