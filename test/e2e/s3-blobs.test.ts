// A real Spool with its blobs in S3 (s3rver on loopback, started here): the
// OpenAI SDK uploads a JSONL, a batch against the built-in `echo` model runs
// to completion and its output comes back with every custom_id; downloads
// pass Range through to S3; the Together SDK's signed-PUT upload streams
// through Spool into the bucket; and `spool serve` refuses to start, with one
// line, when the bucket is missing.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import type TogetherType from 'together-ai';
import { S3BlobStore } from '../../src/store/blobs/s3.ts';
import { collect } from '../store/blob-contract.ts';
import { startS3rver, S3RVER_ACCESS_KEY, S3RVER_SECRET_KEY, type TestS3 } from '../helpers/s3rver.ts';
import { call, chatJsonl, makeTempDir, parseJsonl, pollUntil, removeAllTempDirs, startTestSpool, writeFixture, type TestSpool } from '../helpers/spool.ts';
import { loadTogetherSdk, type LoadedTogetherSdk } from '../helpers/together-sdk.ts';

const PREFIX = 'spool-e2e';

let s3: TestS3;
let bucket: string;
let spool: TestSpool;
/** Reads the bucket directly, to see what Spool put there. */
let bucketView: S3BlobStore;
let dir: string;
let sdk: LoadedTogetherSdk;
let together: TogetherType;

before(async () => {
  s3 = await startS3rver();
  bucket = await s3.createBucket();
  const { endpoint, region, accessKeyId, secretAccessKey, forcePathStyle } = s3.storeOptions(bucket);
  spool = await startTestSpool({
    config: { blobs: { kind: 's3', s3: { endpoint, region, bucket, accessKeyId, secretAccessKey, forcePathStyle, prefix: PREFIX } } },
  });
  bucketView = await new S3BlobStore(s3.storeOptions(bucket)).init();
  dir = makeTempDir('spool-s3-e2e-');
  // The Together SDK reads its upload base URL when it loads, so it loads once the server is up.
  sdk = loadTogetherSdk(`${spool.url}/v1`);
  together = new sdk.Together.Together({ apiKey: spool.apiKey, baseURL: `${spool.url}/v1`, maxRetries: 0 });
});

after(async () => {
  sdk?.restore();
  await spool?.stop();
  await bucketView?.close();
  await s3?.close();
  removeAllTempDirs();
});

describe('Spool with an S3 blob store', () => {
  it('runs an OpenAI SDK batch on echo: upload, batch, completed, output with every custom_id', async () => {
    const openai = new OpenAI({ apiKey: spool.apiKey, baseURL: `${spool.url}/openai/v1`, maxRetries: 0 });
    const lines = 40;
    const content = chatJsonl(lines, { model: 'echo', openaiForm: true, prefix: 'job' });
    const file = await openai.files.create({ file: createReadStream(writeFixture(dir, 'echo.jsonl', content)), purpose: 'batch' });
    assert.equal(file.bytes, Buffer.byteLength(content));

    // The bytes live in the bucket, under the prefix, and nowhere in the data directory.
    assert.equal((await collect(await bucketView.read(`${PREFIX}/files/${file.id}`))).toString(), content);
    assert.equal(existsSync(join(spool.dataDir, 'blobs')), false, 'no local blob directory is made');

    const created = await openai.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    const batch = await pollUntil(
      () => openai.batches.retrieve(created.id),
      (b) => ['completed', 'failed', 'expired', 'cancelled'].includes(b.status),
      { what: `batch ${created.id} to finish` },
    );
    assert.equal(batch.status, 'completed', JSON.stringify(batch));
    assert.equal(batch.request_counts?.completed, lines);
    assert.ok(batch.output_file_id);

    const output = parseJsonl(await (await openai.files.content(batch.output_file_id)).text());
    const ids = output.map((line) => line.custom_id as string).sort();
    assert.deepEqual(ids, Array.from({ length: lines }, (_, i) => `job-${i + 1}`).sort(), 'every custom_id exactly once');
    for (const line of output) assert.equal(line.response.status_code, 200);
    assert.ok((await bucketView.size(`${PREFIX}/batches/${batch.id}/output.jsonl`))! > 0, 'the output file is in the bucket');
  });

  it('passes a Range on file content through to S3', async () => {
    const content = chatJsonl(5, { model: 'echo', openaiForm: true, prefix: 'range' });
    const form = new FormData();
    form.append('purpose', 'batch');
    form.append('file', new Blob([content]), 'range.jsonl');
    const uploaded = await call(`${spool.url}/openai/v1/files`, { method: 'POST', key: spool.apiKey, body: form });
    assert.equal(uploaded.status, 200, uploaded.text);
    const res = await call(`${spool.url}/openai/v1/files/${uploaded.json.id}/content`, { key: spool.apiKey, headers: { range: 'bytes=10-39' } });
    assert.equal(res.status, 206);
    assert.equal(res.headers.get('content-range'), `bytes 10-39/${Buffer.byteLength(content)}`);
    assert.equal(res.text, Buffer.from(content).subarray(10, 40).toString());
  });

  it('takes a Together SDK upload through its signed PUT URL into the bucket', async () => {
    const content = chatJsonl(6, { model: 'echo' });
    const file = await together.files.upload(writeFixture(dir, 'together.jsonl', content), 'batch-api', false);
    assert.equal(file.bytes, Buffer.byteLength(content));
    assert.equal((file as unknown as { LineCount: number }).LineCount, 6);
    assert.equal((await collect(await bucketView.read(`${PREFIX}/files/${file.id}`))).toString(), content);
    assert.equal(await (await together.files.content(file.id)).text(), content);

    await together.files.delete(file.id);
    assert.equal(await bucketView.size(`${PREFIX}/files/${file.id}`), undefined, 'deleting the file deletes the object');
  });

  it('`spool serve` with a missing bucket exits 1 with a one-line reason', async () => {
    const env: NodeJS.ProcessEnv = {};
    for (const [name, value] of Object.entries(process.env)) if (!name.startsWith('SPOOL_') && name !== 'DATABASE_URL') env[name] = value;
    Object.assign(env, {
      SPOOL_LOG_LEVEL: 'silent',
      SPOOL_BLOBS__KIND: 's3',
      SPOOL_BLOBS__S3__ENDPOINT: s3.endpoint,
      SPOOL_BLOBS__S3__BUCKET: 'no-such-bucket',
      SPOOL_BLOBS__S3__ACCESS_KEY_ID: S3RVER_ACCESS_KEY,
      SPOOL_BLOBS__S3__SECRET_ACCESS_KEY: S3RVER_SECRET_KEY,
    });
    // Async spawn: the S3 server answering the child runs in this process.
    const child = spawn(process.execPath, ['bin/spool.js', 'serve', '--port', '0', '--data-dir', makeTempDir('spool-s3-missing-')], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 1, `stdout: ${stdout}\nstderr: ${stderr}`);
    assert.doesNotMatch(stdout, /listening/);
    const reason = stderr.split('\n').find((line) => line.startsWith('spool: '));
    assert.match(reason ?? '', /^spool: S3 bucket "no-such-bucket" at http:\/\/127\.0\.0\.1:\d+ does not exist \(create it, or fix blobs\.s3\.bucket\)$/, stderr);
  });
});
