// Stopping a batch mid-run: a cancel (CANCELLING, then CANCELLED with the
// partial results and batch_cancelled lines) and an expiry (the deadline
// passes while a slow upstream is working: EXPIRED, batch_expired lines).
// Either way every custom_id ends up exactly once across the two files. Then
// finalization is redone, as after a crash between writing the result blobs
// and committing, by two "processes" at once and twice over: same files, no
// duplicate lines, no extra file rows.
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CANCEL_GRACE_MS, runLifecycleSweeps } from '../../src/batches/sweeps.ts';
import { blobKeyForSegment, openStore, type Store } from '../../src/store/index.ts';
import type { BatchUpdate } from '../../src/store/sql/schema.ts';
import {
  api,
  assertEchoOutput,
  assertExactlyOnce,
  byCustomId,
  cancelBatch,
  chatLine,
  chatLines,
  cleanupAll,
  createPostgresDatabase,
  downloadText,
  endpointOf,
  getBatch,
  lifecycleContext,
  parseJsonl,
  pollUntil,
  readResults,
  SKIP_POSTGRES,
  startHarness,
  startStaticServer,
  submitBatch,
  waitForProgress,
  waitForStatus,
  type Endpoint,
  type Harness,
  type Results,
} from '../helpers/runner-harness.ts';

const CHAT = '/v1/chat/completions';
const LINES = 40;

let h: Harness;
let ep: Endpoint;
/** Finished batches and their results, for the finalization re-run. */
const finished = new Map<'cancelled' | 'expired' | 'completed', Results>();

before(async () => {
  h = await startHarness({
    upstreams: [{ name: 'slow', kind: 'slow', delayMs: 150, models: ['slow-*'], maxConcurrency: 2, initialConcurrency: 2 }],
  });
  ep = endpointOf(h);
});

after(cleanupAll);

/** The text of a stored file, read from the blob store (for batches finalized with no server running). */
async function fileText(store: Store, fileId: string | null): Promise<string> {
  const file = await store.sql.db.selectFrom('files').select('blob_key').where('id', '=', fileId!).executeTakeFirstOrThrow();
  const pieces: Buffer[] = [];
  for await (const piece of await store.blobs.read(file.blob_key!)) pieces.push(piece as Buffer);
  return Buffer.concat(pieces).toString('utf8');
}

/** Paths of the files (not directories) under `dir`, relative to it, sorted; none when it does not exist. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath ?? entry.path, entry.name).slice(dir.length + 1))
    .sort();
}

/**
 * Gives a finalized batch's segments their blobs back, as they were before finalization copied them into the
 * batch's files and deleted them: what a finalizer that died before its commit, or whose best-effort delete of
 * the segment blobs failed, leaves. Each segment blob is its output lines, then its error lines; the files hold
 * the segments' output parts in (chunk, seq) order, and their error parts in that order followed by the
 * batch_cancelled / batch_expired lines of lines in no segment, so each blob is cut back out of them.
 */
async function restoreSegmentBlobs(store: Pick<Store, 'sql' | 'blobs'>, batchId: string, outputText: string, errorText: string): Promise<number> {
  const db = store.sql.db;
  const segments = await db.selectFrom('segments').selectAll().where('batch_id', '=', batchId).orderBy('chunk').orderBy('seq').execute();
  const output = Buffer.from(outputText);
  const errors = Buffer.from(errorText);
  let outputAt = 0;
  let errorsAt = 0;
  let restored = 0;
  for (const segment of segments) {
    const outputBytes = Number(segment.output_bytes);
    const errorBytes = Number(segment.error_bytes);
    const bytes = Buffer.concat([output.subarray(outputAt, outputAt + outputBytes), errors.subarray(errorsAt, errorsAt + errorBytes)]);
    outputAt += outputBytes;
    errorsAt += errorBytes;
    if (segment.blob_key !== null) continue;
    const key = blobKeyForSegment(batchId, segment.chunk, 1, segment.seq, 'restored');
    await store.blobs.write(key, (async function* () {
      yield bytes;
    })());
    await db.updateTable('segments').set({ blob_key: key }).where('batch_id', '=', batchId).where('chunk', '=', segment.chunk).where('seq', '=', segment.seq).execute();
    restored += 1;
  }
  assert.equal(outputAt, output.length, `batch ${batchId}: every output line comes from a segment`);
  assert.ok(errorsAt <= errors.length, `batch ${batchId}: the segments' error parts open its error file`);
  return restored;
}

