// Upgrading onto a data dir or database of the previous release (schema up to
// 0006_webhook_secrets, before liveness, usage, cost and latency), with a batch
// half done: some lines succeeded (their bodies in their rows), some failed,
// some pending, some running under the lease of the old process, which has no
// liveness row. The new Spool migrates it on start and finishes the batch:
// every custom_id exactly once, the old results as they were, the old lease
// waited out (nothing says its owner died), new lines costed.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect, SqliteDialect } from 'kysely';
import pg from 'pg';
import { join } from 'node:path';
import { blobKeyForUpload, openStore } from '../../src/store/index.ts';
import { upgradeV1Batches } from '../../src/batches/upgrade-v1.ts';
import { openBlobStore } from '../../src/store/blobs/open.ts';
import { migrationProvider } from '../../src/store/sql/migrations.ts';
import {
  assertExactlyOnce,
  chatLines,
  cleanupAll,
  createPostgresDatabase,
  endpointOf,
  getBatch,
  makeTempDir,
  readResults,
  SKIP_POSTGRES,
  startHarness,
  toJsonl,
  waitForStatus,
  type Json,
} from '../helpers/runner-harness.ts';

after(cleanupAll);

const PREVIOUS_SCHEMA = '0006_webhook_secrets';
const LINES = 40;

for (const backend of [
  { name: 'SQLite', skip: false as const },
  { name: 'PostgreSQL', skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : (false as const) },
]) {
  describe(`upgrade from the previous schema on ${backend.name}`, { skip: backend.skip }, () => {
    it('a batch half done by the previous release finishes after the upgrade: each line once, old results kept', async () => {
      const dataDir = makeTempDir('spool-upgrade-');
      const databaseUrl = backend.name === 'PostgreSQL' ? await createPostgresDatabase() : undefined;
      const db = new Kysely<any>({
        dialect: databaseUrl
          ? new PostgresDialect({ pool: new pg.Pool({ connectionString: databaseUrl, max: 2 }) })
          : new SqliteDialect({ database: new BetterSqlite3(join(dataDir, 'spool.db')) }),
      });
      const migrated = await new Migrator({ db, provider: migrationProvider }).migrateTo(PREVIOUS_SCHEMA);
      assert.equal(migrated.error, undefined);

      // The input as the previous release stored it: bytes in the blob store, one row per line.
      const lines = chatLines(LINES, 'echo', 'old');
      const text = toJsonl(lines);
      const fileId = 'file-upgrade-input';
      const blobs = await openBlobStore({ dataDir });
      const written = await blobs.write(blobKeyForUpload(fileId), (async function* () {
        yield Buffer.from(text);
      })());
      const now = Date.now();
      await db.insertInto('api_keys').values({ id: 'key-old', user_id: 'default', key_hash: 'x'.repeat(64), prefix: 'old', is_admin: 1, created_at: now }).execute();
      await db
        .insertInto('files')
        .values({ id: fileId, user_id: 'default', filename: 'old.jsonl', purpose: 'batch', file_type: 'jsonl', status: 'processed', bytes: written.bytes, line_count: LINES, sha256: written.sha256, blob_key: blobKeyForUpload(fileId), created_at: now })
        .execute();
      const batchId = 'batch-upgrade-0001';
      await db
        .insertInto('batches')
        .values({
          id: batchId, user_id: 'default', input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window: '24h', status: 'in_progress',
          priority: 0, file_size_bytes: written.bytes, created_at: now - 60_000, in_progress_at: now - 60_000, deadline_at: now + 86_400_000,
          request_total: LINES, request_completed: 10, request_failed: 2, input_tokens: 10, output_tokens: 10, estimated_tokens: LINES, dialect: 'openai',
        })
        .execute();
      let offset = 0;
      const rows = lines.map((line, i) => {
        const length = Buffer.byteLength(JSON.stringify(line));
        const row: Json = {
          batch_id: batchId, line: i + 1, custom_id: line.custom_id, model: 'echo', byte_offset: offset, byte_length: length,
          estimated_tokens: 1, state: 'pending', attempts: 0, not_before: 0, input_tokens: 0, output_tokens: 0,
        };
        offset += length + 1;
        // Lines 1-10 succeeded before the upgrade, 11-12 failed, 13-16 were running in the old process (its lease
        // still live for two seconds, and no liveness row to say it died), the rest pending.
        if (i < 10) Object.assign(row, { state: 'succeeded', attempts: 1, response_status: 200, response_body: `{"old":${i + 1}}`, request_id: `old-${i + 1}`, input_tokens: 1, output_tokens: 1, finished_at: now - 30_000 });
        else if (i < 12) Object.assign(row, { state: 'failed', attempts: 1, error_code: 'invalid_request', error_message: 'failed before the upgrade', finished_at: now - 30_000 });
        else if (i < 16) Object.assign(row, { state: 'running', attempts: 1, lease_owner: 'worker-previous-release', lease_expires_at: now + 2_000 });
        return row;
      });
      await db.insertInto('requests').values(rows).execute();
      await db.destroy();
      await blobs.close?.();

      const h = await startHarness({
        dataDir,
        config: { databaseUrl, billing: { prices: [{ models: ['echo'], inputPerMillion: 1000, outputPerMillion: 1000 }] } },
      });
      const ep = endpointOf(h);
      const batch = await waitForStatus(ep, batchId, 'completed', 60_000);
      const results = await readResults(ep, batch);
      assertExactlyOnce(
        lines.map((line) => line.custom_id),
        results,
      );
      assert.equal(results.output.length, LINES - 2);
      assert.deepEqual(
        results.errors.map((line) => [line.custom_id, line.error.message]),
        [
          ['old-11', 'failed before the upgrade'],
          ['old-12', 'failed before the upgrade'],
        ],
      );
      const old = results.output.filter((line) => line.response.request_id?.startsWith('old-'));
      assert.deepEqual(
        old.map((line) => line.response.body),
        Array.from({ length: 10 }, (_, i) => ({ old: i + 1 })),
        'what succeeded before the upgrade is reported as it was',
      );
      // Cost counts what ran after the upgrade (recorded with prices); the old lines had none to count.
      assert.ok(batch.cost.amount > 0);
      await h.stop();
    });
  });
}

