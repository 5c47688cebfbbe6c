// The scale-out shape from DESIGN.md on PostgreSQL: an API-only process
// (`spool serve --no-worker`) and two `spool worker` processes share one
// database and one blob directory. Workers are SIGKILLed at random moments
// and restarted; every line must still end up exactly once. Also the
// runner's PostgreSQL write paths (retries, failures, successes recorded one
// statement at a time, unlike SQLite's grouped successes) in-process.
// Skipped with SPOOL_TEST_SKIP_POSTGRES=1, like the store contract's
// PostgreSQL half; otherwise an unreachable PostgreSQL fails loudly.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import {
  assertEchoOutput,
  assertExactlyOnce,
  byCustomId,
  chatLines,
  cleanupAll,
  createPostgresDatabase,
  endpointOf,
  getBatch,
  HARNESS_API_KEY,
  makeTempDir,
  readResults,
  SKIP_POSTGRES,
  sleep,
  startChildSpool,
  startChildWorker,
  startHarness,
  startTestUpstream,
  submitBatch,
  waitForStatus,
  type ChildProcessHandle,
  type Endpoint,
  type Json,
} from '../helpers/runner-harness.ts';
import { canonicalBodyKey } from '../helpers/upstreams.ts';

const CHAT = '/v1/chat/completions';
const TERMINAL = ['completed', 'failed', 'expired', 'cancelled'];

after(cleanupAll);

