// The official OpenAI Node SDK against a real Spool, at both base URLs it may
// be given: /openai/v1, and /v1 where the dialect is picked from its
// User-Agent. Files (multipart upload, cursor pagination, retrieve, content,
// delete) and batches (create with metadata, validation to in_progress,
// paginated list, cancel, a failed validation).
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import {
  chatJsonl,
  chatLine,
  jsonl,
  makeTempDir,
  parseJsonl,
  pollUntil,
  removeAllTempDirs,
  startTestSpool,
  writeFixture,
  type TestSpool,
} from '../helpers/spool.ts';

const OPENAI_STATUSES = ['validating', 'failed', 'in_progress', 'finalizing', 'completed', 'expired', 'cancelling', 'cancelled'];

let spool: TestSpool;
let dir: string;
let userCounter = 0;

before(async () => {
  spool = await startTestSpool();
  dir = makeTempDir('spool-openai-');
});

after(async () => {
  await spool?.stop();
  removeAllTempDirs();
});

function isUnixSeconds(value: unknown): boolean {
  return typeof value === 'number' && Number.isInteger(value) && value > 1_600_000_000 && value < 10_000_000_000;
}

async function waitFor(client: OpenAI, id: string, statuses: string[]) {
  return pollUntil(
    () => client.batches.retrieve(id),
    (batch) => statuses.includes(batch.status),
    { what: `batch ${id} to reach ${statuses.join('/')}` },
  );
}

