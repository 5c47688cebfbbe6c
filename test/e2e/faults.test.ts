// Failing dependencies, injected for real on both backends: the database
// refusing a value (a trigger raising a data exception), running out of space
// (SQLite: max_page_count, the SQLITE_FULL of a full disk), or dropping every
// connection and refusing new ones (PostgreSQL: pg_terminate_backend with
// connections disallowed, as in a restart or failover); the blob store losing
// or breaking an input file. Each test states what the fault used to do.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, renameSync, rmSync, symlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { cutPostgresConnections, fillSqlite, refuseValues, terminatePostgresConnections, unfillSqlite } from '../helpers/db-faults.ts';
import {
  api,
  assertExactlyOnce,
  chatLine,
  chatLines,
  cleanupAll,
  createPostgresDatabase,
  endpointOf,
  getBatch,
  pollUntil,
  readResults,
  SKIP_POSTGRES,
  startHarness,
  submitBatch,
  uploadFile,
  waitForStatus,
  type Harness,
  type HarnessOptions,
  type Json,
} from '../helpers/runner-harness.ts';

after(cleanupAll);

const BACKENDS = [
  { name: 'sqlite' as const, skip: false as const },
  { name: 'postgres' as const, skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : (false as const) },
];

/** One test spool on `backend`, with a loopback upstream for `slow-*` models (one request at a time, `delayMs` each). */
async function spoolOn(
  backend: 'sqlite' | 'postgres',
  options: { delayMs?: number; concurrency?: number; worker?: HarnessOptions['worker'] } = {},
): Promise<Harness & { databaseUrl?: string }> {
  const databaseUrl = backend === 'postgres' ? await createPostgresDatabase() : undefined;
  const harness = await startHarness({
    config: { databaseUrl },
    worker: options.worker,
    upstreams: [
      {
        name: 'slow',
        kind: 'slow',
        delayMs: options.delayMs ?? 10,
        models: ['slow-*'],
        maxConcurrency: options.concurrency ?? 1,
        initialConcurrency: options.concurrency ?? 1,
      },
    ],
  });
  return Object.assign(harness, { databaseUrl });
}

const blobPath = (h: Harness, fileId: string) => join(h.dataDir, 'blobs', 'files', fileId);

/** Turns a blob into a directory of the same name: reading it fails with EISDIR, like a store that errors on every read. Returns the undo. */
/**
 * Makes the blob unreadable (a symlink to itself: ELOOP) until the returned function puts it back. The put-back is
 * one rename over the link, so no read in between finds the blob missing (which fails a batch for good: a
 * directory in its place, removed before the rename, once let a validation see ENOENT under load).
 */
function breakBlob(path: string): () => void {
  renameSync(path, `${path}.aside`);
  symlinkSync(path, path);
  return () => renameSync(`${path}.aside`, path);
}

