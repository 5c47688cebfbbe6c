// POST /batches/{id}/retry and `spool batches retry`: a new batch made of
// exactly the failed lines of a finished one (upstream errors, unserved
// models, and batch_cancelled lines that never ran), its input written byte
// for byte from the original's, linked by retry_of, run like any batch. Plus
// the refusals (not finished, nothing failed, not yours) and the CLI command.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import {
  api,
  assertExactlyOnce,
  cancelBatch,
  chatLine,
  chatLines,
  cleanupAll,
  downloadText,
  endpointOf,
  getBatch,
  readResults,
  REPO_ROOT,
  startHarness,
  submitBatch,
  toJsonl,
  uploadFile,
  waitForProgress,
  waitForStatus,
  type Endpoint,
  type Harness,
  type Json,
} from '../helpers/runner-harness.ts';

let h: Harness;
let ep: Endpoint;

before(async () => {
  h = await startHarness({
    upstreams: [
      // Each distinct request fails once (500), then succeeds: what a retry is for.
      { name: 'flaky', kind: 'fail-then-succeed', failuresPerRequest: 1, models: ['flaky-*'] },
      // Model "bad" is always refused with a 400.
      { name: 'strict', kind: 'bad-request', models: ['bad'] },
      { name: 'slow', kind: 'slow', delayMs: 150, models: ['slow-*'], maxConcurrency: 1, initialConcurrency: 1 },
    ],
    // One attempt per line, so the flaky upstream's first 500 is final for the original batch.
    worker: { maxAttempts: 1 },
  });
  ep = endpointOf(h);
});

after(cleanupAll);

function retryCall(base: string, id: string, key = h.apiKey) {
  return api(`${base}/batches/${encodeURIComponent(id)}/retry`, key, { method: 'POST' });
}

/** The mixed batch: 4 echo lines that succeed, 3 flaky, 2 refused and 1 for a model nobody serves. */
const mixedLines = (): Json[] => [
  chatLine('ok-1', 'echo'),
  chatLine('flaky-1', 'flaky-model'),
  chatLine('ok-2', 'echo'),
  chatLine('bad-1', 'bad'),
  chatLine('flaky-2', 'flaky-model'),
  chatLine('nobody-1', 'unserved-model'),
  chatLine('ok-3', 'echo', { temperature: 0.5, stop: ['\n'] }),
  chatLine('flaky-3', 'flaky-model', { note: 'unicode ✓ and "quotes"' }),
  chatLine('bad-2', 'bad'),
  chatLine('ok-4', 'echo'),
];

