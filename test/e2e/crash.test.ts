// Crashes and stops of a real `spool serve` child process. A 3,000-line batch
// runs against a slow-ish loopback upstream while the server is SIGKILLed at
// random moments and restarted on the same data dir, until the batch
// completes: every custom_id must then be in the output or error file exactly
// once, with a valid answer. SIGTERM stops the server gracefully, within a
// bounded time even when the upstream never answers, and hands back the work
// it held so a restart finishes it.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, describe, it } from 'node:test';
import { openStore } from '../../src/store/index.ts';
import {
  assertEchoOutput,
  assertExactlyOnce,
  byCustomId,
  chatLines,
  cleanupAll,
  getBatch,
  HARNESS_API_KEY,
  makeTempDir,
  pollUntil,
  readResults,
  sleep,
  startChildSpool,
  startTestUpstream,
  submitBatch,
  waitForExit,
  waitForStatus,
  type ChildSpool,
  type Endpoint,
  type Json,
} from '../helpers/runner-harness.ts';

const CHAT = '/v1/chat/completions';
const TERMINAL = ['completed', 'failed', 'expired', 'cancelled'];

after(cleanupAll);

function serverConfig(upstreamUrl: string, worker: Json = {}): Json {
  return {
    upstreams: [{ name: 'loop', baseUrl: upstreamUrl, models: ['loop-*'], maxConcurrency: 4, initialConcurrency: 4 }],
    // A lapsed lease is what hands a killed server's requests to the next one: keep it short.
    worker: { leaseSeconds: 1, pollIntervalMs: 50, retryBaseDelayMs: 20, retryMaxDelayMs: 200, maxAttempts: 10, ...worker },
    billing: { prices: [{ models: ['loop-*'], inputPerMillion: 3, outputPerMillion: 15 }] },
  };
}

const endpoint = (child: ChildSpool): Endpoint => ({ base: child.openai, key: HARNESS_API_KEY });
const doneOf = (batch: Json): number => batch.request_counts.completed + batch.request_counts.failed;

async function requestStates(dataDir: string, batchId: string) {
  const store = await openStore({ dataDir });
  try {
    return await store.sql.db.selectFrom('requests').select(['custom_id', 'state', 'lease_owner']).where('batch_id', '=', batchId).execute();
  } finally {
    await store.close();
  }
}

