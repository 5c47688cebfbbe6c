// Opens the metadata database (SQLite by default, PostgreSQL when a
// postgres:// URL is configured) and brings its schema up to date.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect, SqliteDialect } from 'kysely';
import pg from 'pg';
import { takeLivenessLock, type LivenessLock } from './liveness-lock.ts';
import { migrationProvider } from './migrations.ts';
import { withStatementCache } from './statement-cache.ts';
import { withStorableText } from './storable-text.ts';
import type { Database } from './schema.ts';

export type SqlDialectName = 'sqlite' | 'postgres';

export interface SqlStore {
  db: Kysely<Database>;
  dialect: SqlDialectName;
  close(): Promise<void>;
  /** PostgreSQL: a session of its own holding an advisory lock while this process lives (runtime/liveness.ts). */
  takeLivenessLock?: (key: number) => Promise<LivenessLock | undefined>;
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
  if (url && /^postgres(ql)?:\/\//.test(url)) {
    const pool = new pg.Pool({ connectionString: url, max: 10 });
    // A connection the server ends (a restart, a failover, pg_terminate_backend, an idle-connection reaper) is
    // reported as an 'error' event: by the pool for an idle connection, by the client itself for one checked
    // out (inside a transaction, between two of its statements). Without a listener either is an uncaught
    // exception that stops the whole process, API included. The statement that was running fails on its own
    // (its caller retries with backoff); the pool drops the dead connection when it is released and opens a
    // new one for the next query.
    pool.on('error', () => undefined);
    pool.on('connect', (client) => client.on('error', () => undefined));
    const db = new Kysely<Database>({ dialect: withStorableText(new PostgresDialect({ pool })) });
    const store: SqlStore = { db, dialect: 'postgres', close: () => db.destroy(), takeLivenessLock: (key) => takeLivenessLock(url, key) };
    await closeOnFailure(store, () => migrate(db));
    return store;
  }
  if (url && !/^sqlite:/.test(url)) {
    throw new Error(`databaseUrl must start with postgres://, postgresql:// or sqlite: (got "${url}")`);
  }
  const path = url ? url.replace(/^sqlite:(\/\/)?/, '') : join(options.dataDir, 'spool.db');
  if (!url) mkdirSync(options.dataDir, { recursive: true });
  const sqlite = new BetterSqlite3(path);
  // First, so that switching to WAL waits for another process instead of failing.
  sqlite.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
  sqlite.pragma('journal_mode = WAL');
  // FULL: an acknowledged upload or batch survives power loss, not only a crash.
  sqlite.pragma('synchronous = FULL');
  sqlite.pragma('foreign_keys = ON');
  const db = new Kysely<Database>({ dialect: withStorableText(new SqliteDialect({ database: withStatementCache(sqlite) })) });
  const store: SqlStore = { db, dialect: 'sqlite', close: () => db.destroy() };
  await closeOnFailure(store, () => migrateSqlite(sqlite, db));
  return store;
}

const SQLITE_BUSY_TIMEOUT_MS = 5000;

/** A store whose migration failed is closed, so no pool or file handle outlives the error. */
async function closeOnFailure(store: SqlStore, work: () => Promise<void>): Promise<void> {
  try {
    await work();
  } catch (err) {
    await store.close().catch(() => undefined);
    throw err;
  }
}

/**
 * Kysely takes no migration lock on SQLite, so two processes opening a fresh
 * database at once both ran 0001 and one failed ("table settings already
 * exists"). Hold SQLite's write lock (BEGIN IMMEDIATE) across the whole
 * migration instead; a second opener polls for it (without blocking its event
 * loop, which may be the one the first opener runs on), then finds nothing to
 * do. SQLite DDL is transactional, so a failed migration also rolls back whole.
 */
async function migrateSqlite(sqlite: BetterSqlite3.Database, db: Kysely<Database>): Promise<void> {
  const giveUpAt = Date.now() + 60_000;
  sqlite.pragma('busy_timeout = 0');
  try {
    for (;;) {
      try {
        sqlite.exec('BEGIN IMMEDIATE');
        break;
      } catch (err) {
        if ((err as { code?: string }).code !== 'SQLITE_BUSY' || Date.now() > giveUpAt) throw err;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  } finally {
    sqlite.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
  }
  try {
    await migrate(db);
    sqlite.exec('COMMIT');
  } catch (err) {
    if (sqlite.inTransaction) sqlite.exec('ROLLBACK');
    throw err;
  }
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
