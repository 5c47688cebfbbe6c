// A dead process's work goes to the others without waiting out its lease.
// Every lease here is 10 minutes, longer than the test may run: a batch that
// completes after its worker was SIGKILLed can only have done so because the
// death was noticed and what the dead process held (lines, ceiling slots) was
// handed back. Asserted on outcomes and on who reaped whom, never on time.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import {
  assertEchoOutput,
  assertExactlyOnce,
  byCustomId,
  chatLines,
  cleanupAll,
  createPostgresDatabase,
  getBatch,
  HARNESS_API_KEY,
  makeTempDir,
  pollUntil,
  readResults,
  SKIP_POSTGRES,
  startChildSpool,
  startChildWorker,
  startTestUpstream,
  submitBatch,
  waitForStatus,
  type Endpoint,
  type Json,
} from '../helpers/runner-harness.ts';
import { startS3rver } from '../helpers/s3rver.ts';

const CHAT = '/v1/chat/completions';
const LONG_LEASE = { leaseSeconds: 600, pollIntervalMs: 50 };

after(cleanupAll);

/** The reaps a process logged: who it found dead, and why. */
function reapsIn(output: string): Json[] {
  return output
    .split('\n')
    .filter((line) => line.includes('found a dead Spool process'))
    .map((line) => JSON.parse(line) as Json);
}

describe('a process that dies', () => {
  it('spool serve SIGKILLed mid-batch and restarted on its SQLite data dir takes over its leases at start-up', async () => {
    const upstream = await startTestUpstream({ kind: 'slow', delayMs: 20 });
    const config: Json = {
      upstreams: [{ name: 'slow', baseUrl: upstream.url, models: ['slow-*'], maxConcurrency: 8, initialConcurrency: 8 }],
      worker: LONG_LEASE,
    };
    const dataDir = makeTempDir('spool-liveness-');
    const first = await startChildSpool({ dataDir, config });
    const ep: Endpoint = { base: first.openai, key: HARNESS_API_KEY };
    const lines = chatLines(600, 'slow-model', 'line');
    const created = await submitBatch(ep, lines, { fileName: 'liveness.jsonl' });
    const midway = await pollUntil(
      () => getBatch(ep, created.id),
      (batch) => batch.request_counts.completed >= 50,
      { what: 'some lines done before the kill' },
    );
    assert.equal(midway.status, 'in_progress');
    await first.kill();

    const second = await startChildSpool({ dataDir, config, env: { SPOOL_LOG_LEVEL: 'info' } });
    const ep2: Endpoint = { base: second.openai, key: HARNESS_API_KEY };
    const batch = await waitForStatus(ep2, created.id, 'completed', 120_000);
    const results = await readResults(ep2, batch);
    assertExactlyOnce(
      lines.map((line) => line.custom_id),
      results,
    );
    assert.equal(results.errors.length, 0);
    assertEchoOutput(CHAT, byCustomId(lines), results.output);
    const reaps = reapsIn(second.output());
    assert.equal(reaps.length, 1, `the restarted process reaped its previous life once: ${JSON.stringify(reaps)}`);
    assert.equal(reaps[0].reason, 'process gone');
    assert.equal(reaps[0].role, 'serve');
    assert.ok(reaps[0].requests > 0, `the killed process held running lines: ${JSON.stringify(reaps[0])}`);
  });

  describe('on PostgreSQL', { skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : false }, () => {
    it('a worker SIGKILLed mid-batch: another worker takes its lines and ceiling slots, every line once, the ceiling holds', async () => {
      const CEILING = 4;
      const databaseUrl = await createPostgresDatabase();
      const upstream = await startTestUpstream({ kind: 'slow', delayMs: 20 });
      // Processes share only the database and a bucket, as in a real scale-out deployment.
      const s3 = await startS3rver();
      after(() => s3.close());
      const bucket = await s3.createBucket('spool-liveness');
      const { endpoint, region, accessKeyId, secretAccessKey, forcePathStyle } = s3.storeOptions(bucket);
      const config: Json = {
        blobs: { kind: 's3', s3: { endpoint, region, bucket, accessKeyId, secretAccessKey, forcePathStyle } },
        upstreams: [{ name: 'slow', baseUrl: upstream.url, models: ['slow-*'], maxConcurrency: CEILING, initialConcurrency: CEILING }],
        worker: { ...LONG_LEASE, globalCeilings: true },
      };
      const api = await startChildSpool({
        dataDir: makeTempDir('spool-liveness-'),
        config,
        databaseUrl,
        extraArgs: ['--no-worker'],
        env: { SPOOL_LOG_LEVEL: 'info' },
      });
      const ep: Endpoint = { base: api.openai, key: HARNESS_API_KEY };
      const doomed = await startChildWorker({ dataDir: makeTempDir('spool-liveness-'), config, databaseUrl });
      const lines = chatLines(800, 'slow-model', 'line');
      const created = await submitBatch(ep, lines, { fileName: 'liveness-pg.jsonl' });
      const db = new pg.Client({ connectionString: databaseUrl });
      await db.connect();
      after(() => db.end());
      await pollUntil(() => getBatch(ep, created.id), (batch) => batch.request_counts.completed >= 40, { what: 'some lines done' });
      const { rows: registered } = await db.query<{ id: string }>("select id from workers where role = 'worker'");
      assert.equal(registered.length, 1, 'the doomed worker is registered');
      const doomedId = registered[0].id;
      const survivor = await startChildWorker({ dataDir: makeTempDir('spool-liveness-'), config, databaseUrl, env: { SPOOL_LOG_LEVEL: 'info' } });
      await doomed.kill();

      const batch = await waitForStatus(ep, created.id, 'completed', 120_000);
      const results = await readResults(ep, batch);
      assertExactlyOnce(
        lines.map((line) => line.custom_id),
        results,
      );
      assert.equal(results.errors.length, 0);
      assertEchoOutput(CHAT, byCustomId(lines), results.output);
      assert.ok(upstream.stats.maxInFlight <= CEILING, `never more than the ceiling of ${CEILING} at once (saw ${upstream.stats.maxInFlight})`);
      // Whichever live process looked first (the API process watches too) reaped it, once.
      const reaps = [...reapsIn(api.output()), ...reapsIn(survivor.output())].filter((reap) => reap.worker === doomedId);
      assert.equal(reaps.length, 1, `the killed worker was reaped once: ${JSON.stringify(reaps)}`);
      assert.ok(reaps[0].requests > 0 && reaps[0].slots > 0, `and took back the lines and slots it held: ${JSON.stringify(reaps[0])}`);
      const { rows } = await db.query('select id from workers where id = $1', [doomedId]);
      assert.deepEqual(rows, [], 'the dead worker is no longer registered');
    });
  });
});
