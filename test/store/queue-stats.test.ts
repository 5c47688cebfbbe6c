// The admin status queries (src/store/sql/queue-stats.ts) on both dialects:
// queue depth counts only open batches' pending and running chunks' lines (a
// running chunk's by the share not finished); recent outcomes count only
// segments committed inside the window, with their retries.
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
import { insertChunks, newChunk } from '../../src/store/sql/chunks.ts';
import type { BatchStatus, NewBatch, NewChunk } from '../../src/store/sql/schema.ts';
import { cleanupAll, createPostgresDatabase, SKIP_POSTGRES } from '../helpers/runner-harness.ts';

const NOW = 1_700_000_000_000;
const WINDOW = 300_000;

function batchRow(status: BatchStatus, overrides: Partial<NewBatch> = {}): NewBatch {
  return batchRowAt(NOW - 3_600_000, { status, deadline_at: NOW + 86_400_000, ...overrides });
}

function chunk(batchId: string, n: number, state: NewChunk['state'], models: Record<string, number>, counts: Partial<NewChunk> = {}): NewChunk {
  const lines = Object.values(models).reduce((x, y) => x + y, 0);
  return {
    ...newChunk({
      batch_id: batchId,
      chunk: n,
      line_start: n * 100 + 1,
      line_count: lines,
      byte_start: 0,
      byte_end: 1,
      models: JSON.stringify(Object.fromEntries(Object.entries(models).map(([model, count]) => [model, [count, count]]))),
      estimated_tokens: lines,
    }),
    state,
    claims: state === 'pending' ? 0 : 1,
    lease_owner: state === 'running' ? 'w' : null,
    lease_expires_at: state === 'running' ? NOW + 10_000 : null,
    ...counts,
  };
}

async function segment(store: SqlStore, batchId: string, n: number, seq: number, createdAt: number, models: Record<string, [number, number, number]>): Promise<void> {
  await store.db
    .insertInto('segments')
    .values({
      batch_id: batchId,
      chunk: n,
      seq,
      blob_key: null,
      output_bytes: 0,
      error_bytes: 0,
      output_lines: 0,
      error_lines: 0,
      done_bits: '',
      failed_bits: '',
      stats: JSON.stringify({ latency: [], errors: {}, models }),
      created_at: createdAt,
    })
    .execute();
}

async function seed(store: SqlStore): Promise<void> {
  const running = batchRow('in_progress');
  const justDone = batchRow('completed', { completed_at: NOW - 60_000 });
  const longDone = batchRow('completed', { completed_at: NOW - 3 * WINDOW });
  for (const batch of [running, justDone, longDone]) await insertBatch(store.db, batch);
  await insertChunks(store.db, [
    chunk(running.id, 0, 'pending', { 'model-a': 5, 'model-b': 1 }),
    // Running, half of it finished: half of its lines count as running.
    chunk(running.id, 1, 'running', { 'model-a': 4 }, { succeeded: 1, failed: 1, segments: 1 }),
    chunk(running.id, 2, 'done', { 'model-a': 9 }, { succeeded: 9, segments: 2 }),
    chunk(justDone.id, 0, 'done', { 'model-b': 2 }, { succeeded: 2, segments: 1 }),
    // A batch that ended long ago: its chunks are neither queued nor recent, whatever they say.
    chunk(longDone.id, 0, 'pending', { 'model-a': 9 }),
    chunk(longDone.id, 1, 'done', { 'model-c': 4 }, { failed: 4, segments: 1 }),
  ]);
  await segment(store, running.id, 1, 0, NOW - 1000, { 'model-a': [1, 1, 2] });
  await segment(store, running.id, 2, 0, NOW - 1000, { 'model-a': [2, 0, 1] });
  // Committed before the window, in a batch still open: not recent.
  await segment(store, running.id, 2, 1, NOW - WINDOW - 1, { 'model-a': [7, 0, 0] });
  await segment(store, justDone.id, 0, 0, NOW - 70_000, { 'model-b': [2, 0, 2] });
  await segment(store, longDone.id, 1, 0, NOW - 3 * WINDOW, { 'model-c': [0, 4, 0] });
}

function suite(open: () => Promise<SqlStore>): void {
  let store: SqlStore;
  before(async () => {
    store = await open();
    await seed(store);
  });
  after(() => store?.close());

  it('queueDepthByModel: lines of pending and running chunks of open batches, per model', async () => {
    assert.deepEqual(await queueDepthByModel(store.db), [
      { model: 'model-a', pending: 5, running: 2 },
      { model: 'model-b', pending: 1, running: 0 },
    ]);
  });

  it('recentOutcomesByModel: segments committed inside the window, with retries beyond the first attempt', async () => {
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
