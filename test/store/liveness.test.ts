// Fast liveness on both backends, with real databases: a process found dead
// has everything it held handed back at once (its running requests, batch
// leases, webhook deliveries and upstream slots), and nothing of live ones.
// On PostgreSQL, a process whose liveness session ends is found dead within
// two beats, one that keeps its session is not, until the timeout.
//
// The "other" processes are rows this test writes for a host that is not this
// one, so only the database signals can tell whether they live.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { loadConfig } from '../../src/config.ts';
import { WorkerLiveness } from '../../src/runtime/liveness.ts';
import { openStore, type Store } from '../../src/store/index.ts';
import type { NewBatch } from '../../src/store/sql/schema.ts';
import { ensureUpstreamSlots, acquireUpstreamSlots } from '../../src/store/sql/upstream-slots.ts';
import { listWorkers, registerWorker } from '../../src/store/sql/workers.ts';
import { cleanupAll, createPostgresDatabase, lifecycleContext, makeTempDir, pollUntil, SKIP_POSTGRES } from '../helpers/runner-harness.ts';
import { batchRowAt, pendingChunkRow } from '../helpers/request-rows.ts';

after(cleanupAll);

const ELSEWHERE = 'another-host pid:[1]';

function batchRow(overrides: Partial<NewBatch> = {}): NewBatch {
  return batchRowAt(Date.now(), { user_id: 'u', input_file_id: 'f', request_total: 4, ...overrides });
}

/** A process elsewhere that holds chunks 0-1 of `batchId`, the batch lease, a webhook delivery and `slots` of 4 slots, for 10 minutes. */
async function holdWork(store: Store, owner: string, batchId: string, lockKey: number | null, slots = 3): Promise<void> {
  const db = store.sql.db;
  const now = Date.now();
  const lease = { lease_owner: owner, lease_expires_at: now + 600_000 };
  await registerWorker(db, { id: owner, host: ELSEWHERE, pid: 1, role: 'worker', started_at: now, heartbeat_at: now, lock_key: lockKey });
  await db
    .updateTable('chunks')
    .set({ state: 'running', ...lease })
    .where('batch_id', '=', batchId)
    .where('chunk', 'in', [0, 1])
    .execute();
  await db.updateTable('batches').set(lease).where('id', '=', batchId).execute();
  await db
    .insertInto('webhook_deliveries')
    .values({
      id: `whd-${owner}`,
      event_id: `evt-${owner}`,
      event_type: 'batch.completed',
      batch_id: batchId,
      user_id: 'u',
      url: 'http://127.0.0.1:9/hook',
      payload: '{}',
      state: 'pending',
      attempts: 1,
      next_attempt_at: now,
      created_at: now,
      ...lease,
    })
    .execute();
  await ensureUpstreamSlots(db, 'up', 4);
  assert.equal((await acquireUpstreamSlots(db, { upstream: 'up', ceiling: 4, owner, count: slots, leaseMs: 600_000, now })).length, slots);
}

async function heldBy(store: Store, owner: string) {
  const db = store.sql.db;
  const now = Date.now();
  const requests = await db.selectFrom('chunks').select('chunk').where('lease_owner', '=', owner).where('lease_expires_at', '>', now).execute();
  const batches = await db.selectFrom('batches').select('id').where('lease_owner', '=', owner).where('lease_expires_at', '>', now).execute();
  const deliveries = await db.selectFrom('webhook_deliveries').select('id').where('lease_owner', '=', owner).where('lease_expires_at', '>', now).execute();
  const slots = await db.selectFrom('upstream_slots').select('slot').where('owner', '=', owner).execute();
  return { requests: requests.length, batches: batches.length, deliveries: deliveries.length, slots: slots.length };
}

