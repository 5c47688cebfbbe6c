// The scale-out shape from DESIGN.md on PostgreSQL: two API-only processes
// (`spool serve --no-worker`) and three `spool worker` processes share one
// database and one S3 bucket (s3rver on loopback). Workers are SIGKILLed at random moments
// and restarted; every line must still end up exactly once, and the upstream
// never sees more than its one global ceiling. Racing finalizers and expiry
// sweeps in two processes write one set of files. Also the
// runner's PostgreSQL write paths (retries, failures, successes recorded one
// statement at a time, unlike SQLite's grouped successes) in-process.
// Skipped with SPOOL_TEST_SKIP_POSTGRES=1, like the store contract's
// PostgreSQL half; otherwise an unreachable PostgreSQL fails loudly.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { runLifecycleSweeps } from '../../src/batches/sweeps.ts';
import { openStore } from '../../src/store/index.ts';
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
  lifecycleContext,
  makeTempDir,
  parseJsonl,
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
import { startS3rver } from '../helpers/s3rver.ts';
import { canonicalBodyKey } from '../helpers/upstreams.ts';
import { unfinalize } from '../helpers/unfinalize.ts';

const CHAT = '/v1/chat/completions';
const TERMINAL = ['completed', 'failed', 'expired', 'cancelled'];

after(cleanupAll);

