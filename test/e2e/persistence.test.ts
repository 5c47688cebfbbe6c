// Restarts: everything acknowledged by one server is there for the next one
// on the same data dir, and work a server left half done (validation
// interrupted mid-file, a cancel not yet swept) is carried on after restart.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { openStore, type Store } from '../../src/store/index.ts';
import {
  call,
  callJson,
  chatJsonl,
  createBatch,
  makeTempDir,
  parseJsonl,
  removeAllTempDirs,
  startTestSpool,
  uploadBatchFile,
  waitForBatchStatus,
  type TestSpool,
} from '../helpers/spool.ts';

const running = new Set<TestSpool>();

async function start(dataDir: string): Promise<TestSpool> {
  const spool = await startTestSpool({ dataDir });
  running.add(spool);
  return spool;
}

/**
 * Edits the database while no server runs, to leave what a process killed
 * at some instant leaves behind (every server runs the lifecycle sweeps, so
 * a live one would race the edit).
 */
async function withStoreOffline(dataDir: string, edit: (db: Store['sql']['db']) => Promise<void>): Promise<void> {
  const store = await openStore({ dataDir, databaseUrl: undefined });
  try {
    await edit(store.sql.db);
  } finally {
    await store.close();
  }
}

async function stopKeeping(spool: TestSpool): Promise<void> {
  await spool.stop({ keepDataDir: true });
  running.delete(spool);
}

after(async () => {
  for (const spool of running) await spool.stop({ keepDataDir: true });
  removeAllTempDirs();
});