for (const mount of ['/openai/v1', '/v1'] as const) {
  describe(`OpenAI Node SDK at ${mount}`, () => {
    /** A client for a user of its own, so listings hold only what the test made. */
    async function freshClient(): Promise<OpenAI> {
      userCounter += 1;
      const key = await spool.keyFor(`openai-user-${userCounter}`);
      return new OpenAI({ apiKey: key, baseURL: `${spool.url}${mount}`, maxRetries: 0 });
    }

    async function uploadStream(client: OpenAI, name: string, content: string) {
      const path = writeFixture(dir, name, content);
      return client.files.create({ file: createReadStream(path), purpose: 'batch' });
    }

    it('uploads with files.create (200) and retrieves, reads and deletes the file', async () => {
      const client = await freshClient();
      const content = chatJsonl(3, { openaiForm: true });
      const { data: file, response } = await client.files
        .create({ file: createReadStream(writeFixture(dir, 'direct.jsonl', content)), purpose: 'batch' })
        .withResponse();
      assert.equal(response.status, 200);
      assert.equal(file.object, 'file');
      assert.equal(file.filename, 'direct.jsonl');
      assert.equal(file.bytes, Buffer.byteLength(content));
      assert.equal(file.purpose, 'batch');
      assert.equal(file.status, 'processed');
      assert.ok(isUnixSeconds(file.created_at));

      const retrieved = await client.files.retrieve(file.id);
      assert.deepEqual(retrieved, file);

      const body = await client.files.content(file.id);
      assert.equal(body.headers.get('content-type'), 'application/octet-stream');
      assert.equal(await body.text(), content);

      const deleted = await client.files.delete(file.id);
      assert.deepEqual(deleted, { id: file.id, object: 'file', deleted: true });
      await assert.rejects(client.files.retrieve(file.id), (err: unknown) => {
        assert.ok(err instanceof OpenAI.NotFoundError, `expected NotFoundError, got ${String(err)}`);
        return true;
      });
    });

    it('pages files.list with limit/after/has_more through SDK auto-pagination', async () => {
      const client = await freshClient();
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push((await uploadStream(client, `page-${i}.jsonl`, chatJsonl(1, { prefix: `p${i}` }))).id);

      const first = await client.files.list({ limit: 2 });
      assert.equal(first.data.length, 2);
      assert.equal(first.has_more, true);
      assert.deepEqual(
        first.data.map((f) => f.id),
        [ids[4], ids[3]],
        'newest first',
      );

      const seen: string[] = [];
      for await (const file of client.files.list({ limit: 2 })) seen.push(file.id);
      assert.deepEqual(seen, [...ids].reverse(), 'auto-pagination visits every file once, newest first');

      const ascending: string[] = [];
      for await (const file of client.files.list({ limit: 2, order: 'asc' })) ascending.push(file.id);
      assert.deepEqual(ascending, ids);

      const last = await client.files.list({ limit: 2, after: ids[1] });
      assert.deepEqual(
        last.data.map((f) => f.id),
        [ids[0]],
      );
      assert.equal(last.has_more, false);

      // The raw page also names its ends.
      const raw = (await client.files.list({ limit: 2, after: ids[3] }).asResponse().then((r) => r.json())) as Record<string, unknown>;
      assert.equal(raw.object, 'list');
      assert.equal(raw.first_id, ids[2]);
      assert.equal(raw.last_id, ids[1]);
      assert.equal(raw.has_more, true);

      const byPurpose = await client.files.list({ purpose: 'batch' });
      assert.equal(byPurpose.data.length, 5);
    });

    it('creates a batch with metadata: validating, then in_progress with request_counts and unix timestamps', async () => {
      const client = await freshClient();
      const lines = 8;
      const file = await uploadStream(client, 'batch.jsonl', chatJsonl(lines, { openaiForm: true }));
      const metadata = { project: 'e2e', run: mount };
      const { data: created, response } = await client.batches
        .create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h', metadata })
        .withResponse();
      assert.equal(response.status, 200);
      assert.equal(created.object, 'batch');
      assert.equal(created.status, 'validating');
      assert.equal(created.endpoint, '/v1/chat/completions');
      assert.equal(created.input_file_id, file.id);
      assert.equal(created.completion_window, '24h');
      assert.deepEqual(created.metadata, metadata);
      assert.ok(isUnixSeconds(created.created_at));
      assert.ok(isUnixSeconds(created.expires_at));
      assert.equal(created.expires_at! - created.created_at, 24 * 3600);

      const running = await waitFor(client, created.id, ['in_progress']);
      assert.equal(running.request_counts?.total, lines);
      assert.equal(running.request_counts!.completed + running.request_counts!.failed <= lines, true);
      assert.ok(isUnixSeconds(running.in_progress_at));
      assert.ok(running.in_progress_at! >= running.created_at);
      assert.deepEqual(running.metadata, metadata);
      assert.equal(running.errors ?? null, null);
      assert.ok(OPENAI_STATUSES.includes(running.status));
    });

    it('pages batches.list with limit/after and auto-pagination', async () => {
      const client = await freshClient();
      const file = await uploadStream(client, 'many.jsonl', chatJsonl(1));
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        ids.push((await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' })).id);
      }
      const page = await client.batches.list({ limit: 2 });
      assert.deepEqual(
        page.data.map((b) => b.id),
        [ids[2], ids[1]],
      );
      assert.equal(page.has_more, true);
      const all: string[] = [];
      for await (const batch of client.batches.list({ limit: 2 })) {
        assert.ok(OPENAI_STATUSES.includes(batch.status), `lowercase status ${batch.status}`);
        all.push(batch.id);
      }
      assert.deepEqual(all, [...ids].reverse());
    });

    it('cancels: cancelling, then cancelled with an error file of batch_cancelled lines', async () => {
      const client = await freshClient();
      const lines = 6;
      const file = await uploadStream(client, 'cancel.jsonl', chatJsonl(lines));
      const batch = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
      await waitFor(client, batch.id, ['in_progress']);

      const cancelling = await client.batches.cancel(batch.id);
      assert.ok(['cancelling', 'cancelled'].includes(cancelling.status), `got ${cancelling.status}`);
      assert.ok(isUnixSeconds(cancelling.cancelling_at));

      const cancelled = await waitFor(client, batch.id, ['cancelled']);
      assert.ok(isUnixSeconds(cancelled.cancelled_at));
      const counts = cancelled.request_counts!;
      assert.equal(counts.total, lines);
      assert.equal(counts.completed + counts.failed, counts.total);
      assert.ok(cancelled.output_file_id, 'output file');
      assert.ok(cancelled.error_file_id, 'error file');

      const output = parseJsonl(await (await client.files.content(cancelled.output_file_id!)).text());
      const errors = parseJsonl(await (await client.files.content(cancelled.error_file_id!)).text());
      assert.equal(output.length, counts.completed);
      assert.equal(errors.length, counts.failed);
      const seen = [...output, ...errors].map((l) => l.custom_id).sort();
      assert.deepEqual(seen, Array.from({ length: lines }, (_, i) => `req-${i + 1}`).sort(), 'each line in exactly one file');
      for (const line of errors) {
        assert.equal(line.error.code, 'batch_cancelled');
        assert.equal(typeof line.error.message, 'string');
        assert.equal(typeof line.id, 'string');
      }

      const outputFile = await client.files.retrieve(cancelled.error_file_id!);
      assert.equal(outputFile.purpose, 'batch_output');
      assert.equal(outputFile.bytes, Buffer.byteLength(errors.map((e) => JSON.stringify(e)).join('\n')) + (errors.length > 0 ? 1 : 0));

      // Cancelling a cancelled batch is harmless: it answers the batch, not an error.
      const again = await client.batches.cancel(cancelled.id);
      assert.equal(again.status, 'cancelled');
    });

    it('cancels straight after create (possibly mid-validation): cancelled, and every validated line accounted for', async () => {
      const client = await freshClient();
      const lines = 5;
      const file = await uploadStream(client, 'early-cancel.jsonl', chatJsonl(lines));
      const batch = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
      const cancelling = await client.batches.cancel(batch.id);
      assert.ok(['cancelling', 'cancelled'].includes(cancelling.status), `got ${cancelling.status}`);
      const cancelled = await waitFor(client, batch.id, ['cancelled']);
      const counts = cancelled.request_counts!;
      // Cancelled before validation read the file: no lines; after: every line, each in one file.
      assert.ok(counts.total === 0 || counts.total === lines, `total ${counts.total}`);
      assert.equal(counts.completed + counts.failed, counts.total);
      if (cancelled.output_file_id && cancelled.error_file_id) {
        const output = parseJsonl(await (await client.files.content(cancelled.output_file_id)).text());
        const errors = parseJsonl(await (await client.files.content(cancelled.error_file_id)).text());
        assert.equal(output.length + errors.length, counts.total);
      } else {
        assert.equal(counts.total, 0, 'a batch with lines has result files');
      }
    });

    it('fails a batch with invalid lines: status failed, errors.data[].line', async () => {
      const client = await freshClient();
      const content = jsonl([
        chatLine('a', { openaiForm: true }),
        chatLine('a', { openaiForm: true }),
        { custom_id: 'c', method: 'POST', url: '/v1/embeddings', body: { model: 'm', input: 'x' } },
        'not json',
      ]);
      const file = await uploadStream(client, 'invalid.jsonl', content);
      const batch = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
      const failed = await waitFor(client, batch.id, ['failed']);
      assert.ok(isUnixSeconds(failed.failed_at));
      assert.equal(failed.errors?.object, 'list');
      const lines = failed.errors!.data!.map((e) => e.line);
      assert.deepEqual(lines, [2, 3, 4]);
      const codes = failed.errors!.data!.map((e) => e.code);
      assert.deepEqual(codes, ['duplicate_custom_id', 'mismatched_url', 'invalid_json_line']);
      for (const e of failed.errors!.data!) assert.match(e.message!, new RegExp(`line ${e.line}\\b`));
      assert.equal(failed.output_file_id, null);
    });
  });
}