describe('scale-out on PostgreSQL', { skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : false }, () => {
  it('two API processes and three workers on PostgreSQL + S3, workers SIGKILLed and restarted mid-run: every line exactly once, the global ceiling holds', async () => {
    const LINES = 3000;
    const CEILING = 4;
    const databaseUrl = await createPostgresDatabase();
    const s3 = await startS3rver();
    after(() => s3.close());
    const bucket = await s3.createBucket('spool-scale');
    const { endpoint, region, accessKeyId, secretAccessKey, forcePathStyle } = s3.storeOptions(bucket);
    // 10 ms a request and 4 slots for everyone: the run outlasts three kill-and-restart cycles.
    const upstream = await startTestUpstream({ kind: 'slow', delayMs: 10 });
    const config: Json = {
      blobs: { kind: 's3', s3: { endpoint, region, bucket, accessKeyId, secretAccessKey, forcePathStyle } },
      upstreams: [{ name: 'loop', baseUrl: upstream.url, models: ['loop-*'], maxConcurrency: CEILING, initialConcurrency: CEILING }],
      worker: { leaseSeconds: 1, pollIntervalMs: 50, retryBaseDelayMs: 20, retryMaxDelayMs: 200, maxAttempts: 10, claimBatchSize: 16 },
    };
    // Every process has a data directory of its own: all they share is the database and the bucket.
    const dataDir = () => makeTempDir('spool-scale-');
    const apis = [
      await startChildSpool({ dataDir: dataDir(), config, databaseUrl, extraArgs: ['--no-worker'] }),
      await startChildSpool({ dataDir: dataDir(), config, databaseUrl, extraArgs: ['--no-worker'] }),
    ];
    // Uploaded and created through one API process, followed and downloaded through the other.
    const submitVia: Endpoint = { base: apis[0].openai, key: HARNESS_API_KEY };
    const ep: Endpoint = { base: apis[1].openai, key: HARNESS_API_KEY };
    const workers: ChildProcessHandle[] = [];
    for (let i = 0; i < 3; i++) workers.push(await startChildWorker({ dataDir: dataDir(), config, databaseUrl }));

    const lines = chatLines(LINES, 'loop-llama', 'line');
    const created = await submitBatch(submitVia, lines, { fileName: 'scale.jsonl' });
    await waitForStatus(ep, created.id, ['in_progress']);
    const log: Json[] = [];
    let lastDone = 0;
    for (let i = 0; i < 3; i++) {
      const delayMs = 300 + Math.floor(Math.random() * 700);
      await sleep(delayMs);
      const before = await getBatch(ep, created.id);
      assert.ok(!TERMINAL.includes(before.status), `the batch finished (${before.status}) before kill ${i + 1}: ${JSON.stringify(log)}`);
      const done = before.request_counts.completed + before.request_counts.failed;
      assert.ok(done >= lastDone, 'progress is never lost');
      lastDone = done;
      const victim = Math.floor(Math.random() * workers.length);
      await workers[victim].kill();
      log.push({ kill: i + 1, worker: victim, afterMs: delayMs, done });
      workers[victim] = await startChildWorker({ dataDir: dataDir(), config, databaseUrl });
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
    // maxConcurrency is one ceiling for all three workers together (held in PostgreSQL), not one per worker.
    assert.ok(upstream.stats.maxInFlight <= CEILING, `never more than the global ceiling of ${CEILING} at once (saw ${upstream.stats.maxInFlight})`);
    assert.ok(upstream.stats.maxInFlight > 1, `requests ran concurrently (max in flight ${upstream.stats.maxInFlight})`);
    // The input, output and error files are objects in the bucket, none on any process's disk.
    const objects = readdirSync(join(s3.directory, bucket), { recursive: true }).map(String);
    for (const id of [created.input_file_id, batch.output_file_id, batch.error_file_id]) {
      assert.ok(objects.some((name) => name.includes(id) || name.includes(created.id)), `${id} is stored in the bucket`);
    }
  });

  it('two processes racing to finalize and to expire the same batches produce one set of files', async () => {
    const databaseUrl = await createPostgresDatabase();
    const h = await startHarness({
      config: { databaseUrl },
      upstreams: [{ name: 'stuck', kind: 'hang', models: ['stuck'], maxConcurrency: 2 }],
    });
    const ep = endpointOf(h);
    const doneLines = [...chatLines(30, 'echo', 'done'), ...chatLines(3, 'nobody-serves-this', 'unserved')];
    const done = await readResults(ep, await waitForStatus(ep, (await submitBatch(ep, doneLines)).id, 'completed'));
    const stuckLines = chatLines(20, 'stuck', 'stuck');
    const stuck = await submitBatch(ep, stuckLines);
    await waitForStatus(ep, stuck.id, 'in_progress');
    await h.stop();

    // Two "processes": separate stores, each with its own connection pool, on the same database.
    const stores = [await openStore({ dataDir: h.dataDir, databaseUrl }), await openStore({ dataDir: h.dataDir, databaseUrl })];
    try {
      const db = stores[0].sql.db;
      // The completed batch back to where a finalizer that died before its commit leaves it; the other past its deadline.
      await unfinalize(stores[0], done.batch.id, done.outputText, done.errorText);
      await db.updateTable('batches').set({ deadline_at: Date.now() - 1000, lease_owner: null, lease_expires_at: null }).where('id', '=', stuck.id).execute();

      const contexts = stores.map((store, i) => lifecycleContext(store, h.config, `racer-${i}`));
      for (let round = 0; round < 20; round++) {
        const changed = await Promise.all(contexts.map((ctx) => runLifecycleSweeps(ctx)));
        if (!changed.some(Boolean)) break;
      }
      assert.deepEqual(await Promise.all(contexts.map((ctx) => runLifecycleSweeps(ctx))), [false, false], 'nothing is left to do');

      const readBlob = async (key: string) => {
        const chunks: Buffer[] = [];
        for await (const chunk of await stores[1].blobs.read(key)) chunks.push(chunk as Buffer);
        return Buffer.concat(chunks).toString('utf8');
      };
      for (const [id, status] of [
        [done.batch.id, 'completed'],
        [stuck.id, 'expired'],
      ] as const) {
        const row = await db.selectFrom('batches').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
        assert.equal(row.status, status);
        const files = await db.selectFrom('files').selectAll().where('batch_id', '=', id).execute();
        assert.equal(files.length, 2, `one output and one error file for the ${status} batch, not one per racer`);
        assert.deepEqual(new Set(files.map((f) => f.id)), new Set([row.output_file_id, row.error_file_id]));
        const errorsFile = files.find((f) => f.id === row.error_file_id)!;
        const errors = parseJsonl(await readBlob(errorsFile.blob_key!));
        if (status === 'completed') {
          const outputFile = files.find((f) => f.id === row.output_file_id)!;
          assert.equal(await readBlob(outputFile.blob_key!), done.outputText, 'the output is written again, unchanged');
          assert.equal(errors.length, 3);
        } else {
          assert.deepEqual(errors.map((l) => l.custom_id).sort(), stuckLines.map((l) => l.custom_id).sort(), 'every line once, as batch_expired');
          for (const line of errors) assert.equal(line.error.code, 'batch_expired');
          assert.equal(row.request_failed, stuckLines.length);
        }
      }
    } finally {
      await Promise.all(stores.map((store) => store.close()));
    }
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

  it('a pool of two replicas under two workers: each replica has its own global ceiling, and both hold', async () => {
    // Few lines: slots pass between two workers at their reconcile ticks (250 ms), so a ceiling this small runs
    // far below its rate; what is measured here is that it holds.
    const LINES = 200;
    const databaseUrl = await createPostgresDatabase();
    const a = await startTestUpstream({ kind: 'slow', delayMs: 20 });
    const b = await startTestUpstream({ kind: 'slow', delayMs: 20 });
    const dataDir = makeTempDir('spool-scale-');
    const config: Json = {
      upstreams: [
        {
          name: 'pool',
          models: ['loop-*'],
          initialConcurrency: 3,
          replicas: [
            { name: 'a', baseUrl: a.url, maxConcurrency: 3 },
            { name: 'b', baseUrl: b.url, maxConcurrency: 2, initialConcurrency: 2 },
          ],
        },
      ],
      worker: { pollIntervalMs: 50, claimBatchSize: 16 },
    };
    const api = await startChildSpool({ dataDir, config, databaseUrl, extraArgs: ['--no-worker'] });
    const ep: Endpoint = { base: api.openai, key: HARNESS_API_KEY };
    await startChildWorker({ dataDir, config, databaseUrl });
    await startChildWorker({ dataDir, config, databaseUrl });
    const lines = chatLines(LINES, 'loop-llama', 'pooled');
    const batch = await waitForStatus(ep, (await submitBatch(ep, lines, { fileName: 'pooled.jsonl' })).id, 'completed', 60_000);
    const results = await readResults(ep, batch);
    assertExactlyOnce(
      lines.map((l) => l.custom_id),
      results,
    );
    assert.equal(results.errors.length, 0);
    assert.equal(a.stats.requests + b.stats.requests, LINES, 'each line sent once, to one replica');
    assert.ok(a.stats.maxInFlight <= 3, `replica a saw ${a.stats.maxInFlight} at once from both workers, over its ceiling of 3`);
    assert.ok(b.stats.maxInFlight <= 2, `replica b saw ${b.stats.maxInFlight} at once from both workers, over its ceiling of 2`);
    assert.ok(a.stats.maxInFlight > 1 && b.stats.requests > 0, 'both replicas served, concurrently');
    await Promise.all([a.close(), b.close()]);
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
    // Retries as the segments recorded them, per model: two per flaky line (three attempts), none for the others.
    const segments = await h.app.store.sql.db.selectFrom('segments').select('stats').where('batch_id', '=', batch.id).execute();
    const retries = new Map<string, number>();
    for (const { stats } of segments) {
      for (const [model, [, , n]] of Object.entries((JSON.parse(stats) as { models: Record<string, [number, number, number]> }).models)) retries.set(model, (retries.get(model) ?? 0) + n);
    }
    assert.deepEqual(Object.fromEntries(retries), { 'flaky-llama': 2 * flaky.length, bad: 0, echo: 0 });
    const usage = results.output.reduce((sum, l) => sum + l.response.body.usage.prompt_tokens, 0);
    assert.equal(batch.usage.input_tokens, usage);
    await h.stop();
  });
});
