// The official Together TypeScript SDK (together-ai 0.52.0) against a real
// Spool: upload through the signed-URL flow, the file calls, and the batch
// lifecycle up to IN_PROGRESS, cancel, and a failed validation.
//
// SDK quirks (CONTRACT.md): its upload reads TOGETHER_API_BASE_URL once, when
// the module loads, so the server starts first and the SDK is required after;
// it only works loaded as CommonJS; and its PUT hands fetch a stream body
// without `duplex: 'half'`, which stock Node rejects, so fetch is patched.
// Its client-side file check only knows fine-tuning formats and rejects batch
// files, so uploads pass check = false.
import assert from 'node:assert/strict';
import { loadTogetherSdk, type LoadedTogetherSdk, type TogetherModule } from '../helpers/together-sdk.ts';
import { after, before, describe, it } from 'node:test';
import type TogetherType from 'together-ai';
import {
  call,
  chatJsonl,
  jsonl,
  chatLine,
  makeTempDir,
  parseJsonl,
  pollUntil,
  removeAllTempDirs,
  startTestSpool,
  writeFixture,
  type TestSpool,
} from '../helpers/spool.ts';


const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const TOGETHER_STATUSES = ['VALIDATING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'EXPIRED', 'CANCELLED', 'CANCELING'];

let spool: TestSpool;
let Together: TogetherModule;
let client: TogetherType;
let dir: string;
let sdk: LoadedTogetherSdk;

before(async () => {
  spool = await startTestSpool();
  dir = makeTempDir('spool-together-');
  sdk = loadTogetherSdk(`${spool.url}/v1`);
  Together = sdk.Together;
  client = new Together.Together({ apiKey: spool.apiKey, baseURL: `${spool.url}/v1`, maxRetries: 0 });
});

after(async () => {
  sdk?.restore();
  await spool?.stop();
  removeAllTempDirs();
});

async function upload(name: string, content: string) {
  const path = writeFixture(dir, name, content);
  return client.files.upload(path, 'batch-api', false);
}

async function retrieveUntil(id: string, statuses: string[]) {
  return pollUntil(
    () => client.batches.retrieve(id),
    (job) => statuses.includes(job.status as string),
    { what: `batch ${id} to reach ${statuses.join('/')}` },
  );
}

describe('Together TypeScript SDK', () => {
  it('uploads a batch file through the signed-URL flow and reads it back', async () => {
    const content = chatJsonl(3);
    const file = await upload('upload-check.jsonl', content);
    assert.match(file.id, /^[A-Za-z0-9][A-Za-z0-9._-]*$/);
    assert.equal(file.object, 'file');
    assert.equal(file.filename, 'upload-check.jsonl');
    assert.equal(file.bytes, Buffer.byteLength(content));
    assert.equal(file.purpose, 'batch-api');
    assert.equal(file.FileType, 'jsonl');
    assert.equal((file as unknown as { LineCount: number }).LineCount, 3);
    assert.equal(file.Processed, true);
    assert.equal(typeof file.created_at, 'number');
    assert.ok(Number.isInteger(file.created_at) && file.created_at > 1_600_000_000 && file.created_at < 10_000_000_000, 'created_at is unix seconds');

    const listed = await client.files.list();
    assert.ok(Array.isArray(listed.data));
    const entry = listed.data.find((f) => f.id === file.id);
    assert.ok(entry, 'the upload is listed');
    assert.equal(entry.Processed, true);

    const retrieved = await client.files.retrieve(file.id);
    assert.deepEqual(retrieved, file);

    const response = await client.files.content(file.id);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'application/octet-stream');
    assert.equal(response.headers.get('content-length'), String(Buffer.byteLength(content)));
    assert.equal(await response.text(), content);

    const deleted = await client.files.delete(file.id);
    assert.deepEqual(deleted, { id: file.id, object: 'file', deleted: true });
    await assert.rejects(client.files.retrieve(file.id), (err: unknown) => {
      assert.ok(err instanceof Together.NotFoundError, `expected NotFoundError, got ${String(err)}`);
      assert.equal((err as InstanceType<TogetherModule['NotFoundError']>).status, 404);
      return true;
    });
    const remaining = await client.files.list();
    assert.ok(!remaining.data.some((f) => f.id === file.id), 'a deleted file is not listed');
  });

  it('creates a batch (201 {job, warning}), which validates to IN_PROGRESS and is listed', async () => {
    const content = chatJsonl(8);
    const file = await upload('run.jsonl', content);
    const { data: created, response } = await client.batches
      .create({ input_file_id: file.id, endpoint: '/v1/chat/completions' })
      .withResponse();
    assert.equal(response.status, 201);
    assert.ok(created.job, 'the answer carries the job');
    assert.ok('warning' in created, 'the answer carries a warning field');
    assert.ok(created.warning === null || typeof created.warning === 'string');
    const job = created.job;
    assert.match(job.id!, /^[A-Za-z0-9][A-Za-z0-9._-]*$/);
    assert.equal(job.status, 'VALIDATING');
    assert.equal(job.input_file_id, file.id);
    assert.equal(job.endpoint, '/v1/chat/completions');
    assert.equal(job.user_id, 'default');
    assert.equal(job.file_size_bytes, Buffer.byteLength(content));
    assert.match(job.created_at!, ISO);
    assert.match(job.job_deadline!, ISO);
    const windowMs = Date.parse(job.job_deadline!) - Date.parse(job.created_at!);
    assert.equal(windowMs, 24 * 3600 * 1000, 'completion_window defaults to 24h');

    const running = await retrieveUntil(job.id!, ['IN_PROGRESS']);
    assert.equal(running.id, job.id);
    assert.match(running.created_at!, ISO);
    assert.match(running.job_deadline!, ISO);
    assert.equal(typeof running.progress, 'number');
    assert.ok(running.progress! >= 0 && running.progress! <= 100);
    assert.equal(running.error ?? null, null);
    for (const field of ['id', 'user_id', 'input_file_id', 'file_size_bytes', 'status', 'job_deadline', 'created_at', 'endpoint'] as const) {
      assert.notEqual(running[field], null, `${field} is required non-null by Python v1`);
      assert.notEqual(running[field], undefined, `${field} is required by Python v1`);
    }

    const list = await client.batches.list();
    assert.ok(Array.isArray(list), 'Together lists batches as a bare array');
    const listed = list.find((b) => b.id === job.id);
    assert.ok(listed, 'the batch is listed');
    for (const b of list) assert.ok(TOGETHER_STATUSES.includes(b.status as string), `UPPERCASE status: ${b.status}`);
  });

  it('cancels a running batch: CANCELING, then CANCELLED with every line accounted for', async () => {
    const lines = 6;
    const file = await upload('cancel.jsonl', chatJsonl(lines));
    const { job } = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    await retrieveUntil(job!.id!, ['IN_PROGRESS']);

    const cancelling = await client.batches.cancel(job!.id!);
    assert.equal(cancelling.id, job!.id);
    assert.ok(['CANCELING', 'CANCELLED'].includes(cancelling.status as string), `cancel answers CANCELING, got ${cancelling.status}`);

    const cancelled = await retrieveUntil(job!.id!, ['CANCELLED']);
    assert.match(cancelled.completed_at!, ISO);
    assert.ok(cancelled.output_file_id, 'a cancelled batch has an output file');
    assert.ok(cancelled.error_file_id, 'a cancelled batch has an error file');

    const output = parseJsonl(await (await client.files.content(cancelled.output_file_id!)).text());
    const errors = parseJsonl(await (await client.files.content(cancelled.error_file_id!)).text());
    const seen = [...output, ...errors].map((line) => line.custom_id).sort();
    const expected = Array.from({ length: lines }, (_, i) => `req-${i + 1}`).sort();
    assert.deepEqual(seen, expected, 'every line is in exactly one of the output and error files');
    for (const line of errors) assert.equal(line.error.code, 'batch_cancelled');

    // Output and error files show purpose batch-api to Together clients (Python v1 validates it strictly).
    const outputFile = await client.files.retrieve(cancelled.output_file_id!);
    assert.equal(outputFile.purpose, 'batch-api');
    const all = await client.files.list();
    for (const f of all.data) assert.ok(['batch-api', 'fine-tune', 'eval', 'eval-output'].includes(f.purpose), `purpose ${f.purpose}`);

    // Cancelling again is harmless.
    const again = await client.batches.cancel(job!.id!);
    assert.equal(again.status, 'CANCELLED');
  });

  it('fails a batch whose file has bad lines, naming the line numbers', async () => {
    const content = jsonl([chatLine('ok-1'), '{"custom_id": "broken", "body": ', chatLine('ok-3'), { custom_id: 'no-body' }]);
    const file = await upload('bad.jsonl', content);
    const { job } = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions' });
    const failed = await retrieveUntil(job!.id!, ['FAILED']);
    assert.equal(typeof failed.error, 'string');
    assert.match(failed.error!, /line 2\b/);
    assert.match(failed.error!, /line 4\b/);
    assert.doesNotMatch(failed.error!, /line [13]\b/);
    assert.match(failed.completed_at!, ISO);
    assert.equal(failed.output_file_id ?? null, null);
  });

  it('maps a wrong API key to the SDK AuthenticationError with the server message', async () => {
    const bad = new Together.Together({ apiKey: 'not-a-real-key', baseURL: `${spool.url}/v1`, maxRetries: 0 });
    await assert.rejects(bad.batches.list(), (err: unknown) => {
      assert.ok(err instanceof Together.AuthenticationError, `expected AuthenticationError, got ${String(err)}`);
      assert.match((err as Error).message, /not valid|revoked/);
      return true;
    });
  });

  it('answers 404 (NotFoundError) for an unknown batch', async () => {
    await assert.rejects(client.batches.retrieve('batch-does-not-exist'), (err: unknown) => {
      assert.ok(err instanceof Together.NotFoundError, `expected NotFoundError, got ${String(err)}`);
      return true;
    });
    // And the raw answer is JSON with the envelope.
    const raw = await call(`${spool.url}/v1/batches/batch-does-not-exist`, { key: spool.apiKey });
    assert.equal(raw.status, 404);
    assert.equal(raw.json.error.code, 'not_found');
  });
});
