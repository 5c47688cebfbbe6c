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
import { blobKeyForUpload } from '../../src/store/index.ts';
import { openBlobStore } from '../../src/store/blobs/open.ts';
import { migrationProvider } from '../../src/store/sql/migrations.ts';
import {
  assertExactlyOnce,
  chatLines,
  cleanupAll,
  createPostgresDatabase,
  endpointOf,
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
