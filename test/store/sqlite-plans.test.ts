// The runner's two hottest SQLite statements must find each row by primary
// key. Both once did not: the claim's UPDATE ... WHERE line IN (<compound
// select>) ran at ~35 µs a row, and the group commit's UPDATE ... FROM
// (VALUES ...) was planned through the partial index of running lines by
// lease_owner, walking every line the worker held once per result (105 µs a
// row with 400 held). Nothing here is timed: the statements the store's
// functions send are captured and SQLite's own EXPLAIN QUERY PLAN is checked.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import { openSqlStore } from '../../src/store/sql/database.ts';
import { applyRequestOutcomes, claimRequests, type RequestOutcomeRecord } from '../../src/store/sql/request-claims.ts';
import { insertRequests } from '../../src/store/sql/requests.ts';
import type { Database } from '../../src/store/sql/schema.ts';
import { pendingRequestRow } from '../helpers/request-rows.ts';

describe('sqlite query plans of the runner hot path', () => {
  let dir: string;
  let sqlite: BetterSqlite3.Database;
  let db: Kysely<Database>;
  const prepared: string[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'spool-plans-'));
    const store = await openSqlStore({ dataDir: dir });
    await store.close();
    // The same queries on a connection of the test's own, so their SQL text can be captured as sent.
    sqlite = new BetterSqlite3(join(dir, 'spool.db'));
    db = new Kysely<Database>({
      dialect: new SqliteDialect({ database: sqlite }),
      log: (event) => {
        prepared.push(event.query.sql);
      },
    });
  });
  after(async () => {
    await db.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  /** EXPLAIN QUERY PLAN of the one statement sent matching `pattern`, its parameters bound to null. */
  function planOf(pattern: RegExp): string[] {
    const matches = [...new Set(prepared.filter((source) => pattern.test(source)))];
    assert.equal(matches.length, 1, `expected one statement matching ${pattern}, got ${matches.length}`);
    const source = matches[0];
    const parameters = (source.match(/\?/g) ?? []).length;
    const rows = sqlite.prepare(`explain query plan ${source}`).all(...Array<null>(parameters).fill(null)) as { detail: string }[];
    return rows.map((row) => row.detail);
  }

  it('claims and group commits look rows up by primary key', async () => {
    const rows = Array.from({ length: 300 }, (_, i) => pendingRequestRow('b1', i + 1));
    await insertRequests(db, rows);
    const claimed = await claimRequests(db, 'sqlite', 'b1', 'w', 60_000, Date.now(), 200);
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
      userId: 'u',
      model: 'm',
      costNanos: 0,
    }));
    assert.equal((await applyRequestOutcomes(db, 'w', records, Date.now())).length, 100);

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
