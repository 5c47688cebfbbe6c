// A PostgreSQL server that ends idle connections (a restart, a failover,
// pg_terminate_backend) must not take Spool down: the pool drops them and
// the next query connects again.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { openSqlStore } from '../../src/store/sql/database.ts';
import { cleanupAll, createPostgresDatabase, SKIP_POSTGRES } from '../helpers/runner-harness.ts';

after(cleanupAll);

describe('PostgreSQL connections ended by the server', { skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : false }, () => {
  it('idle pooled connections terminated by the server: no crash, the next query reconnects', async () => {
    const databaseUrl = await createPostgresDatabase();
    const store = await openSqlStore({ dataDir: '', databaseUrl });
    try {
      // Several idle connections in the pool.
      await Promise.all(Array.from({ length: 4 }, () => store.db.selectFrom('settings').selectAll().execute()));
      const admin = new pg.Client({ connectionString: databaseUrl });
      await admin.connect();
      const name = new URL(databaseUrl).pathname.slice(1);
      const ended = await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
      await admin.end();
      assert.ok(ended.rowCount && ended.rowCount >= 1, 'the pool had connections to end');
      // Give the terminations time to arrive as 'error' events on the idle clients.
      await new Promise((resolve) => setTimeout(resolve, 200));
      const rows = await store.db.selectFrom('settings').selectAll().execute();
      assert.deepEqual(rows, []);
    } finally {
      await store.close();
    }
  });
});