describe('POST /batches/{id}/retry', () => {
  let original: Json;
  let failedIds: string[];

  before(async () => {
    const created = await submitBatch(ep, mixedLines(), { extra: { metadata: { project: 'p1', webhook_url: 'https://hooks.example.com/spool' } } });
    original = await waitForStatus(ep, created.id, 'completed');
    const results = await readResults(ep, original);
    failedIds = results.errors.map((line) => line.custom_id);
    assert.deepEqual([...failedIds].sort(), ['bad-1', 'bad-2', 'flaky-1', 'flaky-2', 'flaky-3', 'nobody-1']);
  });

  it('makes a new batch of exactly the failed lines, byte for byte, linked to the original, and runs it', async () => {
    const res = await retryCall(h.openai, original.id);
    assert.equal(res.status, 200, res.text);
    const retry = res.json;
    assert.equal(retry.object, 'batch');
    assert.notEqual(retry.id, original.id);
    assert.equal(retry.retry_of, original.id);
    assert.equal(retry.endpoint, original.endpoint);
    assert.equal(retry.completion_window, original.completion_window);
    assert.deepEqual(retry.metadata, original.metadata, 'metadata carries over');
    assert.equal(retry.webhook_url, original.webhook_url, 'so does the webhook');
    assert.notEqual(retry.input_file_id, original.input_file_id);

    // The new input: the original's failed lines in their original order, each exactly as uploaded.
    const failed = new Set(failedIds);
    const expected = toJsonl(mixedLines().filter((line) => failed.has(line.custom_id)));
    assert.equal(await downloadText(ep, retry.input_file_id), expected);
    const file = await api(`${ep.base}/files/${retry.input_file_id}`, h.apiKey);
    assert.equal(file.json.purpose, 'batch');
    assert.equal(file.json.bytes, Buffer.byteLength(expected));

    const done = await waitForStatus(ep, retry.id, 'completed');
    assert.equal(done.retry_of, original.id, 'shown on every read');
    const results = await readResults(ep, done);
    assertExactlyOnce(failedIds, results);
    assert.deepEqual(results.output.map((line) => line.custom_id).sort(), ['flaky-1', 'flaky-2', 'flaky-3'], 'the transient failures succeed this time');
    assert.deepEqual(results.errors.map((line) => line.custom_id).sort(), ['bad-1', 'bad-2', 'nobody-1'], 'the permanent ones fail again');
    const codes = new Map(results.errors.map((line) => [line.custom_id, line.error.code]));
    assert.equal(codes.get('nobody-1'), 'invalid_model');

    // A retry of the retry holds what still failed.
    const again = await retryCall(h.openai, done.id);
    assert.equal(again.status, 200, again.text);
    assert.equal(again.json.retry_of, done.id);
    const rerun = await readResults(ep, await waitForStatus(ep, again.json.id, 'completed'));
    assertExactlyOnce(['bad-1', 'bad-2', 'nobody-1'], rerun);

    // The original is untouched.
    assert.deepEqual((await getBatch(ep, original.id)).request_counts, original.request_counts);
  });

  it('answers like a create in the Together dialect: 201 {job, warning}', async () => {
    const res = await retryCall(h.together, original.id);
    assert.equal(res.status, 201, res.text);
    assert.equal(res.json.warning, null);
    assert.equal(res.json.job.retry_of, original.id);
    assert.equal(res.json.job.status, 'VALIDATING');
    const together = await api(`${h.together}/batches/${res.json.job.id}`, h.apiKey);
    assert.equal(together.json.retry_of, original.id);
    await waitForStatus(ep, res.json.job.id, 'completed');
  });

  it('a cancelled batch retries its batch_cancelled lines too: they never ran', async () => {
    const lines = chatLines(12, 'slow-model', 'c');
    const created = await submitBatch(ep, lines);
    await waitForProgress(ep, created.id, 2);
    await cancelBatch(ep, created.id);
    const cancelled = await waitForStatus(ep, created.id, 'cancelled');
    const results = await readResults(ep, cancelled);
    const notRun = results.errors.map((line) => line.custom_id);
    assert.ok(notRun.length > 0 && results.errors.every((line) => line.error.code === 'batch_cancelled'), 'cancelled lines are error lines');

    const res = await retryCall(h.openai, cancelled.id);
    assert.equal(res.status, 200, res.text);
    const rerun = await readResults(ep, await waitForStatus(ep, res.json.id, 'completed'));
    assertExactlyOnce(notRun, rerun);
    assert.equal(rerun.errors.length, 0, 'and this time they ran');
  });

  it('refuses what cannot be retried with a 409 envelope (404 for what is not yours)', async () => {
    const running = await submitBatch(ep, chatLines(30, 'slow-model', 'r'));
    try {
      const res = await retryCall(h.openai, running.id);
      assert.equal(res.status, 409, res.text);
      assert.equal(res.json.error.code, 'batch_not_finished');
      assert.equal(res.json.message, res.json.error.message);
      assert.equal(res.headers.get('x-should-retry'), 'false');
    } finally {
      await cancelBatch(ep, running.id);
    }

    const allGood = await waitForStatus(ep, (await submitBatch(ep, chatLines(2, 'echo', 'g'))).id, 'completed');
    const nothing = await retryCall(h.openai, allGood.id);
    assert.equal(nothing.status, 409, nothing.text);
    assert.equal(nothing.json.error.code, 'no_failed_lines');

    const invalidFile = await uploadFile(ep, '{"custom_id": "x", "body": {"model": "echo"}}\n{"custom_id": "x", "body": {"model": "echo"}}\n');
    const invalid = await api(`${ep.base}/batches`, h.apiKey, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input_file_id: invalidFile.id, endpoint: '/v1/chat/completions' }),
    });
    await waitForStatus(ep, invalid.json.id, 'failed');
    const unvalidated = await retryCall(h.together, invalid.json.id);
    assert.equal(unvalidated.status, 409, unvalidated.text);
    assert.equal(unvalidated.json.error.code, 'no_failed_lines');
    assert.match(unvalidated.json.message, /failed validation/);

    // The failed lines are read from the original input: once that file is deleted there is nothing to read them from.
    const orphan = await waitForStatus(ep, (await submitBatch(ep, [chatLine('gone-1', 'bad')])).id, 'completed');
    assert.equal((await api(`${ep.base}/files/${orphan.input_file_id}`, h.apiKey, { method: 'DELETE' })).status, 200);
    const gone = await retryCall(h.openai, orphan.id);
    assert.equal(gone.status, 409, gone.text);
    assert.equal(gone.json.error.code, 'input_file_missing');

    assert.equal((await retryCall(h.openai, 'batch-does-not-exist')).status, 404);
    const stranger = await h.keyFor('stranger');
    const foreign = await retryCall(h.openai, original.id, stranger);
    assert.equal(foreign.status, 404, 'another user cannot retry (or see) the batch');
  });

  it('`spool batches retry` prints the new batch (id, or JSON) and exits with the documented codes', async () => {
    const remote = ['--server', h.url, '--api-key', h.apiKey];
    const json = await cli(['batches', 'retry', original.id, '--json', ...remote]);
    assert.equal(json.code, 0, json.stderr);
    const batch = JSON.parse(json.stdout);
    assert.equal(batch.retry_of, original.id);
    assert.equal(batch.object, 'batch');

    const plain = await cli(['batches', 'retry', original.id, ...remote]);
    assert.equal(plain.code, 0, plain.stderr);
    const id = plain.stdout.trim();
    assert.match(id, /^batch-/);
    assert.match(plain.stderr, new RegExp(`retrying the failed lines of ${original.id}`));
    assert.equal((await getBatch(ep, id)).retry_of, original.id);

    const got = await cli(['batches', 'get', id, ...remote]);
    assert.match(got.stdout, new RegExp(`retry_of\\s+${original.id}`), 'get shows the link');

    const running = await submitBatch(ep, chatLines(30, 'slow-model', 'q'));
    try {
      const refused = await cli(['batches', 'retry', running.id, ...remote]);
      assert.equal(refused.code, 1, 'a refused request (409) is exit 1');
      assert.match(refused.stderr.trimEnd().split('\n').at(-1)!, /^spool: .*only a finished batch.*\(HTTP 409 batch_not_finished\)$/);
      assert.equal(refused.stdout, '');
    } finally {
      await cancelBatch(ep, running.id);
    }
    const missing = await cli(['batches', 'retry', 'batch-nope', ...remote]);
    assert.equal(missing.code, 5, missing.stderr);
  });
});

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = { SPOOL_FROM_SOURCE: '1' };
  for (const [name, value] of Object.entries(process.env)) if (!name.startsWith('SPOOL_') && name !== 'DATABASE_URL') env[name] = value;
  const child = spawn(process.execPath, ['bin/spool.js', ...args], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}
