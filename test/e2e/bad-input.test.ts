// Every wrong input a user can send: each gets a 4xx with the CONTRACT.md
// envelope {message, error:{message,type,param,code}} and a message that says
// what to fix, and nothing is stored. Also tenancy (another user's objects are
// 404 and never listed), upload limits, signed-URL abuse, conflicts, and the
// line-level validation rules that fail a batch with line numbers.
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { signUpload } from '../../src/files/signed-urls.ts';
import { getUploadSigningSecret } from '../../src/store/sql/settings.ts';
import { cleanupAll, createPostgresDatabase, SKIP_POSTGRES } from '../helpers/runner-harness.ts';
import {
  assertEnvelope,
  call,
  callJson,
  chatJsonl,
  chatLine,
  createBatch,
  jsonl,
  listFilesRecursive,
  pollUntil,
  removeAllTempDirs,
  startTestSpool,
  uploadBatchFile,
  uploadMultipart,
  waitForBatchStatus,
  type ApiCall,
  type Json,
  type TestSpool,
} from '../helpers/spool.ts';

const MAX_FILE_BYTES = 1000;
const MAX_LINES = 3;
const MOUNTS = ['/v1', '/openai/v1'] as const;

let spool: TestSpool;
let userCounter = 0;

// Every case runs on SQLite and on PostgreSQL: PostgreSQL refuses what SQLite stores (NUL bytes, lone
// surrogates, integers past bigint), so hostile input that passes on one backend can still break the other.
const BACKENDS = [
  { name: 'sqlite' as const, skip: false as const },
  { name: 'postgres' as const, skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : (false as const) },
];

after(async () => {
  removeAllTempDirs();
  await cleanupAll();
});

for (const backend of BACKENDS) {
  describe(`bad input on ${backend.name}`, { skip: backend.skip }, () => {
    before(async () => {
      const databaseUrl = backend.name === 'postgres' ? await createPostgresDatabase() : undefined;
      // A slower upstream than the default: batches here hold at most MAX_LINES lines, and some tests need
      // one to stay open (a worker runs one request at a time) while they poke at it.
      spool = await startTestSpool({
        config: { databaseUrl, limits: { maxFileBytes: MAX_FILE_BYTES, maxLinesPerBatch: MAX_LINES } },
        upstreamDelayMs: 1000,
      });
    });
    after(async () => {
      await spool?.stop();
    });
    badInputSuites();
  });
}

async function freshKey(): Promise<string> {
  userCounter += 1;
  return spool.keyFor(`bad-input-user-${userCounter}`);
}

/**
 * Upload blobs under files/. Batch results (batches/) are left out: batches
 * made by earlier tests finish in the background and write theirs at any
 * moment, staging them in .tmp/ first, so .tmp/ is checked on its own by
 * waiting for it to empty.
 */
const blobFiles = () => listFilesRecursive(join(spool.dataDir, 'blobs')).filter((path) => path.startsWith('files/'));

async function assertNoStagedBlobs(): Promise<void> {
  await pollUntil(
    async () => listFilesRecursive(join(spool.dataDir, 'blobs', '.tmp')),
    (names) => names.length === 0,
    { what: 'the blob staging area (.tmp) to be empty' },
  );
}

async function listFileIds(key: string, mount = '/openai/v1'): Promise<string[]> {
  const res = await callJson(`${spool.url}${mount}/files`, key, 'GET');
  assert.equal(res.status, 200, res.text);
  return res.json.data.map((f: Json) => f.id);
}

async function listBatchIds(key: string, mount: '/v1' | '/openai/v1' = '/openai/v1'): Promise<string[]> {
  const res = await callJson(`${spool.url}${mount}/batches`, key, 'GET');
  assert.equal(res.status, 200, res.text);
  const rows: Json[] = mount === '/v1' ? res.json : res.json.data;
  return rows.map((b) => b.id);
}

/** Runs `action` and asserts that it stored no file, no batch and no blob for `key`'s user. */
async function assertStoresNothing(key: string, action: () => Promise<void>): Promise<void> {
  const files = await listFileIds(key);
  const batches = await listBatchIds(key);
  const blobs = blobFiles();
  await action();
  assert.deepEqual(await listFileIds(key), files, 'no file was stored');
  assert.deepEqual(await listBatchIds(key), batches, 'no batch was stored');
  assert.deepEqual(blobFiles(), blobs, 'no blob was left in <dataDir>/blobs');
  await assertNoStagedBlobs();
}

/** POST /files form-urlencoded (Together's first upload step); returns the signed URL and id. */
async function startSignedUpload(key: string, fileName = 'signed.jsonl'): Promise<{ location: string; fileId: string }> {
  const res = await call(`${spool.url}/v1/files`, {
    method: 'POST',
    key,
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ purpose: 'batch-api', file_name: fileName, file_type: 'jsonl' }).toString(),
  });
  assert.equal(res.status, 302, res.text);
  return { location: res.headers.get('location')!, fileId: res.headers.get('x-together-file-id')! };
}

function put(location: string, bytes: Uint8Array | ReadableStream<Uint8Array>): Promise<ApiCall> {
  const init: RequestInit & { duplex?: 'half' } = { method: 'PUT', body: bytes };
  if (bytes instanceof ReadableStream) init.duplex = 'half';
  return call(location, init);
}

function streamOf(total: number): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= total) return controller.close();
      const n = Math.min(256, total - sent);
      sent += n;
      controller.enqueue(new Uint8Array(Buffer.alloc(n, 0x61)));
    },
  });
}

