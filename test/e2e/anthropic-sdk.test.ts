// The official Anthropic TypeScript SDK (@anthropic-ai/sdk) against a real
// Spool, on SQLite and on PostgreSQL: Message Batches created, retrieved,
// listed page by page, cancelled, deleted and read back, with requests run on
// real loopback upstreams in both modes (translated to chat completions on an
// OpenAI-compatible server; passed through to a server that speaks
// /v1/messages), the same batches seen through the other dialects, tenant
// isolation, and real-time POST /v1/messages.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { cleanupAll, createPostgresDatabase, SKIP_POSTGRES } from '../helpers/runner-harness.ts';
import { startMessagesUpstream, type MessagesUpstream } from '../helpers/messages-upstream.ts';
import { call, chatJsonl, createBatch, pollUntil, removeAllTempDirs, startTestSpool, uploadBatchFile, type TestSpool } from '../helpers/spool.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstreams.ts';

type MessageBatch = Anthropic.Messages.Batches.MessageBatch;
type BatchRequest = Anthropic.Messages.Batches.BatchCreateParams.Request;

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

/** `extra` may hold fields this SDK version no longer types (temperature, top_p, top_k): the API still takes them. */
function request(customId: string, model: string, text: string, extra: Record<string, unknown> = {}): BatchRequest {
  return { custom_id: customId, params: { model, max_tokens: 64, messages: [{ role: 'user', content: text }], ...extra } as BatchRequest['params'] };
}

async function untilEnded(client: Anthropic, id: string): Promise<MessageBatch> {
  return pollUntil(
    () => client.messages.batches.retrieve(id),
    (batch) => batch.processing_status === 'ended',
    { what: `message batch ${id} to end` },
  );
}

async function resultsOf(client: Anthropic, id: string) {
  const results: Anthropic.Messages.Batches.MessageBatchIndividualResponse[] = [];
  for await (const result of await client.messages.batches.results(id)) results.push(result);
  return results;
}

function byCustomId<T extends { custom_id: string }>(results: T[]): Map<string, T> {
  const map = new Map<string, T>();
  for (const result of results) {
    assert.ok(!map.has(result.custom_id), `custom_id ${result.custom_id} appears more than once in the results`);
    map.set(result.custom_id, result);
  }
  return map;
}

const BACKENDS = [
  { name: 'sqlite' as const, skip: false as const },
  { name: 'postgres' as const, skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : (false as const) },
];

