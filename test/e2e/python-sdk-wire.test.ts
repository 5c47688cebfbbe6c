// Raw HTTP replays of what the Together Python SDKs send (CONTRACT.md), since
// the Python clients cannot run here: v1's form-urlencoded upload + PUT +
// preprocess, v2's text-only multipart (with checksum and dedupe), the
// published POST /v1/files/upload, curl's multipart, and ranged downloads.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import {
  assertEnvelope,
  call,
  callJson,
  chatJsonl,
  removeAllTempDirs,
  startTestSpool,
  uploadMultipart,
  waitForBatchStatus,
  type ApiCall,
  type TestSpool,
} from '../helpers/spool.ts';

const FILE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

let spool: TestSpool;
let userCounter = 0;

before(async () => {
  spool = await startTestSpool();
});

after(async () => {
  await spool?.stop();
  removeAllTempDirs();
});

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

async function freshKey(): Promise<string> {
  userCounter += 1;
  return spool.keyFor(`python-user-${userCounter}`);
}

/** Checks the 302 of the signed-upload shapes and returns {location, fileId}. */
function assertSignedRedirect(res: ApiCall): { location: string; fileId: string } {
  assert.equal(res.status, 302, `expected exactly 302, got ${res.status}: ${res.text}`);
  const location = res.headers.get('location');
  assert.ok(location, 'Location header');
  assert.match(location, /^http:\/\/127\.0\.0\.1:\d+\//, 'Location is absolute');
  assert.ok(location.startsWith(spool.url), `Location ${location} points at this server`);
  const fileId = res.headers.get('x-together-file-id');
  assert.ok(fileId, 'X-Together-File-Id header');
  assert.match(fileId, FILE_ID);
  return { location, fileId };
}

/**
 * The PUT as Python sends it: raw bytes, a Content-Length, no Authorization,
 * and no Content-Type unless given (fetch adds none for a byte body).
 */
async function putBytes(location: string, content: string | Buffer, contentType?: string): Promise<ApiCall> {
  const headers: Record<string, string> = {};
  if (contentType) headers['content-type'] = contentType;
  const bytes = new Uint8Array(Buffer.from(content));
  return call(location, { method: 'PUT', headers, body: bytes });
}

function assertTogetherFile(file: any, expected: { id: string; filename: string; bytes: number; lines: number }) {
  assert.equal(file.id, expected.id);
  assert.equal(file.object, 'file');
  assert.equal(file.filename, expected.filename);
  assert.equal(file.bytes, expected.bytes);
  assert.equal(file.purpose, 'batch-api');
  assert.equal(file.type, 'jsonl');
  assert.equal(file.FileType, 'jsonl');
  assert.equal(file.LineCount, expected.lines);
  assert.equal(file.Processed, true);
  assert.ok(Number.isInteger(file.created_at));
}

describe('Together Python v1 wire flow', () => {
  it('form-urlencoded POST → 302, PUT without Authorization → 200, preprocess twice → file object', async () => {
    const key = await freshKey();
    const content = chatJsonl(3);
    const post = await call(`${spool.url}/v1/files`, {
      method: 'POST',
      key,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'purpose=batch-api&file_name=batch.jsonl&file_type=jsonl',
    });
    const { location, fileId } = assertSignedRedirect(post);

    const put = await putBytes(location, content);
    assert.equal(put.status, 200, `PUT must answer exactly 200, got ${put.status}: ${put.text}`);

    for (let i = 0; i < 2; i++) {
      const pre = await call(`${spool.url}/v1/files/${fileId}/preprocess`, { method: 'POST', key });
      assert.equal(pre.status, 200, `preprocess #${i + 1}: ${pre.text}`);
      assertTogetherFile(pre.json, { id: fileId, filename: 'batch.jsonl', bytes: Buffer.byteLength(content), lines: 3 });
    }

    const content2 = await call(`${spool.url}/v1/files/${fileId}/content`, { key, headers: { accept: 'application/binary' } });
    assert.equal(content2.status, 200);
    assert.equal(content2.text, content);

    // The whole v1 flow leaves a file a batch can use.
    const created = await callJson(`${spool.url}/v1/batches`, key, 'POST', {
      input_file_id: fileId,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.json.job.status, 'VALIDATING');
    const job = await waitForBatchStatus(`${spool.url}/v1`, key, created.json.job.id, ['IN_PROGRESS']);
    assert.equal(job.progress, 0);

    // v1 lists batches as a bare array.
    const list = await callJson(`${spool.url}/v1/batches`, key, 'GET');
    assert.ok(Array.isArray(list.json));
    assert.equal(list.json.length, 1);
  });

  it('answers preprocess on a file whose bytes have not arrived with a 400 that says so', async () => {
    const key = await freshKey();
    const post = await call(`${spool.url}/v1/files`, {
      method: 'POST',
      key,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'purpose=batch-api&file_name=early.jsonl&file_type=jsonl',
    });
    const { fileId } = assertSignedRedirect(post);
    const pre = await call(`${spool.url}/v1/files/${fileId}/preprocess`, { method: 'POST', key });
    assertEnvelope(pre, 400, { code: 'file_not_uploaded', messageMatch: /PUT/ });
  });

  it('accepts the Together TS shape: fields in body and query, file_name a relative path', async () => {
    const key = await freshKey();
    const params = new URLSearchParams({ file_name: 'data/batch.jsonl', file_type: 'jsonl', purpose: 'batch-api' });
    const post = await call(`${spool.url}/v1/files?${params}`, {
      method: 'POST',
      key,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: params.toString(),
    });
    const { location, fileId } = assertSignedRedirect(post);
    const content = chatJsonl(2);
    const put = await putBytes(location, content, 'application/octet-stream');
    assert.equal(put.status, 200);
    // The TS SDK skips preprocess: the PUT alone must leave the file complete.
    const file = await callJson(`${spool.url}/v1/files/${fileId}`, key, 'GET');
    assert.equal(file.status, 200);
    assertTogetherFile(file.json, { id: fileId, filename: 'batch.jsonl', bytes: Buffer.byteLength(content), lines: 2 });
  });
});

describe('Together Python v2 wire flow', () => {
  function v2Form(fields: Record<string, string>): FormData {
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) form.append(name, value);
    return form;
  }

  it('text-only multipart with checksum → 302; PUT → 200; preprocess with empty JSON body → file; dedupe → 409', async () => {
    const key = await freshKey();
    const content = chatJsonl(4);
    const checksum = sha256(content);
    const fields = { purpose: 'batch-api', file_name: 'v2.jsonl', file_type: 'jsonl', checksum };
    const post = await call(`${spool.url}/v1/files`, { method: 'POST', key, body: v2Form(fields) });
    const { location, fileId } = assertSignedRedirect(post);

    const put = await putBytes(location, content);
    assert.equal(put.status, 200, put.text);

    for (let i = 0; i < 2; i++) {
      const pre = await call(`${spool.url}/v1/files/${fileId}/preprocess`, {
        method: 'POST',
        key,
        // An empty body: fetch sends Content-Length: 0 itself, as Python's httpx does. (Setting the header by hand
        // is refused by undici 7, which becomes fetch's dispatcher once anything in the process imports it.)
        headers: { 'content-type': 'application/json' },
        body: '',
      });
      assert.equal(pre.status, 200, `preprocess #${i + 1}: ${pre.text}`);
      assertTogetherFile(pre.json, { id: fileId, filename: 'v2.jsonl', bytes: Buffer.byteLength(content), lines: 4 });
    }

    const again = await call(`${spool.url}/v1/files`, { method: 'POST', key, body: v2Form(fields) });
    assertEnvelope(again, 409, { code: 'duplicate_file' });
    assert.equal(again.json.file_id, fileId, 'top-level file_id names the existing file');
    assert.equal(again.headers.get('x-should-retry'), 'false');

    // The dedupe is per user: another user uploading the same bytes gets a fresh upload.
    const other = await freshKey();
    const theirs = await call(`${spool.url}/v1/files`, { method: 'POST', key: other, body: v2Form(fields) });
    assertSignedRedirect(theirs);
  });

  it('text-only multipart without checksum → 302 and the PUT completes the file', async () => {
    const key = await freshKey();
    const content = chatJsonl(1);
    const post = await call(`${spool.url}/v1/files`, {
      method: 'POST',
      key,
      body: v2Form({ purpose: 'batch-api', file_name: 'plain.jsonl', file_type: 'jsonl' }),
    });
    const { location, fileId } = assertSignedRedirect(post);
    assert.equal((await putBytes(location, content)).status, 200);
    const file = await callJson(`${spool.url}/v1/files/${fileId}`, key, 'GET');
    assertTogetherFile(file.json, { id: fileId, filename: 'plain.jsonl', bytes: Buffer.byteLength(content), lines: 1 });
  });

  it('rejects a PUT whose bytes do not match the declared checksum, and a malformed checksum', async () => {
    const key = await freshKey();
    const post = await call(`${spool.url}/v1/files`, {
      method: 'POST',
      key,
      body: v2Form({ purpose: 'batch-api', file_name: 'sum.jsonl', file_type: 'jsonl', checksum: sha256('something else') }),
    });
    const { location, fileId } = assertSignedRedirect(post);
    const put = await putBytes(location, chatJsonl(1));
    assertEnvelope(put, 400, { code: 'checksum_mismatch', param: 'checksum' });
    const file = await callJson(`${spool.url}/v1/files/${fileId}`, key, 'GET');
    assert.equal(file.json.Processed, false, 'the file is not complete');

    const bad = await call(`${spool.url}/v1/files`, {
      method: 'POST',
      key,
      body: v2Form({ purpose: 'batch-api', file_name: 'sum.jsonl', file_type: 'jsonl', checksum: 'abc' }),
    });
    assertEnvelope(bad, 400, { param: 'checksum' });
  });
});

describe('POST /v1/files/upload and curl multipart', () => {
  it('POST /v1/files/upload (multipart purpose, file_name, file, file_type) → 200 file object', async () => {
    const key = await freshKey();
    const content = chatJsonl(2);
    const res = await uploadMultipart(
      `${spool.url}/v1`,
      key,
      content,
      { purpose: 'batch-api', file_name: 'published.jsonl', file_type: 'jsonl' },
      'ignored-part-name.jsonl',
      '/files/upload',
    );
    assert.equal(res.status, 200, res.text);
    assertTogetherFile(res.json, { id: res.json.id, filename: 'published.jsonl', bytes: Buffer.byteLength(content), lines: 2 });
    assert.match(res.json.id, FILE_ID);
  });

  it('curl -F: multipart with the file part first and chunked (no Content-Length) → 200, never 302', async () => {
    const key = await freshKey();
    const content = chatJsonl(3);
    const boundary = '----spoolboundary7MA4YWxkTrZu0gW';
    const body = Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="curl.jsonl"\r\nContent-Type: application/octet-stream\r\n\r\n` +
        `${content}\r\n--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch-api\r\n--${boundary}--\r\n`,
    );
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < body.length; i += 64) controller.enqueue(body.subarray(i, i + 64));
        controller.close();
      },
    });
    const res = await call(`${spool.url}/v1/files`, {
      method: 'POST',
      key,
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
      body: stream,
      duplex: 'half',
    } as RequestInit & { key: string });
    assert.equal(res.status, 200, res.text);
    assertTogetherFile(res.json, { id: res.json.id, filename: 'curl.jsonl', bytes: Buffer.byteLength(content), lines: 3 });
  });
});

describe('GET /v1/files/{id}/content', () => {
  it('serves raw bytes for Accept: application/binary, honours Range: bytes=N- with 206, and 416 past the end', async () => {
    const key = await freshKey();
    const content = chatJsonl(5);
    const size = Buffer.byteLength(content);
    const res = await uploadMultipart(`${spool.url}/v1`, key, content, { purpose: 'batch-api' }, 'range.jsonl');
    assert.equal(res.status, 200);
    const id = res.json.id as string;
    const url = `${spool.url}/v1/files/${id}/content`;

    const whole = await call(url, { key, headers: { accept: 'application/binary' } });
    assert.equal(whole.status, 200);
    assert.equal(whole.headers.get('content-type'), 'application/octet-stream');
    assert.equal(whole.headers.get('content-length'), String(size));
    assert.equal(whole.text, content);

    for (const start of [0, 1, 100, size - 1]) {
      const part = await call(url, { key, headers: { accept: 'application/binary', range: `bytes=${start}-` } });
      assert.equal(part.status, 206, `bytes=${start}-`);
      assert.equal(part.headers.get('content-range'), `bytes ${start}-${size - 1}/${size}`);
      assert.equal(part.headers.get('content-length'), String(size - start));
      assert.equal(part.text, content.slice(start));
    }

    const bounded = await call(url, { key, headers: { range: 'bytes=10-19' } });
    assert.equal(bounded.status, 206);
    assert.equal(bounded.text, content.slice(10, 20));
    assert.equal(bounded.headers.get('content-range'), `bytes 10-19/${size}`);

    for (const start of [size, size + 100]) {
      const past = await call(url, { key, headers: { accept: 'application/binary', range: `bytes=${start}-` } });
      assertEnvelope(past, 416, { code: 'range_not_satisfiable' });
      assert.equal(past.headers.get('content-range'), `bytes */${size}`);
    }
  });

  it('serves an empty file as 200 with Content-Length 0', async () => {
    const key = await freshKey();
    const res = await uploadMultipart(`${spool.url}/v1`, key, Buffer.alloc(0), { purpose: 'batch-api' }, 'empty.jsonl');
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.bytes, 0);
    assert.equal(res.json.LineCount, 0);
    const body = await call(`${spool.url}/v1/files/${res.json.id}/content`, { key, headers: { accept: 'application/binary' } });
    assert.equal(body.status, 200, body.text);
    assert.equal(body.headers.get('content-length'), '0');
    assert.equal(body.text, '');
  });

  it('serves a batch output file (empty when nothing ran) with its Content-Length, after a v2-style cancel', async () => {
    const key = await freshKey();
    const res = await uploadMultipart(`${spool.url}/v1`, key, chatJsonl(8), { purpose: 'batch-api' }, 'tocancel.jsonl');
    const created = await callJson(`${spool.url}/v1/batches`, key, 'POST', { input_file_id: res.json.id, endpoint: '/v1/chat/completions' });
    const id = created.json.job.id as string;
    await waitForBatchStatus(`${spool.url}/v1`, key, id, ['IN_PROGRESS']);
    // Python v2 cancels with Content-Type: application/json and an empty body.
    const cancel = await call(`${spool.url}/v1/batches/${id}/cancel`, {
      method: 'POST',
      key,
      headers: { 'content-type': 'application/json' },
      body: '',
    });
    assert.equal(cancel.status, 200, cancel.text);
    assert.ok(['CANCELING', 'CANCELLED'].includes(cancel.json.status), cancel.text);
    const done = await waitForBatchStatus(`${spool.url}/v1`, key, id, ['CANCELLED']);
    const files = await callJson(`${spool.url}/v1/files`, key, 'GET');
    const output = files.json.data.find((f: any) => f.id === done.output_file_id);
    assert.ok(output, 'the output file is listed');
    assert.equal(output.purpose, 'batch-api');
    const body = await call(`${spool.url}/v1/files/${done.output_file_id}/content`, { key, headers: { accept: 'application/binary' } });
    assert.equal(body.status, 200, body.text);
    assert.equal(body.headers.get('content-length'), String(output.bytes));
    assert.equal(Buffer.byteLength(body.text), output.bytes);
  });
});