function badInputSuites(): void {
  describe('authentication', () => {
    for (const mount of MOUNTS) {
      it(`${mount}: missing, malformed, wrong and revoked keys → 401`, async () => {
        const missing = await call(`${spool.url}${mount}/files`);
        assertEnvelope(missing, 401, { code: 'invalid_api_key', messageMatch: /Authorization: Bearer/ });
        assert.equal(missing.json.error.type, 'authentication_error');
        assert.equal(missing.headers.get('www-authenticate'), 'Bearer');

        const basic = await call(`${spool.url}${mount}/batches`, { headers: { authorization: `Basic ${spool.apiKey}` } });
        assertEnvelope(basic, 401, { code: 'invalid_api_key' });

        const wrong = await callJson(`${spool.url}${mount}/batches`, 'spool_wrong-key-000000000000', 'GET');
        assertEnvelope(wrong, 401, { code: 'invalid_api_key', messageMatch: /not valid|revoked/ });

        const key = await freshKey();
        assert.equal((await callJson(`${spool.url}${mount}/batches`, key, 'GET')).status, 200, 'a fresh key works');
        await spool.revokeKey(key);
        const revoked = await callJson(`${spool.url}${mount}/batches`, key, 'GET');
        assertEnvelope(revoked, 401, { code: 'invalid_api_key' });

        // Nothing is stored for a request that fails authentication.
        const upload = await uploadMultipart(`${spool.url}${mount}`, 'spool_wrong-key-000000000000', chatJsonl(1));
        assertEnvelope(upload, 401);
      });
    }
  });

  describe('tenancy', () => {
    it("another user's file and batch are 404 everywhere and never listed", async () => {
      const owner = await freshKey();
      const intruder = await freshKey();
      const fileId = await uploadBatchFile(spool, chatJsonl(MAX_LINES), owner);
      const batch = await createBatch(spool, fileId, owner);
      await waitForBatchStatus(`${spool.url}/openai/v1`, owner, batch.id, ['in_progress']);
      const intruderFile = await uploadBatchFile(spool, chatJsonl(1), intruder);

      for (const mount of MOUNTS) {
        const base = `${spool.url}${mount}`;
        assertEnvelope(await callJson(`${base}/files/${fileId}`, intruder, 'GET'), 404, { code: 'not_found' });
        assertEnvelope(await call(`${base}/files/${fileId}/content`, { key: intruder }), 404, { code: 'not_found' });
        assertEnvelope(await callJson(`${base}/files/${fileId}/preprocess`, intruder, 'POST'), 404, { code: 'not_found' });
        assertEnvelope(await callJson(`${base}/files/${fileId}`, intruder, 'DELETE'), 404, { code: 'not_found' });
        assertEnvelope(await callJson(`${base}/batches/${batch.id}`, intruder, 'GET'), 404, { code: 'not_found' });
        assertEnvelope(await callJson(`${base}/batches/${batch.id}/cancel`, intruder, 'POST'), 404, { code: 'not_found' });
        const create = await callJson(`${base}/batches`, intruder, 'POST', { input_file_id: fileId, endpoint: '/v1/chat/completions' });
        assertEnvelope(create, 404, { param: 'input_file_id' });

        // Each user lists only their own objects.
        const intruderFiles = await listFileIds(intruder, mount);
        assert.deepEqual(intruderFiles, [intruderFile]);
        assert.deepEqual(await listBatchIds(intruder, mount), []);
        assert.ok((await listFileIds(owner, mount)).includes(fileId));
        assert.deepEqual(await listBatchIds(owner, mount), [batch.id]);
      }

      // The owner's objects are untouched by the attempts.
      const still = await callJson(`${spool.url}/openai/v1/batches/${batch.id}`, owner, 'GET');
      assert.ok(['in_progress', 'finalizing', 'completed'].includes(still.json.status), `not cancelled: ${still.json.status}`);
      assert.equal(still.json.cancelling_at, null);
      assert.equal((await call(`${spool.url}/openai/v1/files/${fileId}/content`, { key: owner })).text, chatJsonl(MAX_LINES));
    });

    it('unknown ids and routes → 404 with the envelope', async () => {
      const key = await freshKey();
      for (const mount of MOUNTS) {
        const base = `${spool.url}${mount}`;
        assertEnvelope(await callJson(`${base}/files/file-nope`, key, 'GET'), 404, { code: 'not_found', messageMatch: /file-nope/ });
        assertEnvelope(await call(`${base}/files/file-nope/content`, { key }), 404, { code: 'not_found' });
        assertEnvelope(await callJson(`${base}/files/file-nope`, key, 'DELETE'), 404, { code: 'not_found' });
        assertEnvelope(await callJson(`${base}/batches/batch-nope`, key, 'GET'), 404, { code: 'not_found', messageMatch: /batch-nope/ });
        assertEnvelope(await callJson(`${base}/batches/batch-nope/cancel`, key, 'POST'), 404, { code: 'not_found' });
        assertEnvelope(
          await callJson(`${base}/batches`, key, 'POST', { input_file_id: 'file-nope', endpoint: '/v1/chat/completions' }),
          404,
          { param: 'input_file_id', messageMatch: /file-nope/ },
        );
        assertEnvelope(await callJson(`${base}/nothing-here`, key, 'GET'), 404, { code: 'not_found' });
      }
      assertEnvelope(await call(`${spool.url}/nowhere`), 404, { code: 'not_found' });
      assert.deepEqual(await listBatchIds(key), []);
    });
  });

  describe('batch create arguments', () => {
    it('malformed JSON, an empty JSON body and a non-object body → 400, nothing stored', async () => {
      const key = await freshKey();
      await assertStoresNothing(key, async () => {
        for (const mount of MOUNTS) {
          const url = `${spool.url}${mount}/batches`;
          const malformed = await call(url, { method: 'POST', key, headers: { 'content-type': 'application/json' }, body: '{"input_file_id": ' });
          assertEnvelope(malformed, 400, { code: 'invalid_json', messageMatch: /not valid JSON/ });
          const empty = await call(url, { method: 'POST', key, headers: { 'content-type': 'application/json' }, body: '' });
          assertEnvelope(empty, 400, { messageMatch: /input_file_id/ });
          const noBody = await call(url, { method: 'POST', key });
          assertEnvelope(noBody, 400, { messageMatch: /input_file_id/ });
          assertEnvelope(await callJson(url, key, 'POST', {}), 400, { param: 'input_file_id' });
          assertEnvelope(await callJson(url, key, 'POST', []), 400, { messageMatch: /JSON object/ });
          assertEnvelope(await callJson(url, key, 'POST', 'a string'), 400, { messageMatch: /JSON object/ });
        }
      });
    });

    it('each bad argument → 400 naming its param, nothing stored', async () => {
      const key = await freshKey();
      const fileId = await uploadBatchFile(spool, chatJsonl(1), key);
      const good = { input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window: '24h' };
      const seventeen = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v']));
      const cases: Array<[string, Json, string]> = [
        ['missing endpoint', { ...good, endpoint: undefined }, 'endpoint'],
        ['unknown endpoint', { ...good, endpoint: '/v1/images/generations' }, 'endpoint'],
        ['endpoint not a string', { ...good, endpoint: 7 }, 'endpoint'],
        ['missing input_file_id', { ...good, input_file_id: undefined }, 'input_file_id'],
        ['input_file_id not a string', { ...good, input_file_id: 12 }, 'input_file_id'],
        ['completion_window "abc"', { ...good, completion_window: 'abc' }, 'completion_window'],
        ['completion_window "0h"', { ...good, completion_window: '0h' }, 'completion_window'],
        ['completion_window "31d"', { ...good, completion_window: '31d' }, 'completion_window'],
        ['completion_window a number', { ...good, completion_window: 24 }, 'completion_window'],
        ['priority 1.5', { ...good, priority: 1.5 }, 'priority'],
        ['priority "high"', { ...good, priority: 'high' }, 'priority'],
        ['model_id a number', { ...good, model_id: 5 }, 'model_id'],
        ['metadata with 17 keys', { ...good, metadata: seventeen }, 'metadata'],
        ['metadata value of 513 chars', { ...good, metadata: { k: 'x'.repeat(513) } }, 'metadata'],
        ['metadata key of 65 chars', { ...good, metadata: { ['k'.repeat(65)]: 'v' } }, 'metadata'],
        ['metadata value not a string', { ...good, metadata: { k: 1 } }, 'metadata'],
        ['metadata an array', { ...good, metadata: ['a'] }, 'metadata'],
        ['output_expires_after too short', { ...good, output_expires_after: { anchor: 'created_at', seconds: 10 } }, 'output_expires_after'],
        ['output_expires_after too long', { ...good, output_expires_after: { anchor: 'created_at', seconds: 2_592_001 } }, 'output_expires_after'],
        ['output_expires_after bad anchor', { ...good, output_expires_after: { anchor: 'now', seconds: 3600 } }, 'output_expires_after'],
        ['output_expires_after a number', { ...good, output_expires_after: 3600 }, 'output_expires_after'],
      ];
      await assertStoresNothing(key, async () => {
        for (const mount of MOUNTS) {
          for (const [label, body, param] of cases) {
            const res = await callJson(`${spool.url}${mount}/batches`, key, 'POST', body);
            assertEnvelope(res, 400, { param });
            assert.ok(res.json.message.includes(param), `${label}: the message names ${param}: ${res.json.message}`);
          }
        }
      });

      // The same body minus the fault is accepted (so the cases above fail for the reason named).
      const ok = await callJson(`${spool.url}/openai/v1/batches`, key, 'POST', {
        ...good,
        completion_window: '90m',
        priority: 3,
        metadata: Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, 'v'.repeat(512)])),
        output_expires_after: { anchor: 'created_at', seconds: 3600 },
      });
      assert.equal(ok.status, 200, ok.text);
    });

    it('an input file that is not batch input (wrong purpose, not uploaded yet) → 400 on input_file_id', async () => {
      const key = await freshKey();
      const fineTune = await uploadMultipart(`${spool.url}/v1`, key, chatJsonl(1), { purpose: 'fine-tune' }, 'ft.jsonl');
      assert.equal(fineTune.status, 200, fineTune.text);
      const { fileId: pending } = await startSignedUpload(key, 'pending.jsonl');
      await assertStoresNothing(key, async () => {
        for (const mount of MOUNTS) {
          const wrongPurpose = await callJson(`${spool.url}${mount}/batches`, key, 'POST', {
            input_file_id: fineTune.json.id,
            endpoint: '/v1/chat/completions',
          });
          assertEnvelope(wrongPurpose, 400, { param: 'input_file_id', messageMatch: /purpose/ });
          const notUploaded = await callJson(`${spool.url}${mount}/batches`, key, 'POST', { input_file_id: pending, endpoint: '/v1/chat/completions' });
          assertEnvelope(notUploaded, 400, { param: 'input_file_id', code: 'file_not_uploaded' });
        }
      });
    });

    it('bad list query parameters → 400 naming the parameter', async () => {
      const key = await freshKey();
      const base = `${spool.url}/openai/v1`;
      assertEnvelope(await callJson(`${base}/files?limit=0`, key, 'GET'), 400, { param: 'limit' });
      assertEnvelope(await callJson(`${base}/files?limit=abc`, key, 'GET'), 400, { param: 'limit' });
      assertEnvelope(await callJson(`${base}/files?order=sideways`, key, 'GET'), 400, { param: 'order' });
      assertEnvelope(await callJson(`${base}/files?purpose=nonsense`, key, 'GET'), 400, { param: 'purpose' });
      assertEnvelope(await callJson(`${base}/batches?limit=101`, key, 'GET'), 400, { param: 'limit' });
      assertEnvelope(await callJson(`${base}/batches?limit=-1`, key, 'GET'), 400, { param: 'limit' });
    });
  });

  describe('uploads', () => {
    it('multipart with a missing or unknown purpose, a bad file_type or a stray part → 400, nothing stored', async () => {
      const key = await freshKey();
      await assertStoresNothing(key, async () => {
        for (const mount of MOUNTS) {
          const base = `${spool.url}${mount}`;
          assertEnvelope(await uploadMultipart(base, key, chatJsonl(1), {}), 400, { param: 'purpose', messageMatch: /batch/ });
          assertEnvelope(await uploadMultipart(base, key, chatJsonl(1), { purpose: 'nonsense' }), 400, { param: 'purpose' });
          assertEnvelope(await uploadMultipart(base, key, chatJsonl(1), { purpose: 'batch_output' }), 400, { param: 'purpose' });
          assertEnvelope(await uploadMultipart(base, key, chatJsonl(1), { purpose: 'batch', file_type: 'exe' }), 400, { param: 'file_type' });
          assertEnvelope(await uploadMultipart(base, key, chatJsonl(1), { purpose: 'batch' }, 'input.exe'), 400, { param: 'file_type' });

          const stray = new FormData();
          stray.append('purpose', 'batch');
          stray.append('data', new Blob([chatJsonl(1)]), 'x.jsonl');
          assertEnvelope(await call(`${base}/files`, { method: 'POST', key, body: stray }), 400, { param: 'data', messageMatch: /"file"/ });

          const twoFiles = new FormData();
          twoFiles.append('purpose', 'batch');
          twoFiles.append('file', new Blob([chatJsonl(1)]), 'a.jsonl');
          twoFiles.append('file', new Blob([chatJsonl(1)]), 'b.jsonl');
          assertEnvelope(await call(`${base}/files`, { method: 'POST', key, body: twoFiles }), 400, { param: 'file', code: 'too_many_files' });

          const noBoundary = await call(`${base}/files`, {
            method: 'POST',
            key,
            headers: { 'content-type': 'multipart/form-data' },
            body: 'purpose=batch',
          });
          assertEnvelope(noBoundary, 400, { code: 'invalid_multipart', messageMatch: /boundary/ });
          const truncated = await call(`${base}/files`, {
            method: 'POST',
            key,
            headers: { 'content-type': 'multipart/form-data; boundary=XyZ' },
            body: '--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n{"custom_id"',
          });
          assertEnvelope(truncated, 400, { param: 'file' });

          const noFile = new FormData();
          noFile.append('purpose', 'batch');
          noFile.append('file_name', 'x.jsonl');
          assertEnvelope(await call(`${base}/files/upload`, { method: 'POST', key, body: noFile }), 400, { param: 'file' });
          assertEnvelope(await callJson(`${base}/files/upload`, key, 'POST', { purpose: 'batch' }), 400, { param: 'file' });

          const noName = await call(`${base}/files`, {
            method: 'POST',
            key,
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
            body: 'purpose=batch-api',
          });
          // OpenAI has no signed-upload flow: there, a body without the file bytes is simply missing its file.
          const togetherDialect = mount === '/v1';
          assertEnvelope(noName, 400, { param: togetherDialect ? 'file_name' : 'file' });
          const badPurpose = await call(`${base}/files`, {
            method: 'POST',
            key,
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
            body: 'purpose=nope&file_name=a.jsonl',
          });
          assertEnvelope(badPurpose, 400, { param: togetherDialect ? 'purpose' : 'file' });

          const textOnly = new FormData();
          textOnly.append('purpose', 'batch');
          textOnly.append('file_name', 'a.jsonl');
          const textOnlyRes = await call(`${base}/files`, { method: 'POST', key, body: textOnly });
          if (togetherDialect) {
            // Together Python v2's shape: a signed-upload redirect (its pending file is deleted below).
            assert.equal(textOnlyRes.status, 302);
            const pendingId = textOnlyRes.headers.get('x-together-file-id')!;
            assert.equal((await callJson(`${base}/files/${pendingId}`, key, 'DELETE')).status, 200);
          } else {
            assertEnvelope(textOnlyRes, 400, { param: 'file', code: 'missing_file' });
          }
          // The OpenAI SDK at /v1 is told apart by its User-Agent and gets the OpenAI answer.
          const viaUserAgent = await call(`${spool.url}/v1/files`, { method: 'POST', key, body: textOnly, headers: { 'user-agent': 'OpenAI/JS 7.57.0' } });
          assertEnvelope(viaUserAgent, 400, { param: 'file', code: 'missing_file' });
        }
      });
    });

    it(`oversize uploads (limit ${MAX_FILE_BYTES} bytes) → 413 on multipart and on the signed PUT; nothing listed, no blob left`, async () => {
      const key = await freshKey();
      const big = Buffer.alloc(MAX_FILE_BYTES + 1, 0x61);
      await assertStoresNothing(key, async () => {
        for (const mount of MOUNTS) {
          const multipart = await uploadMultipart(`${spool.url}${mount}`, key, big, { purpose: 'batch' });
          assertEnvelope(multipart, 413, { code: 'file_too_large', messageMatch: new RegExp(`${MAX_FILE_BYTES}`) });
          const purposeLast = await uploadMultipart(`${spool.url}${mount}`, key, Buffer.alloc(5 * MAX_FILE_BYTES, 0x61), {});
          assertEnvelope(purposeLast, 413, { code: 'file_too_large' });
          const published = await uploadMultipart(`${spool.url}${mount}`, key, big, { purpose: 'batch-api', file_name: 'big.jsonl' }, 'big.jsonl', '/files/upload');
          assertEnvelope(published, 413, { code: 'file_too_large' });
        }

        // Signed PUT with a Content-Length over the limit: refused before reading.
        const declared = await startSignedUpload(key, 'declared.jsonl');
        assertEnvelope(await put(declared.location, new Uint8Array(big)), 413, { code: 'file_too_large' });
        // Signed PUT streamed without a Content-Length: refused once it runs over.
        const streamed = await startSignedUpload(key, 'streamed.jsonl');
        assertEnvelope(await put(streamed.location, streamOf(4 * MAX_FILE_BYTES)), 413, { code: 'file_too_large' });
        // The refused uploads' files are gone, not left half-made.
        for (const { fileId } of [declared, streamed]) {
          assertEnvelope(await callJson(`${spool.url}/v1/files/${fileId}`, key, 'GET'), 404);
        }
      });

      // Exactly at the limit is fine, on both paths.
      const exact = Buffer.alloc(MAX_FILE_BYTES, 0x61);
      const atLimit = await uploadMultipart(`${spool.url}/openai/v1`, key, exact, { purpose: 'batch' });
      assert.equal(atLimit.status, 200, atLimit.text);
      assert.equal(atLimit.json.bytes, MAX_FILE_BYTES);
      const signed = await startSignedUpload(key, 'exact.jsonl');
      assert.equal((await put(signed.location, new Uint8Array(exact))).status, 200);
    });

    it('signed URLs: bad or missing signature and tampered or past expiry → 403; reuse → 409; nothing stored', async () => {
      const key = await freshKey();
      const bytes = new Uint8Array(Buffer.from(chatJsonl(1)));
      const { location, fileId } = await startSignedUpload(key, 'signed.jsonl');
      const url = new URL(location);
      const expires = Number(url.searchParams.get('expires'));
      const signature = url.searchParams.get('signature')!;
      const withParams = (params: Record<string, string>) => {
        const u = new URL(url);
        u.search = new URLSearchParams(params).toString();
        return u.toString();
      };

      const blobs = blobFiles();
      const flipped = signature.slice(0, -1) + (signature.endsWith('0') ? '1' : '0');
      assertEnvelope(await put(withParams({ expires: String(expires), signature: flipped }), bytes), 403, { code: 'invalid_signature' });
      assertEnvelope(await put(withParams({ expires: String(expires + 3600), signature }), bytes), 403, { code: 'invalid_signature' });
      assertEnvelope(await put(withParams({ expires: String(expires - 3600), signature }), bytes), 403, { code: 'invalid_signature' });
      assertEnvelope(await put(withParams({ expires: String(expires) }), bytes), 403, { code: 'invalid_signature' });
      assertEnvelope(await put(withParams({ signature }), bytes), 403, { code: 'invalid_signature' });
      assertEnvelope(await put(withParams({ expires: String(expires), signature: 'zz' }), bytes), 403, { code: 'invalid_signature' });
      // A URL for one file does not open another.
      const other = await startSignedUpload(key, 'other.jsonl');
      const swapped = new URL(location);
      swapped.pathname = `/uploads/${encodeURIComponent(other.fileId)}`;
      assertEnvelope(await put(swapped.toString(), bytes), 403, { code: 'invalid_signature' });

      // A correctly signed URL whose expiry has passed (signed here with the server's own secret).
      const secret = await getUploadSigningSecret(spool.app.store.sql.db);
      const past = Math.floor(Date.now() / 1000) - 60;
      const expired = await put(withParams({ expires: String(past), signature: signUpload(secret, fileId, past) }), bytes);
      assertEnvelope(expired, 403, { code: 'upload_url_expired', messageMatch: /expired/ });
      assert.deepEqual(blobFiles(), blobs, 'refused PUTs leave no blob');
      await assertNoStagedBlobs();
      const pendingFile = await callJson(`${spool.url}/v1/files/${fileId}`, key, 'GET');
      assert.equal(pendingFile.json.Processed, false);

      // The genuine URL works once; a second PUT is refused and does not change the file.
      assert.equal((await put(location, bytes)).status, 200);
      const reused = await put(location, new Uint8Array(Buffer.from(chatJsonl(2))));
      assertEnvelope(reused, 409, { code: 'upload_url_used' });
      assert.equal(reused.headers.get('x-should-retry'), 'false');
      const content = await call(`${spool.url}/v1/files/${fileId}/content`, { key });
      assert.equal(content.text, chatJsonl(1));

      // A signed URL for a deleted file is dead.
      assert.equal((await callJson(`${spool.url}/v1/files/${other.fileId}`, key, 'DELETE')).status, 200);
      assertEnvelope(await put(other.location, bytes), 404);
    });

    it('a signed upload never completed (unused, or cut off by a crash mid-PUT) is purged after its URL expires; a completed one is kept', async () => {
      const key = await freshKey();
      const db = spool.app.store.sql.db;
      const expiryOf = async (id: string) => (await db.selectFrom('files').select(['status', 'expires_at']).where('id', '=', id).executeTakeFirst()) ?? null;
      const before = Date.now();
      const unused = await startSignedUpload(key, 'unused.jsonl');
      const crashed = await startSignedUpload(key, 'crashed.jsonl');
      const completed = await startSignedUpload(key, 'completed.jsonl');
      const url = new URL(unused.location);
      const urlExpiresMs = Number(url.searchParams.get('expires')) * 1000;
      const pending = await expiryOf(unused.fileId);
      assert.equal(pending?.status, 'awaiting_upload');
      assert.ok(pending.expires_at !== null && pending.expires_at > urlExpiresMs && pending.expires_at > before, 'kept past its URL');

      assert.equal((await put(completed.location, new Uint8Array(Buffer.from(chatJsonl(1))))).status, 200);
      assert.deepEqual(await expiryOf(completed.fileId), { status: 'processed', expires_at: null }, 'an uploaded file does not expire');

      // What a crash mid-PUT leaves: the URL spent, the file 'uploading' for good. Then the grace period passes.
      await db.updateTable('files').set({ status: 'uploading' }).where('id', '=', crashed.fileId).execute();
      await db.updateTable('files').set({ expires_at: Date.now() - 1 }).where('id', 'in', [unused.fileId, crashed.fileId]).execute();
      await pollUntil(
        async () => [await expiryOf(unused.fileId), await expiryOf(crashed.fileId)],
        (rows) => rows.every((row) => row === null),
        { what: 'the retention sweep to remove both' },
      );
      for (const id of [unused.fileId, crashed.fileId]) {
        assertEnvelope(await callJson(`${spool.url}/v1/files/${id}`, key, 'GET'), 404);
      }
      assert.deepEqual(await listFileIds(key), [completed.fileId]);
      assertEnvelope(await put(unused.location, new Uint8Array(Buffer.from(chatJsonl(1)))), 404);
    });

    it('range requests that cannot be served → 416; malformed ranges serve the whole file', async () => {
      const key = await freshKey();
      const content = chatJsonl(1);
      const id = await uploadBatchFile(spool, content, key);
      const url = `${spool.url}/v1/files/${id}/content`;
      const res = await call(url, { key, headers: { range: `bytes=${Buffer.byteLength(content)}-` } });
      assertEnvelope(res, 416, { param: 'range' });
      const backwards = await call(url, { key, headers: { range: 'bytes=20-10' } });
      assertEnvelope(backwards, 416);
      const odd = await call(url, { key, headers: { range: 'lines=1-2' } });
      assert.equal(odd.status, 200);
      assert.equal(odd.text, content);
    });
  });

  describe('conflicts', () => {
    it('deleting the input of a running batch → 409 (x-should-retry: false); allowed once the batch ends', async () => {
      const key = await freshKey();
      const fileId = await uploadBatchFile(spool, chatJsonl(MAX_LINES), key);
      const batch = await createBatch(spool, fileId, key);
      for (const mount of MOUNTS) {
        const res = await callJson(`${spool.url}${mount}/files/${fileId}`, key, 'DELETE');
        assertEnvelope(res, 409, { code: 'file_in_use', messageMatch: new RegExp(batch.id) });
        assert.equal(res.headers.get('x-should-retry'), 'false');
      }
      assert.ok((await listFileIds(key)).includes(fileId), 'the file is still there');
      await waitForBatchStatus(`${spool.url}/openai/v1`, key, batch.id, ['in_progress']);
      assertEnvelope(await callJson(`${spool.url}/openai/v1/files/${fileId}`, key, 'DELETE'), 409, { code: 'file_in_use' });

      assert.equal((await callJson(`${spool.url}/openai/v1/batches/${batch.id}/cancel`, key, 'POST')).status, 200);
      await waitForBatchStatus(`${spool.url}/openai/v1`, key, batch.id, ['cancelled']);
      const deleted = await callJson(`${spool.url}/openai/v1/files/${fileId}`, key, 'DELETE');
      assert.equal(deleted.status, 200, deleted.text);
      assert.deepEqual(deleted.json, { id: fileId, object: 'file', deleted: true });
    });

    it('cancelling a failed batch → 409 with x-should-retry: false', async () => {
      const key = await freshKey();
      const fileId = await uploadBatchFile(spool, jsonl(['not json']), key);
      const batch = await createBatch(spool, fileId, key);
      await waitForBatchStatus(`${spool.url}/openai/v1`, key, batch.id, ['failed']);
      for (const mount of MOUNTS) {
        const res = await callJson(`${spool.url}${mount}/batches/${batch.id}/cancel`, key, 'POST');
        assertEnvelope(res, 409, { code: 'batch_not_cancellable', messageMatch: /failed/ });
        assert.equal(res.headers.get('x-should-retry'), 'false');
      }
      const unchanged = await callJson(`${spool.url}/openai/v1/batches/${batch.id}`, key, 'GET');
      assert.equal(unchanged.json.status, 'failed');
    });
  });

  describe('validation rules fail the batch with line numbers', () => {
    const longId = 'x'.repeat(65);
    const cases: Array<{ name: string; lines: Array<Json | string>; line: number | null; code: string; modelId?: string }> = [
      { name: 'a line that is not JSON', lines: [chatLine('a'), '{"custom_id": "b", body: {}}', chatLine('c')], line: 2, code: 'invalid_json_line' },
      { name: 'a line that is JSON but not an object', lines: [chatLine('a'), '[1, 2]'], line: 2, code: 'invalid_json_line' },
      { name: 'a duplicate custom_id', lines: [chatLine('a'), chatLine('b'), chatLine('a')], line: 3, code: 'duplicate_custom_id' },
      { name: 'a missing custom_id', lines: [{ body: (chatLine('x').body as Json) }], line: 1, code: 'missing_custom_id' },
      { name: 'a custom_id over 64 characters', lines: [chatLine('a'), chatLine(longId)], line: 2, code: 'custom_id_too_long' },
      {
        name: 'a url that does not match the endpoint',
        lines: [chatLine('a', { openaiForm: true }), { ...chatLine('b'), method: 'POST', url: '/v1/completions' }],
        line: 2,
        code: 'mismatched_url',
      },
      {
        name: 'stream: true',
        lines: [chatLine('a'), { custom_id: 'b', body: { model: 'slow-model', messages: [], stream: true } }],
        line: 2,
        code: 'stream_not_supported',
      },
      { name: 'a missing model', lines: [chatLine('a'), { custom_id: 'b', body: { messages: [] } }], line: 2, code: 'missing_model' },
      { name: 'a body that is not an object', lines: [{ custom_id: 'a', body: 'hello' }], line: 1, code: 'invalid_body' },
      { name: `more than ${MAX_LINES} lines`, lines: [chatLine('a'), chatLine('b'), chatLine('c'), chatLine('d')], line: 4, code: 'too_many_requests' },
      { name: 'an empty file', lines: [' '], line: null, code: 'empty_file' },
      // Valid JSON and valid UTF-8, but no id a user means: PostgreSQL's text refuses U+0000, and a lone surrogate
      // has no UTF-8 form (it would come back as U+FFFD, so two different ids could collide).
      { name: 'a custom_id with a NUL (\\u0000)', lines: [chatLine('a'), chatLine('b\u0000')], line: 2, code: 'invalid_custom_id' },
      { name: 'a custom_id with a control character', lines: [chatLine('a\u001b[31m')], line: 1, code: 'invalid_custom_id' },
      { name: 'a custom_id with DEL', lines: [chatLine('a'), chatLine('b\u007f')], line: 2, code: 'invalid_custom_id' },
      { name: 'a custom_id with a lone surrogate (\\ud800)', lines: [chatLine('a'), chatLine('b\ud800')], line: 2, code: 'invalid_custom_id' },
      { name: 'a custom_id with a lone low surrogate (\\udc00)', lines: [chatLine('\udc00b')], line: 1, code: 'invalid_custom_id' },
      { name: 'a model with a NUL', lines: [chatLine('a'), chatLine('b', { model: 'slow-\u0000model' })], line: 2, code: 'invalid_model' },
      { name: 'a model over 256 characters', lines: [chatLine('a', { model: `slow-${'m'.repeat(300)}` })], line: 1, code: 'invalid_model' },
    ];

    for (const c of cases) {
      it(`${c.name} → failed, line ${c.line}`, async () => {
        const key = await freshKey();
        const fileId = await uploadBatchFile(spool, jsonl(c.lines as Array<Record<string, unknown> | string>), key);
        const batch = await createBatch(spool, fileId, key, c.modelId ? { model_id: c.modelId } : {});
        const failed = await waitForBatchStatus(`${spool.url}/openai/v1`, key, batch.id, ['failed', 'in_progress']);
        assert.equal(failed.status, 'failed', `expected the batch to fail validation: ${JSON.stringify(failed)}`);
        assert.equal(failed.errors.object, 'list');
        assert.deepEqual(
          failed.errors.data.map((e: Json) => [e.line, e.code]),
          [[c.line, c.code]],
        );
        const message: string = failed.errors.data[0].message;
        if (c.line !== null) assert.match(message, new RegExp(`line ${c.line}\\b`));
        assert.equal(failed.request_counts.total, 0);
        assert.equal(failed.output_file_id, null);

        const together = await callJson(`${spool.url}/v1/batches/${batch.id}`, key, 'GET');
        assert.equal(together.json.status, 'FAILED');
        assert.equal(typeof together.json.error, 'string');
        if (c.line !== null) assert.match(together.json.error, new RegExp(`line ${c.line}\\b`));
        // No chunk rows are left behind for a failed batch.
        const rows = await spool.app.store.sql.db.selectFrom('chunks').select('chunk').where('batch_id', '=', batch.id).execute();
        assert.deepEqual(rows, []);
      });
    }

    it('a line without body.model is fine when the batch names model_id', async () => {
      const key = await freshKey();
      const fileId = await uploadBatchFile(spool, jsonl([{ custom_id: 'a', body: { messages: [] } }]), key);
      const batch = await createBatch(spool, fileId, key, { model_id: 'slow-model' });
      const done = await waitForBatchStatus(`${spool.url}/openai/v1`, key, batch.id, ['failed', 'in_progress']);
      assert.equal(done.status, 'in_progress', JSON.stringify(done.errors));
      assert.equal(done.request_counts.total, 1);
      assert.equal(done.model, 'slow-model');
    });

    it(`exactly ${MAX_LINES} lines (blank lines not counted) validate`, async () => {
      const key = await freshKey();
      const fileId = await uploadBatchFile(spool, jsonl([chatLine('a'), '', chatLine('b'), '   ', chatLine('c')]), key);
      const batch = await createBatch(spool, fileId, key);
      const done = await waitForBatchStatus(`${spool.url}/openai/v1`, key, batch.id, ['failed', 'in_progress']);
      assert.equal(done.status, 'in_progress', JSON.stringify(done.errors));
      assert.equal(done.request_counts.total, MAX_LINES);
    });
  });

  describe('hostile text, ids that cannot exist, and errors the framework raises', () => {
    it('ids and names in other scripts, emoji and 64-character ids keep working, byte for byte', async () => {
      const key = await freshKey();
      const ids = ['日本語のID émoji 😀', '😀'.repeat(64), 'an id with spaces'];
      const lines = ids.map((id) => ({ custom_id: id, body: { model: 'echo', messages: [{ role: 'user', content: 'x' }] } }));
      const fileId = await uploadBatchFile(spool, jsonl(lines), key);
      const batch = await createBatch(spool, fileId, key);
      const done = await waitForBatchStatus(`${spool.url}/openai/v1`, key, batch.id, ['completed', 'failed']);
      assert.equal(done.status, 'completed', JSON.stringify(done.errors));
      const output = await call(`${spool.url}/openai/v1/files/${done.output_file_id}/content`, { key });
      assert.deepEqual(output.text.trim().split('\n').map((line) => JSON.parse(line).custom_id).sort(), [...ids].sort());
    });

    it('a batch that fails on hostile text does not hold up the batch behind it', async () => {
      const key = await freshKey();
      const poisoned = await createBatch(spool, await uploadBatchFile(spool, jsonl([chatLine('nul\u0000id', { model: 'echo' })]), key), key);
      const healthy = await createBatch(spool, await uploadBatchFile(spool, jsonl([chatLine('fine', { model: 'echo' })]), key), key);
      assert.equal((await waitForBatchStatus(`${spool.url}/openai/v1`, key, poisoned.id, ['failed', 'completed'])).status, 'failed');
      assert.equal((await waitForBatchStatus(`${spool.url}/openai/v1`, key, healthy.id, ['failed', 'completed'])).status, 'completed');
    });

    it('a max_tokens no integer column can hold (1e300) is accepted and the batch runs', async () => {
      const key = await freshKey();
      const line = { custom_id: 'huge', body: { model: 'echo', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1e300 } };
      const batch = await createBatch(spool, await uploadBatchFile(spool, jsonl([line]), key), key);
      const done = await waitForBatchStatus(`${spool.url}/openai/v1`, key, batch.id, ['completed', 'failed']);
      assert.equal(done.status, 'completed', JSON.stringify(done.errors));
    });

    it('path ids that cannot exist (NUL, invalid UTF-8, 100+ characters) → 404, 400 or 414 in the envelope, never 500', async () => {
      const key = await freshKey();
      for (const mount of MOUNTS) {
        for (const [method, path] of [
          ['GET', '/files/%00'],
          ['DELETE', '/files/%00'],
          ['GET', '/files/%00/content'],
          ['POST', '/files/%00/preprocess'],
          ['GET', '/batches/%00'],
          ['POST', '/batches/%00/cancel'],
          ['POST', '/batches/%00/retry'],
          ['GET', '/batches/batch-%EF%BF%BD'],
        ] as const) {
          assertEnvelope(await callJson(`${spool.url}${mount}${path}`, key, method), 404, { code: 'not_found' });
        }
        // Percent-encoded bytes that are not UTF-8 (here a lone surrogate's bytes) cannot name anything either.
        assertEnvelope(await callJson(`${spool.url}${mount}/batches/batch-%ED%A0%80`, key, 'GET'), 400, { code: 'invalid_url' });
        assertEnvelope(await callJson(`${spool.url}${mount}/files/${'a'.repeat(1000)}`, key, 'GET'), 414, { code: 'uri_too_long' });
        assertEnvelope(await callJson(`${spool.url}${mount}/files/%E0%A4%A`, key, 'GET'), 400, { code: 'invalid_url' });
        const listed = await callJson(`${spool.url}${mount}/files?after=%00`, key, 'GET');
        assert.equal(listed.status, 200, listed.text);
      }
      const batches = await callJson(`${spool.url}/openai/v1/batches?after=%00x`, key, 'GET');
      assert.equal(batches.status, 200, batches.text);
    });

    it('a model_id with a control character → 400 naming model_id', async () => {
      const key = await freshKey();
      const fileId = await uploadBatchFile(spool, jsonl([{ custom_id: 'a', body: { messages: [] } }]), key);
      await assertStoresNothing(key, async () => {
        const res = await callJson(`${spool.url}/openai/v1/batches`, key, 'POST', { input_file_id: fileId, endpoint: '/v1/chat/completions', model_id: 'echo\u0000' });
        assertEnvelope(res, 400, { param: 'model_id', messageMatch: /U\+0000/ });
      });
    });

    it('file names with NUL, newlines or a path are stored tidied; metadata with NUL round-trips; webhook URLs are stored normalized', async () => {
      const key = await freshKey();
      const { fileId } = await startSignedUpload(key, 'dir/sub\u0000name\n.jsonl');
      const file = await callJson(`${spool.url}/v1/files/${fileId}`, key, 'GET');
      assert.equal(file.json.filename, 'sub_name_.jsonl');

      const input = await uploadBatchFile(spool, jsonl([chatLine('a', { model: 'echo' })]), key, 'in\u0000put.jsonl');
      const batch = await createBatch(spool, input, key, { metadata: { note: 'has a \u0000 in it', webhook_url: 'https://hooks.example.com/ünïcode path' } });
      const read = await callJson(`${spool.url}/openai/v1/batches/${batch.id}`, key, 'GET');
      assert.equal(read.json.metadata.note, 'has a \u0000 in it');
      assert.equal(read.json.webhook_url, 'https://hooks.example.com/%C3%BCn%C3%AFcode%20path');
    });

    it('a JSON body that is not UTF-8 → 400 saying so', async () => {
      const key = await freshKey();
      const body = Buffer.concat([Buffer.from('{"input_file_id":"'), Buffer.from([0xff, 0xfe]), Buffer.from('","endpoint":"/v1/chat/completions"}')]);
      const res = await call(`${spool.url}/openai/v1/batches`, { method: 'POST', key, headers: { 'content-type': 'application/json' }, body });
      assertEnvelope(res, 400, { code: 'invalid_utf8', messageMatch: /not valid UTF-8/ });
    });

    it('a 20 MB body to a JSON route → 413 in the envelope, read by a client that writes the whole body first', async () => {
      const key = await freshKey();
      const res = await writeAllThenRead(`${spool.url}/openai/v1/batches`, key, 'application/json', 20 * 1024 * 1024);
      assert.equal(res.error, undefined, `the client saw ${res.error} instead of the answer`);
      assert.equal(res.status, 413);
      assert.equal(JSON.parse(res.text).error.code, 'body_too_large');
    });

    it('a body the key check refuses is still read before the 401, so the client gets it', async () => {
      const res = await writeAllThenRead(`${spool.url}/openai/v1/files`, 'not-a-key', 'application/octet-stream', 5 * 1024 * 1024);
      assert.equal(res.error, undefined, `the client saw ${res.error} instead of the answer`);
      assert.equal(res.status, 401);
    });

    it('an unsupported content type → 415; oversized headers → 431; malformed HTTP → 400; all in the envelope', async () => {
      const key = await freshKey();
      const unsupported = await call(`${spool.url}/openai/v1/batches`, { method: 'POST', key, headers: { 'content-type': 'text/weird' }, body: 'x' });
      assertEnvelope(unsupported, 415, { code: 'unsupported_media_type' });
      const headers = await rawHttp(spool.url, `GET /v1/files HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
      assert.match(headers, /^HTTP\/1\.1 431 /);
      assert.equal(JSON.parse(headers.slice(headers.indexOf('\r\n\r\n') + 4)).error.code, 'headers_too_large');
      const garbage = await rawHttp(spool.url, 'GARBAGE\r\n\r\n');
      assert.match(garbage, /^HTTP\/1\.1 400 /);
      assert.equal(JSON.parse(garbage.slice(garbage.indexOf('\r\n\r\n') + 4)).error.code, 'invalid_http');
    });
  });
}

/**
 * POSTs `bytes` bytes with node:http, writing the whole body before reading anything, as most HTTP clients
 * (and Python's requests) do; resolves with the answer, or with the error the client saw instead.
 */
function writeAllThenRead(url: string, key: string, contentType: string, bytes: number): Promise<{ status?: number; text: string; error?: string }> {
  return new Promise((resolve) => {
    const target = new URL(url);
    let settled = false;
    const settle = (value: { status?: number; text: string; error?: string }) => {
      if (!settled) resolve(value);
      settled = true;
    };
    const req = httpRequest(
      { host: target.hostname, port: target.port, path: target.pathname, method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': contentType, 'content-length': bytes } },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
        res.on('end', () => (writeFailed ? settle({ status: res.statusCode, text, error: writeFailed }) : settle({ status: res.statusCode, text })));
      },
    );
    let writeFailed: string | undefined;
    req.on('error', (err: NodeJS.ErrnoException) => {
      writeFailed = err.code ?? err.message;
      settle({ text: '', error: writeFailed });
    });
    const piece = Buffer.alloc(64 * 1024, 0x61);
    let sent = 0;
    const pump = () => {
      while (sent < bytes) {
        const size = Math.min(piece.length, bytes - sent);
        sent += size;
        if (!req.write(size === piece.length ? piece : piece.subarray(0, size))) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

/** Sends `request` as raw bytes on a fresh connection; resolves with everything the server wrote back. */
function rawHttp(url: string, request: string): Promise<string> {
  const target = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(target.port), target.hostname);
    let text = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
    socket.on('error', () => resolve(text));
    socket.on('close', () => resolve(text));
    socket.write(request);
  });
}