describe('crashes and stops of a spool serve process', () => {
  it('SIGKILLed 3+ times at random moments mid-run and restarted: every line ends up exactly once', async () => {
    const LINES = 3000;
    // 4 at a time, 5 ms each plus the round trip: the run takes several seconds of server
    // time, while the kills below take at most about one second of it each.
    const upstream = await startTestUpstream({ kind: 'slow', delayMs: 5 });
    const dataDir = makeTempDir('spool-crash-');
    const config = serverConfig(upstream.url);
    let child = await startChildSpool({ dataDir, config });
    const lines = chatLines(LINES, 'loop-llama', 'line');
    const created = await submitBatch(endpoint(child), lines, { fileName: 'crash.jsonl' });

    const kills = 3 + Math.floor(Math.random() * 2);
    const log: Json[] = [];
    let lastDone = 0;
    for (let i = 0; i < kills; i++) {
      // The first kill waits for the run to start; later ones may land anywhere, validation and finalization included.
      if (i === 0) await waitForStatus(endpoint(child), created.id, ['in_progress']);
      const delayMs = 100 + Math.floor(Math.random() * 900);
      await sleep(delayMs);
      const before = await getBatch(endpoint(child), created.id);
      assert.ok(!TERMINAL.includes(before.status), `the batch finished (${before.status}) before kill ${i + 1} of ${kills}: ${JSON.stringify(log)}`);
      assert.ok(doneOf(before) >= lastDone, `progress acknowledged before a crash is never lost: ${doneOf(before)} < ${lastDone}`);
      lastDone = doneOf(before);
      await child.kill();
      log.push({ kill: i + 1, afterMs: delayMs, status: before.status, done: lastDone });
      child = await startChildSpool({ dataDir, config });
    }

    const batch = await waitForStatus(endpoint(child), created.id, 'completed', 180_000);
    const results = await readResults(endpoint(child), batch);
    assertExactlyOnce(
      lines.map((l) => l.custom_id),
      results,
    );
    assert.equal(results.errors.length, 0, `no line failed (kills: ${JSON.stringify(log)}): ${JSON.stringify(results.errors[0])}`);
    assertEchoOutput(CHAT, byCustomId(lines), results.output);
    for (const line of results.output) assert.match(line.response.request_id, /^req_test_\d+$/);
    assert.ok(upstream.stats.requests >= LINES, 'every line reached the upstream at least once');
    assert.equal(batch.usage.input_tokens, results.output.reduce((sum, l) => sum + l.response.body.usage.prompt_tokens, 0));
    // Cost counted in the transactions that record the lines: each line once, whatever the kills interrupted.
    const nanos = results.output.reduce((sum, l) => sum + l.response.body.usage.prompt_tokens * 3000 + l.response.body.usage.completion_tokens * 15_000, 0);
    assert.deepEqual(batch.cost, { amount: nanos / 1e9, currency: 'USD' });
    const usage = (await (await fetch(`${child.openai}/usage`, { headers: { authorization: `Bearer ${HARNESS_API_KEY}` } })).json()) as Json;
    assert.equal(usage.data.reduce((sum: number, row: Json) => sum + row.requests, 0), LINES, 'usage counts each line once');
    assert.ok(log.length >= 3);
    await child.kill();
  });

  it('SIGTERM with requests in flight: they finish, the rest is handed back, the process exits 0, and a restart completes the batch', async () => {
    const upstream = await startTestUpstream({ kind: 'slow', delayMs: 800 });
    const dataDir = makeTempDir('spool-term-');
    const config = serverConfig(upstream.url);
    const child = await startChildSpool({ dataDir, config });
    const lines = chatLines(12, 'loop-llama', 'term');
    const created = await submitBatch(endpoint(child), lines, { fileName: 'term.jsonl' });
    await pollUntil(
      async () => upstream.stats.inFlight,
      (n) => n > 0,
      { what: 'requests in flight upstream' },
    );

    child.child.kill('SIGTERM');
    const exit = await waitForExit(child, 45_000);
    assert.deepEqual(exit, { code: 0, signal: null }, `a graceful stop exits 0; output: ${child.output()}`);

    const states = await requestStates(dataDir, created.id);
    assert.equal(states.filter((r) => r.state === 'running').length, 0, 'nothing is left running under a lease');
    assert.equal(states.filter((r) => r.lease_owner !== null).length, 0);
    assert.equal(states.filter((r) => r.state === 'failed').length, 0, 'a stop fails nothing');
    assert.ok(states.some((r) => r.state === 'succeeded'), 'the requests in flight were let finish and recorded');
    assert.ok(states.some((r) => r.state === 'pending'), 'the rest was handed back');

    const again = await startChildSpool({ dataDir, config });
    const batch = await waitForStatus(endpoint(again), created.id, 'completed');
    const results = await readResults(endpoint(again), batch);
    assertExactlyOnce(
      lines.map((l) => l.custom_id),
      results,
    );
    assert.equal(results.errors.length, 0);
    assertEchoOutput(CHAT, byCustomId(lines), results.output);
    assert.equal(upstream.stats.requests, lines.length, 'a graceful stop sends nothing twice');
    await again.kill();
  });

  it('SIGTERM while the upstream never answers: the stop is still bounded, exits 0 and hands every request back', async () => {
    const upstream = await startTestUpstream({ kind: 'hang' });
    const dataDir = makeTempDir('spool-hang-');
    const child = await startChildSpool({ dataDir, config: serverConfig(upstream.url) });
    const lines = chatLines(10, 'loop-llama', 'hang');
    const created = await submitBatch(endpoint(child), lines, { fileName: 'hang.jsonl' });
    await pollUntil(
      async () => upstream.stats.inFlight,
      (n) => n >= 4,
      { what: 'requests hanging upstream' },
    );

    child.child.kill('SIGTERM');
    // The runner's grace period for requests in flight is 10 s; the guard only turns a hang into a failure.
    const exit = await waitForExit(child, 45_000);
    assert.deepEqual(exit, { code: 0, signal: null }, `a graceful stop exits 0; output: ${child.output()}`);
    const states = await requestStates(dataDir, created.id);
    assert.equal(states.length, lines.length);
    assert.deepEqual(
      states.filter((r) => r.state !== 'pending' || r.lease_owner !== null),
      [],
      'every request is pending again, owned by nobody',
    );
  });

  it('SIGTERM while a client holds a connection it never sent a request on: the stop still ends, exit 0', async () => {
    const dataDir = makeTempDir('spool-silent-');
    const child = await startChildSpool({ dataDir, config: {} });
    // What a browser's speculative preconnect leaves: neither a request in flight nor an idle keep-alive
    // connection, so the HTTP server's close() waited on it for as long as the client kept it open.
    const url = new URL(child.url);
    const silent = connect(Number(url.port), url.hostname);
    silent.on('error', () => undefined);
    await new Promise((resolve) => silent.once('connect', resolve));
    try {
      child.child.kill('SIGTERM');
      // The HTTP grace period is 10 s; the guard only turns a hang into a failure.
      const exit = await waitForExit(child, 45_000);
      assert.deepEqual(exit, { code: 0, signal: null }, `a graceful stop exits 0; output: ${child.output()}`);
    } finally {
      silent.destroy();
    }
  });
});