async function togetherStatus(id: string): Promise<string> {
  const res = await api(`${h.together}/batches/${id}`, h.apiKey);
  assert.equal(res.status, 200);
  return res.json.status;
}

describe('cancel and expiry mid-run', () => {
  it('cancel against a slow upstream: CANCELLING, then CANCELLED with partial output and batch_cancelled lines', async () => {
    const lines = chatLines(LINES, 'slow-llama', 'c');
    const created = await submitBatch(ep, lines);
    await waitForProgress(ep, created.id, 4);

    const cancelling = await cancelBatch(ep, created.id);
    assert.equal(cancelling.status, 'cancelling', 'the cancel answers the batch as cancelling');
    assert.equal(typeof cancelling.cancelling_at, 'number');
    assert.ok(['CANCELING', 'CANCELLED'].includes(await togetherStatus(created.id)));

    const batch = await waitForStatus(ep, created.id, 'cancelled');
    assert.equal(typeof batch.cancelled_at, 'number');
    assert.equal(batch.completed_at, null);
    assert.equal(await togetherStatus(created.id), 'CANCELLED');
    const results = await readResults(ep, batch);
    assertExactlyOnce(lines.map((l) => l.custom_id), results);
    assert.ok(results.output.length >= 4, `partial output kept (${results.output.length} lines)`);
    assert.ok(results.errors.length > 0, 'the rest was cancelled');
    assertEchoOutput(CHAT, byCustomId(lines), results.output);
    for (const line of results.errors) {
      assert.equal(line.error.code, 'batch_cancelled', JSON.stringify(line));
      assert.equal(line.response, null);
    }
    const open = await h.app.store.sql.db
      .selectFrom('chunks')
      .select(['chunk', 'state', 'lease_owner'])
      .where('batch_id', '=', batch.id)
      .where((eb) => eb.or([eb('state', 'in', ['pending', 'running']), eb('lease_owner', 'is not', null)]))
      .execute();
    assert.deepEqual(open, [], 'no chunk is left open or held');
    finished.set('cancelled', results);

    // Cancelling again answers the cancelled batch.
    assert.equal((await cancelBatch(ep, created.id)).status, 'cancelled');
  });

  it('expiry while a slow upstream works: EXPIRED, partial output and batch_expired lines', async () => {
    const lines = chatLines(LINES, 'slow-llama', 'x');
    const created = await submitBatch(ep, lines);
    await waitForProgress(ep, created.id, 4);
    assert.equal((await getBatch(ep, created.id)).status, 'in_progress');

    // The completion window ends now.
    await h.app.store.sql.db
      .updateTable('batches')
      .set({ deadline_at: Date.now() - 1000 })
      .where('id', '=', created.id)
      .execute();

    const batch = await waitForStatus(ep, created.id, 'expired');
    assert.equal(typeof batch.expired_at, 'number');
    assert.equal(await togetherStatus(created.id), 'EXPIRED');
    const results = await readResults(ep, batch);
    assertExactlyOnce(lines.map((l) => l.custom_id), results);
    assert.ok(results.output.length >= 4, `partial output kept (${results.output.length} lines)`);
    assert.ok(results.errors.length > 0, 'the rest expired');
    assertEchoOutput(CHAT, byCustomId(lines), results.output);
    for (const line of results.errors) {
      assert.equal(line.error.code, 'batch_expired', JSON.stringify(line));
      assert.match(line.error.message, /completion window/);
    }
    finished.set('expired', results);

    // An expired batch cannot be cancelled.
    const res = await api(`${ep.base}/batches/${created.id}/cancel`, ep.key, { method: 'POST' });
    assert.equal(res.status, 409);
  });

  it('cancel while audio downloads are in flight: those lines are batch_cancelled too', async () => {
    const audio = await startHarness({ config: { audio: { allowedHosts: ['127.0.0.1'] } } });
    const audioEp = endpointOf(audio);
    const statics = await startStaticServer({ 'never.wav': { hang: true } });
    const endpoint = '/v1/audio/transcriptions';
    const lines = Array.from({ length: 4 }, (_, i) => ({
      custom_id: `audio-${i + 1}`,
      method: 'FILE',
      url: endpoint,
      body: { model: 'echo', file: `${statics.url}/never.wav?n=${i}` },
    }));
    const created = await submitBatch(audioEp, lines, { endpoint });
    await pollUntil(
      async () => statics.requests.length,
      (n) => n >= lines.length,
      { what: 'every audio download to start' },
    );
    assert.equal((await cancelBatch(audioEp, created.id)).status, 'cancelling');
    const batch = await waitForStatus(audioEp, created.id, 'cancelled');
    const results = await readResults(audioEp, batch);
    assertExactlyOnce(lines.map((l) => l.custom_id), results);
    assert.deepEqual(
      results.errors.map((l) => l.error.code),
      lines.map(() => 'batch_cancelled'),
      'an interrupted download is the cancel, not a bad audio source',
    );
    await audio.stop();
  });

  it('a cancel that lands after a validation died midway reports all lines or none, never the half it had read', async () => {
    // No worker: the lines stay pending, so the state below is exactly what a crashed validator leaves.
    const first = await startHarness({ worker: { enabled: false } });
    const lines = chatLines(6, 'echo', 'half');
    const created = await submitBatch(endpointOf(first), lines);
    await waitForStatus(endpointOf(first), created.id, 'in_progress');
    await first.stop();

    // A validator that died after storing a first chunk (of lines 1-2), and a cancel accepted meanwhile.
    const store = await openStore({ dataDir: first.dataDir });
    try {
      const firstTwoBytes = Buffer.byteLength(JSON.stringify(lines[0])) + 1 + Buffer.byteLength(JSON.stringify(lines[1]));
      await store.sql.db.deleteFrom('chunks').where('batch_id', '=', created.id).where('chunk', '>', 0).execute();
      await store.sql.db
        .updateTable('chunks')
        .set({ line_count: 2, byte_end: firstTwoBytes })
        .where('batch_id', '=', created.id)
        .where('chunk', '=', 0)
        .execute();
      await store.sql.db
        .updateTable('batches')
        .set({ status: 'cancelling', cancelling_at: Date.now(), in_progress_at: null, request_total: 0, estimated_tokens: 0, lease_owner: null, lease_expires_at: null })
        .where('id', '=', created.id)
        .execute();
    } finally {
      await store.close();
    }

    const second = await startHarness({ dataDir: first.dataDir, worker: { enabled: false } });
    const batch = await waitForStatus(endpointOf(second), created.id, 'cancelled');
    const results = await readResults(endpointOf(second), batch);
    const reported = [...results.output, ...results.errors].map((l) => l.custom_id);
    assert.ok(
      reported.length === 0 || reported.length === lines.length,
      `all ${lines.length} lines or none are reported, got ${reported.length}: ${reported.join(', ')}`,
    );
    assert.equal(batch.request_counts.total, reported.length);
    await second.stop();
  });

  it('a batch whose chunk a worker handed back on noticing its deadline, before the expiry sweep came, ends EXPIRED, not COMPLETED', async () => {
    // A worker that notices a batch's deadline has passed stops its lines and hands their chunk back (pending, no
    // owner); those lines are in no segment. When it got there before a sweep, the batch must still be finalized
    // as EXPIRED with batch_expired lines, never as COMPLETED (webhooks.test.ts saw batch.completed for a batch
    // whose window ended, now and then, in the per-line design).
    const solo = await startHarness({ worker: { enabled: false } });
    const soloEp = endpointOf(solo);
    const lateLines = chatLines(3, 'echo', 'late');
    const late = await submitBatch(soloEp, lateLines);
    await waitForStatus(soloEp, late.id, 'in_progress');
    await solo.stop();
    const store = await openStore({ dataDir: solo.dataDir });
    try {
      const db = store.sql.db;
      const now = Date.now();
      // Claimed once, some of it sent, then handed back when the deadline was noticed.
      const handedBack = await db
        .updateTable('chunks')
        .set({ state: 'pending', claims: 1, lease_owner: null, lease_expires_at: null })
        .where('batch_id', '=', late.id)
        .executeTakeFirst();
      assert.ok(Number(handedBack.numUpdatedRows) > 0, 'the batch has chunks');
      await db.updateTable('batches').set({ deadline_at: now - 1000 }).where('id', '=', late.id).execute();
      await runLifecycleSweeps(lifecycleContext(store, solo.config));
      const row = await db.selectFrom('batches').selectAll().where('id', '=', late.id).executeTakeFirstOrThrow();
      assert.equal(row.status, 'expired');
      assert.equal(typeof row.expired_at, 'number');
      assert.equal(row.completed_at, null);
      assert.equal(await fileText(store, row.output_file_id), '', 'nothing finished in time');
      const errors = parseJsonl(await fileText(store, row.error_file_id));
      assert.deepEqual(
        errors.map((l) => [l.custom_id, l.error.code]),
        lateLines.map((l) => [l.custom_id, 'batch_expired']),
      );
      assert.equal(row.request_failed, 3);
    } finally {
      await store.close();
    }
  });

  it('a cancel waiting on a request in flight elsewhere does not hold up other cancels', async () => {
    // Offline, so no sweeper of the harness's own runs in between: sweep passes called here must cancel the free
    // batch even though the first batch each claims (the older one) has to wait out its grace period.
    const solo = await startHarness({ worker: { enabled: false } });
    const soloEp = endpointOf(solo);
    const waiting = await submitBatch(soloEp, chatLines(3, 'echo', 'waiting'));
    await waitForStatus(soloEp, waiting.id, 'in_progress');
    const free = await submitBatch(soloEp, chatLines(3, 'echo', 'free'));
    await waitForStatus(soloEp, free.id, 'in_progress');
    await solo.stop();

    const store = await openStore({ dataDir: solo.dataDir });
    try {
      const db = store.sql.db;
      // The chunk of `waiting` (all 3 of its lines) is held by a worker in another process under a live lease.
      const held = await db
        .updateTable('chunks')
        .set({ state: 'running', claims: 1, lease_owner: 'worker-in-another-process', lease_expires_at: Date.now() + 600_000 })
        .where('batch_id', '=', waiting.id)
        .executeTakeFirst();
      assert.equal(Number(held.numUpdatedRows), 1, 'the 3 lines are one chunk');
      const now = Date.now();
      for (const id of [waiting.id, free.id]) {
        await db.updateTable('batches').set({ status: 'cancelling', cancelling_at: now, lease_owner: null, lease_expires_at: null }).where('id', '=', id).execute();
      }
      const ctx = lifecycleContext(store, solo.config);
      // The older batch, claimed first, can only wait (its chunk is in flight, inside the grace period): each pass
      // must go on past it, closing the free batch's pending chunk (progress, so the cancel sweep stops there),
      // then finalizing that batch.
      await runLifecycleSweeps(ctx);
      await runLifecycleSweeps(ctx);
      const row = (id: string) => db.selectFrom('batches').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
      const chunkOf = (id: string) => db.selectFrom('chunks').select(['state', 'lease_owner']).where('batch_id', '=', id).executeTakeFirstOrThrow();
      const cancelled = await row(free.id);
      assert.equal(cancelled.status, 'cancelled', 'the batch that can be cancelled is, without waiting for the other');
      assert.equal((await row(waiting.id)).status, 'cancelling', 'the other waits for its chunk in flight (grace period)');
      assert.deepEqual(await chunkOf(waiting.id), { state: 'running', lease_owner: 'worker-in-another-process' }, 'its chunk is left to its worker');
      assert.equal(await fileText(store, cancelled.output_file_id), '');
      const failed = parseJsonl(await fileText(store, cancelled.error_file_id));
      assert.deepEqual(
        failed.map((l) => l.error.code),
        ['batch_cancelled', 'batch_cancelled', 'batch_cancelled'],
      );

      // The grace period over, the chunk still in flight is closed too, and the waiting batch is cancelled.
      await db
        .updateTable('batches')
        .set({ cancelling_at: Date.now() - CANCEL_GRACE_MS - 1000, lease_owner: null, lease_expires_at: null })
        .where('id', '=', waiting.id)
        .execute();
      await runLifecycleSweeps(ctx);
      await runLifecycleSweeps(ctx);
      const late = await row(waiting.id);
      assert.equal(late.status, 'cancelled', 'after the grace period the cancel no longer waits');
      assert.deepEqual(await chunkOf(waiting.id), { state: 'closed', lease_owner: null }, 'its late segment commit would be refused');
      assert.deepEqual(
        parseJsonl(await fileText(store, late.error_file_id)).map((l) => l.error.code),
        ['batch_cancelled', 'batch_cancelled', 'batch_cancelled'],
      );
    } finally {
      await store.close();
    }
  });

  it('finalization is idempotent: redone by two processes at once, twice, it writes the same files and no duplicate lines', async () => {
    // A batch that completes on its own (echo answers at once), with some failed lines.
    const lines = [...chatLines(12, 'echo', 'done'), chatLine('done-unserved', 'nobody-serves-this')];
    const created = await submitBatch(ep, lines);
    const completed = await readResults(ep, await waitForStatus(ep, created.id, 'completed'));
    assertExactlyOnce(lines.map((l) => l.custom_id), completed);
    finished.set('completed', completed);
    assert.equal(finished.size, 3, 'the cancel and expiry tests left their batches');

    // Live: sweeps from another process find nothing left to do.
    const other = lifecycleContext(h.app.store, h.config);
    assert.equal(await runLifecycleSweeps(other), false);
    assert.equal(await runLifecycleSweeps(other), false);
    for (const results of finished.values()) {
      const batch = await getBatch(ep, results.batch.id);
      assert.equal(batch.output_file_id, results.batch.output_file_id, 'finished batches keep their files');
      assert.equal(batch.error_file_id, results.batch.error_file_id);
    }

    // Offline: put each batch back where a finalizer that died before its commit leaves it (result blobs
    // written, segments and their blobs untouched, no file rows, no terminal state), then sweep from two
    // contexts at once, twice.
    await h.stop();
    const store = await openStore({ dataDir: h.dataDir });
    try {
      const db = store.sql.db;
      const rollback: Record<string, BatchUpdate> = {
        completed: { status: 'finalizing', completed_at: null },
        expired: { status: 'finalizing' },
        cancelled: { status: 'cancelling', cancelled_at: null },
      };
      for (const [status, results] of finished) {
        // The committed finalization deleted the segment blobs; one that died before its commit had not.
        await restoreSegmentBlobs(store, results.batch.id, results.outputText, results.errorText);
        await db.deleteFrom('files').where('batch_id', '=', results.batch.id).execute();
        await db
          .updateTable('batches')
          .set({ ...rollback[status], output_file_id: null, error_file_id: null, lease_owner: null, lease_expires_at: null })
          .where('id', '=', results.batch.id)
          .execute();
      }
      const first = lifecycleContext(store, h.config, 'refinalizer-a');
      const second = lifecycleContext(store, h.config, 'refinalizer-b');
      for (let round = 0; round < 10; round++) {
        const changed = await Promise.all([runLifecycleSweeps(first), runLifecycleSweeps(second)]);
        if (!changed.some(Boolean)) break;
      }
      assert.deepEqual(await Promise.all([runLifecycleSweeps(first), runLifecycleSweeps(second)]), [false, false], 'a second pass finds nothing to do');

      for (const [status, results] of finished) {
        const row = await db.selectFrom('batches').selectAll().where('id', '=', results.batch.id).executeTakeFirstOrThrow();
        assert.equal(row.status, status, `batch ${row.id} is ${status} again`);
        assert.equal(row.lease_owner, null);
        const files = await db.selectFrom('files').selectAll().where('batch_id', '=', row.id).execute();
        assert.equal(files.length, 2, `exactly one output and one error file for the ${status} batch`);
        assert.deepEqual(new Set(files.map((f) => f.id)), new Set([row.output_file_id, row.error_file_id]));
        const read = async (id: string | null) => {
          const file = files.find((f) => f.id === id)!;
          const chunks: Buffer[] = [];
          for await (const chunk of await store.blobs.read(file.blob_key!)) chunks.push(chunk as Buffer);
          const text = Buffer.concat(chunks).toString('utf8');
          assert.equal(file.bytes, Buffer.byteLength(text));
          return text;
        };
        assert.equal(await read(row.output_file_id), results.outputText, `the ${status} batch's output is written again, unchanged`);
        assert.equal(await read(row.error_file_id), results.errorText, `the ${status} batch's errors are written again, unchanged`);
        assert.equal(row.request_completed, results.output.length);
        assert.equal(row.request_failed, results.errors.length);
        const kept = await db.selectFrom('segments').select(['chunk', 'seq']).where('batch_id', '=', row.id).where('blob_key', 'is not', null).execute();
        assert.deepEqual(kept, [], `the ${status} batch's segment blobs are deleted again once its files hold them`);
        assert.deepEqual(filesUnder(join(h.dataDir, 'blobs', 'batches', row.id)), ['errors.jsonl', 'output.jsonl']);
      }
    } finally {
      await store.close();
    }
  });
});

