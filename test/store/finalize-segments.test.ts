// Finalization, retries and retention over chunks and segments (data plane v2),
// on SQLite and PostgreSQL: a batch of three chunks (two done, in two and one
// segments, one closed by a cancel or an expiry after one segment) finalizes
// into exactly the output and error files it should (every custom_id once,
// filled lines for the closed chunk's missing lines), its segment blobs go,
// a retry takes exactly the lines that did not succeed, and retention deletes
// segment blobs first and the chunk and segment rows once both files are gone.
// PostgreSQL: SPOOL_TEST_POSTGRES_URL or the local server on 127.0.0.1:5432;
// SPOOL_TEST_SKIP_POSTGRES=1 skips that half.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { runLifecycleSweeps } from '../../src/batches/sweeps.ts';
import { writeRetryInput } from '../../src/batches/retry-input.ts';
import { parseConfig } from '../../src/config.ts';
import { newBatchId, newFileId, newWorkerId } from '../../src/ids.ts';
import type { LifecycleContext } from '../../src/runtime/context.ts';
import { errorLineText, outputLineText } from '../../src/runner/wire-lines.ts';
import { blobKeyForSegment, blobKeyForUpload, openStore, type Store } from '../../src/store/index.ts';
import { LineBitmap } from '../../src/store/line-bitmap.ts';
import { findBatch, insertBatch } from '../../src/store/sql/batches.ts';
import { insertChunks, newChunk } from '../../src/store/sql/chunks.ts';
import { cleanupAll, createPostgresDatabase } from '../helpers/runner-harness.ts';
import { findFile, insertFile } from '../../src/store/sql/files.ts';
import { deleteFileAndItsResults } from '../../src/store/sql/result-retention.ts';
import { queueDepthByModel, recentOutcomesByModel } from '../../src/store/sql/queue-stats.ts';
import { batchStats } from '../../src/store/sql/batch-stats.ts';
import type { BatchStatus, NewBatch, NewChunk } from '../../src/store/sql/schema.ts';

const SKIP_POSTGRES = process.env.SPOOL_TEST_SKIP_POSTGRES === '1';
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
});

async function sqliteStore(): Promise<Store> {
  const dataDir = await mkdtemp(join(tmpdir(), 'spool-finalize-'));
  const store = await openStore({ dataDir });
  cleanups.push(() => rm(dataDir, { recursive: true, force: true }), () => store.close());
  return store;
}

async function postgresStore(): Promise<Store> {
  const dataDir = await mkdtemp(join(tmpdir(), 'spool-finalize-pg-'));
  const store = await openStore({ dataDir, databaseUrl: await createPostgresDatabase() });
  cleanups.push(() => rm(dataDir, { recursive: true, force: true }), () => store.close());
  return store;
}

function context(store: Store): LifecycleContext {
  const quiet = () => undefined;
  return {
    store,
    config: parseConfig({}),
    workerId: newWorkerId(),
    presentBatch: (batch) => ({ id: batch.id, status: batch.status }),
    log: { info: quiet, warn: quiet, error: quiet },
  };
}

const MODEL = 'model-x';
const NOW = Date.now();

/** Input lines 1..13, line 5 blank (between chunks, as validation leaves it). */
function inputText(): { text: string; offsets: Map<number, [number, number]> } {
  let text = '';
  const offsets = new Map<number, [number, number]>();
  for (let line = 1; line <= 13; line++) {
    const content = line === 5 ? '' : JSON.stringify({ custom_id: `req-${line}`, method: 'POST', url: '/v1/chat/completions', body: { model: MODEL, n: line } });
    offsets.set(line, [Buffer.byteLength(text), Buffer.byteLength(text) + Buffer.byteLength(content)]);
    // One CRLF line, as uploads may have.
    text += content + (line === 7 ? '\r\n' : '\n');
  }
  return { text, offsets };
}

const ok = (batchId: string, line: number) => outputLineText(batchId, line, `req-${line}`, { status: 200, requestId: `r${line}`, body: `{"answer":${line}}` });
const bad = (batchId: string, line: number) =>
  errorLineText(batchId, line, `req-${line}`, 'upstream_error', 'no', { status: 400, requestId: null, body: '{"error":{"message":"no"}}' });

interface Scenario {
  batchId: string;
  segmentKeys: string[];
  inputLines: Map<number, string>;
}

