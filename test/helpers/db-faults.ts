// Real faults in a real database, for the tests of what Spool does when its
// store fails: the database itself refuses a value (a trigger raising the
// error a data exception raises), runs out of space (SQLite's max_page_count:
// the same SQLITE_FULL a full disk gives), or stops taking connections
// (PostgreSQL: connections refused, and the open ones terminated, as in a
// restart or failover).
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import type { SqlDialectName } from '../../src/store/sql/database.ts';
import type { Database } from '../../src/store/sql/schema.ts';

let triggerCount = 0;

/**
 * Makes the database refuse every INSERT or UPDATE of `table` whose new `column` contains `needle`:
 * PostgreSQL raises SQLSTATE 22023 (a data exception), SQLite RAISE(ABORT) (SQLITE_CONSTRAINT_TRIGGER).
 * Returns a function that drops the trigger again.
 */
export async function refuseValues(
  db: Kysely<Database>,
  dialect: SqlDialectName,
  options: { table: string; event: 'insert' | 'update'; column: string; needle: string },
): Promise<() => Promise<void>> {
  const name = `spool_test_refuse_${++triggerCount}`;
  const { table, column, needle } = options;
  const event = options.event.toUpperCase();
  const like = `%${needle}%`;
  if (dialect === 'postgres') {
    await sql
      .raw(
        `CREATE FUNCTION ${name}() RETURNS trigger AS $$ BEGIN
           IF NEW.${column} LIKE '${like}' THEN RAISE EXCEPTION 'refused by the test' USING ERRCODE = '22023'; END IF;
           RETURN NEW;
         END $$ LANGUAGE plpgsql`,
      )
      .execute(db);
    await sql.raw(`CREATE TRIGGER ${name} BEFORE ${event} ON ${table} FOR EACH ROW EXECUTE FUNCTION ${name}()`).execute(db);
    return async () => {
      await sql.raw(`DROP TRIGGER ${name} ON ${table}`).execute(db);
      await sql.raw(`DROP FUNCTION ${name}()`).execute(db);
    };
  }
  await sql
    .raw(`CREATE TRIGGER ${name} BEFORE ${event} ON ${table} WHEN NEW.${column} LIKE '${like}' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END`)
    .execute(db);
  return async () => {
    await sql.raw(`DROP TRIGGER ${name}`).execute(db);
  };
}

/** SQLite only: the database file may not grow any more, so the next write that needs a page fails with SQLITE_FULL. */
export async function fillSqlite(db: Kysely<Database>): Promise<void> {
  const { rows } = await sql<{ page_count: number }>`pragma page_count`.execute(db);
  await sql.raw(`pragma max_page_count = ${rows[0].page_count}`).execute(db);
}

/** SQLite only: space again. */
export async function unfillSqlite(db: Kysely<Database>): Promise<void> {
  await sql`pragma max_page_count = 1073741823`.execute(db);
}

/** A connection to the server's `postgres` database, as the user of `databaseUrl`, and the name of that URL's database. */
async function adminFor(databaseUrl: string): Promise<{ admin: pg.Client; name: string }> {
  const url = new URL(databaseUrl);
  const name = url.pathname.slice(1);
  url.pathname = '/postgres';
  const admin = new pg.Client({ connectionString: url.toString() });
  await admin.connect();
  return { admin, name };
}

const TERMINATE = 'select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()';

/** PostgreSQL only: no new connections to the database of `databaseUrl`, and every open one terminated. Returns the undo. */
export async function cutPostgresConnections(databaseUrl: string): Promise<() => Promise<void>> {
  const { admin, name } = await adminFor(databaseUrl);
  await admin.query(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS false`);
  await admin.query(TERMINATE, [name]);
  return async () => {
    try {
      await admin.query(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS true`);
    } finally {
      await admin.end();
    }
  };
}

/** PostgreSQL only: terminates every connection to the database of `databaseUrl` (they may reconnect at once). */
export async function terminatePostgresConnections(databaseUrl: string): Promise<number> {
  const { admin, name } = await adminFor(databaseUrl);
  try {
    return (await admin.query(TERMINATE, [name])).rowCount ?? 0;
  } finally {
    await admin.end();
  }
}