for (const backend of BACKENDS) {
  describe(`faults on ${backend.name}`, { skip: backend.skip }, () => {
    it('validation the database refuses fails that batch at once, saying why; the batch behind it runs', async () => {
      // Before: the sweeper released the batch and took it again at once (hundreds of failed inserts a second),
      // and every batch created after it stayed VALIDATING.
      const h = await spoolOn(backend.name);
      // Validation stores chunk rows: the poisoned line's model lands in its chunk's `models` column.
      await refuseValues(h.app.store.sql.db, backend.name, { table: 'chunks', event: 'insert', column: 'models', needle: 'poison' });
      const ep = endpointOf(h);
      const poisoned = await submitBatch(ep, [chatLine('fine-1', 'slow-model'), chatLine('poison', 'slow-poison')]);
      const healthy = await submitBatch(ep, chatLines(3, 'slow-model', 'healthy'));
      const failed = await waitForStatus(ep, poisoned.id, ['failed', 'completed']);
      assert.equal(failed.status, 'failed');
      assert.equal(failed.errors.data[0].code, 'validation_error');
      assert.match(failed.errors.data[0].message, /could not be stored for running \(the database refused the values/);
      const done = await waitForStatus(ep, healthy.id, ['completed', 'failed']);
      assert.equal(done.status, 'completed');
      await h.stop();
    });

    it('validation that keeps failing backs off: the batch stays VALIDATING and never holds up the next one', async () => {
      // Before: the same release-and-retake loop, for any error (here the input blob reads as a directory).
      const h = await spoolOn(backend.name);
      const ep = endpointOf(h);
      const fileId = (await uploadFile(ep, chatLines(2, 'slow-model', 'stuck').map((line) => JSON.stringify(line)).join('\n') + '\n')).id as string;
      const restore = breakBlob(blobPath(h, fileId));
      const stuck = await api(`${h.openai}/batches`, h.apiKey, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window: '24h' }),
      });
      assert.equal(stuck.status, 200, stuck.text);
      const healthy = await submitBatch(ep, chatLines(3, 'slow-model', 'healthy'));
      assert.equal((await waitForStatus(ep, healthy.id, ['completed', 'failed'])).status, 'completed');
      assert.equal((await getBatch(ep, stuck.json.id)).status, 'validating', 'a failure that may pass is retried, not a failed batch');
      restore();
      assert.equal((await waitForStatus(ep, stuck.json.id, ['completed', 'failed'])).status, 'completed', 'the batch goes on once its input reads again');
      await h.stop();
    });

    it('an input file whose bytes are gone fails validation with missing_file', async () => {
      const h = await spoolOn(backend.name);
      const ep = endpointOf(h);
      const fileId = (await uploadFile(ep, JSON.stringify(chatLine('gone', 'slow-model')) + '\n')).id as string;
      rmSync(blobPath(h, fileId));
      const created = await api(`${h.openai}/batches`, h.apiKey, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window: '24h' }),
      });
      const failed = await waitForStatus(ep, created.json.id, ['failed', 'completed']);
      assert.equal(failed.status, 'failed');
      assert.equal(failed.errors.data[0].code, 'missing_file');
      await h.stop();
    });

    it('a result segment the database refuses is recorded without its stats: every line once, and the batch completes', async () => {
      // Before: the result writer retried the group forever, recorded nothing more, and kept renewing its leases.
      // No request or response is in SQL any more: the only input-derived text of a segment row is its `stats` (model
      // names). A refused segment is retried per chunk, then without its stats, so its lines still count.
      const h = await spoolOn(backend.name);
      const { db } = h.app.store.sql;
      await refuseValues(db, backend.name, { table: 'segments', event: 'insert', column: 'stats', needle: 'echo-poison' });
      const ep = endpointOf(h);
      const lines = [...chatLines(20, 'echo', 'fine'), chatLine('poisoned', 'echo-poison')];
      const batch = await submitBatch(ep, lines);
      const done = await waitForStatus(ep, batch.id, ['completed', 'failed', 'expired']);
      assert.equal(done.status, 'completed');
      const results = await readResults(ep, done);
      assertExactlyOnce(lines.map((line) => line.custom_id), results);
      assert.equal(results.output.length, 21);
      assert.deepEqual(results.errors, []);
      // The database did refuse: no stored stats name the poisoned model, and its segment went in without stats.
      const segments = await db.selectFrom('segments').select(['stats', 'output_lines']).where('batch_id', '=', batch.id).execute();
      assert.equal(segments.reduce((sum, segment) => sum + Number(segment.output_lines), 0), 21);
      assert.ok(segments.every((segment) => !segment.stats.includes('echo-poison')), 'no segment row holds the refused value');
      assert.ok(segments.some((segment) => segment.stats === '{}'), 'the refused segment was committed without its stats');
      await h.stop();
    });

    it('a chunk whose input cannot be read after it was claimed stays held, sends nothing, and runs once it reads again', async () => {
      // Before (one row per line): the claimed lines stayed `running` under this worker's renewed lease until the batch
      // expired. Now the chunk stays held (lease renewed) and its admission is retried with backoff, up to
      // worker.maxAttempts: enough attempts here that the input reads again well before they run out.
      const h = await spoolOn(backend.name, { delayMs: 20, worker: { maxAttempts: 20, retryBaseDelayMs: 50, retryMaxDelayMs: 500 } });
      const { db } = h.app.store.sql;
      const upstream = h.upstreams.slow.stats;
      const ep = endpointOf(h);
      const lines = chatLines(150, 'slow-model', 'admit');
      const batch = await submitBatch(ep, lines);
      await pollUntil(() => getBatch(ep, batch.id), (b) => b.request_counts.completed >= 1, { what: 'the first result' });
      const restore = breakBlob(blobPath(h, batch.input_file_id));
      const runningChunks = () =>
        db.selectFrom('chunks').select(['chunk', 'claims']).where('batch_id', '=', batch.id).where('state', '=', 'running').orderBy('chunk').execute();
      // The lines admitted before the break run out; then a chunk claimed since is held, unread, and nothing is sent.
      const quiet = await pollUntil(
        async () => {
          const sent = upstream.requests;
          await new Promise((resolve) => setTimeout(resolve, 300));
          return { idle: upstream.requests === sent && upstream.inFlight === 0, held: await runningChunks() };
        },
        (state) => state.idle && state.held.length > 0,
        { what: 'a claimed chunk held unread while nothing is sent upstream' },
      );
      const sentWhileBroken = upstream.requests;
      assert.ok(sentWhileBroken < lines.length, 'the break came before every line was sent');
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(upstream.requests, sentWhileBroken, 'nothing is sent upstream while the input cannot be read');
      // (More chunks may be claimed meanwhile; those held stay held under the same claim, not handed back and claimed again.)
      const stillHeld = await runningChunks();
      for (const chunk of quiet.held) assert.ok(stillHeld.some((other) => other.chunk === chunk.chunk && other.claims === chunk.claims), `chunk ${chunk.chunk} stays held`);
      assert.equal((await getBatch(ep, batch.id)).request_counts.failed, 0, 'no line is failed while admission is retried');
      restore();
      const done = await waitForStatus(ep, batch.id, ['completed', 'failed', 'expired']);
      assert.equal(done.status, 'completed');
      const results = await readResults(ep, done);
      assertExactlyOnce(lines.map((line) => line.custom_id), results);
      assert.equal(results.output.length, lines.length);
      assert.equal(upstream.requests, lines.length, 'each line was sent upstream once');
      const claims = await db.selectFrom('chunks').select('claims').where('batch_id', '=', batch.id).execute();
      assert.deepEqual(new Set(claims.map((row) => Number(row.claims))), new Set([1]), 'every chunk was claimed once');
      await h.stop();
    });
  });
}