/**
 * Chunks: 0 = lines 1-4 (done: segment 0 holds 1, 2 ok and 3 failed; segment 1 holds 4 ok); 1 = lines 6-9 (done,
 * one segment, all ok); 2 = lines 10-13 (`openState`: one segment with 11 ok and 12 failed; 10 and 13 in none).
 */
async function seed(store: Store, status: BatchStatus, openState: NewChunk['state'], overrides: Partial<NewBatch> = {}): Promise<Scenario> {
  const db = store.sql.db;
  const { text, offsets } = inputText();
  const inputId = newFileId();
  const inputKey = blobKeyForUpload(inputId);
  const written = await store.blobs.write(inputKey, (async function* () {
    yield Buffer.from(text);
  })());
  await insertFile(db, {
    id: inputId,
    user_id: 'user-a',
    filename: 'in.jsonl',
    purpose: 'batch',
    file_type: 'jsonl',
    status: 'processed',
    bytes: written.bytes,
    line_count: written.lineCount,
    sha256: written.sha256,
    declared_sha256: null,
    blob_key: inputKey,
    batch_id: null,
    created_at: NOW,
    expires_at: null,
  });
  const batchId = newBatchId();
  await insertBatch(db, {
    id: batchId,
    user_id: 'user-a',
    input_file_id: inputId,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
    status,
    priority: 0,
    file_size_bytes: written.bytes,
    created_at: NOW - 120_000,
    deadline_at: NOW + 86_400_000,
    in_progress_at: NOW - 110_000,
    request_total: 12,
    request_completed: 0,
    request_failed: 0,
    input_tokens: 0,
    output_tokens: 0,
    estimated_tokens: 12,
    estimated_cost_nanos: 1_000_000,
    ...overrides,
  });
  const chunk = (n: number, first: number, last: number, state: NewChunk['state'], counts: Partial<NewChunk>): NewChunk => ({
    ...newChunk({
      batch_id: batchId,
      chunk: n,
      line_start: first,
      line_count: last - first + 1,
      byte_start: offsets.get(first)![0],
      byte_end: offsets.get(last)![1],
      models: JSON.stringify({ [MODEL]: [last - first + 1, last - first + 1] }),
      estimated_tokens: last - first + 1,
    }),
    state,
    claims: 1,
    lease_owner: state === 'running' ? 'worker-gone' : null,
    lease_expires_at: state === 'running' ? NOW + 600_000 : null,
    finished_at: state === 'done' ? NOW - 1000 : null,
    ...counts,
  });
  await insertChunks(db, [
    chunk(0, 1, 4, 'done', { segments: 2, succeeded: 3, failed: 1, input_tokens: 30, output_tokens: 3, cost_nanos: 300 }),
    chunk(1, 6, 9, 'done', { segments: 1, succeeded: 4, input_tokens: 40, output_tokens: 4, cost_nanos: 400 }),
    chunk(2, 10, 13, openState, { segments: 1, succeeded: 1, failed: 1, input_tokens: 10, output_tokens: 1, cost_nanos: 100 }),
  ]);
  const segmentKeys: string[] = [];
  const segment = async (chunkNo: number, seq: number, lineStart: number, okLines: number[], badLines: number[]) => {
    const key = blobKeyForSegment(batchId, chunkNo, 1, seq, 'worker-a');
    const output = okLines.map((line) => ok(batchId, line)).join('');
    const errors = badLines.map((line) => bad(batchId, line)).join('');
    await store.blobs.write(key, (async function* () {
      yield Buffer.from(output + errors);
    })());
    const size = okLines.length + badLines.length > 0 ? 4 : 0;
    const done = new LineBitmap(size);
    const failed = new LineBitmap(size);
    for (const line of okLines) done.set(line - lineStart);
    for (const line of badLines) {
      done.set(line - lineStart);
      failed.set(line - lineStart);
    }
    const latency = new Array(11).fill(0);
    latency[1] = okLines.length + badLines.length;
    await db
      .insertInto('segments')
      .values({
        batch_id: batchId,
        chunk: chunkNo,
        seq,
        blob_key: key,
        output_bytes: Buffer.byteLength(output),
        error_bytes: Buffer.byteLength(errors),
        output_lines: okLines.length,
        error_lines: badLines.length,
        done_bits: done.toHex(),
        failed_bits: failed.toHex(),
        stats: JSON.stringify({ latency, errors: badLines.length ? { upstream_error: badLines.length } : {}, models: { [MODEL]: [okLines.length, badLines.length, 1] } }),
        created_at: NOW - 5000,
      })
      .execute();
    segmentKeys.push(key);
  };
  await segment(0, 0, 1, [1, 2], [3]);
  await segment(0, 1, 1, [4], []);
  await segment(1, 0, 6, [6, 7, 8, 9], []);
  await segment(2, 0, 10, [11], [12]);
  const inputLines = new Map<number, string>();
  for (const [line, [start, end]] of offsets) inputLines.set(line, text.slice(start, end));
  return { batchId, segmentKeys, inputLines };
}

