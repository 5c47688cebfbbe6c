// better-sqlite3 prepares every statement Kysely sends from scratch. Spool
// sends the same few statements over and over (claims, group commits, the
// 500-row validation insert), and a prepare costs as much as a small
// execution: validating 50,000 lines spent ~160 ms preparing the same insert
// (bench: --only validate --cpu-prof). This keeps prepared statements by SQL
// text. Safe because Spool never streams a query (a statement is never busy
// when it is handed out again), and SQLite re-prepares a cached statement by
// itself when a migration changes the schema under it.
import type BetterSqlite3 from 'better-sqlite3';
import type { SqliteDatabase, SqliteStatement } from 'kysely';

const DEFAULT_CAPACITY = 256;

export function withStatementCache(database: BetterSqlite3.Database, capacity = DEFAULT_CAPACITY): SqliteDatabase {
  const cache = new Map<string, SqliteStatement>();
  return {
    prepare(sql: string): SqliteStatement {
      let statement = cache.get(sql);
      if (statement) {
        // Map order doubles as recency: re-insert on a hit, evict the first key when full.
        cache.delete(sql);
      } else {
        const prepared = database.prepare(sql) as unknown as SqliteStatement;
        statement = /^\s*rollback\s*$/i.test(sql) ? rollbackIfActive(database, prepared) : prepared;
        if (cache.size >= capacity) cache.delete(cache.keys().next().value as string);
      }
      cache.set(sql, statement);
      return statement;
    },
    close(): void {
      cache.clear();
      database.close();
    },
  };
}

/**
 * A ROLLBACK that is a no-op when no transaction is active. SQLite rolls a transaction back by itself on some
 * errors (SQLITE_FULL at COMMIT among them); Kysely then sends its own ROLLBACK, which failed with "cannot
 * rollback - no transaction is active", and that error replaced the real one: a full database was reported as
 * SQLITE_ERROR, "unavailable" rather than "full" (faults.test.ts, the database runs out of space).
 */
function rollbackIfActive(database: BetterSqlite3.Database, rollback: SqliteStatement): SqliteStatement {
  return {
    reader: false,
    all: (parameters) => rollback.all(parameters),
    run: (parameters) => (database.inTransaction ? rollback.run(parameters) : { changes: 0, lastInsertRowid: 0 }),
    iterate: (parameters) => rollback.iterate(parameters),
  } as SqliteStatement;
}
