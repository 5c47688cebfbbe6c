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
        statement = database.prepare(sql) as unknown as SqliteStatement;
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
