// The webhook outbox queries (src/store/sql/webhooks.ts) on both dialects:
// one delivery per batch and URL, claims only of due and unleased rows, every
// outcome conditional on still holding the lease, and the batches columns of
// migration 0004.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { insertBatch, findBatch } from '../../src/store/sql/batches.ts';
import { openSqlStore, type SqlStore } from '../../src/store/sql/database.ts';
import type { NewWebhookDelivery } from '../../src/store/sql/schema.ts';
import {
  claimDueWebhookDeliveries,
  insertWebhookDeliveries,
  listBatchWebhookDeliveries,
  markWebhookDelivered,
  recordWebhookFailure,
  releaseWebhookDelivery,
} from '../../src/store/sql/webhooks.ts';
import { cleanupAll, createPostgresDatabase, makeTempDir, SKIP_POSTGRES } from '../helpers/runner-harness.ts';

const NOW = 1_700_000_000_000;

function delivery(overrides: Partial<NewWebhookDelivery> = {}): NewWebhookDelivery {
  return {
    id: `whd-${Math.random().toString(36).slice(2)}`,
    event_id: 'evt-1',
    event_type: 'batch.completed',
    batch_id: 'batch-1',
    user_id: 'u',
    url: 'https://example.com/a',
    payload: '{"id":"evt-1"}',
    state: 'pending',
    attempts: 0,
    next_attempt_at: NOW,
    created_at: NOW,
    ...overrides,
  };
}

after(cleanupAll);

const dialects: Array<[string, () => Promise<SqlStore>, boolean]> = [
  ['sqlite', () => openSqlStore({ dataDir: makeTempDir('spool-wh-sql-') }), false],
  ['postgres', async () => openSqlStore({ dataDir: '/unused', databaseUrl: await createPostgresDatabase() }), SKIP_POSTGRES],
];

