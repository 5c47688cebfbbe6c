// One contract for the metadata store, run for real against both dialects:
// SQLite in a temporary directory and PostgreSQL in a database created for
// each test (and dropped after it). PostgreSQL being unreachable fails the
// PostgreSQL half loudly, unless SPOOL_TEST_SKIP_POSTGRES=1 says to skip it.
//
// Admin connection: SPOOL_TEST_POSTGRES_URL (a URL to a database the test may
// CREATE DATABASE from), else postgres://<PGUSER | OS user | postgres>@127.0.0.1:5432/postgres.
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { newFileId, newKeyId } from '../../src/ids.ts';
import {
  claimBatchLease,
  findBatch,
  findUserBatch,
  insertBatch,
  listBatches,
  releaseBatchLease,
  renewBatchLease,
  transitionBatch,
  updateBatch,
  updateLeasedBatch,
} from '../../src/store/sql/batches.ts';
import { openSqlStore, type SqlDialectName, type SqlStore } from '../../src/store/sql/database.ts';
import { migrations } from '../../src/store/sql/migrations.ts';
import {
  acquireUpstreamSlots,
  ensureUpstreamSlots,
  heldUpstreamSlots,
  releaseAllUpstreamSlots,
  releaseUpstreamSlots,
  renewUpstreamSlots,
} from '../../src/store/sql/upstream-slots.ts';
import {
  findFile,
  findOpenBatchUsingFile,
  findProcessedFileBySha256,
  findUserFile,
  insertFile,
  listFiles,
  transitionFileStatus,
} from '../../src/store/sql/files.ts';
import { countActiveKeys, findActiveKeyByHash, insertApiKey, listApiKeys, revokeApiKey } from '../../src/store/sql/keys.ts';
import type { ApiKeyRow, NewBatch, NewChunk, NewFile } from '../../src/store/sql/schema.ts';
import { chunkTotalsOf, insertChunks, newChunk } from '../../src/store/sql/chunks.ts';
import { getOrCreateSetting } from '../../src/store/sql/settings.ts';
import { queryUsage } from '../../src/store/sql/usage.ts';
import { batchRowAt } from '../helpers/request-rows.ts';

/** A fixed clock: nothing here depends on how fast the machine is. */
const NOW = 1_700_000_000_000;
/** Above 2^32, so an int4 column or a 32-bit conversion anywhere would show. */
const BIG = 6_000_000_123;

// ---------------------------------------------------------------- PostgreSQL admin

const SKIP_POSTGRES = process.env.SPOOL_TEST_SKIP_POSTGRES === '1';

function adminUrlCandidates(): string[] {
  if (process.env.SPOOL_TEST_POSTGRES_URL) return [process.env.SPOOL_TEST_POSTGRES_URL];
  const users = [process.env.PGUSER, safeUserName(), 'postgres'].filter((u): u is string => Boolean(u));
  return [...new Set(users)].map((user) => `postgres://${encodeURIComponent(user)}@127.0.0.1:5432/postgres`);
}

function safeUserName(): string | undefined {
  try {
    return userInfo().username;
  } catch {
    return undefined;
  }
}

/** Connects to the first admin URL that answers; the error lists every attempt. */
async function connectAdmin(): Promise<{ client: pg.Client; url: string }> {
  const failures: string[] = [];
  for (const url of adminUrlCandidates()) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
    try {
      await client.connect();
      await client.query('select 1');
      return { client, url };
    } catch (err) {
      failures.push(`${url}: ${(err as Error).message}`);
      await client.end().catch(() => undefined);
    }
  }
  throw new Error(
    `PostgreSQL is unreachable, so the PostgreSQL half of the store contract cannot run.\n  ${failures.join('\n  ')}\n` +
      'Start PostgreSQL (or point SPOOL_TEST_POSTGRES_URL at one), or set SPOOL_TEST_SKIP_POSTGRES=1 to skip it.',
  );
}