// The data plane before chunks (schema up to 0011_batches_by_dialect): one request row per line. The new Spool
// converts each batch at start-up (batches/upgrade-v1.ts): chunks, and the finished lines of each as one
// committed segment, so only the unfinished lines are sent again; the request rows go.
const PER_LINE_SCHEMA = '0011_batches_by_dialect';
const SUCCEEDED = 15;
const FAILED = 3;
const MODEL = 'm-upgrade';

for (const backend of [
  { name: 'SQLite', skip: false as const },
  { name: 'PostgreSQL', skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : (false as const) },
]) {
  describe(`upgrade from request rows to chunks on ${backend.name}`, { skip: backend.skip }, () => {
    it('a batch half run on request rows finishes on chunks: finished lines kept, not sent again; request rows gone', async () => {
      const dataDir = makeTempDir('spool-upgrade-v1-');
      const databaseUrl = backend.name === 'PostgreSQL' ? await createPostgresDatabase() : undefined;
      const db = new Kysely<any>({
        dialect: databaseUrl
          ? new PostgresDialect({ pool: new pg.Pool({ connectionString: databaseUrl, max: 2 }) })
          : new SqliteDialect({ database: new BetterSqlite3(join(dataDir, 'spool.db')) }),
      });
      const migrated = await new Migrator({ db, provider: migrationProvider }).migrateTo(PER_LINE_SCHEMA);
      assert.equal(migrated.error, undefined);

      const lines = chatLines(LINES, MODEL, 'v1');
      const text = toJsonl(lines);
      const fileId = 'file-upgrade-v1-input';
      const blobs = await openBlobStore({ dataDir });
      const written = await blobs.write(blobKeyForUpload(fileId), (async function* () {
        yield Buffer.from(text);
      })());
      await blobs.close?.();
      const now = Date.now();
      await db
        .insertInto('files')
        .values({ id: fileId, user_id: 'default', filename: 'v1.jsonl', purpose: 'batch', file_type: 'jsonl', status: 'processed', bytes: written.bytes, line_count: LINES, sha256: written.sha256, blob_key: blobKeyForUpload(fileId), created_at: now })
        .execute();
      const batchId = 'batch-upgrade-v1-running';
      const batchRow = (id: string, status: string, extra: Json = {}) => ({
        id, user_id: 'default', input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window: '24h', status, priority: 0,
        file_size_bytes: written.bytes, created_at: now - 60_000, in_progress_at: now - 60_000, deadline_at: now + 86_400_000, request_total: LINES,
        request_completed: SUCCEEDED, request_failed: FAILED, input_tokens: SUCCEEDED, output_tokens: SUCCEEDED, estimated_tokens: LINES, dialect: 'openai',
        cost_nanos: 12_345, ...extra,
      });
      await db.insertInto('batches').values(batchRow(batchId, 'in_progress')).execute();
      let offset = 0;
      const rows = lines.map((line, i) => {
        const length = Buffer.byteLength(JSON.stringify(line));
        const row: Json = {
          batch_id: batchId, line: i + 1, custom_id: line.custom_id, model: MODEL, byte_offset: offset, byte_length: length,
          estimated_tokens: 1, state: 'pending', attempts: 0, not_before: 0, input_tokens: 0, output_tokens: 0,
        };
        offset += length + 1;
        // Lines 1-15 succeeded (bodies no echo would give), 16-18 failed (one with the upstream's answer), 19-22
        // were running in the old process under a lease still live, the rest pending.
        if (i < SUCCEEDED) {
          Object.assign(row, {
            state: 'succeeded', attempts: i % 3 === 0 ? 2 : 1, response_status: 200, response_body: `{"before_upgrade":${i + 1}}`, request_id: `old-${i + 1}`,
            input_tokens: 1, output_tokens: 1, latency_ms: 40 + i, finished_at: now - 30_000,
          });
        } else if (i < SUCCEEDED + FAILED) {
          Object.assign(row, { state: 'failed', attempts: 1, error_code: 'invalid_request', error_message: `failed before the upgrade (${i + 1})`, finished_at: now - 30_000 });
          if (i === SUCCEEDED) Object.assign(row, { response_status: 400, request_id: 'old-400', response_body: '{"error":{"message":"bad"}}', latency_ms: 7 });
        } else if (i < SUCCEEDED + FAILED + 4) {
          Object.assign(row, { state: 'running', attempts: 1, lease_owner: 'worker-per-line-release', lease_expires_at: now + 2_000 });
        }
        return row;
      });
      await db.insertInto('requests').values(rows).execute();

      // An ended batch on request rows too: its results are in its files already, so it gets segments without blobs.
      const endedId = 'batch-upgrade-v1-ended';
      await db.insertInto('batches').values(batchRow(endedId, 'completed', { request_total: 5, request_completed: 3, request_failed: 2, completed_at: now - 10_000 })).execute();
      await db
        .insertInto('requests')
        .values(
          rows.slice(0, 5).map((row, i) => ({
            ...row,
            batch_id: endedId,
            ...(i < 3 ? {} : { state: 'failed', error_code: 'server_error', error_message: 'old failure', response_status: null, response_body: null, request_id: null }),
          })),
        )
        .execute();
      await db.destroy();

      const h = await startHarness({ dataDir, upstreams: [{ name: 'loop', models: [MODEL] }], config: { databaseUrl } });
      const ep = endpointOf(h);
      const batch = await waitForStatus(ep, batchId, 'completed', 60_000);
      const results = await readResults(ep, batch);
      assertExactlyOnce(
        lines.map((line) => line.custom_id),
        results,
      );
      assert.equal(results.output.length, LINES - FAILED);
      assert.deepEqual(
        results.errors.map((line) => [line.custom_id, line.error.code, line.error.message, line.response?.status_code ?? null]),
        [
          ['v1-16', 'invalid_request', 'failed before the upgrade (16)', 400],
          ['v1-17', 'invalid_request', 'failed before the upgrade (17)', null],
          ['v1-18', 'invalid_request', 'failed before the upgrade (18)', null],
        ],
      );
      const old = results.output.filter((line) => 'before_upgrade' in (line.response.body ?? {}));
      assert.deepEqual(
        old.map((line) => [line.custom_id, line.response.request_id, line.response.body]),
        Array.from({ length: SUCCEEDED }, (_, i) => [`v1-${i + 1}`, `old-${i + 1}`, { before_upgrade: i + 1 }]),
        'what succeeded before the upgrade is reported as it was',
      );
      assert.equal(h.upstreams.loop.stats.requests, LINES - SUCCEEDED - FAILED, 'only the lines that never finished were sent');

      const sqlDb = h.app.store.sql.db;
      for (const id of [batchId, endedId]) {
        const left = await sqlDb.selectFrom('requests').select('line').where('batch_id', '=', id).execute();
        assert.deepEqual(left, [], `no request rows are left for ${id}`);
      }
      const chunks = await sqlDb.selectFrom('chunks').select(['chunk', 'line_start', 'line_count', 'state']).where('batch_id', '=', batchId).orderBy('chunk').execute();
      assert.deepEqual(
        chunks.map((c) => [c.chunk, c.line_start, c.line_count]),
        [
          [0, 1, 16],
          [1, 17, 16],
          [2, 33, 8],
        ],
      );
      const ended = await sqlDb.selectFrom('chunks').select(['chunk', 'state', 'succeeded', 'failed', 'segments']).where('batch_id', '=', endedId).execute();
      assert.deepEqual(
        ended.map((c) => [c.chunk, c.state, Number(c.succeeded), Number(c.failed), Number(c.segments)]),
        [[0, 'done', 3, 2, 1]],
      );
      const endedSegments = await sqlDb.selectFrom('segments').select(['blob_key', 'output_lines', 'error_lines', 'done_bits', 'failed_bits']).where('batch_id', '=', endedId).execute();
      assert.deepEqual(
        endedSegments.map((s) => [s.blob_key, Number(s.output_lines), Number(s.error_lines), s.done_bits, s.failed_bits]),
        [[null, 3, 2, '1f', '18']],
      );
      assert.equal((await getBatch(ep, endedId)).status, 'completed');
      await h.stop();
    });
  });
}

