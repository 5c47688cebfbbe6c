// The Spool side of the rss bench: a store in SPOOL_BENCH_DATA_DIR holding one
// in-progress batch whose chunks are all done, its results in committed
// segments (what the runner leaves behind), built by 'build'; 'finalize' then
// runs the lifecycle sweeps until the batch is completed (finalization
// concatenates the segments into its output and error files) and says how
// long that took. The harness samples this process's RSS around 'finalize'.
import { runLifecycleSweeps } from '../src/batches/sweeps.ts';
import { parseConfig } from '../src/config.ts';
import { newBatchId, newFileId, newWorkerId } from '../src/ids.ts';
import { outputLineText } from '../src/runner/wire-lines.ts';
import { blobKeyForSegment, blobKeyForUpload, openStore } from '../src/store/index.ts';
import { LineBitmap } from '../src/store/line-bitmap.ts';
import { findBatch, insertBatch } from '../src/store/sql/batches.ts';
import { insertChunks } from '../src/store/sql/chunks.ts';
import { insertFile } from '../src/store/sql/files.ts';
import type { NewChunk } from '../src/store/sql/schema.ts';
import { serveParent } from './lib/child.ts';

// As validation and the runner cut them: 256 lines a chunk, a segment per 64 finished lines.
const CHUNK_LINES = 256;
const SEGMENT_LINES = 64;

const dataDir = process.env.SPOOL_BENCH_DATA_DIR;
if (!dataDir) throw new Error('SPOOL_BENCH_DATA_DIR is not set');
const store = await openStore({ dataDir });
const quiet = () => undefined;
const ctx = {
  store,
  config: parseConfig({}),
  workerId: newWorkerId(),
  presentBatch: (batch: { id: string; status: string }) => ({ id: batch.id, status: batch.status }),
  log: { info: quiet, warn: quiet, error: quiet },
};
let batchId = '';

async function build(payload: unknown): Promise<{ batchId: string; segmentBytes: number }> {
  const { lines, responseBytes } = payload as { lines: number; responseBytes: number };
  const db = store.sql.db;
  const inputId = newFileId();
  const inputKey = blobKeyForUpload(inputId);
  // Every chunk is done, so finalization never reads the input: a stand-in is enough.
  const written = await store.blobs.write(inputKey, (async function* () {
    yield Buffer.from('{}\n');
  })());
  const now = Date.now();
  await insertFile(db, {
    id: inputId, user_id: 'bench', filename: 'in.jsonl', purpose: 'batch', file_type: 'jsonl', status: 'processed',
    bytes: written.bytes, line_count: lines, sha256: written.sha256, declared_sha256: null, blob_key: inputKey, batch_id: null,
    created_at: now, expires_at: null,
  });
  batchId = newBatchId();
  await insertBatch(db, {
    id: batchId, user_id: 'bench', input_file_id: inputId, endpoint: '/v1/chat/completions', completion_window: '24h',
    status: 'in_progress', priority: 0, file_size_bytes: lines * 2000, created_at: now, deadline_at: now + 86_400_000, in_progress_at: now,
    request_total: lines, request_completed: 0, request_failed: 0, input_tokens: 0, output_tokens: 0, estimated_tokens: lines,
  });
  const body = JSON.stringify({ id: 'chatcmpl-bench', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: 'x'.repeat(responseBytes) } }], usage: { prompt_tokens: 10, completion_tokens: 20 } });
  let segmentBytes = 0;
  const chunks: NewChunk[] = [];
  for (let chunk = 0, first = 1; first <= lines; chunk++, first += CHUNK_LINES) {
    const count = Math.min(CHUNK_LINES, lines - first + 1);
    chunks.push({
      batch_id: batchId, chunk, line_start: first, line_count: count, byte_start: (first - 1) * 2000, byte_end: (first - 1 + count) * 2000,
      models: JSON.stringify({ 'bench-model': [count, count] }), estimated_tokens: count, state: 'done', claims: 1, lease_owner: null, lease_expires_at: null,
      segments: Math.ceil(count / SEGMENT_LINES), succeeded: count, failed: 0, input_tokens: 10 * count, output_tokens: 20 * count, cost_nanos: 0, finished_at: now,
    });
    for (let seq = 0, from = 0; from < count; seq++, from += SEGMENT_LINES) {
      const n = Math.min(SEGMENT_LINES, count - from);
      const done = new LineBitmap(count);
      let text = '';
      for (let i = from; i < from + n; i++) {
        done.set(i);
        text += outputLineText(batchId, first + i, `req-${first + i}`, { status: 200, requestId: `r${first + i}`, body });
      }
      const key = blobKeyForSegment(batchId, chunk, 1, seq, 'bench');
      const bytes = Buffer.from(text);
      await store.blobs.write(key, (async function* () {
        yield bytes;
      })());
      segmentBytes += bytes.length;
      await db.insertInto('segments').values({
        batch_id: batchId, chunk, seq, blob_key: key, output_bytes: bytes.length, error_bytes: 0, output_lines: n, error_lines: 0,
        done_bits: done.toHex(), failed_bits: new LineBitmap(count).toHex(),
        stats: JSON.stringify({ latency: [n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], errors: {}, models: { 'bench-model': [n, 0, 0] } }), created_at: now,
      }).execute();
    }
  }
  await insertChunks(db, chunks);
  return { batchId, segmentBytes };
}

async function finalize(): Promise<{ ms: number; status: string; completed: number; outputFileId: string | null }> {
  const started = performance.now();
  for (;;) {
    await runLifecycleSweeps(ctx);
    const batch = (await findBatch(store.sql.db, batchId))!;
    if (batch.status === 'completed') return { ms: performance.now() - started, status: batch.status, completed: batch.request_completed, outputFileId: batch.output_file_id };
    if (performance.now() - started > 120_000) throw new Error(`batch still ${batch.status} after 120 s`);
  }
}

serveParent({ pid: process.pid }, { build, finalize }, () => store.close());