async function readBlob(store: Store, key: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of await store.blobs.read(key)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function runSweepsUntil(ctx: LifecycleContext, batchId: string, statuses: BatchStatus[]): Promise<void> {
  for (let pass = 0; pass < 20; pass++) {
    await runLifecycleSweeps(ctx);
    const batch = await findBatch(ctx.store.sql.db, batchId);
    if (batch && statuses.includes(batch.status)) return;
  }
  assert.fail(`batch ${batchId} did not reach ${statuses.join('/')}`);
}

function suite(name: string, open: () => Promise<Store>): void {
  describe(`finalization over segments: ${name}`, () => {
    it('a cancelled batch: exact output and error files, every custom_id once, filled lines for the closed chunk; segment blobs deleted; retry takes what did not succeed', async () => {
      const store = await open();
      const ctx = context(store);
      const db = store.sql.db;
      const { batchId, segmentKeys, inputLines } = await seed(store, 'cancelling', 'running', { cancelling_at: NOW - 3_600_000 });

      // Live progress while it runs: summed from the chunks.
      const live = (await findBatch(db, batchId))!;
      assert.equal(live.request_completed, 8);
      assert.equal(live.request_failed, 2);
      assert.equal(live.cost_nanos, 800);
      assert.deepEqual(await queueDepthByModel(db), [{ model: MODEL, pending: 0, running: 2 }], 'half of the running chunk is left');
      assert.deepEqual(await recentOutcomesByModel(db, NOW - 60_000), [{ model: MODEL, succeeded: 8, failed: 2, retries: 4 }]);

      await runSweepsUntil(ctx, batchId, ['cancelled']);
      const batch = (await findBatch(db, batchId))!;
      assert.equal(batch.status, 'cancelled');
      assert.equal(batch.request_total, 12);
      assert.equal(batch.request_completed, 8);
      assert.equal(batch.request_failed, 4);
      assert.equal(batch.input_tokens, 80);
      assert.equal(batch.output_tokens, 8);
      assert.equal(batch.cost_nanos, 800);

      const outputFile = (await findFile(db, batch.output_file_id!))!;
      const errorFile = (await findFile(db, batch.error_file_id!))!;
      const output = await readBlob(store, outputFile.blob_key!);
      const errors = await readBlob(store, errorFile.blob_key!);
      assert.equal(output, [1, 2, 4, 6, 7, 8, 9, 11].map((line) => ok(batchId, line)).join(''));
      const cancelled = (line: number) => errorLineText(batchId, line, `req-${line}`, 'batch_cancelled', 'The batch was cancelled before this request finished.', null);
      assert.equal(errors, bad(batchId, 3) + bad(batchId, 12) + cancelled(10) + cancelled(13));
      assert.equal(outputFile.line_count, 8);
      assert.equal(errorFile.line_count, 4);
      const ids = [...output.trim().split('\n'), ...errors.trim().split('\n')].map((line) => JSON.parse(line).custom_id as string).sort();
      assert.deepEqual(ids, [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13].map((line) => `req-${line}`).sort(), 'every custom_id once');

      for (const key of segmentKeys) assert.equal(await store.blobs.size(key), undefined, `segment blob ${key} deleted`);
      const kept = await db.selectFrom('segments').select('blob_key').where('batch_id', '=', batchId).execute();
      assert.equal(kept.length, 4, 'segment rows stay (which lines failed: retries read them)');
      assert.ok(kept.every((row) => row.blob_key === null));

      const stats = await batchStats(db, batchId, batch.in_progress_at!, 1000);
      assert.deepEqual(stats.errors, [
        { code: 'batch_cancelled', count: 2 },
        { code: 'upstream_error', count: 2 },
      ]);
      assert.equal(stats.latency[1], 10);
      assert.equal(stats.finished.reduce((n, b) => n + b.succeeded + b.failed, 0), 12);

      const retry = await writeRetryInput(store, batch, (await findFile(db, batch.input_file_id))!.blob_key!);
      assert.equal(await readBlob(store, retry.blob_key!), [3, 10, 12, 13].map((line) => `${inputLines.get(line)}\n`).join(''));
      assert.equal(retry.line_count, 4);
    });

    it('an expired batch: a pending chunk is closed and its lines (minus its segment) are batch_expired', async () => {
      const store = await open();
      const ctx = context(store);
      const db = store.sql.db;
      const { batchId } = await seed(store, 'in_progress', 'pending', { deadline_at: NOW - 1 });
      await runSweepsUntil(ctx, batchId, ['expired']);
      const batch = (await findBatch(db, batchId))!;
      assert.equal(batch.request_completed, 8);
      assert.equal(batch.request_failed, 4);
      const errors = await readBlob(store, (await findFile(db, batch.error_file_id!))!.blob_key!);
      const expired = (line: number) =>
        errorLineText(batchId, line, `req-${line}`, 'batch_expired', "The batch's completion window (24h) ended before this request finished.", null);
      assert.equal(errors, bad(batchId, 3) + bad(batchId, 12) + expired(10) + expired(13));
      const chunks = await db.selectFrom('chunks').select(['chunk', 'state']).where('batch_id', '=', batchId).orderBy('chunk').execute();
      assert.deepEqual(chunks.map((c) => c.state), ['done', 'done', 'closed']);
    });

    it('a batch whose chunks are all done completes without reading its input', async () => {
      const store = await open();
      const ctx = context(store);
      const db = store.sql.db;
      const { batchId } = await seed(store, 'in_progress', 'done');
      // The input is gone: a pass over it would report lines without custom_ids. None is needed.
      const batchRow = (await findBatch(db, batchId))!;
      await store.blobs.delete((await findFile(db, batchRow.input_file_id))!.blob_key!);
      await db.updateTable('chunks').set({ state: 'done' }).where('batch_id', '=', batchId).execute();
      // Chunk 2's lines 10 and 13 then sit in a done chunk: treat them as in a segment for this check.
      await db.updateTable('batches').set({ request_total: 10 }).where('id', '=', batchId).execute();
      await runSweepsUntil(ctx, batchId, ['completed']);
      const batch = (await findBatch(db, batchId))!;
      assert.equal(batch.request_completed, 8);
      assert.equal(batch.request_failed, 2);
      assert.equal(await readBlob(store, (await findFile(db, batch.error_file_id!))!.blob_key!), bad(batchId, 3) + bad(batchId, 12));
    });

    it('retention: a deleted output file takes leftover segment blobs with it; with both files gone no chunk or segment row is left', async () => {
      const store = await open();
      const ctx = context(store);
      const db = store.sql.db;
      const { batchId, segmentKeys } = await seed(store, 'cancelling', 'closed', { cancelling_at: NOW - 3_600_000 });
      await runSweepsUntil(ctx, batchId, ['cancelled']);
      // A segment blob a failed delete left behind.
      const leftover = segmentKeys[0];
      await store.blobs.write(leftover, (async function* () {
        yield Buffer.from('left\n');
      })());
      await db.updateTable('segments').set({ blob_key: leftover }).where('batch_id', '=', batchId).where('chunk', '=', 0).where('seq', '=', 0).execute();

      const batch = (await findBatch(db, batchId))!;
      const outputFile = (await findFile(db, batch.output_file_id!))!;
      await deleteFileAndItsResults(db, outputFile, store.blobs);
      await store.blobs.delete(outputFile.blob_key!);
      assert.equal(await store.blobs.size(leftover), undefined, 'no segment blob is left');
      assert.equal(await findFile(db, outputFile.id), undefined);
      const count = async (table: 'chunks' | 'segments') =>
        Number((await db.selectFrom(table).select((eb) => eb.fn.countAll<number>().as('n')).where('batch_id', '=', batchId).executeTakeFirstOrThrow()).n);
      assert.equal(await count('chunks'), 3, 'the error file is left: which lines failed is kept');
      assert.equal(await count('segments'), 4);

      const errorFile = (await findFile(db, batch.error_file_id!))!;
      await deleteFileAndItsResults(db, errorFile, store.blobs);
      assert.equal(await count('chunks'), 0);
      assert.equal(await count('segments'), 0);
    });
  });
}

suite('sqlite', sqliteStore);
if (!SKIP_POSTGRES) suite('postgres', postgresStore);

after(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  // The PostgreSQL databases createPostgresDatabase made, dropped once their stores are closed.
  await cleanupAll();
});