describe('the database runs out of space (SQLite)', () => {
  it('pauses result recording without losing anything, says so on /readyz and in the admin status, and resumes when space returns', async () => {
    const h = await spoolOn('sqlite', { delayMs: 5, concurrency: 4 });
    try {
      const ep = endpointOf(h);
      const lines = chatLines(400, 'slow-model', 'full');
      const batch = await submitBatch(ep, lines);
      await pollUntil(() => getBatch(ep, batch.id), (b) => b.request_counts.completed >= 10, { what: 'some results' });
      await fillSqlite(h.app.store.sql.db);

      const notReady = await pollUntil(
        () => api(`${h.url}/readyz`, null),
        (r) => r.status === 503 && r.json?.checks?.results !== undefined,
        { what: '/readyz to report the stalled results' },
      );
      assert.equal(notReady.json.checks.results, 'RESULTS_STALLED');
      assert.match(notReady.json.message, /results/);
      const status = await api(`${h.url}/v1/admin/status`, h.apiKey);
      assert.equal(status.status, 200);
      assert.match(status.json.worker.results_stalled.reason, /out of space \(SQLITE_FULL\)/);

      // Nothing is claimed while results wait: the progress stands still (reads still work on a full database).
      const stalledAt = (await getBatch(ep, batch.id)).request_counts.completed;
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal((await getBatch(ep, batch.id)).request_counts.completed, stalledAt);

      await unfillSqlite(h.app.store.sql.db);
      const done = await waitForStatus(ep, batch.id, ['completed', 'failed', 'expired']);
      assert.equal(done.status, 'completed');
      assertExactlyOnce(lines.map((line) => line.custom_id), await readResults(ep, done));
      await pollUntil(() => api(`${h.url}/readyz`, null), (r) => r.status === 200, { what: '/readyz to be ready again' });
    } finally {
      // Space again even after a failed assertion: a stopping worker waits for its results to be recorded.
      await unfillSqlite(h.app.store.sql.db);
      await h.stop();
    }
  });
});

describe('PostgreSQL goes away and comes back', { skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : false }, () => {
  it('connections terminated again and again mid-batch: the process lives and every line is recorded once', async () => {
    // Before: the first terminated connection that was checked out crashed the process (an unhandled
    // 'error' event, 57P01), API included.
    const h = await spoolOn('postgres', { delayMs: 5, concurrency: 8 });
    const ep = endpointOf(h);
    const lines = chatLines(300, 'slow-model', 'terminated');
    const batch = await submitBatch(ep, lines);
    let terminated = 0;
    for (let round = 0; round < 8; round++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      terminated += await terminatePostgresConnections(h.databaseUrl!);
    }
    assert.ok(terminated > 0, 'some connections were terminated');
    const done = await waitForStatus(ep, batch.id, ['completed', 'failed', 'expired']);
    assert.equal(done.status, 'completed');
    assertExactlyOnce(lines.map((line) => line.custom_id), await readResults(ep, done));
    await h.stop();
  });

  it('unreachable for a while: not ready meanwhile, then the batch resumes with nothing lost or duplicated', async () => {
    const h = await spoolOn('postgres', { delayMs: 5, concurrency: 4 });
    const ep = endpointOf(h);
    const lines = chatLines(300, 'slow-model', 'away');
    const batch = await submitBatch(ep, lines);
    await pollUntil(() => getBatch(ep, batch.id), (b) => b.request_counts.completed >= 10, { what: 'some results' });
    const restore = await cutPostgresConnections(h.databaseUrl!);
    try {
      const notReady = await pollUntil(() => api(`${h.url}/readyz`, null), (r) => r.status === 503, { what: '/readyz to say not ready' });
      assert.notEqual(notReady.json.checks.database, 'ok');
      await pollUntil(() => Promise.resolve(h.app.runner?.stats().resultsStalled), (stall) => stall !== undefined, { what: 'the result writer to stall' });
    } finally {
      await restore();
    }
    const done = await waitForStatus(ep, batch.id, ['completed', 'failed', 'expired']);
    assert.equal(done.status, 'completed');
    assertExactlyOnce(lines.map((line) => line.custom_id), await readResults(ep, done));
    await pollUntil(() => api(`${h.url}/readyz`, null), (r) => r.status === 200, { what: '/readyz to be ready again' });
    await h.stop();
  });
});

