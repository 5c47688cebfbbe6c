// A PostgreSQL session of its own that holds one advisory lock for as long as
// the process lives. The server releases the lock the moment the session ends:
// a process killed with SIGKILL, OOM-killed or cut off loses it within a round
// trip, however long its lease had left. That is what lets other workers take
// a dead worker's work in seconds without taking a merely slow worker (one in
// a long GC pause, or on a busy database) for dead: a slow process keeps its
// session, and with it the lock.
//
// Not a pooled connection: it is held for the process's whole life, and the
// pool's connections are for queries.
import pg from 'pg';
import { LIVENESS_LOCK_CLASS } from './workers.ts';

export interface LivenessLock {
  readonly key: number;
  /** False once the session has ended (the server went away, or the connection was cut). */
  readonly held: boolean;
  release(): Promise<void>;
}

/** Connects and takes lock (LIVENESS_LOCK_CLASS, key); resolves undefined when another session holds that key. */
export async function takeLivenessLock(connectionString: string, key: number): Promise<LivenessLock | undefined> {
  const client = new pg.Client({ connectionString, application_name: 'spool-liveness', keepAlive: true });
  let held = false;
  // An 'error' without a listener would stop the process; here it only means the lock is gone.
  client.on('error', () => {
    held = false;
  });
  client.on('end', () => {
    held = false;
  });
  try {
    await client.connect();
    const { rows } = await client.query<{ locked: boolean }>('select pg_try_advisory_lock($1, $2) as locked', [LIVENESS_LOCK_CLASS, key]);
    if (!rows[0]?.locked) {
      await client.end();
      return undefined;
    }
    held = true;
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
  return {
    key,
    get held() {
      return held;
    },
    async release() {
      held = false;
      // Ending the session releases the lock.
      await client.end().catch(() => undefined);
    },
  };
}
