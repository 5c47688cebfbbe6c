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

  const succeeded = (line: number) => ({ kind: 'succeeded' as const, batchId: 'b', line, status: 200, body: '{}', requestId: null, inputTokens: 1, outputTokens: 1 });

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
