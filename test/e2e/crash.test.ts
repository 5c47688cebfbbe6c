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

/** Where a batch's lines are once the server is down: its chunks (who holds them) and what their committed segments hold. */
async function lineStates(dataDir: string, batchId: string) {
  const store = await openStore({ dataDir });
  try {
    const db = store.sql.db;
    const chunks = await db.selectFrom('chunks').select(['chunk', 'state', 'lease_owner', 'line_count', 'succeeded', 'failed']).where('batch_id', '=', batchId).orderBy('chunk').execute();
    const segments = await db.selectFrom('segments').select(['chunk', 'seq', 'output_lines', 'error_lines']).where('batch_id', '=', batchId).execute();
    const sum = (rows: Record<string, unknown>[], key: string) => rows.reduce((n, row) => n + Number(row[key]), 0);
    return {
      chunks,
      lines: sum(chunks, 'line_count'),
      /** Lines recorded as finished (in a committed segment). */
      succeeded: sum(segments, 'output_lines'),
      failed: sum(segments, 'error_lines'),
      /** Per-line rows of the first design: none for a batch of this one. */
      requestRows: (await db.selectFrom('requests').select('line').where('batch_id', '=', batchId).execute()).length,
    };
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

    const states = await lineStates(dataDir, created.id);
    assert.equal(states.lines, lines.length);
    assert.equal(states.requestRows, 0);
    assert.equal(states.chunks.filter((c) => c.state === 'running').length, 0, 'nothing is left running under a lease');
    assert.equal(states.chunks.filter((c) => c.lease_owner !== null).length, 0);
    assert.equal(states.failed, 0, 'a stop fails nothing');
    assert.equal(states.chunks.reduce((n, c) => n + Number(c.failed), 0), 0);
    assert.ok(states.succeeded > 0, `the requests in flight were let finish and recorded: ${JSON.stringify(states)}`);
    assert.equal(states.chunks.reduce((n, c) => n + Number(c.succeeded), 0), states.succeeded, 'and counted on their chunks');
    assert.ok(states.succeeded < lines.length, `the rest was not run: ${JSON.stringify(states)}`);
    assert.ok(states.chunks.some((c) => c.state === 'pending'), `the rest was handed back: ${JSON.stringify(states)}`);

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
    const states = await lineStates(dataDir, created.id);
    assert.equal(states.lines, lines.length);
    assert.equal(states.requestRows, 0);
    assert.deepEqual(
      states.chunks.filter((c) => c.state !== 'pending' || c.lease_owner !== null),
      [],
      'every chunk is pending again, owned by nobody',
    );
    assert.deepEqual([states.succeeded, states.failed], [0, 0], 'no line was recorded: each is handed back, none failed by the stop');
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
