// The result writer holds results for a linger before committing them as one
// group; commitNow() is how the runner says no more are coming soon (nothing
// left in flight), so the last results of a batch never wait out the linger.
// The linger here (20 s) is twice the test's timeout: were commitNow() to do
// nothing, the test fails rather than passing late.
// Real SQLite underneath: a commit here is the one the runner makes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ResultWriter } from '../../src/runner/result-writer.ts';
import { openSqlStore, type SqlStore } from '../../src/store/sql/database.ts';
import { claimRequests } from '../../src/store/sql/request-claims.ts';
import { insertRequests, pageBatchRequests } from '../../src/store/sql/requests.ts';
import { pendingRequestRow } from '../helpers/request-rows.ts';
import { refuseValues } from '../helpers/db-faults.ts';
import { cleanupAll, createPostgresDatabase, SKIP_POSTGRES } from '../helpers/runner-harness.ts';

describe('result writer', () => {
  let dir: string;
  let store: SqlStore;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'spool-writer-'));
    store = await openSqlStore({ dataDir: dir });
    await insertRequests(store.db, [1, 2].map((line) => pendingRequestRow('b', line)));
    await claimRequests(store.db, 'sqlite', 'b', 'w', 60_000, Date.now(), 10);
  });
  after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const succeeded = (line: number) => ({ kind: 'succeeded' as const, batchId: 'b', line, status: 200, body: '{}', requestId: null, inputTokens: 1, outputTokens: 1, userId: 'u', model: 'm', costNanos: 0 });

  it('holds results for the linger, and commitNow() commits them at once', { timeout: 10_000 }, async () => {
    const writer = new ResultWriter(store.db, 'w', { lingerMs: 20_000 });
    let committed = false;
    const first = writer.write(succeeded(1)).then((applied) => (committed = applied));
    const second = writer.write(succeeded(2));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(committed, false, 'nothing is committed before the linger or commitNow()');
    assert.equal(writer.pending, 2);
    writer.commitNow();
    assert.deepEqual(await Promise.all([first, second]), [true, true]);
    const rows = await pageBatchRequests(store.db, 'b', 0, 10);
    assert.deepEqual(rows.map((row) => row.state), ['succeeded', 'succeeded'], 'one group, committed');
  });
});

// The database refuses one record of a group (a trigger raising the error a value it cannot hold raises):
// the other records commit, and the refused line ends as a failure without the refused content. Before, the
// writer retried the whole group forever, so no later result was ever recorded.
for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`result writer on ${backend}: a refused record`, { skip: backend === 'postgres' && SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : false }, () => {
    let dir: string;
    let store: SqlStore;

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'spool-writer-'));
      store = await openSqlStore({ dataDir: dir, databaseUrl: backend === 'postgres' ? await createPostgresDatabase() : undefined });
      await insertRequests(store.db, [1, 2, 3, 4, 5].map((line) => pendingRequestRow('b', line)));
      await claimRequests(store.db, backend, 'b', 'w', 60_000, Date.now(), 10);
      await refuseValues(store.db, backend, { table: 'requests', event: 'update', column: 'response_body', needle: 'poison' });
    });
    after(async () => {
      await store.close();
      await rm(dir, { recursive: true, force: true });
      await cleanupAll();
    });

    it('commits the rest of the group and records the refused line as result_not_stored', { timeout: 20_000 }, async () => {
      const refused: number[] = [];
      const writer = new ResultWriter(store.db, 'w', { lingerMs: 20_000, onRefused: (record) => refused.push(record.line) });
      const body = (line: number) => (line === 3 ? '{"text":"poison"}' : '{"text":"fine"}');
      const results = [1, 2, 3, 4, 5].map((line) =>
        writer.write({ kind: 'succeeded', batchId: 'b', line, status: 200, body: body(line), requestId: null, inputTokens: 1, outputTokens: 1, userId: 'u', model: 'm', costNanos: 0 }),
      );
      writer.commitNow();
      assert.deepEqual(await Promise.all(results), [true, true, true, true, true], 'every line ended');
      assert.deepEqual(refused, [3]);
      assert.equal(writer.stall, undefined, 'a refusal is not a stall');
      const rows = await pageBatchRequests(store.db, 'b', 0, 10);
      assert.deepEqual(
        rows.map((row) => [row.line, row.state, row.error_code, row.response_body]),
        [
          [1, 'succeeded', null, '{"text":"fine"}'],
          [2, 'succeeded', null, '{"text":"fine"}'],
          [3, 'failed', 'result_not_stored', null],
          [4, 'succeeded', null, '{"text":"fine"}'],
          [5, 'succeeded', null, '{"text":"fine"}'],
        ],
      );
      assert.match(rows[2].error_message ?? '', /could not be stored \(the database refused the values \((22023|SQLITE_CONSTRAINT_TRIGGER)\)\)/);
    });
  });
}
