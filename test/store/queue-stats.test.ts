// The admin status queries (src/store/sql/queue-stats.ts) on both dialects:
// queue depth counts only open batches' pending and running rows; recent
// outcomes count only rows finished inside the window, with their retries.
// PostgreSQL in a fresh database (test/helpers/runner-harness.ts): SPOOL_TEST_POSTGRES_URL
// or the local server on 127.0.0.1:5432; SPOOL_TEST_SKIP_POSTGRES=1 skips that half.
import { batchRowAt } from '../helpers/request-rows.ts';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { insertBatch } from '../../src/store/sql/batches.ts';
import { openSqlStore, type SqlStore } from '../../src/store/sql/database.ts';
import { queueDepthByModel, recentOutcomesByModel } from '../../src/store/sql/queue-stats.ts';
import { insertRequests } from '../../src/store/sql/requests.ts';
import type { BatchStatus, NewBatch, NewRequest, RequestState } from '../../src/store/sql/schema.ts';
import { cleanupAll, createPostgresDatabase, SKIP_POSTGRES } from '../helpers/runner-harness.ts';

const NOW = 1_700_000_000_000;
const WINDOW = 300_000;

function batchRow(status: BatchStatus, overrides: Partial<NewBatch> = {}): NewBatch {
  return batchRowAt(NOW - 3_600_000, { status, deadline_at: NOW + 86_400_000, ...overrides });
}

let nextLine = 1;
function requests(batchId: string, model: string, state: RequestState, count: number, overrides: Partial<NewRequest> = {}): NewRequest[] {
  return Array.from({ length: count }, () => {
    const line = nextLine++;
    return {
      batch_id: batchId,
      line,
      custom_id: `req-${line}`,
      model,
      byte_offset: 0,
      byte_length: 1,
      estimated_tokens: 1,
      state,
      attempts: state === 'pending' ? 0 : 1,
      not_before: 0,
      input_tokens: 0,
      output_tokens: 0,
      ...overrides,
    };
  });
}

async function seed(store: SqlStore): Promise<void> {
  const running = batchRow('in_progress');
  const justDone = batchRow('completed', { completed_at: NOW - 60_000 });
  const longDone = batchRow('completed', { completed_at: NOW - 3 * WINDOW });
  for (const batch of [running, justDone, longDone]) await insertBatch(store.db, batch);
  await insertRequests(store.db, [
    ...requests(running.id, 'model-a', 'pending', 5),
    ...requests(running.id, 'model-a', 'running', 2, { lease_owner: 'w', lease_expires_at: NOW + 10_000 }),
    ...requests(running.id, 'model-b', 'pending', 1),
    ...requests(running.id, 'model-a', 'succeeded', 3, { finished_at: NOW - 1000 }),
    ...requests(running.id, 'model-a', 'failed', 1, { finished_at: NOW - 1000, attempts: 4 }),
    // Finished before the window, in a batch still open: not recent.
    ...requests(running.id, 'model-a', 'succeeded', 7, { finished_at: NOW - WINDOW - 1 }),
    ...requests(justDone.id, 'model-b', 'succeeded', 2, { finished_at: NOW - 70_000, attempts: 2 }),
    // A batch that ended long ago: its rows are neither queued nor recent, whatever they say.
    ...requests(longDone.id, 'model-a', 'pending', 9),
    ...requests(longDone.id, 'model-c', 'failed', 4, { finished_at: NOW - 3 * WINDOW }),
  ]);
}

function suite(open: () => Promise<SqlStore>): void {
  let store: SqlStore;
  before(async () => {
    store = await open();
    await seed(store);
  });
  after(() => store?.close());

  it('queueDepthByModel: pending and running rows of open batches, per model', async () => {
    assert.deepEqual(await queueDepthByModel(store.db), [
      { model: 'model-a', pending: 5, running: 2 },
      { model: 'model-b', pending: 1, running: 0 },
    ]);
  });

  it('recentOutcomesByModel: rows finished inside the window, with retries beyond the first attempt', async () => {
    assert.deepEqual(await recentOutcomesByModel(store.db, NOW - WINDOW), [
      { model: 'model-a', succeeded: 3, failed: 1, retries: 3 },
      { model: 'model-b', succeeded: 2, failed: 0, retries: 2 },
    ]);
    assert.deepEqual(await recentOutcomesByModel(store.db, NOW), [], 'nothing finished after NOW');
  });
}

describe('queue stats: sqlite', () => {
  let dir: string;
  suite(async () => {
    dir = await mkdtemp(join(tmpdir(), 'spool-queue-stats-'));
    return openSqlStore({ dataDir: dir });
  });
  after(() => rm(dir, { recursive: true, force: true }));
});

describe('queue stats: postgres', { skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1: PostgreSQL half skipped' : false }, () => {
  suite(async () => openSqlStore({ dataDir: '', databaseUrl: await createPostgresDatabase() }));
  after(cleanupAll);
});