describe('scale-out on PostgreSQL', { skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : false }, () => {
  it('an API process and two workers, the workers SIGKILLed and restarted mid-run: every line exactly once', async () => {
    const LINES = 2000;
    const databaseUrl = await createPostgresDatabase();
    // Two workers, 2 slots each, 10 ms a request: the run outlasts three kill-and-restart cycles
    // (the surviving worker carries on while the other restarts).
    const upstream = await startTestUpstream({ kind: 'slow', delayMs: 10 });
    const dataDir = makeTempDir('spool-scale-');
    const config: Json = {
      upstreams: [{ name: 'loop', baseUrl: upstream.url, models: ['loop-*'], maxConcurrency: 2, initialConcurrency: 2 }],
      worker: { leaseSeconds: 1, pollIntervalMs: 50, retryBaseDelayMs: 20, retryMaxDelayMs: 200, maxAttempts: 10, claimBatchSize: 16 },
    };
    const api = await startChildSpool({ dataDir, config, databaseUrl, extraArgs: ['--no-worker'] });
    const ep: Endpoint = { base: api.openai, key: HARNESS_API_KEY };
    const workers: ChildProcessHandle[] = [await startChildWorker({ dataDir, config, databaseUrl }), await startChildWorker({ dataDir, config, databaseUrl })];

    const lines = chatLines(LINES, 'loop-llama', 'line');
    const created = await submitBatch(ep, lines, { fileName: 'scale.jsonl' });
    await waitForStatus(ep, created.id, ['in_progress']);
    const log: Json[] = [];
    let lastDone = 0;
    for (let i = 0; i < 3; i++) {
      const delayMs = 150 + Math.floor(Math.random() * 700);
      await sleep(delayMs);
      const before = await getBatch(ep, created.id);
      assert.ok(!TERMINAL.includes(before.status), `the batch finished (${before.status}) before kill ${i + 1}: ${JSON.stringify(log)}`);
      const done = before.request_counts.completed + before.request_counts.failed;
      assert.ok(done >= lastDone, 'progress is never lost');
      lastDone = done;
      const victim = Math.floor(Math.random() * workers.length);
      await workers[victim].kill();
      log.push({ kill: i + 1, worker: victim, afterMs: delayMs, done });
      workers[victim] = await startChildWorker({ dataDir, config, databaseUrl });
    }

    const batch = await waitForStatus(ep, created.id, 'completed', 180_000);
    const results = await readResults(ep, batch);
    assertExactlyOnce(
      lines.map((l) => l.custom_id),
      results,
    );
    assert.equal(results.errors.length, 0, `no line failed (kills: ${JSON.stringify(log)}): ${JSON.stringify(results.errors[0])}`);
    assertEchoOutput(CHAT, byCustomId(lines), results.output);
    assert.ok(upstream.stats.requests >= LINES);
    // Two workers with 2 slots each: the upstream saw more than one worker's worth at once.
    assert.ok(upstream.stats.maxInFlight > 2, `both workers ran requests (max in flight ${upstream.stats.maxInFlight})`);
    assert.ok(upstream.stats.maxInFlight <= 4, `never more than 2 x maxConcurrency (${upstream.stats.maxInFlight})`);
  });

  it('two workers, no crashes: each line is sent upstream once (leases hold under contention)', async () => {
    const LINES = 1500;
    const databaseUrl = await createPostgresDatabase();
    const upstream = await startTestUpstream({ kind: 'slow', delayMs: 5 });
    const dataDir = makeTempDir('spool-scale-');
    const config: Json = {
      upstreams: [{ name: 'loop', baseUrl: upstream.url, models: ['loop-*'], maxConcurrency: 3, initialConcurrency: 3 }],
      // Short leases renewed three times a second: a heartbeat that blocks shows up as lapsed leases.
      worker: { leaseSeconds: 1, pollIntervalMs: 50, retryBaseDelayMs: 20, retryMaxDelayMs: 200, claimBatchSize: 16 },
    };
    const api = await startChildSpool({ dataDir, config, databaseUrl, extraArgs: ['--no-worker'] });
    const ep: Endpoint = { base: api.openai, key: HARNESS_API_KEY };
    await startChildWorker({ dataDir, config, databaseUrl });
    await startChildWorker({ dataDir, config, databaseUrl });
    const lines = chatLines(LINES, 'loop-llama', 'calm');
    const created = await submitBatch(ep, lines, { fileName: 'calm.jsonl' });
    const batch = await waitForStatus(ep, created.id, 'completed', 60_000);
    const results = await readResults(ep, batch);
    assertExactlyOnce(
      lines.map((l) => l.custom_id),
      results,
    );
    assert.equal(results.errors.length, 0);
    // A lease that lapsed while its worker was alive (a stuck heartbeat) shows as a line sent twice.
    assert.equal(upstream.stats.requests, LINES, 'no line was taken over from a live worker and sent again');
  });

  it('in-process on PostgreSQL: retries, upstream 400s and successes are each recorded once', async () => {
    const databaseUrl = await createPostgresDatabase();
    const h = await startHarness({
      config: { databaseUrl },
      upstreams: [
        { name: 'flaky', kind: 'fail-then-succeed', failuresPerRequest: 2, models: ['flaky-*'], maxConcurrency: 4 },
        { name: 'strict', kind: 'bad-request', models: ['bad'], maxConcurrency: 4 },
      ],
    });
    const ep = endpointOf(h);
    const flaky = chatLines(20, 'flaky-llama', 'flaky');
    const bad = chatLines(5, 'bad', 'bad');
    const echo = chatLines(20, 'echo', 'echo');
    const lines = [...flaky, ...bad, ...echo];
    const batch = await waitForStatus(ep, (await submitBatch(ep, lines)).id, 'completed');
    const results = await readResults(ep, batch);
    assertExactlyOnce(
      lines.map((l) => l.custom_id),
      results,
    );
    assertEchoOutput(CHAT, byCustomId([...flaky, ...echo]), results.output);
    assert.deepEqual(results.errors.map((l) => l.custom_id).sort(), bad.map((l) => l.custom_id).sort());
    for (const line of results.errors) assert.equal(line.response.status_code, 400);
    for (const line of flaky) assert.equal(h.upstreams.flaky.stats.byBody.get(canonicalBodyKey(line.body)), 3);
    const rows = await h.app.store.sql.db.selectFrom('requests').select(['custom_id', 'attempts']).where('batch_id', '=', batch.id).execute();
    for (const row of rows) assert.equal(row.attempts, row.custom_id.startsWith('flaky') ? 3 : 1, `attempts of ${row.custom_id}`);
    const usage = results.output.reduce((sum, l) => sum + l.response.body.usage.prompt_tokens, 0);
    assert.equal(batch.usage.input_tokens, usage);
    await h.stop();
  });
});