for (const backend of BACKENDS) {
  describe(`Anthropic SDK, Message Batches on ${backend.name}`, { skip: backend.skip }, () => {
    let spool: TestSpool;
    let chat: TestUpstream;
    let slow: TestUpstream;
    let native: MessagesUpstream;
    let users = 0;

    before(async () => {
      chat = await startUpstream({ kind: 'fast' });
      slow = await startUpstream({ kind: 'slow', delayMs: 200 });
      native = await startMessagesUpstream();
      const databaseUrl = backend.name === 'postgres' ? await createPostgresDatabase() : undefined;
      spool = await startTestSpool({
        config: {
          ...(databaseUrl ? { databaseUrl } : {}),
          upstreams: [
            { name: 'chat', baseUrl: chat.url, models: ['chat-*'] },
            { name: 'native', baseUrl: native.url, models: ['native-*'], messagesApi: true },
            { name: 'slow', baseUrl: slow.url, models: ['slow-*'], maxConcurrency: 1, initialConcurrency: 1 },
          ],
        },
      });
    });

    after(async () => {
      await spool?.stop();
      await Promise.all([chat?.close(), slow?.close(), native?.close()]);
      await cleanupAll();
      removeAllTempDirs();
    });

    /** A client for a user of its own, so listings hold only what the test made. */
    async function freshClient(): Promise<{ client: Anthropic; key: string }> {
      users += 1;
      const key = await spool.keyFor(`anthropic-${backend.name}-${users}`);
      return { client: new Anthropic({ apiKey: key, baseURL: spool.url, maxRetries: 0 }), key };
    }

    it('translated to chat completions: create, retrieve, results, each message the answer to its own request', async () => {
      const { client } = await freshClient();
      const requests = Array.from({ length: 6 }, (_, i) =>
        request(`req-${i}`, 'chat-model', `question number ${i}`, { system: 'You are terse.', temperature: 0.5, stop_sequences: ['STOP'] }),
      );
      const chatBefore = chat.stats.bodies.length;
      const created = await client.messages.batches.create({ requests });
      assert.match(created.id, /^msgbatch_/);
      assert.equal(created.type, 'message_batch');
      assert.equal(created.processing_status, 'in_progress');
      assert.deepEqual(created.request_counts, { processing: 6, succeeded: 0, errored: 0, canceled: 0, expired: 0 });
      assert.match(created.created_at, RFC3339);
      assert.match(created.expires_at, RFC3339);
      assert.ok(Date.parse(created.expires_at) > Date.parse(created.created_at));
      assert.equal(created.results_url, null);
      assert.equal(created.ended_at, null);

      const ended = await untilEnded(client, created.id);
      assert.deepEqual(ended.request_counts, { processing: 0, succeeded: 6, errored: 0, canceled: 0, expired: 0 });
      assert.match(ended.ended_at!, RFC3339);
      assert.equal(ended.results_url, `${spool.url}/v1/messages/batches/${created.id}/results`);

      const results = byCustomId(await resultsOf(client, created.id));
      assert.deepEqual([...results.keys()].sort(), requests.map((r) => r.custom_id).sort());
      for (const [i, { custom_id }] of requests.entries()) {
        const result = results.get(custom_id)!.result;
        assert.equal(result.type, 'succeeded');
        if (result.type !== 'succeeded') continue;
        assert.equal(result.message.type, 'message');
        assert.equal(result.message.role, 'assistant');
        assert.match(result.message.id, /^msg_/);
        // The echo upstream answers with the last user text: this request's own.
        assert.deepEqual(result.message.content, [{ type: 'text', text: `question number ${i}` }]);
        assert.equal(result.message.stop_reason, 'end_turn');
        assert.ok(result.message.usage.input_tokens > 0 && result.message.usage.output_tokens > 0);
      }
      // What the chat upstream was sent: chat completions, system prompt first.
      const sent = chat.stats.bodies.slice(chatBefore) as Array<Record<string, any>>;
      assert.equal(sent.length, 6);
      for (const body of sent) {
        assert.equal(body.messages[0].role, 'system');
        assert.equal(body.messages[0].content, 'You are terse.');
        assert.deepEqual(body.stop, ['STOP']);
        assert.equal(body.max_tokens, 64);
        assert.equal(body.temperature, 0.5);
      }
    });

    it('hostile but valid requests (NUL and lone-surrogate text, max_tokens 1e300, a NUL in metadata) run on this backend, and other users are not held up', async () => {
      const { client } = await freshClient();
      const requests = [
        request('nul', 'chat-model', 'before\u0000after'),
        request('surrogate', 'chat-model', 'lone \ud800 half'),
        { custom_id: 'huge-max', params: { model: 'chat-model', max_tokens: 1e300, messages: [{ role: 'user' as const, content: 'big budget' }] } },
        request('meta', 'chat-model', 'with metadata', { metadata: { user_id: 'x\u0000y' } }),
      ];
      const created = await client.messages.batches.create({ requests: requests as BatchRequest[] });
      const other = await freshClient();
      const plain = await other.client.messages.batches.create({ requests: [request('plain', 'chat-model', 'hello')] });
      const ended = await untilEnded(client, created.id);
      assert.equal(ended.request_counts.processing, 0);
      const results = byCustomId(await resultsOf(client, created.id));
      assert.deepEqual([...results.keys()].sort(), ['huge-max', 'meta', 'nul', 'surrogate'], 'each request once, whatever it held');
      assert.equal((await untilEnded(other.client, plain.id)).request_counts.succeeded, 1, "another user's batch ran too");
    });

    it('passed through to an upstream that speaks /v1/messages: the upstream gets each request as it was and its answer is the result', async () => {
      const { client } = await freshClient();
      const requests = Array.from({ length: 5 }, (_, i) => request(`native-${i}`, 'native-model', `native question ${i}`, { metadata: { user_id: 'u-1' } }));
      const before = native.received.length;
      const created = await client.messages.batches.create({ requests });
      await untilEnded(client, created.id);
      const sent = native.received.slice(before);
      assert.equal(sent.length, 5);
      assert.deepEqual(native.otherPaths, []);
      for (const record of sent) {
        assert.equal(record.headers['anthropic-version'], '2023-06-01');
        const original = requests.find((r) => JSON.stringify(r.params) === JSON.stringify(record.body));
        assert.ok(original, `the upstream got a body that is no request's params: ${JSON.stringify(record.body)}`);
      }
      const results = byCustomId(await resultsOf(client, created.id));
      assert.equal(results.size, 5);
      for (const [i, { custom_id }] of requests.entries()) {
        const result = results.get(custom_id)!.result;
        assert.equal(result.type, 'succeeded');
        if (result.type !== 'succeeded') continue;
        assert.deepEqual(result.message.content, [{ type: 'text', text: `native answer to: native question ${i}` }]);
        assert.match(result.message.id, /^msg_native_\d+$/);
      }
    });

    it('an upstream refusal is an errored result with its type and reason; the other requests succeed; a retry of it is a Message Batch', async () => {
      const { client, key } = await freshClient();
      const created = await client.messages.batches.create({
        requests: [request('fine', 'native-model', 'hello'), request('refused', 'native-refuses', 'hello')],
      });
      const ended = await untilEnded(client, created.id);
      assert.deepEqual(ended.request_counts, { processing: 0, succeeded: 1, errored: 1, canceled: 0, expired: 0 });
      const results = byCustomId(await resultsOf(client, created.id));
      assert.equal(results.get('fine')!.result.type, 'succeeded');
      const refused = results.get('refused')!.result;
      assert.equal(refused.type, 'errored');
      if (refused.type === 'errored') {
        assert.equal(refused.error.type, 'error');
        assert.equal(refused.error.error.type, 'invalid_request_error');
        assert.match(refused.error.error.message, /native server refuses this request/);
      }
      // Spool's retry extension, called in another dialect, makes a Message Batch of the errored request.
      const retried = await call(`${spool.url}/v1/batches/${created.id}/retry`, { method: 'POST', key });
      assert.equal(retried.status, 201, retried.text);
      const retryId = `msgbatch_${String(retried.json.job.id).replace(/^batch-/, '')}`;
      const again = await untilEnded(client, retryId);
      assert.equal(again.request_counts.errored, 1, 'the retry ran the refused request again');
      assert.deepEqual((await resultsOf(client, retryId)).map((line) => line.custom_id), ['refused']);
      assert.ok((await client.messages.batches.list({ limit: 10 })).data.some((batch) => batch.id === retryId), 'listed with the Message Batches');
    });

    it('lists newest first with limit, after_id and before_id, and the SDK pages through them all', async () => {
      const { client } = await freshClient();
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push((await client.messages.batches.create({ requests: [request(`r${i}`, 'chat-model', `list ${i}`)] })).id);
      const newestFirst = [...ids].reverse();

      const first = await client.messages.batches.list({ limit: 2 });
      assert.deepEqual(first.data.map((b) => b.id), newestFirst.slice(0, 2));
      assert.equal(first.has_more, true);
      assert.equal(first.first_id, newestFirst[0]);
      assert.equal(first.last_id, newestFirst[1]);

      const second = await client.messages.batches.list({ limit: 2, after_id: first.last_id! });
      assert.deepEqual(second.data.map((b) => b.id), newestFirst.slice(2, 4));
      assert.equal(second.has_more, true);

      const last = await client.messages.batches.list({ limit: 2, after_id: second.last_id! });
      assert.deepEqual(last.data.map((b) => b.id), newestFirst.slice(4));
      assert.equal(last.has_more, false);

      // before_id: the page of newer batches just before it, still newest first.
      const newer = await client.messages.batches.list({ limit: 2, before_id: newestFirst[4] });
      assert.deepEqual(newer.data.map((b) => b.id), newestFirst.slice(2, 4));
      assert.equal(newer.has_more, true);
      const newest = await client.messages.batches.list({ limit: 2, before_id: newer.first_id! });
      assert.deepEqual(newest.data.map((b) => b.id), newestFirst.slice(0, 2));
      assert.equal(newest.has_more, false);

      const all: string[] = [];
      for await (const batch of client.messages.batches.list({ limit: 2 })) all.push(batch.id);
      assert.deepEqual(all, newestFirst);
    });

    it('cancels: unfinished requests end canceled, each custom_id once; delete is refused until the batch has ended, then it is gone', async () => {
      const { client } = await freshClient();
      const requests = Array.from({ length: 12 }, (_, i) => request(`slow-${i}`, 'slow-model', `slow ${i}`));
      const created = await client.messages.batches.create({ requests });

      await assert.rejects(client.messages.batches.delete(created.id), (err: unknown) => {
        assert.ok(err instanceof Anthropic.BadRequestError, String(err));
        assert.equal((err.error as any).error.type, 'invalid_request_error');
        assert.match((err.error as any).error.message, /only an ended batch can be deleted/);
        return true;
      });

      const cancelling = await client.messages.batches.cancel(created.id);
      assert.ok(['canceling', 'ended'].includes(cancelling.processing_status));
      assert.match(cancelling.cancel_initiated_at!, RFC3339);
      const ended = await untilEnded(client, created.id);
      const counts = ended.request_counts;
      assert.equal(counts.processing, 0);
      assert.equal(counts.succeeded + counts.canceled, 12);
      assert.ok(counts.canceled > 0, 'a 12 x 200 ms batch cancelled at once has requests that never ran');

      const results = byCustomId(await resultsOf(client, created.id));
      assert.deepEqual([...results.keys()].sort(), requests.map((r) => r.custom_id).sort());
      const types = [...results.values()].map((r) => r.result.type);
      assert.equal(types.filter((t) => t === 'canceled').length, counts.canceled);
      assert.equal(types.filter((t) => t === 'succeeded').length, counts.succeeded);

      const deleted = await client.messages.batches.delete(created.id);
      assert.deepEqual(deleted, { id: created.id, type: 'message_batch_deleted' });
      await assert.rejects(client.messages.batches.retrieve(created.id), Anthropic.NotFoundError);
      const listed = await client.messages.batches.list();
      assert.ok(!listed.data.some((b) => b.id === created.id));
    });

    it('expiry: requests not run by expires_at end expired, each custom_id once', async () => {
      const { client } = await freshClient();
      const requests = Array.from({ length: 12 }, (_, i) => request(`late-${i}`, 'slow-model', `late ${i}`));
      const created = await client.messages.batches.create({ requests });
      await pollUntil(
        () => client.messages.batches.retrieve(created.id),
        (batch) => batch.request_counts.succeeded >= 1,
        { what: 'a first request to succeed' },
      );
      // The completion window ends now.
      await spool.app.store.sql.db
        .updateTable('batches')
        .set({ deadline_at: Date.now() - 1000 })
        .where('id', '=', created.id.replace(/^msgbatch_/, 'batch-'))
        .execute();
      const ended = await untilEnded(client, created.id);
      const counts = ended.request_counts;
      assert.ok(counts.expired > 0 && counts.succeeded > 0, JSON.stringify(counts));
      assert.equal(counts.succeeded + counts.expired + counts.errored, 12);
      const results = byCustomId(await resultsOf(client, created.id));
      assert.equal(results.size, 12);
      const types = [...results.values()].map((r) => r.result.type);
      assert.equal(types.filter((t) => t === 'expired').length, counts.expired);
      assert.equal(types.filter((t) => t === 'succeeded').length, counts.succeeded);
    });

    it('a create far larger than a JSON body may be (3,000 requests, over 2 MiB) streams in, and every result comes back once', async () => {
      const { client } = await freshClient();
      const padding = 'p'.repeat(700);
      const requests = Array.from({ length: 3000 }, (_, i) => request(`bulk_${i}`, 'echo', `bulk ${i} ${padding}`));
      assert.ok(Buffer.byteLength(JSON.stringify({ requests })) > 2 * 1024 * 1024);
      const created = await client.messages.batches.create({ requests });
      assert.equal(created.request_counts.processing, 3000);
      const ended = await untilEnded(client, created.id);
      assert.equal(ended.request_counts.succeeded, 3000);
      const results = byCustomId(await resultsOf(client, created.id));
      assert.equal(results.size, 3000);
      const sample = results.get('bulk_1234')!.result;
      assert.ok(sample.type === 'succeeded' && sample.message.content[0].type === 'text' && sample.message.content[0].text === `bulk 1234 ${padding}`);
    });

    it('is the same batch in the other dialects, while their batches are not Message Batches', async () => {
      const { client, key } = await freshClient();
      const created = await client.messages.batches.create({ requests: [request('seen', 'chat-model', 'seen elsewhere')] });
      await untilEnded(client, created.id);
      const internalId = created.id.replace(/^msgbatch_/, 'batch-');

      const together = await call(`${spool.url}/v1/batches/${created.id}`, { key });
      assert.equal(together.status, 200, together.text);
      assert.equal(together.json.id, internalId);
      assert.equal(together.json.endpoint, '/v1/messages');
      assert.equal(together.json.status, 'COMPLETED');
      const openai = await call(`${spool.url}/openai/v1/batches/${internalId}`, { key });
      assert.equal(openai.status, 200, openai.text);
      assert.equal(openai.json.request_counts.completed, 1);
      const openaiList = await call(`${spool.url}/openai/v1/batches`, { key });
      assert.ok(openaiList.json.data.some((b: any) => b.id === internalId));

      // A Together batch of this user's: not a Message Batch.
      const fileId = await uploadBatchFile(spool, chatJsonl(1, { model: 'chat-model' }), key);
      const file = await createBatch(spool, fileId, key);
      const togetherId: string = file.id;
      await assert.rejects(client.messages.batches.retrieve(togetherId), Anthropic.NotFoundError);
      await assert.rejects(client.messages.batches.retrieve(togetherId.replace(/^batch-/, 'msgbatch_')), Anthropic.NotFoundError);
      await assert.rejects(client.messages.batches.cancel(togetherId.replace(/^batch-/, 'msgbatch_')), Anthropic.NotFoundError);
      const listed = await client.messages.batches.list();
      assert.deepEqual(listed.data.map((b) => b.id), [created.id]);
    });

    it("keeps tenants apart: another user's Message Batch is not found, listed, cancelled, deleted or read", async () => {
      const owner = await freshClient();
      const other = await freshClient();
      const created = await owner.client.messages.batches.create({ requests: [request('mine', 'slow-model', 'private')] });
      await assert.rejects(other.client.messages.batches.retrieve(created.id), Anthropic.NotFoundError);
      await assert.rejects(other.client.messages.batches.cancel(created.id), Anthropic.NotFoundError);
      await assert.rejects(other.client.messages.batches.delete(created.id), Anthropic.NotFoundError);
      const raw = await call(`${spool.url}/v1/messages/batches/${created.id}/results`, { headers: { 'x-api-key': other.key } });
      assert.equal(raw.status, 404);
      assert.deepEqual(Object.keys(raw.json), ['type', 'error']);
      assert.equal(raw.json.error.type, 'not_found_error');
      assert.deepEqual((await other.client.messages.batches.list()).data, []);
      // The owner still has it, untouched.
      const ended = await untilEnded(owner.client, created.id);
      assert.equal(ended.request_counts.succeeded, 1);
    });

    it('answers real-time POST /v1/messages, translated and passed through; stream: true is a 400', async () => {
      const { client } = await freshClient();
      const translated = await client.messages.create({ model: 'chat-model', max_tokens: 32, messages: [{ role: 'user', content: 'real time please' }] });
      assert.equal(translated.type, 'message');
      assert.deepEqual(translated.content, [{ type: 'text', text: 'real time please' }]);
      const passed = await client.messages.create({ model: 'native-model', max_tokens: 32, messages: [{ role: 'user', content: 'and natively' }] });
      assert.deepEqual(passed.content, [{ type: 'text', text: 'native answer to: and natively' }]);
      const echo = await client.messages.create({ model: 'echo', max_tokens: 32, messages: [{ role: 'user', content: 'echo me' }] });
      assert.deepEqual(echo.content, [{ type: 'text', text: 'echo me' }]);

      await assert.rejects(client.messages.create({ model: 'chat-model', max_tokens: 32, messages: [{ role: 'user', content: 'x' }], stream: true }), (err: unknown) => {
        assert.ok(err instanceof Anthropic.BadRequestError, String(err));
        assert.match((err.error as any).error.message, /streaming is not supported/);
        return true;
      });
      await assert.rejects(client.messages.create({ model: 'nobody-serves-this', max_tokens: 32, messages: [{ role: 'user', content: 'x' }] }), Anthropic.NotFoundError);
    });
  });
}