for (const [name, open, skip] of dialects) {
  describe(`webhook outbox on ${name}`, { skip: skip && 'SPOOL_TEST_SKIP_POSTGRES=1' }, () => {
    it('keeps one delivery per batch and URL', async () => {
      const store = await open();
      try {
        await insertWebhookDeliveries(store.db, [delivery({ id: 'whd-a' }), delivery({ id: 'whd-b', url: 'https://example.com/b' })]);
        await insertWebhookDeliveries(store.db, [delivery({ id: 'whd-c', payload: 'replayed' })]);
        const rows = await listBatchWebhookDeliveries(store.db, 'batch-1');
        assert.deepEqual(rows.map((r) => r.id).sort(), ['whd-a', 'whd-b']);
        assert.equal(rows.find((r) => r.id === 'whd-a')!.payload, '{"id":"evt-1"}', 'the first enqueue wins');
      } finally {
        await store.close();
      }
    });

    it('claims due, pending, unleased rows only; outcomes need the lease', async () => {
      const store = await open();
      const db = store.db;
      try {
        await insertWebhookDeliveries(db, [
          delivery({ id: 'whd-due', batch_id: 'b1' }),
          delivery({ id: 'whd-later', batch_id: 'b2', next_attempt_at: NOW + 60_000 }),
          delivery({ id: 'whd-done', batch_id: 'b3', state: 'delivered' }),
          delivery({ id: 'whd-gone', batch_id: 'b4', state: 'failed' }),
        ]);
        const first = await claimDueWebhookDeliveries(db, { owner: 'p1', leaseMs: 1000, now: NOW, limit: 10 });
        assert.deepEqual(first.map((r) => r.id), ['whd-due']);
        assert.equal(first[0].attempts, 1);
        assert.equal(first[0].lease_expires_at, NOW + 1000);
        assert.deepEqual(await claimDueWebhookDeliveries(db, { owner: 'p2', leaseMs: 1000, now: NOW + 500, limit: 10 }), [], 'held');

        // p1 went silent; p2 takes the row over once the lease lapsed, and p1's late answer changes nothing.
        const second = await claimDueWebhookDeliveries(db, { owner: 'p2', leaseMs: 1000, now: NOW + 1001, limit: 10 });
        assert.deepEqual(second.map((r) => [r.id, r.attempts]), [['whd-due', 2]]);
        assert.equal(await markWebhookDelivered(db, 'whd-due', 'p1', 200, NOW + 1002), false);
        assert.equal(await recordWebhookFailure(db, 'whd-due', 'p1', { status: 500, error: 'late', nextAttemptAt: NOW }), false);

        // p2 fails and schedules the next attempt; then releases nothing it does not hold.
        assert.equal(await recordWebhookFailure(db, 'whd-due', 'p2', { status: 502, error: 'HTTP 502', nextAttemptAt: NOW + 5000 }), true);
        let [row] = (await listBatchWebhookDeliveries(db, 'b1'));
        assert.deepEqual([row.state, row.attempts, row.last_status, row.last_error, row.next_attempt_at, row.lease_owner], ['pending', 2, 502, 'HTTP 502', NOW + 5000, null]);
        assert.deepEqual(await claimDueWebhookDeliveries(db, { owner: 'p3', leaseMs: 1000, now: NOW + 4999, limit: 10 }), [], 'not due yet');

        // A claim cut short by shutdown is handed back uncounted.
        await claimDueWebhookDeliveries(db, { owner: 'p3', leaseMs: 1000, now: NOW + 5000, limit: 10 });
        await releaseWebhookDelivery(db, 'whd-due', 'p3');
        [row] = await listBatchWebhookDeliveries(db, 'b1');
        assert.deepEqual([row.state, row.attempts, row.lease_owner], ['pending', 2, null]);

        // Delivered, then nothing more to claim; a give-up is final too.
        await claimDueWebhookDeliveries(db, { owner: 'p4', leaseMs: 1000, now: NOW + 6000, limit: 10 });
        assert.equal(await markWebhookDelivered(db, 'whd-due', 'p4', 204, NOW + 6001), true);
        [row] = await listBatchWebhookDeliveries(db, 'b1');
        assert.deepEqual([row.state, row.attempts, row.last_status, row.delivered_at], ['delivered', 3, 204, NOW + 6001]);
        const later = await claimDueWebhookDeliveries(db, { owner: 'p5', leaseMs: 1000, now: NOW + 60_000, limit: 10 });
        assert.deepEqual(later.map((r) => r.id), ['whd-later']);
        assert.equal(await recordWebhookFailure(db, 'whd-later', 'p5', { status: null, error: 'refused', nextAttemptAt: null }), true);
        assert.equal((await listBatchWebhookDeliveries(db, 'b2'))[0].state, 'failed');
        assert.deepEqual(await claimDueWebhookDeliveries(db, { owner: 'p6', leaseMs: 1000, now: NOW + 10 ** 9, limit: 10 }), []);
      } finally {
        await store.close();
      }
    });

    it('batches made without the new columns read back as Together-dialect, no webhook, no retry_of', async () => {
      const store = await open();
      try {
        await insertBatch(store.db, {
          id: 'batch-old',
          user_id: 'u',
          input_file_id: 'file-x',
          endpoint: '/v1/chat/completions',
          completion_window: '24h',
          status: 'completed',
          priority: 0,
          file_size_bytes: 0,
          request_total: 0,
          request_completed: 0,
          request_failed: 0,
          input_tokens: 0,
          output_tokens: 0,
          estimated_tokens: 0,
          created_at: NOW,
          deadline_at: NOW + 1,
          metadata: null,
          model_id: null,
          in_progress_at: null,
          finalizing_at: null,
          completed_at: null,
          failed_at: null,
          expired_at: null,
          cancelling_at: null,
          cancelled_at: null,
          output_file_id: null,
          error_file_id: null,
          errors: null,
          output_expires_after_seconds: null,
          lease_owner: null,
          lease_expires_at: null,
        });
        const row = await findBatch(store.db, 'batch-old');
        assert.deepEqual([row?.dialect, row?.webhook_url, row?.retry_of], ['together', null, null]);
      } finally {
        await store.close();
      }
    });
  });
}
