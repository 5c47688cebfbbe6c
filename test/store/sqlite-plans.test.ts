// The runner's two hottest SQLite statements must find each row by primary
// key. Both once did not: the claim's UPDATE ... WHERE line IN (<compound
// select>) ran at ~35 µs a row, and the group commit's UPDATE ... FROM
// (VALUES ...) was planned through the partial index of running lines by
// lease_owner, walking every line the worker held once per result (105 µs a
// row with 400 held). Nothing here is timed: the statements Spool actually
// sends are captured and SQLite's own EXPLAIN QUERY PLAN is checked.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { openSqlStore, type SqlStore } from '../../src/store/sql/database.ts';
import { applyRequestOutcomes, claimRequests, type RequestOutcomeRecord } from '../../src/store/sql/request-claims.ts';
import { insertRequests } from '../../src/store/sql/requests.ts';

type Prepare = (this: BetterSqlite3.Database, source: string) => BetterSqlite3.Statement;

describe('sqlite query plans of the runner hot path', () => {
  let dir: string;
  let store: SqlStore;
  const prepared: string[] = [];
  const proto = BetterSqlite3.prototype as unknown as { prepare: Prepare };
  const original = proto.prepare;

  before(async () => {
    proto.prepare = function (this: BetterSqlite3.Database, source: string) {
      prepared.push(source);
      return original.call(this, source);
    };
    dir = await mkdtemp(join(tmpdir(), 'spool-plans-'));
    store = await openSqlStore({ dataDir: dir });
  });
  after(async () => {
    proto.prepare = original;
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** EXPLAIN QUERY PLAN of the one statement Spool prepared matching `pattern`, its parameters bound to null. */
  function planOf(pattern: RegExp): string[] {
    const matches = [...new Set(prepared.filter((source) => pattern.test(source)))];
    assert.equal(matches.length, 1, `expected one statement matching ${pattern}, got ${matches.length}`);
    const source = matches[0];
    const probe = new BetterSqlite3(join(dir, 'spool.db'), { readonly: true });
    try {
      const parameters = (source.match(/\?/g) ?? []).length;
      const rows = original.call(probe, `explain query plan ${source}`).all(...Array<null>(parameters).fill(null)) as { detail: string }[];
      return rows.map((row) => row.detail);
    } finally {
      probe.close();
    }
  }

  it('claims and group commits look rows up by primary key', async () => {
    const rows = Array.from({ length: 300 }, (_, i) => ({
      batch_id: 'b1',
      line: i + 1,
      custom_id: `c${i + 1}`,
      model: 'm',
      byte_offset: i * 100,
      byte_length: 100,
      estimated_tokens: 1,
      state: 'pending' as const,
      attempts: 0,
      not_before: 0,
      input_tokens: 0,
      output_tokens: 0,
    }));
    await insertRequests(store.db, rows);
    const claimed = await claimRequests(store.db, 'sqlite', 'b1', 'w', 60_000, Date.now(), 200);
    assert.equal(claimed.length, 200);
    const records: RequestOutcomeRecord[] = claimed.slice(0, 100).map((row) => ({
      kind: 'succeeded',
      batchId: row.batch_id,
      line: row.line,
      status: 200,
      body: '{}',
      requestId: null,
      inputTokens: 1,
      outputTokens: 1,
    }));
    assert.equal((await applyRequestOutcomes(store.db, 'w', records, Date.now())).length, 100);

    const claimPlan = planOf(/^update "requests" set "state" = \?, "lease_owner"/);
    assert.ok(
      claimPlan.some((step) => /SEARCH requests USING (COVERING )?INDEX sqlite_autoindex_requests_1 \(batch_id=\? AND line=\?\)/.test(step)),
      `claim: ${claimPlan.join(' | ')}`,
    );
    assert.ok(!claimPlan.some((step) => /SUBQUERY|CO-ROUTINE/.test(step)), `claim updates an explicit list of lines: ${claimPlan.join(' | ')}`);

    const commitPlan = planOf(/^\s*update requests set\s+state = 'succeeded'/);
    assert.match(commitPlan[0], /SCAN \d+-ROW VALUES CLAUSE/, `group commit walks its VALUES first: ${commitPlan.join(' | ')}`);
    assert.match(commitPlan[1], /SEARCH requests USING INDEX sqlite_autoindex_requests_1 \(batch_id=\? AND line=\?\)/, `group commit: ${commitPlan.join(' | ')}`);
  });
});