describe('restart on the same data dir', () => {
  it('keeps files, batches and keys; a batch created just before close moves on after restart', async () => {
    const dataDir = makeTempDir();
    const first = await start(dataDir);
    const userKey = await first.keyFor('persistent-user');
    // Enough lines that a worker (one slow request at a time) cannot finish them during the test.
    const lines = 20;
    const content = chatJsonl(lines);
    const fileId = await uploadBatchFile(first, content, userKey);
    const ready = await createBatch(first, fileId, userKey);
    await waitForBatchStatus(`${first.url}/openai/v1`, userKey, ready.id, ['in_progress']);
    // Created and closed at once: it may or may not have been validated yet.
    const late = await createBatch(first, fileId, userKey);
    // A Together upload whose bytes arrive only after the restart.
    const post = await call(`${first.url}/v1/files`, {
      method: 'POST',
      key: userKey,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'purpose=batch-api&file_name=later.jsonl&file_type=jsonl',
    });
    assert.equal(post.status, 302);
    const pendingId = post.headers.get('x-together-file-id')!;
    const signedPath = new URL(post.headers.get('location')!);
    await stopKeeping(first);

    const second = await start(dataDir);
    assert.notEqual(second.url, first.url, 'a new server on a new port');
    const base = `${second.url}/openai/v1`;

    // Keys minted before the restart still work; the env key too.
    const file = await callJson(`${base}/files/${fileId}`, userKey, 'GET');
    assert.equal(file.status, 200, file.text);
    assert.equal(file.json.bytes, Buffer.byteLength(content));
    assert.equal((await call(`${base}/files/${fileId}/content`, { key: userKey })).text, content);
    assert.equal((await callJson(`${base}/files`, second.apiKey, 'GET')).status, 200);

    const list = await callJson(`${base}/batches`, userKey, 'GET');
    assert.deepEqual(
      list.json.data.map((b: { id: string }) => b.id),
      [late.id, ready.id],
    );
    const readyAfter = await callJson(`${base}/batches/${ready.id}`, userKey, 'GET');
    assert.equal(readyAfter.json.status, 'in_progress');
    assert.equal(readyAfter.json.request_counts.total, lines);
    const lateAfter = await waitForBatchStatus(base, userKey, late.id, ['in_progress']);
    assert.equal(lateAfter.request_counts.total, lines);

    // The signed URL from the first server still works against the second (the secret is shared through the database).
    const put = await call(`${second.url}${signedPath.pathname}${signedPath.search}`, {
      method: 'PUT',
      body: new Uint8Array(Buffer.from(chatJsonl(2))),
    });
    assert.equal(put.status, 200, put.text);
    const pending = await callJson(`${second.url}/v1/files/${pendingId}`, userKey, 'GET');
    assert.equal(pending.json.Processed, true);
    assert.equal(pending.json.LineCount, 2);

    // And the batch carries on to a cancel on the new server.
    assert.equal((await callJson(`${base}/batches/${ready.id}/cancel`, userKey, 'POST')).status, 200);
    const cancelled = await waitForBatchStatus(base, userKey, ready.id, ['cancelled']);
    assert.equal(cancelled.request_counts.completed + cancelled.request_counts.failed, lines);
  });

  it('an interrupted validation (dead owner, lapsed lease, half-written rows) completes after restart', async () => {
    const dataDir = makeTempDir();
    const first = await start(dataDir);
    const lines = 12;
    const fileId = await uploadBatchFile(first, chatJsonl(lines));
    const batch = await createBatch(first, fileId);
    await waitForBatchStatus(`${first.url}/openai/v1`, first.apiKey, batch.id, ['in_progress']);
    await stopKeeping(first);

    // What a process killed midway through validating leaves: the batch still VALIDATING under its
    // lapsed lease, and a chunk row not matching the file (too few lines, a byte range cut short).
    await withStoreOffline(dataDir, async (db) => {
      await db
        .updateTable('batches')
        .set({
          status: 'validating',
          in_progress_at: null,
          request_total: 0,
          estimated_tokens: 0,
          lease_owner: 'worker-that-died',
          lease_expires_at: Date.now() - 1000,
        })
        .where('id', '=', batch.id)
        .execute();
      await db.deleteFrom('chunks').where('batch_id', '=', batch.id).where('chunk', '>', 0).execute();
      await db
        .updateTable('chunks')
        .set((eb) => ({ line_count: 2, byte_end: eb('byte_start', '+', 1) }))
        .where('batch_id', '=', batch.id)
        .where('chunk', '=', 0)
        .execute();
    });

    const second = await start(dataDir);
    const done = await waitForBatchStatus(`${second.url}/openai/v1`, second.apiKey, batch.id, ['in_progress', 'failed', 'completed']);
    assert.notEqual(done.status, 'failed', JSON.stringify(done.errors));
    assert.equal(done.request_counts.total, lines);
    const rows = await second.app.store.sql.db
      .selectFrom('chunks')
      .select(['chunk', 'line_start', 'line_count', 'byte_start', 'byte_end'])
      .where('batch_id', '=', batch.id)
      .orderBy('chunk')
      .execute();
    let nextLine = 1;
    for (const [i, row] of rows.entries()) {
      assert.deepEqual([row.chunk, row.line_start], [i, nextLine], 'chunks cover the lines in order, the half-written one replaced');
      nextLine += row.line_count;
    }
    assert.equal(nextLine - 1, lines, 'every line is in a chunk');
    assert.ok(
      rows.every((r) => r.byte_end - r.byte_start > 1),
      'chunks point at the real lines',
    );

    // The batch is usable: it cancels on the new server.
    assert.equal((await callJson(`${second.url}/openai/v1/batches/${batch.id}/cancel`, second.apiKey, 'POST')).status, 200);
    const cancelled = await waitForBatchStatus(`${second.url}/openai/v1`, second.apiKey, batch.id, ['cancelled']);
    assert.equal(cancelled.request_counts.completed + cancelled.request_counts.failed, lines);
  });

  it('a cancel accepted before a shutdown is carried out after the restart', async () => {
    const dataDir = makeTempDir();
    const first = await start(dataDir);
    const lines = 4;
    const fileId = await uploadBatchFile(first, chatJsonl(lines));
    const batch = await createBatch(first, fileId);
    await waitForBatchStatus(`${first.url}/openai/v1`, first.apiKey, batch.id, ['in_progress']);
    await stopKeeping(first);

    // Accepted (CANCELLING) but not yet swept when the process went down.
    await withStoreOffline(dataDir, async (db) => {
      const moved = await db
        .updateTable('batches')
        .set({ status: 'cancelling', cancelling_at: Date.now() })
        .where('id', '=', batch.id)
        .where('status', '=', 'in_progress')
        .executeTakeFirst();
      assert.equal(Number(moved.numUpdatedRows), 1, 'the batch was in progress at shutdown');
    });

    const second = await start(dataDir);
    const base = `${second.url}/openai/v1`;
    const cancelled = await waitForBatchStatus(base, second.apiKey, batch.id, ['cancelled']);
    assert.equal(cancelled.request_counts.total, lines);
    const errors = parseJsonl((await call(`${base}/files/${cancelled.error_file_id}/content`, { key: second.apiKey })).text);
    const output = parseJsonl((await call(`${base}/files/${cancelled.output_file_id}/content`, { key: second.apiKey })).text);
    assert.equal(errors.length + output.length, lines);
    assert.deepEqual(
      [...errors, ...output].map((l) => l.custom_id).sort(),
      Array.from({ length: lines }, (_, i) => `req-${i + 1}`).sort(),
    );
    for (const line of errors) assert.ok(['batch_cancelled'].includes(line.error.code), JSON.stringify(line));
  });

  it('a cancel sent just before close is never lost', async () => {
    const dataDir = makeTempDir();
    const first = await start(dataDir);
    const lines = 8;
    const fileId = await uploadBatchFile(first, chatJsonl(lines));
    const batch = await createBatch(first, fileId);
    await waitForBatchStatus(`${first.url}/openai/v1`, first.apiKey, batch.id, ['in_progress']);
    const cancel = await callJson(`${first.url}/openai/v1/batches/${batch.id}/cancel`, first.apiKey, 'POST');
    assert.equal(cancel.status, 200);
    await stopKeeping(first);

    const second = await start(dataDir);
    const cancelled = await waitForBatchStatus(`${second.url}/openai/v1`, second.apiKey, batch.id, ['cancelled']);
    assert.equal(cancelled.request_counts.completed + cancelled.request_counts.failed, lines);
  });
});
