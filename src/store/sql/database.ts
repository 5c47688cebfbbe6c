// Opens the metadata database (SQLite by default, PostgreSQL when a
// postgres:// URL is configured) and brings its schema up to date.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect, SqliteDialect } from 'kysely';
import pg from 'pg';
import { migrationProvider } from './migrations.ts';
import type { Database } from './schema.ts';

export type SqlDialectName = 'sqlite' | 'postgres';

export interface SqlStore {
  db: Kysely<Database>;
  dialect: SqlDialectName;
  close(): Promise<void>;
}

export interface OpenSqlOptions {
  dataDir: string;
  databaseUrl?: string;
}

// int8 (bigint) columns hold millisecond timestamps and byte counts, all far
// below 2^53; parse them as numbers so both dialects return the same types.
pg.types.setTypeParser(20, (value) => Number(value));

export async function openSqlStore(options: OpenSqlOptions): Promise<SqlStore> {
  const url = options.databaseUrl;
  let store: SqlStore;
  if (url && /^postgres(ql)?:\/\//.test(url)) {
    const pool = new pg.Pool({ connectionString: url, max: 10 });
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    store = { db, dialect: 'postgres', close: () => db.destroy() };
  } else if (url && !/^sqlite:/.test(url)) {
    throw new Error(`databaseUrl must start with postgres://, postgresql:// or sqlite: (got "${url}")`);
  } else {
    const path = url ? url.replace(/^sqlite:(\/\/)?/, '') : join(options.dataDir, 'spool.db');
    if (!url) mkdirSync(options.dataDir, { recursive: true });
    const sqlite = new BetterSqlite3(path);
    sqlite.pragma('journal_mode = WAL');
    // FULL: an acknowledged upload or batch survives power loss, not only a crash.
    sqlite.pragma('synchronous = FULL');
    sqlite.pragma('busy_timeout = 5000');
    sqlite.pragma('foreign_keys = ON');
    const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
    store = { db, dialect: 'sqlite', close: () => db.destroy() };
  }
  await migrate(store.db);
  return store;
}

async function migrate(db: Kysely<Database>): Promise<void> {
  const migrator = new Migrator({ db, provider: migrationProvider });
  const { error, results } = await migrator.migrateToLatest();
  const failed = results?.find((r) => r.status === 'Error');
  if (error || failed) {
    const reason = error instanceof Error ? error.message : String(error ?? 'unknown error');
    throw new Error(`database migration ${failed?.migrationName ?? ''} failed: ${reason}`);
  }
}