// A real full disk: the data directory (SQLite and the blob directory) on a 6 MiB tmpfs, filled to the last
// byte by a file the test then removes. Mounting needs root (CI runs as root); elsewhere this test skips.
const TMPFS_SKIP = tmpfsSkipReason();

describe('the disk under the data directory fills up (tmpfs)', { skip: TMPFS_SKIP }, () => {
  it('uploads answer 507 and readiness says so, results wait, and all of it recovers when space returns', async () => {
    const mountPoint = mkdtempSync(join(tmpdir(), 'spool-tmpfs-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', mountPoint]);
    const filler = join(mountPoint, 'filler');
    let h: Harness | undefined;
    try {
      h = await startHarness({
        dataDir: join(mountPoint, 'data'),
        upstreams: [{ name: 'slow', kind: 'slow', delayMs: 5, models: ['slow-*'], maxConcurrency: 4, initialConcurrency: 4 }],
      });
      const app = h.app;
      const ep = endpointOf(h);
      const lines = chatLines(300, 'slow-model', 'disk');
      const batch = await submitBatch(ep, lines);
      await pollUntil(() => getBatch(ep, batch.id), (b) => b.request_counts.completed >= 5, { what: 'some results' });
      fillDisk(filler);

      // Results wait. The writer stalls once its group fails on the full disk: by then the segment blob writes begun
      // before the disk filled have settled (one that lands after the upload below would clear its mark, as any blob
      // write that goes through does), so the mark the upload leaves stays until space returns.
      await pollUntil(() => Promise.resolve(app.runner?.stats().resultsStalled), (stall) => stall !== undefined, { what: 'the result writer to stall' });
      const upload = await api(`${h.openai}/files`, h.apiKey, { method: 'POST', body: uploadForm('x'.repeat(64 * 1024)) });
      assert.equal(upload.status, 507, upload.text);
      assert.equal(upload.json.error.code, 'insufficient_storage');
      assert.match(upload.json.message, /out of storage space/);
      const notReady = await pollUntil(() => api(`${h!.url}/readyz`, null), (r) => r.status === 503, { what: '/readyz to say not ready' });
      assert.match(JSON.stringify(notReady.json.checks), /ENOSPC|SQLITE_FULL|RESULTS_STALLED/);
      const status = await api(`${h.url}/v1/admin/status`, h.apiKey);
      assert.equal(status.json.storage.blob_store.problem, 'out of space (ENOSPC)');

      rmSync(filler);
      await pollUntil(() => api(`${h!.url}/readyz`, null), (r) => r.status === 200, { what: '/readyz to be ready again' });
      const retried = await api(`${h.openai}/files`, h.apiKey, { method: 'POST', body: uploadForm('{"custom_id":"a","body":{}}\n') });
      assert.equal(retried.status, 200, retried.text);
      const done = await waitForStatus(ep, batch.id, ['completed', 'failed', 'expired']);
      assert.equal(done.status, 'completed');
      assertExactlyOnce(lines.map((line) => line.custom_id), await readResults(ep, done));
    } finally {
      // Space first, even after a failed assertion: a stopping worker waits for its results to be recorded.
      rmSync(filler, { force: true });
      await h?.stop();
      execFileSync('umount', ['-l', mountPoint]);
      rmSync(mountPoint, { recursive: true, force: true });
    }
  });
});

function tmpfsSkipReason(): string | false {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return 'mounting a tmpfs needs root on Linux';
  const probe = mkdtempSync(join(tmpdir(), 'spool-tmpfs-probe-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', probe], { stdio: 'ignore' });
    execFileSync('umount', [probe], { stdio: 'ignore' });
    return false;
  } catch {
    return 'this machine does not let the tests mount a tmpfs';
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
}

/** Writes `path` until the file system says ENOSPC. */
function fillDisk(path: string): void {
  const block = Buffer.alloc(64 * 1024, 0x61);
  const fd = openSync(path, 'w');
  try {
    for (;;) writeSync(fd, block);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
}

function uploadForm(content: string): FormData {
  const form = new FormData();
  form.append('purpose', 'batch');
  form.append('file', new Blob([content]), 'input.jsonl');
  return form;
}
