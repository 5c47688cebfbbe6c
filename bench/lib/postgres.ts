// PostgreSQL for the benchmarks: an admin connection, a fresh database per
// run (dropped afterwards), and a batch's exact timings read from its row.
import { randomBytes } from 'node:crypto';
import { userInfo } from 'node:os';
import pg from 'pg';

export async function connectAdmin(): Promise<pg.Client> {
  const urls = process.env.SPOOL_TEST_POSTGRES_URL
    ? [process.env.SPOOL_TEST_POSTGRES_URL]
    : [...new Set([process.env.PGUSER, safeUser(), 'postgres'].filter((u): u is string => Boolean(u)))].map((user) => `postgres://${encodeURIComponent(user)}@127.0.0.1:5432/postgres`);
  const failures: string[] = [];
  for (const url of urls) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
    try {
      await client.connect();
      return client;
    } catch (err) {
      failures.push(`${url}: ${(err as Error).message}`);
      await client.end().catch(() => undefined);
    }
  }
  throw new Error(`this benchmark needs PostgreSQL on 127.0.0.1:5432 (or SPOOL_TEST_POSTGRES_URL): ${failures.join('; ')}`);
}

function safeUser(): string | undefined {
  try {
    return userInfo().username;
  } catch {
    return undefined;
  }
}

export async function createDatabase(admin: pg.Client): Promise<string> {
  const name = `spool_bench_${randomBytes(6).toString('hex')}`;
  await admin.query(`CREATE DATABASE ${name}`);
  const url = new URL(`postgres://${encodeURIComponent(admin.user ?? 'postgres')}@${admin.host}:${admin.port}/${name}`);
  return url.toString();
}

export async function dropDatabase(admin: pg.Client, databaseUrl: string): Promise<void> {
  const name = new URL(databaseUrl).pathname.slice(1);
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
}

/** A batch's in_progress_at and completed_at (ms, the database's record) and its completed count. */
export async function batchTimes(databaseUrl: string, batchId: string): Promise<{ in_progress_at: number; completed_at: number; request_completed: number }> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const result = await client.query('SELECT in_progress_at, completed_at, request_completed FROM batches WHERE id = $1', [batchId]);
    const row = result.rows[0] as Record<string, string | number>;
    return { in_progress_at: Number(row.in_progress_at), completed_at: Number(row.completed_at), request_completed: Number(row.request_completed) };
  } finally {
    await client.end();
  }
}

