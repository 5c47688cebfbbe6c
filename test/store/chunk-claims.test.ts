// The chunk claim and segment commit contract (data plane v2), run for real on
// SQLite and PostgreSQL: claims in chunk order, concurrent claimers never
// sharing a chunk, a lapsed chunk reclaimed, a segment committed only while its
// writer holds the chunk, its blob holding the lines and nothing of them in SQL.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { openStore, type Store } from '../../src/store/index.ts';
import { insertBatch } from '../../src/store/sql/batches.ts';
import {
  chunkTotalsOf,
  claimChunk,
  closeOpenChunks,
  countOpenChunks,
  enqueuedTokensForModel,
  insertChunks,
  listRunnableBatches,
  newChunk,
  releaseChunk,
  renewChunkLeases,
} from '../../src/store/sql/chunks.ts';
import { chunkSegments } from '../../src/store/sql/segments.ts';
import type { NewChunk } from '../../src/store/sql/schema.ts';
import { LineBitmap } from '../../src/store/line-bitmap.ts';
import { SegmentWriter, type HeldChunkRef, type LineResult } from '../../src/runner/segment-writer.ts';
import { outputLineText, errorLineText } from '../../src/runner/wire-lines.ts';
import { batchRowAt } from '../helpers/request-rows.ts';
import { cleanupAll, createPostgresDatabase, makeTempDir, SKIP_POSTGRES } from '../helpers/runner-harness.ts';

const NOW = 1_700_000_000_000;
const LEASE = 60_000;

after(cleanupAll);

function chunkRow(batchId: string, chunk: number, lines = 4): NewChunk {
  return newChunk({
    batch_id: batchId,
    chunk,
    line_start: chunk * lines + 1,
    line_count: lines,
    byte_start: chunk * lines * 10,
    byte_end: (chunk + 1) * lines * 10 - 1,
    models: JSON.stringify({ m: [lines, lines * 5] }),
    estimated_tokens: lines * 5,
  });
}

async function openBackend(dialect: 'sqlite' | 'postgres'): Promise<Store> {
  const dataDir = makeTempDir('spool-chunks-');
  const store = await openStore({ dataDir, databaseUrl: dialect === 'postgres' ? await createPostgresDatabase() : undefined });
  return store;
}

function ref(batchId: string, chunk: number, claim: number, lines: number): HeldChunkRef {
  return { batchId, chunk, claim, lineStart: chunk * lines + 1, lineCount: lines, userId: 'user-a', currency: 'USD', open: lines, segmentsWritten: 0, lost: false };
}

function succeeded(held: HeldChunkRef, line: number): LineResult {
  const body = JSON.stringify({ echo: line, usage: { prompt_tokens: 2, completion_tokens: 3 } });
  held.open -= 1;
  return {
    chunk: held,
    model: 'm',
    retries: 0,
    text: outputLineText(held.batchId, line, `c${line}`, { status: 200, requestId: null, body }),
    record: { kind: 'succeeded', batchId: held.batchId, line, status: 200, body, requestId: null, inputTokens: 2, outputTokens: 3, userId: 'user-a', model: 'm', costNanos: 7, latencyMs: 12 },
  };
}

function failed(held: HeldChunkRef, line: number): LineResult {
  held.open -= 1;
  return {
    chunk: held,
    model: 'm',
    retries: 2,
    text: errorLineText(held.batchId, line, `c${line}`, 'upstream_error', 'no', null),
    record: { kind: 'failed', batchId: held.batchId, line, code: 'upstream_error', message: 'no', status: null, body: null, requestId: null },
  };
}