const NOTHING = { requests: 0, batches: 0, deliveries: 0, slots: 0 };
const EVERYTHING = { requests: 2, batches: 1, deliveries: 1, slots: 3 };

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`liveness on ${backend}`, { skip: backend === 'postgres' && SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : false }, () => {
    async function open(worker: { heartbeatMs: number; livenessTimeoutSeconds: number }) {
      const dataDir = makeTempDir('spool-liveness-');
      const databaseUrl = backend === 'postgres' ? await createPostgresDatabase() : undefined;
      const config = loadConfig({ flags: { dataDir, databaseUrl, worker, log: { level: 'silent' } }, env: {} });
      const store = await openStore(config);
      after(() => store.close());
      const batch = batchRow();
      await store.sql.db.insertInto('batches').values(batch).execute();
      await store.sql.db
        .insertInto('chunks')
        .values([0, 1, 2, 3].map((chunk) => pendingChunkRow(batch.id, chunk)))
        .execute();
      return { store, config, batch, databaseUrl };
    }

    it('a process whose heartbeat stops is found dead after the timeout: everything it held is handed back, nothing of a live one', async () => {
      const { store, config, batch } = await open({ heartbeatMs: 50, livenessTimeoutSeconds: 0.5 });
      await holdWork(store, 'worker-dead', batch.id, null);
      const other = batchRow();
      await store.sql.db.insertInto('batches').values(other).execute();
      await store.sql.db.insertInto('chunks').values([pendingChunkRow(other.id, 0)]).execute();
      const ctx = lifecycleContext(store, config);
      let reaped = 0;
      const liveness = await new WorkerLiveness(ctx, { role: 'worker', onReaped: () => reaped++ }).start();
      after(() => liveness.stop());
      // This process's own row is there and moves; the dead one's does not.
      assert.ok((await listWorkers(store.sql.db)).some((row) => row.id === ctx.workerId));
      assert.deepEqual(await heldBy(store, 'worker-dead'), EVERYTHING, 'nothing is taken before the timeout');
      await pollUntil(async () => !(await listWorkers(store.sql.db)).some((row) => row.id === 'worker-dead'), Boolean, { deadlineMs: 10_000, what: 'the dead row is reaped' });
      assert.deepEqual(await heldBy(store, 'worker-dead'), NOTHING);
      assert.equal(reaped, 1, 'the loops were woken once');
      // The chunks it held are claimable now: running with a lapsed lease.
      const chunks = await store.sql.db.selectFrom('chunks').select(['chunk', 'state', 'lease_expires_at']).where('batch_id', '=', batch.id).orderBy('chunk').execute();
      assert.deepEqual(
        chunks.map((row) => [row.chunk, row.state, Number(row.lease_expires_at ?? -1) < Date.now()]),
        [
          [0, 'running', true],
          [1, 'running', true],
          [2, 'pending', true],
          [3, 'pending', true],
        ],
      );
      // Our own row was never reaped.
      assert.ok((await listWorkers(store.sql.db)).some((row) => row.id === ctx.workerId));
    });

    it('a stopped process removes its own row; one taken for dead while alive registers again at its next beat', async () => {
      const { store, config } = await open({ heartbeatMs: 50, livenessTimeoutSeconds: 60 });
      const ctx = lifecycleContext(store, config);
      const liveness = await new WorkerLiveness(ctx, { role: 'serve' }).start();
      await store.sql.db.deleteFrom('workers').where('id', '=', ctx.workerId).execute();
      await pollUntil(async () => (await listWorkers(store.sql.db)).some((row) => row.id === ctx.workerId), Boolean, { deadlineMs: 10_000, what: 'registered again' });
      await liveness.stop();
      assert.deepEqual(await listWorkers(store.sql.db), []);
    });

    if (backend === 'postgres') {
      it("a process whose liveness session ends is found dead within beats, long before the timeout; one that keeps its session is not", async () => {
        const { store, config, batch, databaseUrl } = await open({ heartbeatMs: 50, livenessTimeoutSeconds: 600 });
        const take = store.sql.takeLivenessLock!;
        const deadLock = (await take(1001))!;
        const liveLock = (await take(1002))!;
        assert.equal(await take(1002), undefined, 'a key a live session holds is refused');
        after(() => liveLock.release());
        await holdWork(store, 'worker-killed', batch.id, deadLock.key);
        const second = batchRow();
        await store.sql.db.insertInto('batches').values(second).execute();
        await store.sql.db.insertInto('chunks').values([0, 1].map((chunk) => pendingChunkRow(second.id, chunk))).execute();
        // A live process elsewhere whose row does not move (a long pause): its session keeps it alive.
        await holdWork(store, 'worker-paused', second.id, liveLock.key, 1);
        const ctx = lifecycleContext(store, config);
        const liveness = await new WorkerLiveness(ctx, { role: 'worker' }).start();
        after(() => liveness.stop());
        // The server ends the session as it would for a killed process: from outside, by pid.
        const admin = new pg.Client({ connectionString: databaseUrl });
        await admin.connect();
        after(() => admin.end());
        const { rows } = await admin.query(
          "select pg_terminate_backend(pid) as ended from pg_stat_activity where application_name = 'spool-liveness' and pid in (select pid from pg_locks where locktype = 'advisory' and objid = $1)",
          [deadLock.key],
        );
        assert.deepEqual(rows, [{ ended: true }]);
        await pollUntil(async () => !(await listWorkers(store.sql.db)).some((row) => row.id === 'worker-killed'), Boolean, { deadlineMs: 10_000, what: 'the killed process is reaped' });
        assert.equal(deadLock.held, false, 'the terminated session knows it lost its lock');
        assert.deepEqual(await heldBy(store, 'worker-killed'), NOTHING);
        // Many beats later, the paused process still holds all it held.
        const beatsLater = Date.now() + 20 * 50;
        await pollUntil(async () => Date.now() > beatsLater, Boolean, { deadlineMs: 5_000, what: 'twenty beats pass' });
        assert.deepEqual(await heldBy(store, 'worker-paused'), { ...EVERYTHING, slots: 1 }, 'the paused process keeps its work');
        assert.ok((await listWorkers(store.sql.db)).some((row) => row.id === 'worker-paused'));
      });

      it('this process opens a new liveness session when its own is cut, and others never take it for dead meanwhile', async () => {
        const { store, config, databaseUrl } = await open({ heartbeatMs: 50, livenessTimeoutSeconds: 600 });
        const ctx = lifecycleContext(store, config);
        const liveness = await new WorkerLiveness(ctx, { role: 'worker' }).start();
        after(() => liveness.stop());
        const watcher = await new WorkerLiveness(lifecycleContext(store, config), { role: 'worker' }).start();
        after(() => watcher.stop());
        const keyOf = async () => (await listWorkers(store.sql.db)).find((row) => row.id === ctx.workerId)?.lock_key;
        const first = await keyOf();
        assert.ok(first);
        const admin = new pg.Client({ connectionString: databaseUrl });
        await admin.connect();
        after(() => admin.end());
        await admin.query("select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory' and objid = $1", [first]);
        await pollUntil(keyOf, (key) => key !== undefined && key !== first, { deadlineMs: 10_000, what: 'a new session under a new key' });
        assert.ok((await listWorkers(store.sql.db)).some((row) => row.id === ctx.workerId), 'still registered');
      });
    }
  });
}
