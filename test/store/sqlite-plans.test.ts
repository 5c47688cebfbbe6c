// The runner's hottest SQLite statements must find their chunk by primary
// key. Under the per-line design both once did not: a claim's UPDATE ... WHERE
// line IN (<compound select>) ran at ~35 µs a row, and the group commit was
// planned through the partial index of running rows by lease_owner, walking
// every row the worker held once per result. Nothing here is timed: the
// statements the store's functions send are captured and SQLite's own
// EXPLAIN QUERY PLAN is checked.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import { openSqlStore } from '../../src/store/sql/database.ts';
import { claimChunk, insertChunks, newChunk } from '../../src/store/sql/chunks.ts';
import { commitSegments } from '../../src/store/sql/segments.ts';
import type { Database } from '../../src/store/sql/schema.ts';

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

  it('chunk claims and segment commits look their chunk up by primary key', async () => {
    await insertChunks(
      db,
      Array.from({ length: 300 }, (_, i) =>
        newChunk({
          batch_id: 'b1',
          chunk: i,
          line_start: i * 10 + 1,
          line_count: 10,
          byte_start: i * 1000,
          byte_end: i * 1000 + 999,
          models: '{"m":[10,10]}',
          estimated_tokens: 10,
        }),
      ),
    );
    const held = [];
    for (let i = 0; i < 200; i++) held.push((await claimChunk(db, 'sqlite', 'b1', 'w', 60_000, Date.now()))!);
    assert.equal(held.length, 200);
    const commit = (chunk: number) => ({
      batchId: 'b1',
      chunk,
      blobKey: `k${chunk}`,
      outputBytes: 1,
      errorBytes: 0,
      outputLines: 1,
      errorLines: 0,
      doneBits: '0100',
      failedBits: '0000',
      stats: '{}',
      inputTokens: 1,
      outputTokens: 1,
      costNanos: 0,
      finishesChunk: false,
      usage: [],
    });
    assert.equal((await commitSegments(db, 'w', held.slice(0, 100).map((row) => commit(row.chunk)), new Map(), Date.now())).size, 100);

    const claimPlan = planOf(/^update "chunks" set "state" = \?, "lease_owner"/);
    assert.ok(
      claimPlan.some((step) => /SEARCH chunks USING (COVERING )?INDEX sqlite_autoindex_chunks_1 \(batch_id=\? AND chunk=\?\)/.test(step)),
      `claim: ${claimPlan.join(' | ')}`,
    );
    const commitPlan = planOf(/^update "chunks" set "segments" = "segments" \+/);
    assert.ok(
      commitPlan.some((step) => /SEARCH chunks USING (COVERING )?INDEX sqlite_autoindex_chunks_1 \(batch_id=\? AND chunk=\?\)/.test(step)),
      `segment commit: ${commitPlan.join(' | ')}`,
    );
  });
});