async function readBlob(store: Store, key: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of await store.blobs.read(key)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

for (const dialect of ['sqlite', 'postgres'] as const) {
  describe(`chunk claims and segments (${dialect})`, { skip: dialect === 'postgres' && SKIP_POSTGRES }, () => {
    it('claims chunks in order, each once among concurrent claimers, and reclaims a lapsed one', async () => {
      const store = await openBackend(dialect);
      try {
        const db = store.sql.db;
        const batch = batchRowAt(NOW);
        await insertBatch(db, batch);
        await insertChunks(db, Array.from({ length: 12 }, (_, i) => chunkRow(batch.id, i)));
        assert.deepEqual((await listRunnableBatches(db, NOW)).map((b) => b.id), [batch.id]);
        const first = await claimChunk(db, store.sql.dialect, batch.id, 'w1', LEASE, NOW);
        assert.equal(first?.chunk, 0);
        assert.equal(first?.claims, 1);
        // Eleven left, twelve claimers at once: each chunk goes to exactly one.
        const claims = await Promise.all(Array.from({ length: 12 }, (_, i) => claimChunk(db, store.sql.dialect, batch.id, `w${i + 2}`, LEASE, NOW)));
        const got = claims.filter((c) => c !== undefined).map((c) => c!.chunk);
        assert.equal(new Set(got).size, got.length, 'no chunk claimed twice');
        // SQLite claimers may lose a pick to each other and come back empty; every chunk is claimed in the end.
        while (got.length < 11) {
          const more = await claimChunk(db, store.sql.dialect, batch.id, 'late', LEASE, NOW);
          assert.ok(more, 'chunks left to claim');
          got.push(more.chunk);
        }
        assert.deepEqual([...got].sort((a, b) => a - b), Array.from({ length: 11 }, (_, i) => i + 1));
        assert.equal(await claimChunk(db, store.sql.dialect, batch.id, 'w99', LEASE, NOW), undefined);
        // Renewed leases hold; a lapsed one is claimed again, as one more claim.
        assert.equal(await renewChunkLeases(db, 'w1', LEASE, NOW + 5_000), 1);
        const again = await claimChunk(db, store.sql.dialect, batch.id, 'w99', LEASE, NOW + LEASE + 1_000);
        assert.ok(again && again.chunk !== 0, 'a chunk whose lease lapsed is reclaimed, not the renewed one');
        // Handed back unsent: pending again, the claim not counted.
        assert.equal(await releaseChunk(db, batch.id, again.chunk, 'w99', true), true);
        const back = await claimChunk(db, store.sql.dialect, batch.id, 'w100', LEASE, NOW + LEASE + 1_000);
        assert.equal(back?.chunk, again.chunk);
        assert.equal(back?.claims, again.claims);
      } finally {
        await store.close();
      }
    });

    it('commits a segment only while its writer holds the chunk; the blob holds the lines, SQL only counts', async () => {
      const store = await openBackend(dialect);
      try {
        const db = store.sql.db;
        const batch = batchRowAt(NOW);
        await insertBatch(db, batch);
        await insertChunks(db, [chunkRow(batch.id, 0), chunkRow(batch.id, 1)]);
        const c0 = await claimChunk(db, store.sql.dialect, batch.id, 'w1', LEASE, Date.now());
        const c1 = await claimChunk(db, store.sql.dialect, batch.id, 'w1', LEASE, Date.now());
        assert.ok(c0 && c1);
        const writer = new SegmentWriter(db, store.blobs, 'w1', { lingerMs: 10_000 });
        const held0 = ref(batch.id, 0, c0.claims, 4);
        const held1 = ref(batch.id, 1, c1.claims, 4);
        // Chunk 0: two lines now, two later (the second segment finishes it). Chunk 1: taken away before its commit.
        const firstWrites = [writer.write(succeeded(held0, 1)), writer.write(failed(held0, 3)), writer.write(succeeded(held1, 5))];
        await closeOpenChunks(db, batch.id, Date.now(), true); // closes both... reopen chunk 0 as ours below
        await db.updateTable('chunks').set({ state: 'running', lease_owner: 'w1', lease_expires_at: Date.now() + LEASE }).where('batch_id', '=', batch.id).where('chunk', '=', 0).execute();
        writer.commitNow();
        assert.deepEqual(await Promise.all(firstWrites), ['committed', 'committed', 'lost']);
        assert.equal(held1.lost, true);
        const secondWrites = [writer.write(succeeded(held0, 2)), writer.write(succeeded(held0, 4))];
        writer.commitNow();
        assert.deepEqual(await Promise.all(secondWrites), ['finished', 'finished']);

        const segments = await chunkSegments(db, batch.id, 0);
        assert.equal(segments.length, 2);
        assert.equal(await chunkSegments(db, batch.id, 1).then((s) => s.length), 0, 'a lost chunk gets no segment row');
        const first = await readBlob(store, segments[0].blob_key!);
        // Output lines first, then error lines.
        assert.equal(first, outputLineText(batch.id, 1, 'c1', { status: 200, requestId: null, body: JSON.stringify({ echo: 1, usage: { prompt_tokens: 2, completion_tokens: 3 } }) }) + errorLineText(batch.id, 3, 'c3', 'upstream_error', 'no', null));
        assert.equal(segments[0].output_bytes + segments[0].error_bytes, Buffer.byteLength(first));
        const done = LineBitmap.fromHex(segments[0].done_bits, 4);
        assert.deepEqual([0, 1, 2, 3].map((i) => done.has(i)), [true, false, true, false]);
        assert.deepEqual([0, 1, 2, 3].map((i) => LineBitmap.fromHex(segments[0].failed_bits, 4).has(i)), [false, false, true, false]);
        const stats = JSON.parse(segments[0].stats);
        assert.deepEqual(stats.errors, { upstream_error: 1 });
        assert.deepEqual(stats.models, { m: [1, 1, 2] });

        const totals = (await chunkTotalsOf(db, [batch.id])).get(batch.id)!;
        assert.deepEqual(totals, { succeeded: 3, failed: 1, inputTokens: 6, outputTokens: 9, costNanos: 21, openLines: 0 });
        assert.equal(await countOpenChunks(db, batch.id), 0);
        const chunk0 = await db.selectFrom('chunks').selectAll().where('batch_id', '=', batch.id).where('chunk', '=', 0).executeTakeFirstOrThrow();
        assert.equal(chunk0.state, 'done');
        // Usage counted once per success, in the commit's transaction.
        const usage = await db.selectFrom('usage_counters').select((eb) => eb.fn.sum<number>('requests').as('n')).executeTakeFirstOrThrow();
        assert.equal(Number(usage.n), 3);
        // Nothing of a response in SQL: no column of chunks or segments holds the echo.
        const sqlText = JSON.stringify([await db.selectFrom('chunks').selectAll().execute(), await db.selectFrom('segments').selectAll().execute()]);
        assert.ok(!sqlText.includes('echo'), 'no response content in SQL');
      } finally {
        await store.close();
      }
    });

    it("a worker that claims its own lapsed chunk again: the earlier claim's segments no longer apply", async () => {
      const store = await openBackend(dialect);
      try {
        const db = store.sql.db;
        const batch = batchRowAt(NOW);
        await insertBatch(db, batch);
        await insertChunks(db, [chunkRow(batch.id, 0)]);
        const first = await claimChunk(db, store.sql.dialect, batch.id, 'w1', 1_000, Date.now() - 10_000);
        const second = await claimChunk(db, store.sql.dialect, batch.id, 'w1', LEASE, Date.now());
        assert.ok(first && second && second.claims === first.claims + 1, 'the lapsed chunk is claimed again by its own worker');
        const writer = new SegmentWriter(db, store.blobs, 'w1', { lingerMs: 10_000 });
        const earlier = ref(batch.id, 0, first.claims, 4);
        const later = ref(batch.id, 0, second.claims, 4);
        const writes = [writer.write(succeeded(earlier, 1)), writer.write(succeeded(later, 2))];
        writer.commitNow();
        assert.deepEqual(await Promise.all(writes), ['lost', 'committed']);
        const segments = await chunkSegments(db, batch.id, 0);
        assert.equal(segments.length, 1, 'only the current claim committed');
        assert.equal(LineBitmap.fromHex(segments[0].done_bits, 4).count(), 1);
      } finally {
        await store.close();
      }
    });

    it('counts enqueued tokens per model from open chunks only', async () => {
      const store = await openBackend(dialect);
      try {
        const db = store.sql.db;
        const batch = batchRowAt(NOW);
        await insertBatch(db, batch);
        await insertChunks(db, [chunkRow(batch.id, 0), chunkRow(batch.id, 1), { ...chunkRow(batch.id, 2), state: 'done' }]);
        assert.equal(await enqueuedTokensForModel(db, 'user-a', 'm'), 40);
        assert.equal(await enqueuedTokensForModel(db, 'user-a', 'other'), 0);
        assert.equal(await enqueuedTokensForModel(db, 'user-b', 'm'), 0);
      } finally {
        await store.close();
      }
    });
  });
}