/** The URL of database `name` on the same server, as the same user. */
function urlForDatabase(adminUrl: string, name: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

// ---------------------------------------------------------------- one harness per dialect

interface Target {
  /** Opens a store (another "process") on this test's database; every one is closed after the test. */
  open(): Promise<SqlStore>;
}

interface DialectHarness {
  name: SqlDialectName;
  setupSuite(): Promise<void>;
  teardownSuite(): Promise<void>;
  /** A fresh, empty database for one test. */
  freshTarget(): Promise<Target>;
  teardownTarget(): Promise<void>;
}

function sqliteHarness(): DialectHarness {
  let dir: string | undefined;
  const opened: SqlStore[] = [];
  return {
    name: 'sqlite',
    async setupSuite() {},
    async teardownSuite() {},
    async freshTarget() {
      dir = await mkdtemp(join(tmpdir(), 'spool-sql-contract-'));
      const dataDir = dir;
      return {
        async open() {
          const store = await openSqlStore({ dataDir });
          opened.push(store);
          return store;
        },
      };
    },
    async teardownTarget() {
      for (const store of opened.splice(0)) await store.close().catch(() => undefined);
      if (dir) await rm(dir, { recursive: true, force: true });
      dir = undefined;
    },
  };
}

function postgresHarness(): DialectHarness {
  let admin: { client: pg.Client; url: string } | undefined;
  let database: string | undefined;
  const opened: SqlStore[] = [];
  return {
    name: 'postgres',
    async setupSuite() {
      admin = await connectAdmin();
    },
    async teardownSuite() {
      await admin?.client.end();
      admin = undefined;
    },
    async freshTarget() {
      if (!admin) throw new Error('PostgreSQL admin connection missing (suite setup failed)');
      database = `spool_test_${randomBytes(8).toString('hex')}`;
      await admin.client.query(`CREATE DATABASE ${database}`);
      const databaseUrl = urlForDatabase(admin.url, database);
      return {
        async open() {
          const store = await openSqlStore({ dataDir: '/nonexistent-unused-by-postgres', databaseUrl });
          opened.push(store);
          return store;
        },
      };
    },
    async teardownTarget() {
      for (const store of opened.splice(0)) await store.close().catch(() => undefined);
      if (admin && database) {
        // pg's Pool.end() resolves before its sockets have finished closing; a
        // forced drop that kills those backends first makes the closing clients
        // emit unhandled 'error's. Let them leave (bounded), then force the rest.
        for (let i = 0; i < 200; i++) {
          const { rows } = await admin.client.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [database]);
          if (rows[0].n === 0) break;
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        await admin.client.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
      }
      database = undefined;
    },
  };
}

// ---------------------------------------------------------------- row factories

function fileRow(overrides: Partial<NewFile> = {}): NewFile {
  return {
    id: newFileId(),
    user_id: 'user-a',
    filename: 'input.jsonl',
    purpose: 'batch',
    file_type: 'jsonl',
    status: 'processed',
    bytes: 10,
    line_count: 1,
    sha256: null,
    declared_sha256: null,
    blob_key: null,
    batch_id: null,
    created_at: NOW,
    expires_at: null,
    ...overrides,
  };
}

function batchRow(overrides: Partial<NewBatch> = {}): NewBatch {
  return batchRowAt(NOW, overrides);
}


function keyRow(overrides: Partial<ApiKeyRow> = {}): ApiKeyRow {
  const id = newKeyId();
  return {
    id,
    user_id: 'user-a',
    key_hash: randomBytes(32).toString('hex'),
    prefix: `sk-${randomBytes(4).toString('hex')}`,
    is_admin: 0,
    created_at: NOW,
    revoked_at: null,
    ...overrides,
  };
}

/** Asserts that every listed property is a JS number (not a string or a bigint). */
function assertNumbers(row: object, columns: string[], where: string): void {
  for (const column of columns) {
    const value = (row as Record<string, unknown>)[column];
    assert.equal(typeof value, 'number', `${where}.${column} should be a number, got ${typeof value} (${String(value)})`);
  }
}

const ids = (rows: { id: string }[]): string[] => rows.map((r) => r.id);

// ---------------------------------------------------------------- the contract

function contract(h: DialectHarness): void {
  let target: Target;
  let store: SqlStore;

  before(() => h.setupSuite());
  after(() => h.teardownSuite());
  beforeEach(async () => {
    target = await h.freshTarget();
    store = await target.open();
  });
  afterEach(() => h.teardownTarget());

  describe('migrations', () => {
    it('open reports its dialect and creates every table', async () => {
      assert.equal(store.dialect, h.name);
      for (const table of ['settings', 'api_keys', 'files', 'batches', 'requests', 'upstream_slots'] as const) {
        const rows = await store.db.selectFrom(table).selectAll().execute();
        assert.deepEqual(rows, [], `${table} exists and is empty`);
      }
    });

    it('re-opening an up-to-date database applies nothing twice and keeps the data', async () => {
      await insertFile(store.db, fileRow({ id: 'file-kept' }));
      const again = await target.open();
      assert.equal((await findFile(again.db, 'file-kept'))?.id, 'file-kept');
      const third = await target.open();
      const applied = await third.db
        .selectFrom('kysely_migration' as never)
        .select('name' as never)
        .execute();
      assert.deepEqual(
        applied.map((r) => (r as { name: string }).name).sort(),
        Object.keys(migrations).sort(),
      );
    });

    it('two processes opening a fresh database at once both succeed', async () => {
      // `store` has already migrated this database; use a second, untouched one.
      await h.teardownTarget();
      target = await h.freshTarget();
      const [a, b] = await Promise.all([target.open(), target.open()]);
      await insertFile(a.db, fileRow({ id: 'file-race' }));
      assert.equal((await findFile(b.db, 'file-race'))?.id, 'file-race');
      store = a;
    });
  });

  describe('settings', () => {
    it('getOrCreateSetting creates once, then returns the stored value', async () => {
      const first = await getOrCreateSetting(store.db, 'k', () => 'v1');
      assert.equal(first, 'v1');
      let called = false;
      const second = await getOrCreateSetting(store.db, 'k', () => {
        called = true;
        return 'v2';
      });
      assert.equal(second, 'v1');
      assert.equal(called, false, 'make() is not called when the value exists');
    });

    it('racing callers (two processes) all get the same value', async () => {
      const other = await target.open();
      for (let round = 0; round < 10; round++) {
        const key = `race-${round}`;
        const results = await Promise.all([
          getOrCreateSetting(store.db, key, () => `a-${round}`),
          getOrCreateSetting(other.db, key, () => `b-${round}`),
          getOrCreateSetting(store.db, key, () => `c-${round}`),
          getOrCreateSetting(other.db, key, () => `d-${round}`),
        ]);
        assert.equal(new Set(results).size, 1, `round ${round}: ${results.join(', ')}`);
        const stored = await store.db.selectFrom('settings').select('value').where('key', '=', key).execute();
        assert.deepEqual(stored, [{ value: results[0] }]);
      }
    });
  });

  describe('files', () => {
    it('insert, findFile and findUserFile (another user sees nothing)', async () => {
      const row = fileRow({ user_id: 'alice', sha256: 'abc', blob_key: 'files/x', bytes: BIG, line_count: 3, expires_at: NOW + 5 });
      await insertFile(store.db, row);
      const found = await findFile(store.db, row.id);
      assert.deepEqual(found, row);
      assert.deepEqual(await findUserFile(store.db, 'alice', row.id), row);
      assert.equal(await findUserFile(store.db, 'bob', row.id), undefined);
      assert.equal(await findFile(store.db, 'file-missing'), undefined);
      assert.equal(await findUserFile(store.db, 'alice', 'file-missing'), undefined);
    });

    it('listFiles: keyset pages ascending and descending, with `after`', async () => {
      const mine: string[] = [];
      for (let i = 0; i < 5; i++) {
        const row = fileRow({ user_id: 'alice' });
        await insertFile(store.db, row);
        mine.push(row.id);
      }
      await insertFile(store.db, fileRow({ user_id: 'bob' }));
      const sorted = [...mine].sort();
      assert.deepEqual(mine, sorted, 'ids sort by creation');

      // Ascending, 2 per page: each page fetches limit+1 to tell has_more.
      let page = await listFiles(store.db, { userId: 'alice', limit: 2, order: 'asc', now: NOW });
      assert.deepEqual(ids(page), mine.slice(0, 3));
      page = await listFiles(store.db, { userId: 'alice', limit: 2, order: 'asc', after: mine[1], now: NOW });
      assert.deepEqual(ids(page), mine.slice(2, 5));
      page = await listFiles(store.db, { userId: 'alice', limit: 2, order: 'asc', after: mine[3], now: NOW });
      assert.deepEqual(ids(page), mine.slice(4));
      page = await listFiles(store.db, { userId: 'alice', limit: 2, order: 'asc', after: mine[4], now: NOW });
      assert.deepEqual(page, []);

      // Descending.
      const reversed = [...mine].reverse();
      page = await listFiles(store.db, { userId: 'alice', limit: 2, order: 'desc', now: NOW });
      assert.deepEqual(ids(page), reversed.slice(0, 3));
      page = await listFiles(store.db, { userId: 'alice', limit: 2, order: 'desc', after: reversed[1], now: NOW });
      assert.deepEqual(ids(page), reversed.slice(2, 5));
      page = await listFiles(store.db, { userId: 'alice', limit: 10, order: 'desc', after: mine[0], now: NOW });
      assert.deepEqual(page, []);

      // Everything, both ways, and only alice's.
      assert.deepEqual(ids(await listFiles(store.db, { userId: 'alice', limit: 100, order: 'asc', now: NOW })), mine);
      assert.deepEqual(ids(await listFiles(store.db, { userId: 'alice', limit: 100, order: 'desc', now: NOW })), reversed);
    });

    it('listFiles: purposes filter and expiry filter', async () => {
      const batchFile = fileRow({ purpose: 'batch' });
      const outputFile = fileRow({ purpose: 'batch_output' });
      const fineTune = fileRow({ purpose: 'fine-tune' });
      const expired = fileRow({ purpose: 'batch', expires_at: NOW - 1 });
      const expiresNow = fileRow({ purpose: 'batch', expires_at: NOW });
      const expiresLater = fileRow({ purpose: 'batch_output', expires_at: NOW + 1 });
      for (const row of [batchFile, outputFile, fineTune, expired, expiresNow, expiresLater]) await insertFile(store.db, row);

      const all = await listFiles(store.db, { userId: 'user-a', limit: 100, order: 'asc', now: NOW });
      assert.deepEqual(ids(all), [batchFile.id, outputFile.id, fineTune.id, expiresLater.id], 'expired files are not listed');

      const outputs = await listFiles(store.db, { userId: 'user-a', limit: 100, order: 'asc', now: NOW, purposes: ['batch_output'] });
      assert.deepEqual(ids(outputs), [outputFile.id, expiresLater.id]);

      const two = await listFiles(store.db, { userId: 'user-a', limit: 100, order: 'desc', now: NOW, purposes: ['batch', 'fine-tune'] });
      assert.deepEqual(ids(two), [fineTune.id, batchFile.id]);

      const none = await listFiles(store.db, { userId: 'user-a', limit: 100, order: 'asc', now: NOW, purposes: [] });
      assert.equal(none.length, 4, 'an empty purposes list means no filter');

      const earlier = await listFiles(store.db, { userId: 'user-a', limit: 100, order: 'asc', now: NOW - 10 });
      assert.equal(earlier.length, 6, 'nothing had expired yet at NOW - 10');
    });

    it('transitionFileStatus moves only from the expected status', async () => {
      const row = fileRow({ status: 'awaiting_upload' });
      await insertFile(store.db, row);
      assert.equal(await transitionFileStatus(store.db, row.id, 'processed', { status: 'uploading' }), false);
      assert.equal((await findFile(store.db, row.id))?.status, 'awaiting_upload');

      assert.equal(await transitionFileStatus(store.db, row.id, 'awaiting_upload', { status: 'uploading' }), true);
      assert.equal(await transitionFileStatus(store.db, row.id, 'awaiting_upload', { status: 'uploading', bytes: 99 }), false);
      const mid = await findFile(store.db, row.id);
      assert.equal(mid?.status, 'uploading');
      assert.equal(mid?.bytes, row.bytes, "the loser's values were not applied");

      assert.equal(
        await transitionFileStatus(store.db, row.id, 'uploading', { status: 'processed', bytes: BIG, sha256: 'f00', line_count: 7 }),
        true,
      );
      const done = await findFile(store.db, row.id);
      assert.equal(done?.status, 'processed');
      assert.equal(done?.bytes, BIG);
      assert.equal(done?.line_count, 7);
      assert.equal(await transitionFileStatus(store.db, 'file-missing', 'uploading', { status: 'processed' }), false);
    });

    it('transitionFileStatus: of two processes racing, exactly one wins', async () => {
      const other = await target.open();
      for (let round = 0; round < 5; round++) {
        const row = fileRow({ status: 'awaiting_upload' });
        await insertFile(store.db, row);
        const results = await Promise.all([
          transitionFileStatus(store.db, row.id, 'awaiting_upload', { status: 'uploading', filename: 'a' }),
          transitionFileStatus(other.db, row.id, 'awaiting_upload', { status: 'uploading', filename: 'b' }),
        ]);
        assert.equal(results.filter(Boolean).length, 1, `round ${round}: ${results}`);
        const winner = results[0] ? 'a' : 'b';
        assert.equal((await findFile(store.db, row.id))?.filename, winner);
      }
    });

    it('findProcessedFileBySha256: same user, same purpose, processed only; newest first', async () => {
      const older = fileRow({ sha256: 'h1' });
      const newer = fileRow({ sha256: 'h1' });
      await insertFile(store.db, older);
      await insertFile(store.db, newer);
      await insertFile(store.db, fileRow({ sha256: 'h1', status: 'uploading' }));
      await insertFile(store.db, fileRow({ sha256: 'h1', purpose: 'fine-tune' }));
      await insertFile(store.db, fileRow({ sha256: 'h1', user_id: 'bob' }));
      await insertFile(store.db, fileRow({ sha256: 'h2', status: 'awaiting_upload' }));

      assert.equal((await findProcessedFileBySha256(store.db, 'user-a', 'h1', 'batch'))?.id, newer.id);
      assert.equal(await findProcessedFileBySha256(store.db, 'user-a', 'h2', 'batch'), undefined, 'not processed');
      assert.equal(await findProcessedFileBySha256(store.db, 'user-a', 'h3', 'batch'), undefined);
      assert.equal(await findProcessedFileBySha256(store.db, 'carol', 'h1', 'batch'), undefined);
      const fineTune = await findProcessedFileBySha256(store.db, 'user-a', 'h1', 'fine-tune');
      assert.equal(fineTune?.purpose, 'fine-tune');
    });

    it('findOpenBatchUsingFile finds only batches still open', async () => {
      const file = fileRow();
      await insertFile(store.db, file);
      assert.equal(await findOpenBatchUsingFile(store.db, file.id), undefined);
      for (const status of ['completed', 'failed', 'expired', 'cancelled'] as const) {
        await insertBatch(store.db, batchRow({ input_file_id: file.id, status }));
      }
      assert.equal(await findOpenBatchUsingFile(store.db, file.id), undefined, 'terminal batches do not hold the file');
      for (const status of ['validating', 'in_progress', 'finalizing', 'cancelling'] as const) {
        const other = fileRow();
        await insertFile(store.db, other);
        const batch = batchRow({ input_file_id: other.id, status });
        await insertBatch(store.db, batch);
        assert.equal(await findOpenBatchUsingFile(store.db, other.id), batch.id, status);
      }
    });
  });

  describe('batches', () => {
    it('insert, findBatch and findUserBatch (another user sees nothing)', async () => {
      const row = batchRow({
        user_id: 'alice',
        metadata: '{"a":"b"}',
        model_id: 'm',
        file_size_bytes: BIG,
        output_expires_after_seconds: 3600,
        errors: null,
      });
      await insertBatch(store.db, row);
      const found = await findUserBatch(store.db, 'alice', row.id);
      assert.ok(found);
      assert.equal(found.metadata, '{"a":"b"}');
      assert.equal(found.file_size_bytes, BIG);
      assert.equal(found.lease_owner, null);
      assert.deepEqual(await findBatch(store.db, row.id), found);
      assert.equal(await findUserBatch(store.db, 'bob', row.id), undefined);
      assert.equal(await findBatch(store.db, 'batch-missing'), undefined);
    });

    it('listBatches pages newest first with `after`, per user', async () => {
      const mine: string[] = [];
      for (let i = 0; i < 5; i++) {
        const row = batchRow({ user_id: 'alice' });
        await insertBatch(store.db, row);
        mine.push(row.id);
      }
      await insertBatch(store.db, batchRow({ user_id: 'bob' }));
      const newest = [...mine].reverse();
      let page = await listBatches(store.db, { userId: 'alice', limit: 2 });
      assert.deepEqual(ids(page), newest.slice(0, 3));
      page = await listBatches(store.db, { userId: 'alice', limit: 2, after: newest[1] });
      assert.deepEqual(ids(page), newest.slice(2, 5));
      page = await listBatches(store.db, { userId: 'alice', limit: 2, after: newest[3] });
      assert.deepEqual(ids(page), newest.slice(4));
      page = await listBatches(store.db, { userId: 'alice', limit: 2, after: newest[4] });
      assert.deepEqual(page, []);
      assert.deepEqual(ids(await listBatches(store.db, { userId: 'bob', limit: 10 })).length, 1);
    });

    it('transitionBatch applies only from the listed statuses', async () => {
      const row = batchRow({ status: 'validating' });
      await insertBatch(store.db, row);
      assert.equal(await transitionBatch(store.db, row.id, ['in_progress', 'finalizing'], { status: 'completed' }), false);
      assert.equal((await findBatch(store.db, row.id))?.status, 'validating');
      assert.equal(await transitionBatch(store.db, row.id, ['validating'], { status: 'in_progress', in_progress_at: NOW }), true);
      assert.equal(await transitionBatch(store.db, row.id, ['validating'], { status: 'failed', failed_at: NOW }), false);
      const found = await findBatch(store.db, row.id);
      assert.equal(found?.status, 'in_progress');
      assert.equal(found?.in_progress_at, NOW);
      assert.equal(found?.failed_at, null);
      assert.equal(await transitionBatch(store.db, row.id, [], { status: 'failed' }), false, 'no statuses: nothing matches');
      assert.equal(await transitionBatch(store.db, 'batch-missing', ['validating'], { status: 'failed' }), false);
    });

    it('claimBatchLease: of two processes racing for one batch, exactly one wins', async () => {
      const other = await target.open();
      for (let round = 0; round < 5; round++) {
        const row = batchRow({ status: 'validating' });
        await insertBatch(store.db, row);
        const [a, b] = await Promise.all([
          claimBatchLease(store.db, { statuses: ['validating'] }, 'owner-a', 60_000, NOW),
          claimBatchLease(other.db, { statuses: ['validating'] }, 'owner-b', 60_000, NOW),
        ]);
        const winners = [a, b].filter((x) => x !== undefined);
        assert.equal(winners.length, 1, `round ${round}: exactly one claim wins`);
        const winner = winners[0]!;
        assert.equal(winner.id, row.id);
        assert.equal(winner.lease_expires_at, NOW + 60_000);
        const stored = await findBatch(store.db, row.id);
        assert.equal(stored?.lease_owner, winner.lease_owner);
        assert.equal(stored?.lease_owner, a ? 'owner-a' : 'owner-b');
        assert.equal(stored?.lease_expires_at, NOW + 60_000);
        await updateBatch(store.db, row.id, { status: 'in_progress' });
      }
    });

    it('claimBatchLease: many claimers over a few batches each get a different one', async () => {
      const other = await target.open();
      const rows = [batchRow(), batchRow(), batchRow()];
      for (const row of rows) await insertBatch(store.db, row);
      const claims = await Promise.all(
        ['w1', 'w2', 'w3', 'w4', 'w5'].map((owner, i) =>
          claimBatchLease(i % 2 ? other.db : store.db, { statuses: ['in_progress'] }, owner, 1000, NOW),
        ),
      );
      const won = claims.filter((c) => c !== undefined);
      assert.equal(won.length, 3);
      assert.deepEqual(new Set(won.map((c) => c!.id)), new Set(ids(rows)));
      for (const claim of won) assert.equal((await findBatch(store.db, claim!.id))?.lease_owner, claim!.lease_owner);
    });

    it('claimBatchLease: a held lease blocks, a lapsed one is reclaimable', async () => {
      const row = batchRow();
      await insertBatch(store.db, row);
      const first = await claimBatchLease(store.db, { statuses: ['in_progress'] }, 'a', 100, NOW);
      assert.equal(first?.id, row.id);
      assert.equal(await claimBatchLease(store.db, { statuses: ['in_progress'] }, 'b', 100, NOW + 50), undefined);
      assert.equal(await claimBatchLease(store.db, { statuses: ['in_progress'] }, 'b', 100, NOW + 100), undefined, 'not lapsed at its expiry instant');
      const second = await claimBatchLease(store.db, { statuses: ['in_progress'] }, 'b', 100, NOW + 101);
      assert.equal(second?.id, row.id);
      assert.equal(second?.lease_owner, 'b');
      const stored = await findBatch(store.db, row.id);
      assert.equal(stored?.lease_owner, 'b');
      assert.equal(stored?.lease_expires_at, NOW + 201);
      assert.equal(await claimBatchLease(store.db, { statuses: ['validating'] }, 'c', 100, NOW + 1_000_000), undefined, 'status filter');
    });

    it('claimBatchLease: allChunksDone and overdueAt filters', async () => {
      const unfinished = batchRow({ request_total: 3 });
      const done = batchRow({ request_total: 3 });
      await insertBatch(store.db, unfinished);
      await insertBatch(store.db, done);
      const chunk = (batchId: string, n: number, state: NewChunk['state']): NewChunk => ({
        ...newChunk({ batch_id: batchId, chunk: n, line_start: n + 1, line_count: 1, byte_start: n * 10, byte_end: n * 10 + 9, models: '{}', estimated_tokens: 1 }),
        state,
      });
      await insertChunks(store.db, [chunk(unfinished.id, 0, 'done'), chunk(unfinished.id, 1, 'running'), chunk(unfinished.id, 2, 'closed')]);
      await insertChunks(store.db, [chunk(done.id, 0, 'done'), chunk(done.id, 1, 'closed')]);
      const claim = await claimBatchLease(store.db, { statuses: ['in_progress'], allChunksDone: true }, 'a', 100, NOW);
      assert.equal(claim?.id, done.id);
      assert.equal(await claimBatchLease(store.db, { statuses: ['in_progress'], allChunksDone: true }, 'b', 100, NOW), undefined);
      await store.db.updateTable('chunks').set({ state: 'pending' }).where('batch_id', '=', unfinished.id).where('chunk', '=', 1).execute();
      assert.equal(await claimBatchLease(store.db, { statuses: ['in_progress'], allChunksDone: true }, 'b', 100, NOW), undefined, 'a pending chunk is open too');
      await store.db.updateTable('chunks').set({ state: 'done' }).where('batch_id', '=', unfinished.id).where('chunk', '=', 1).execute();
      assert.equal((await claimBatchLease(store.db, { statuses: ['in_progress'], allChunksDone: true }, 'b', 100, NOW))?.id, unfinished.id);

      const due = batchRow({ status: 'cancelling', deadline_at: NOW });
      const notDue = batchRow({ status: 'cancelling', deadline_at: NOW + 1 });
      await insertBatch(store.db, notDue);
      await insertBatch(store.db, due);
      assert.equal((await claimBatchLease(store.db, { statuses: ['cancelling'], overdueAt: NOW }, 'c', 100, NOW))?.id, due.id);
      assert.equal(await claimBatchLease(store.db, { statuses: ['cancelling'], overdueAt: NOW }, 'c', 100, NOW), undefined);
      assert.equal((await claimBatchLease(store.db, { statuses: ['cancelling'] }, 'c', 100, NOW))?.id, notDue.id);
    });

    it('claimBatchLease: highest priority first, then oldest', async () => {
      const lowOld = batchRow({ priority: 0 });
      const highOld = batchRow({ priority: 5 });
      const midNew = batchRow({ priority: 2 });
      const highNew = batchRow({ priority: 5 });
      const negative = batchRow({ priority: -1 });
      // Insert out of order so the result cannot be the insertion order.
      for (const row of [midNew, negative, highNew, lowOld, highOld]) await insertBatch(store.db, row);
      const order: string[] = [];
      for (let i = 0; i < 6; i++) {
        const claim = await claimBatchLease(store.db, { statuses: ['in_progress'] }, `w${i}`, 1000, NOW);
        if (claim) order.push(claim.id);
      }
      assert.deepEqual(order, [highOld.id, highNew.id, midNew.id, lowOld.id, negative.id]);
    });

    it('renewBatchLease and releaseBatchLease act only for the holder', async () => {
      const row = batchRow();
      await insertBatch(store.db, row);
      await claimBatchLease(store.db, { statuses: ['in_progress'] }, 'a', 100, NOW);
      assert.equal(await renewBatchLease(store.db, row.id, 'b', 1000, NOW + 10), false);
      assert.equal((await findBatch(store.db, row.id))?.lease_expires_at, NOW + 100);
      assert.equal(await renewBatchLease(store.db, row.id, 'a', 1000, NOW + 10), true);
      assert.equal((await findBatch(store.db, row.id))?.lease_expires_at, NOW + 1010);
      assert.equal(await claimBatchLease(store.db, { statuses: ['in_progress'] }, 'b', 100, NOW + 500), undefined, 'renewed lease holds');

      // A lapsed lease taken over by b: a can no longer renew or release it.
      const taken = await claimBatchLease(store.db, { statuses: ['in_progress'] }, 'b', 100, NOW + 2000);
      assert.equal(taken?.id, row.id);
      assert.equal(await renewBatchLease(store.db, row.id, 'a', 1000, NOW + 2001), false);
      await releaseBatchLease(store.db, row.id, 'a');
      let stored = await findBatch(store.db, row.id);
      assert.equal(stored?.lease_owner, 'b');
      assert.equal(stored?.lease_expires_at, NOW + 2100);

      await releaseBatchLease(store.db, row.id, 'b');
      stored = await findBatch(store.db, row.id);
      assert.equal(stored?.lease_owner, null);
      assert.equal(stored?.lease_expires_at, null);
      assert.equal((await claimBatchLease(store.db, { statuses: ['in_progress'] }, 'c', 100, NOW + 2001))?.lease_owner, 'c', 'released: claimable at once');
    });

    it('updateLeasedBatch needs the lease and a listed status', async () => {
      const row = batchRow();
      await insertBatch(store.db, row);
      assert.equal(await updateLeasedBatch(store.db, row.id, 'a', ['in_progress'], { status: 'finalizing' }), false, 'no lease held');
      await claimBatchLease(store.db, { statuses: ['in_progress'] }, 'a', 100, NOW);
      assert.equal(await updateLeasedBatch(store.db, row.id, 'b', ['in_progress'], { status: 'finalizing' }), false, 'not the holder');
      assert.equal(await updateLeasedBatch(store.db, row.id, 'a', ['validating'], { status: 'finalizing' }), false, 'wrong status');
      assert.equal((await findBatch(store.db, row.id))?.status, 'in_progress');
      assert.equal(await updateLeasedBatch(store.db, row.id, 'a', ['in_progress'], { status: 'finalizing', finalizing_at: NOW }), true);
      const stored = await findBatch(store.db, row.id);
      assert.equal(stored?.status, 'finalizing');
      assert.equal(stored?.finalizing_at, NOW);
      assert.equal(stored?.lease_owner, 'a', 'the lease is kept');
    });
  });

  describe('number types', () => {
    it('bigint and integer columns come back as JS numbers, exactly', async () => {
      const file = fileRow({ bytes: BIG, line_count: BIG + 1, created_at: NOW, expires_at: NOW + BIG });
      await insertFile(store.db, file);
      const gotFile = (await findFile(store.db, file.id))!;
      assertNumbers(gotFile, ['bytes', 'line_count', 'created_at', 'expires_at'], 'files');
      assert.equal(gotFile.line_count, BIG + 1);

      const batch = batchRow({
        priority: 3,
        file_size_bytes: BIG,
        in_progress_at: NOW + 1,
        finalizing_at: NOW + 2,
        completed_at: NOW + 3,
        failed_at: NOW + 4,
        expired_at: NOW + 5,
        cancelling_at: NOW + 6,
        cancelled_at: NOW + 7,
        request_total: BIG + 1,
        request_completed: BIG + 2,
        request_failed: BIG + 3,
        input_tokens: BIG + 4,
        output_tokens: BIG + 5,
        estimated_tokens: BIG + 6,
        output_expires_after_seconds: BIG + 7,
        lease_expires_at: NOW + 8,
      });
      await insertBatch(store.db, batch);
      const gotBatch = (await findBatch(store.db, batch.id))!;
      const batchNumbers = Object.entries(batch)
        .filter(([, v]) => typeof v === 'number')
        .map(([k]) => k);
      assert.ok(batchNumbers.length >= 19);
      assertNumbers(gotBatch, batchNumbers, 'batches');
      for (const column of batchNumbers) {
        assert.equal((gotBatch as Record<string, unknown>)[column], (batch as Record<string, unknown>)[column], column);
      }
      // Through listBatches and claimBatchLease too (other code paths, same parsing).
      assertNumbers((await listBatches(store.db, { userId: 'user-a', limit: 1 }))[0], batchNumbers, 'listBatches');

      await insertChunks(store.db, [
        {
          batch_id: batch.id,
          chunk: 0,
          line_start: 1,
          line_count: 2,
          byte_start: BIG,
          byte_end: BIG + 1,
          models: '{}',
          estimated_tokens: BIG,
          state: 'running',
          claims: 1,
          lease_owner: 'w',
          lease_expires_at: NOW,
          segments: 0,
          succeeded: 1,
          failed: 1,
          input_tokens: BIG,
          output_tokens: BIG,
          cost_nanos: BIG,
          finished_at: NOW,
        },
      ]);
      const chunk = await store.db.selectFrom('chunks').selectAll().where('batch_id', '=', batch.id).executeTakeFirstOrThrow();
      assertNumbers(
        chunk,
        ['chunk', 'line_start', 'line_count', 'byte_start', 'byte_end', 'estimated_tokens', 'claims', 'lease_expires_at', 'segments', 'succeeded', 'failed', 'input_tokens', 'output_tokens', 'cost_nanos', 'finished_at'],
        'chunks',
      );
      assert.equal(chunk.byte_start, BIG);
      assert.equal((await chunkTotalsOf(store.db, [batch.id])).get(batch.id)?.inputTokens, BIG);

      const key = keyRow({ is_admin: 1, created_at: NOW, revoked_at: NOW + 1 });
      await insertApiKey(store.db, key);
      const gotKey = (await listApiKeys(store.db))[0];
      assertNumbers(gotKey, ['is_admin', 'created_at', 'revoked_at'], 'api_keys');
      assert.deepEqual(gotKey, key);
    });
  });

  describe('api keys', () => {
    it('insert, find by hash, list, count, revoke by id and by prefix', async () => {
      const a = keyRow({ is_admin: 1 });
      const b = keyRow();
      const c = keyRow({ user_id: 'user-b' });
      for (const key of [a, b, c]) await insertApiKey(store.db, key);
      assert.deepEqual(await findActiveKeyByHash(store.db, a.key_hash), a);
      assert.equal(await findActiveKeyByHash(store.db, 'no-such-hash'), undefined);
      assert.deepEqual(ids(await listApiKeys(store.db)), ids([a, b, c]).sort());
      assert.equal(await countActiveKeys(store.db), 3);

      assert.equal(await revokeApiKey(store.db, a.id, NOW), 1);
      assert.equal(await findActiveKeyByHash(store.db, a.key_hash), undefined);
      assert.equal(await revokeApiKey(store.db, a.id, NOW + 1), 0, 'already revoked');
      assert.equal((await listApiKeys(store.db)).find((k) => k.id === a.id)?.revoked_at, NOW, 'first revocation time kept');

      assert.equal(await revokeApiKey(store.db, b.prefix, NOW), 1);
      assert.equal(await findActiveKeyByHash(store.db, b.key_hash), undefined);
      assert.equal(await revokeApiKey(store.db, 'nothing-matches', NOW), 0);
      assert.equal(await countActiveKeys(store.db), 1);
      assert.deepEqual(await findActiveKeyByHash(store.db, c.key_hash), c);
    });

    it('key hashes are unique', async () => {
      const a = keyRow();
      await insertApiKey(store.db, a);
      await assert.rejects(insertApiKey(store.db, keyRow({ key_hash: a.key_hash })));
      assert.equal(await countActiveKeys(store.db), 1);
    });
  });

  describe('upstream slots (global concurrency ceilings)', () => {
    it('ensure is idempotent and safe to race; acquisitions never hand out more than the ceiling', async () => {
      const other = await target.open();
      await Promise.all([ensureUpstreamSlots(store.db, 'vllm', 5), ensureUpstreamSlots(other.db, 'vllm', 5), ensureUpstreamSlots(store.db, 'vllm', 5)]);
      const args = { upstream: 'vllm', ceiling: 5, count: 4, leaseMs: 1000, now: NOW };
      // Two processes asking for 4 each at once: 5 slots in all, none twice.
      const [a, b] = await Promise.all([acquireUpstreamSlots(store.db, { ...args, owner: 'a' }), acquireUpstreamSlots(other.db, { ...args, owner: 'b' })]);
      assert.equal(a.length + b.length, 5, `a got ${a}, b got ${b}`);
      assert.equal(new Set([...a, ...b]).size, 5);
      assert.deepEqual(await acquireUpstreamSlots(store.db, { ...args, owner: 'c' }), [], 'nothing is left');
      assert.equal(await heldUpstreamSlots(store.db, 'vllm', NOW), 5);
      // A lower ceiling in another process's config: slots above it are never handed out.
      await releaseUpstreamSlots(store.db, { upstream: 'vllm', owner: 'a', slots: a });
      await releaseUpstreamSlots(store.db, { upstream: 'vllm', owner: 'b', slots: b });
      assert.equal((await acquireUpstreamSlots(store.db, { ...args, owner: 'c', ceiling: 2, count: 5 })).length, 2);
      assert.equal(await heldUpstreamSlots(store.db, 'other-upstream', NOW), 0, 'upstreams do not share slots');
    });

    it('release is by owner; renew keeps slots; a lapsed slot is taken over and drops out of its old owner\'s renewal', async () => {
      await ensureUpstreamSlots(store.db, 'vllm', 2);
      const args = { upstream: 'vllm', ceiling: 2, leaseMs: 1000 };
      const a = await acquireUpstreamSlots(store.db, { ...args, owner: 'a', count: 2, now: NOW });
      assert.equal(a.length, 2);
      await releaseUpstreamSlots(store.db, { upstream: 'vllm', owner: 'b', slots: a });
      assert.equal(await heldUpstreamSlots(store.db, 'vllm', NOW), 2, 'another owner cannot release them');

      const renewed = await renewUpstreamSlots(store.db, 'a', 1000, NOW + 900);
      assert.deepEqual(renewed.get('vllm')?.sort(), [...a].sort());
      assert.deepEqual(await acquireUpstreamSlots(store.db, { ...args, owner: 'b', count: 1, now: NOW + 1500 }), [], 'renewed until NOW + 1900');

      // a stalls past its lease; b takes one slot over; a's next renewal keeps only the other.
      const taken = await acquireUpstreamSlots(store.db, { ...args, owner: 'b', count: 1, now: NOW + 2500 });
      assert.equal(taken.length, 1);
      const after = await renewUpstreamSlots(store.db, 'a', 1000, NOW + 2600);
      assert.deepEqual(after.get('vllm'), a.filter((slot) => slot !== taken[0]));

      await releaseAllUpstreamSlots(store.db, 'a');
      await releaseAllUpstreamSlots(store.db, 'b');
      assert.equal(await heldUpstreamSlots(store.db, 'vllm', NOW + 2600), 0);
    });
  });
}

describe('sql store contract: sqlite', () => contract(sqliteHarness()));

describe(
  'sql store contract: postgres',
  { skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1: PostgreSQL half skipped' : false },
  () => contract(postgresHarness()),
);