describe('output retention', () => {
  it('limits.defaultOutputExpiresAfterSeconds applies to batches created without output_expires_after', async () => {
    const own = await startHarness({ config: { limits: { defaultOutputExpiresAfterSeconds: 7200 } } });
    const ep = endpointOf(own);
    const plain = await waitForStatus(ep, (await submitBatch(ep, [chatLine('a', 'echo')])).id, 'completed');
    const own1h = await waitForStatus(
      ep,
      (await submitBatch(ep, [chatLine('b', 'echo')], { extra: { output_expires_after: { anchor: 'created_at', seconds: 3600 } } })).id,
      'completed',
    );
    for (const [batch, seconds] of [
      [plain, 7200],
      [own1h, 3600],
    ] as const) {
      const file = await api(`${ep.base}/files/${batch.output_file_id}`, ep.key);
      assert.equal(file.json.expires_at, batch.created_at + seconds, 'the batch\'s own output_expires_after wins over the default');
    }
    await own.stop();
  });

  it('output and error files past output_expires_after disappear: 404, and their blobs are deleted', async () => {
    const own = await startHarness({});
    const ep = endpointOf(own);
    const lines = [chatLine('ok', 'echo'), chatLine('bad', 'nobody-serves-this')];
    const created = await submitBatch(ep, lines, { extra: { output_expires_after: { anchor: 'created_at', seconds: 3600 } } });
    const batch = await waitForStatus(ep, created.id, 'completed');
    for (const id of [batch.output_file_id, batch.error_file_id]) {
      const file = await api(`${ep.base}/files/${id}`, ep.key);
      assert.equal(file.status, 200);
      assert.equal(file.json.expires_at, batch.created_at + 3600, 'anchored at the batch creation');
    }
    const blobs = join(own.dataDir, 'blobs', 'batches', created.id);
    // Finalization deletes the segment blobs (copies of the files' lines) once the files are committed.
    await pollUntil(
      async () => filesUnder(blobs),
      (files) => files.length === 2,
      { what: 'the segment blobs to be deleted after finalization' },
    );
    assert.deepEqual(filesUnder(blobs), ['errors.jsonl', 'output.jsonl']);

    // An hour passes.
    await own.app.store.sql.db.updateTable('files').set({ expires_at: Date.now() - 1000 }).where('batch_id', '=', created.id).execute();

    // The sweep deletes each blob, then its row: wait for both, or the last row may still be there.
    await pollUntil(
      async () => filesUnder(blobs).length + (await own.app.store.sql.db.selectFrom('files').select('id').where('batch_id', '=', created.id).execute()).length,
      (left) => left === 0,
      { what: 'the retention sweep to delete the blobs and their rows' },
    );
    for (const id of [batch.output_file_id, batch.error_file_id]) {
      assert.equal((await api(`${ep.base}/files/${id}/content`, ep.key)).status, 404);
    }
    const rows = await own.app.store.sql.db.selectFrom('files').select('id').where('batch_id', '=', created.id).execute();
    assert.deepEqual(rows, [], 'the rows are gone too');
    // And so are the rows that said which of the batch's lines succeeded and failed.
    const db = own.app.store.sql.db;
    assert.deepEqual(await db.selectFrom('chunks').select('chunk').where('batch_id', '=', created.id).execute(), [], 'no chunk row is left');
    assert.deepEqual(await db.selectFrom('segments').select('chunk').where('batch_id', '=', created.id).execute(), [], 'no segment row is left');
    assert.deepEqual(await db.selectFrom('requests').select('line').where('batch_id', '=', created.id).execute(), []);
    // The input file has no expiry and stays.
    assert.equal((await api(`${ep.base}/files/${batch.input_file_id}`, ep.key)).status, 200);
    await own.stop();
  });

  for (const backend of [
    { name: 'SQLite', skip: false as const, databaseUrl: async () => undefined },
    { name: 'PostgreSQL', skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : (false as const), databaseUrl: createPostgresDatabase },
  ]) {
    it(`deleting the output file forgets the response bodies in the database, the error file the error messages; both gone, the rows go (${backend.name})`, { skip: backend.skip }, async () => {
      const own = await startHarness({ config: { databaseUrl: await backend.databaseUrl() } });
      const ep = endpointOf(own);
      const db = own.app.store.sql.db;
      const lines = [chatLine('ok', 'echo'), chatLine('bad', 'nobody-serves-this')];
      const batch = await waitForStatus(ep, (await submitBatch(ep, lines)).id, 'completed');
      const results = await readResults(ep, batch);
      assert.deepEqual([results.output.map((l) => l.custom_id), results.errors.map((l) => l.custom_id)], [['ok'], ['bad']]);
      const response = results.output[0].response.body;
      const message: string = results.errors[0].error.message;
      assert.ok(response.id && message, 'the files hold a response and an error message');
      const segmentDir = join(own.dataDir, 'blobs', 'batches', batch.id, 'segments');
      // Rows of the batch in SQL, and whether any of them holds content of its result files.
      const rows = async () => ({
        chunks: await db.selectFrom('chunks').selectAll().where('batch_id', '=', batch.id).execute(),
        segments: await db.selectFrom('segments').selectAll().where('batch_id', '=', batch.id).execute(),
        requests: await db.selectFrom('requests').selectAll().where('batch_id', '=', batch.id).execute(),
      });
      const assertNoContent = (found: Awaited<ReturnType<typeof rows>>, when: string) => {
        const text = JSON.stringify(found);
        for (const content of [response.id, JSON.stringify(response), message]) {
          assert.ok(!text.includes(content), `${when}: no SQL row holds ${JSON.stringify(content).slice(0, 80)}`);
        }
        assert.deepEqual(found.requests, [], `${when}: no per-line request row`);
      };
      const before = await rows();
      assertNoContent(before, 'while both files exist');
      assert.equal(before.chunks.reduce((n, c) => n + Number(c.succeeded), 0), 1, 'the chunks know which line succeeded');
      assert.equal(before.chunks.reduce((n, c) => n + Number(c.failed), 0), 1, 'and which failed (what a retry reads)');

      // A copy of the lines that a segment blob delete after finalization left behind (it failed, or the process died).
      await pollUntil(
        async () => (await db.selectFrom('segments').select('seq').where('batch_id', '=', batch.id).where('blob_key', 'is not', null).execute()).length,
        (n) => n === 0,
        { what: 'finalization to delete the segment blobs' },
      );
      assert.ok((await restoreSegmentBlobs(own.app.store, batch.id, results.outputText, results.errorText)) > 0);
      assert.ok(filesUnder(segmentDir).length > 0);

      assert.equal((await api(`${ep.base}/files/${batch.output_file_id}`, ep.key, { method: 'DELETE' })).status, 200);
      assert.equal((await api(`${ep.base}/files/${batch.output_file_id}/content`, ep.key)).status, 404);
      assert.deepEqual(filesUnder(segmentDir), [], 'the output file is gone: so is every copy of its lines in segment blobs');
      const afterOutput = await rows();
      assert.deepEqual(afterOutput.segments.filter((s) => s.blob_key !== null), [], 'no segment row names a blob');
      assertNoContent(afterOutput, 'after deleting the output file');
      // The error file is still there, with its content; it still tells which lines failed: a retry still works.
      assert.equal(JSON.parse((await downloadText(ep, batch.error_file_id)).trim()).error.message, message);
      const retried = await api(`${ep.base}/batches/${batch.id}/retry`, ep.key, { method: 'POST' });
      assert.equal(retried.status, 200, JSON.stringify(retried.json));
      await waitForStatus(ep, retried.json.id, 'completed');

      assert.equal((await api(`${ep.base}/files/${batch.error_file_id}`, ep.key, { method: 'DELETE' })).status, 200);
      assert.deepEqual(await rows(), { chunks: [], segments: [], requests: [] }, 'both files gone: no row of the batch holds any of it');
      assert.deepEqual(filesUnder(join(own.dataDir, 'blobs', 'batches', batch.id)), [], 'nor any blob');
      const refused = await api(`${ep.base}/batches/${batch.id}/retry`, ep.key, { method: 'POST' });
      assert.equal(refused.status, 409);
      assert.equal(refused.json.error.code, 'results_expired');
      assert.match(refused.json.error.message, /expired or were deleted/);
      // The batch itself (its counts) stays readable.
      assert.deepEqual((await getBatch(ep, batch.id)).request_counts, { total: 2, completed: 1, failed: 1 });
      await own.stop();
    });
  }
});