for (const backend of [
  { name: 'SQLite', skip: false as const },
  { name: 'PostgreSQL', skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : (false as const) },
]) {
  describe(`the request-rows upgrade itself on ${backend.name}`, { skip: backend.skip }, () => {
    it('converts each batch once, even with two processes at it at once, and then finds nothing to do', async () => {
      const dataDir = makeTempDir('spool-upgrade-v1-twice-');
      const databaseUrl = backend.name === 'PostgreSQL' ? await createPostgresDatabase() : undefined;
      const db = new Kysely<any>({
        dialect: databaseUrl
          ? new PostgresDialect({ pool: new pg.Pool({ connectionString: databaseUrl, max: 2 }) })
          : new SqliteDialect({ database: new BetterSqlite3(join(dataDir, 'spool.db')) }),
      });
      assert.equal((await new Migrator({ db, provider: migrationProvider }).migrateTo(PER_LINE_SCHEMA)).error, undefined);
      const now = Date.now();
      const batchIds = Array.from({ length: 5 }, (_, i) => `batch-upgrade-twice-${i}`);
      await db
        .insertInto('files')
        .values({ id: 'file-twice', user_id: 'default', filename: 'x.jsonl', purpose: 'batch', file_type: 'jsonl', status: 'processed', bytes: 3000, line_count: 300, sha256: 'x', blob_key: 'files/file-twice', created_at: now })
        .execute();
      for (const id of batchIds) {
        await db
          .insertInto('batches')
          .values({
            id, user_id: 'default', input_file_id: 'file-twice', endpoint: '/v1/chat/completions', completion_window: '24h', status: 'in_progress', priority: 0,
            file_size_bytes: 3000, created_at: now, in_progress_at: now, deadline_at: now + 86_400_000, request_total: 300, estimated_tokens: 300, dialect: 'openai',
          })
          .execute();
        const rows = Array.from({ length: 300 }, (_, i) => ({
          batch_id: id, line: i + 1, custom_id: `c-${i + 1}`, model: 'm', byte_offset: i * 10, byte_length: 9, estimated_tokens: 1,
          state: i % 7 === 0 ? 'succeeded' : 'pending', attempts: i % 7 === 0 ? 1 : 0, not_before: 0, input_tokens: 0, output_tokens: 0,
          response_status: i % 7 === 0 ? 200 : null, response_body: i % 7 === 0 ? '{}' : null, finished_at: i % 7 === 0 ? now : null,
        }));
        for (let i = 0; i < rows.length; i += 100) await db.insertInto('requests').values(rows.slice(i, i + 100)).execute();
      }
      // A request row of a batch that is gone: nothing can run it.
      await db.insertInto('requests').values({ batch_id: 'batch-gone', line: 1, custom_id: 'g', model: 'm', byte_offset: 0, byte_length: 1, estimated_tokens: 1, state: 'pending', attempts: 0, not_before: 0, input_tokens: 0, output_tokens: 0 }).execute();
      await db.destroy();

      const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };
      const stores = await Promise.all([openStore({ dataDir, databaseUrl }), openStore({ dataDir, databaseUrl })]);
      try {
        // SQLite has one writer: the two run one after the other there.
        const summaries =
          backend.name === 'PostgreSQL'
            ? await Promise.all(stores.map((store) => upgradeV1Batches({ store, log: quiet })))
            : [await upgradeV1Batches({ store: stores[0], log: quiet }), await upgradeV1Batches({ store: stores[1], log: quiet })];
        assert.equal(summaries[0].batches + summaries[1].batches, batchIds.length, 'each batch converted by one of them');
        assert.equal(summaries[0].lines + summaries[1].lines, batchIds.length * 300);
        const sqlDb = stores[0].sql.db;
        assert.equal((await sqlDb.selectFrom('requests').select('line').execute()).length, 0);
        for (const id of batchIds) {
          const chunks = await sqlDb.selectFrom('chunks').select(['chunk', 'line_start', 'line_count', 'succeeded', 'segments']).where('batch_id', '=', id).orderBy('chunk').execute();
          // 300 lines: ceil(300 / 16) = 19 a chunk.
          assert.equal(chunks.length, Math.ceil(300 / 19));
          assert.equal(chunks.reduce((n, c) => n + Number(c.line_count), 0), 300);
          assert.equal(chunks.reduce((n, c) => n + Number(c.succeeded), 0), Math.ceil(300 / 7));
          const segments = await sqlDb.selectFrom('segments').select(['chunk', 'seq', 'blob_key']).where('batch_id', '=', id).execute();
          assert.equal(segments.length, chunks.filter((c) => Number(c.segments) === 1).length);
          for (const segment of segments) assert.ok(await stores[0].blobs.size(segment.blob_key!), 'each segment blob is written');
        }
        assert.deepEqual(await upgradeV1Batches({ store: stores[0], log: quiet }), { batches: 0, lines: 0 }, 'nothing left to do');
      } finally {
        for (const store of stores) await store.close();
      }
    });
  });
}
