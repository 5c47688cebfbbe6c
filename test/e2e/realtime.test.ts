// Real-time inference on the API server: POST /chat/completions, /completions
// and /embeddings under /v1 and /openai/v1, through the official OpenAI SDK
// against a real Spool, routed by model to the echo emulator, to configured
// loopback upstreams (proxied: status and body passed back), and to the
// embedded engine (tiny GGUF models the test writes, shared with the batch
// runner in the same process).
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { Agent, fetch as undiciFetch } from 'undici';
import {
  assertEnvelope,
  call,
  callJson,
  jsonl,
  makeTempDir,
  parseJsonl,
  pollUntil,
  removeAllTempDirs,
  startTestSpool,
  uploadBatchFile,
  waitForBatchStatus,
  type TestSpool,
} from '../helpers/spool.ts';
import { writeTinyGguf } from '../helpers/tiny-gguf.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstreams.ts';

const MOUNTS = ['/openai/v1', '/v1'] as const;
const UPSTREAM_KEY = 'upstream-secret-key';
const STORIES = resolve('../shared/models/stories260K.gguf');
// One llama.cpp thread: its threads spin-wait on each other, and test files run two at a time on a 2-core machine.
const THREADS = 1;

function client(spool: TestSpool, mount: string, apiKey = spool.apiKey): OpenAI {
  return new OpenAI({ apiKey, baseURL: `${spool.url}${mount}`, maxRetries: 0 });
}

/** The OpenAI SDK's error for `promise`, which must fail. */
async function sdkError(promise: Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof OpenAI.APIError, `expected an APIError, got ${String(error)}`);
    return error;
  }
  assert.fail('the request should have failed');
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address() as { port: number };
  await new Promise<void>((done) => server.close(() => done()));
  return port;
}

describe('real-time inference: echo and upstreams', () => {
  let spool: TestSpool;
  let proxied: TestUpstream;
  let limited: TestUpstream;
  let hanging: TestUpstream;

  before(async () => {
    // 'bad-request' answers like the echo model, except model "bad" (400) and "missing" (404); it insists on its key.
    proxied = await startUpstream({ kind: 'bad-request', apiKey: UPSTREAM_KEY });
    limited = await startUpstream({ kind: 'rate-limit', rateLimitEvery: 1, retryAfterMs: 1500 });
    hanging = await startUpstream({ kind: 'hang' });
    spool = await startTestSpool({
      config: {
        worker: { requestTimeoutMs: 1000 },
        upstreams: [
          { name: 'proxied', baseUrl: proxied.url, apiKey: UPSTREAM_KEY, models: ['proxied-*', 'bad', 'missing'] },
          { name: 'limited', baseUrl: limited.url, models: ['limited-*'] },
          { name: 'hanging', baseUrl: hanging.url, models: ['hang-*'] },
          { name: 'gone', baseUrl: `http://127.0.0.1:${await closedPort()}/v1`, models: ['gone-*'] },
        ],
      },
    });
  });

  after(async () => {
    await spool?.stop();
    await Promise.all([proxied?.close(), limited?.close(), hanging?.close()]);
    removeAllTempDirs();
  });

  for (const mount of MOUNTS) {
    describe(`echo through the OpenAI SDK at ${mount}`, () => {
      it('answers chat completions with usage and finish_reason', async () => {
        const answer = await client(spool, mount).chat.completions.create({
          model: 'echo',
          messages: [{ role: 'user', content: 'hello real time' }],
          max_tokens: 32,
        });
        assert.equal(answer.object, 'chat.completion');
        assert.equal(answer.model, 'echo');
        assert.equal(answer.choices.length, 1);
        assert.equal(answer.choices[0].message.role, 'assistant');
        assert.match(answer.choices[0].message.content ?? '', /hello real time/);
        assert.ok(['stop', 'length'].includes(answer.choices[0].finish_reason));
        assert.ok(answer.usage && answer.usage.prompt_tokens > 0);
        assert.equal(answer.usage.total_tokens, answer.usage.prompt_tokens + answer.usage.completion_tokens);
      });

      it('answers completions, honouring max_tokens', async () => {
        const answer = await client(spool, mount).completions.create({ model: 'echo-small', prompt: 'one two three four five six seven eight', max_tokens: 3 });
        assert.equal(answer.object, 'text_completion');
        assert.equal(answer.choices[0].finish_reason, 'length');
        assert.equal(answer.usage?.completion_tokens, 3);
      });

      it('answers embeddings', async () => {
        const answer = await client(spool, mount).embeddings.create({ model: 'echo', input: ['first', 'second'] });
        assert.equal(answer.object, 'list');
        assert.equal(answer.data.length, 2);
        assert.equal(answer.data[1].index, 1);
        assert.ok(answer.data[0].embedding.length > 0);
        assert.ok(answer.usage.prompt_tokens > 0);
      });

      it('answers 404 in the error envelope for a model nobody serves', async () => {
        const error = await sdkError(client(spool, mount).chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }));
        assert.equal(error.status, 404);
        assert.equal(error.code, 'model_not_found');
        assert.equal(error.param, 'model');
        assert.match(error.message, /no-such-model/);
      });

      it('refuses stream: true with a 400 that says so', async () => {
        const error = await sdkError(client(spool, mount).chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'hi' }], stream: true }));
        assert.equal(error.status, 400);
        assert.equal(error.param, 'stream');
        assert.match(error.message, /stream is not supported/);
      });

      it('answers 401 without a valid key', async () => {
        const error = await sdkError(client(spool, mount, 'not-a-key-at-all').embeddings.create({ model: 'echo', input: 'x' }));
        assert.equal(error.status, 401);
      });
    });
  }

  describe('raw HTTP', () => {
    const url = (path: string) => `${spool.url}/v1${path}`;

    it('401 in the envelope when the key is missing', async () => {
      const res = await callJson(url('/chat/completions'), null, 'POST', { model: 'echo', messages: [{ role: 'user', content: 'hi' }] });
      assertEnvelope(res, 401, { code: 'invalid_api_key' });
    });

    it('400 in the envelope for a body that is not a JSON object, or has no model', async () => {
      const notJson = await call(url('/completions'), { method: 'POST', key: spool.apiKey, headers: { 'content-type': 'application/json' }, body: '{"model": "echo",' });
      assertEnvelope(notJson, 400, { code: 'invalid_json' });
      const empty = await call(url('/completions'), { method: 'POST', key: spool.apiKey, headers: { 'content-type': 'application/json' }, body: '' });
      assertEnvelope(empty, 400, { messageMatch: /JSON object/ });
      assertEnvelope(await callJson(url('/embeddings'), spool.apiKey, 'POST', ['echo']), 400, { messageMatch: /JSON object/ });
      assertEnvelope(await callJson(url('/chat/completions'), spool.apiKey, 'POST', { messages: [] }), 400, { param: 'model' });
      assertEnvelope(await callJson(url('/chat/completions'), spool.apiKey, 'POST', { model: 42 }), 400, { param: 'model' });
    });

    it("passes the model's own 400 on in the envelope (echo without messages)", async () => {
      const res = await callJson(url('/chat/completions'), spool.apiKey, 'POST', { model: 'echo' });
      const body = assertEnvelope(res, 400, { param: 'messages' });
      assert.equal(body.error.type, 'invalid_request_error');
    });

    it('names the unknown model in the 404', async () => {
      const res = await callJson(url('/embeddings'), spool.apiKey, 'POST', { model: 'gpt-nope', input: 'x' });
      assertEnvelope(res, 404, { param: 'model', code: 'model_not_found', messageMatch: /`gpt-nope`/ });
    });
  });

  describe('configured upstreams', () => {
    it('proxies to the upstream with its key and passes back status, body and request id', async () => {
      const before = proxied.stats.requests;
      const request = { model: 'proxied-llama', messages: [{ role: 'user' as const, content: 'through the proxy' }], max_tokens: 8, temperature: 0.5 };
      const { data: answer, response } = await client(spool, '/openai/v1').chat.completions.create(request).withResponse();
      assert.equal(proxied.stats.requests, before + 1);
      assert.deepEqual(proxied.stats.bodies.at(-1), request, 'the body reaches the upstream unchanged');
      assert.equal(answer.model, 'proxied-llama');
      assert.match(answer.choices[0].message.content ?? '', /through the proxy/);
      assert.match(response.headers.get('x-request-id') ?? '', /^req_test_\d+$/);

      const completion = await client(spool, '/v1').completions.create({ model: 'proxied-base', prompt: 'a b c d e f', max_tokens: 2 });
      assert.equal(completion.usage?.completion_tokens, 2);
      const vectors = await client(spool, '/v1').embeddings.create({ model: 'proxied-embed', input: 'vector please' });
      assert.equal(vectors.data.length, 1);
    });

    it("passes the upstream's 4xx status and error through, in the envelope", async () => {
      const bad = await callJson(`${spool.url}/v1/chat/completions`, spool.apiKey, 'POST', { model: 'bad', messages: [{ role: 'user', content: 'x' }] });
      const body = assertEnvelope(bad, 400, { param: 'model', code: 'bad_request' });
      assert.equal(body.message, 'The model `bad` rejects every request.');
      const missing = await callJson(`${spool.url}/v1/completions`, spool.apiKey, 'POST', { model: 'missing', prompt: 'x' });
      assertEnvelope(missing, 404, { code: 'model_not_found', messageMatch: /`missing` does not exist/ });
    });

    it("passes a 429 on with the upstream's retry-after", async () => {
      const res = await callJson(`${spool.url}/v1/chat/completions`, spool.apiKey, 'POST', { model: 'limited-1', messages: [{ role: 'user', content: 'x' }] });
      assertEnvelope(res, 429, { code: 'rate_limit_exceeded' });
      assert.equal(res.headers.get('retry-after-ms'), '1500');
      assert.equal(res.headers.get('retry-after'), '2');
    });

    it('answers 504 when the upstream does not answer in time, and 502 when it cannot be reached', async () => {
      const slow = await callJson(`${spool.url}/v1/completions`, spool.apiKey, 'POST', { model: 'hang-1', prompt: 'x' });
      assertEnvelope(slow, 504, { code: 'upstream_timeout', messageMatch: /hang-1/ });
      const gone = await callJson(`${spool.url}/v1/completions`, spool.apiKey, 'POST', { model: 'gone-1', prompt: 'x' });
      assertEnvelope(gone, 502, { code: 'upstream_error', messageMatch: /gone-1/ });
    });

    it('lets go of the upstream as soon as the client hangs up', async () => {
      const hangUp = new AbortController();
      let otherSettled = false;
      const pending = callJson(`${spool.url}/v1/completions`, spool.apiKey, 'POST', { model: 'hang-2', prompt: 'x' }).finally(() => {
        otherSettled = true;
      });
      await pollUntil(async () => hanging.stats.inFlight, (n) => n === 1, { what: 'the request to reach the upstream' });
      // A client of its own: after an abort, undici may open a spare connection that would hold up the server's close.
      const agent = new Agent();
      const aborted = undiciFetch(`${spool.url}/v1/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${spool.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'hang-3', prompt: 'x' }),
        signal: hangUp.signal,
        dispatcher: agent,
      }).catch(() => 'aborted');
      await pollUntil(async () => hanging.stats.inFlight, (n) => n === 2, { what: 'the second request to reach the upstream' });
      hangUp.abort();
      assert.equal(await aborted, 'aborted');
      // The hung-up request's upstream exchange ends now; the other one only at the 1 s timeout.
      await pollUntil(async () => hanging.stats.inFlight, (n) => n === 1, { what: 'the upstream request to be dropped', deadlineMs: 5_000 });
      assert.equal(otherSettled, false, 'the hung-up request was dropped while the other one still waits for its timeout');
      await pending;
      await agent.destroy();
    });
  });
});

describe('real-time inference: the embedded engine', () => {
  let spool: TestSpool;
  let dir: string;

  before(async () => {
    dir = makeTempDir('spool-realtime-engine-');
    // 'tiny': never ends on its own, so max_tokens always ends it. 'tiny-eos': always ends at once.
    await writeTinyGguf(join(dir, 'tiny.gguf'), { seed: 7 });
    await writeTinyGguf(join(dir, 'tiny-eos.gguf'), { seed: 8, eos: 'always', chatTemplate: null });
    spool = await startTestSpool({
      config: {
        engine: {
          gpu: false,
          models: [
            { path: join(dir, 'tiny.gguf'), contextSize: 256, sequences: 2, threads: THREADS },
            { path: join(dir, 'tiny-eos.gguf'), contextSize: 256, sequences: 1, threads: THREADS },
          ],
        },
      },
    });
  });

  after(async () => {
    await spool?.stop();
    removeAllTempDirs();
  });

  it('chat: max_tokens ends the answer with finish_reason length and exact usage', async () => {
    const answer = await client(spool, '/openai/v1').chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'the cat' }], max_tokens: 5 });
    assert.equal(answer.object, 'chat.completion');
    assert.equal(answer.model, 'tiny');
    assert.equal(answer.choices[0].finish_reason, 'length');
    assert.ok((answer.choices[0].message.content ?? '').length > 0);
    assert.equal(answer.usage?.completion_tokens, 5);
    assert.ok(answer.usage.prompt_tokens > 2);
    assert.equal(answer.usage.total_tokens, answer.usage.prompt_tokens + 5);
  });

  it('completions: honours max_tokens, and end-of-sequence gives finish_reason stop', async () => {
    const long = await client(spool, '/v1').completions.create({ model: 'tiny', prompt: 'the cat', max_tokens: 7 });
    assert.equal(long.choices[0].finish_reason, 'length');
    assert.deepEqual(long.usage, { prompt_tokens: 3, completion_tokens: 7, total_tokens: 10 });
    const short = await client(spool, '/v1').completions.create({ model: 'tiny-eos', prompt: 'the cat', max_tokens: 10 });
    assert.equal(short.choices[0].finish_reason, 'stop');
    assert.deepEqual(short.usage, { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 });
  });

  it("passes the engine's 400s on in the envelope", async () => {
    const hot = await sdkError(client(spool, '/v1').chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'x' }], temperature: 5 }));
    assert.equal(hot.status, 400);
    assert.equal(hot.param, 'temperature');
    const res = await callJson(`${spool.url}/v1/embeddings`, spool.apiKey, 'POST', { model: 'tiny', input: 'x' });
    assertEnvelope(res, 400, { param: 'model', messageMatch: /does not support embeddings/ });
  });

  it('serves real-time requests while a batch runs on the same engine', async () => {
    const lines = Array.from({ length: 6 }, (_, i) => ({
      custom_id: `line-${i}`,
      method: 'POST',
      url: '/v1/completions',
      body: { model: 'tiny', prompt: `the dog ${i}`, max_tokens: 12 },
    }));
    const fileId = await uploadBatchFile(spool, jsonl(lines));
    const created = await callJson(`${spool.url}/openai/v1/batches`, spool.apiKey, 'POST', { input_file_id: fileId, endpoint: '/v1/completions', completion_window: '24h' });
    assert.equal(created.status, 200, created.text);
    const realtime = await Promise.all(
      Array.from({ length: 3 }, (_, i) => client(spool, '/v1').completions.create({ model: 'tiny', prompt: `the bird ${i}`, max_tokens: 4 })),
    );
    for (const answer of realtime) assert.equal(answer.usage?.completion_tokens, 4);
    const done = await waitForBatchStatus(`${spool.url}/openai/v1`, spool.apiKey, created.json.id, ['completed', 'failed']);
    assert.equal(done.status, 'completed');
    assert.deepEqual(done.request_counts, { total: 6, completed: 6, failed: 0 });
    const output = await call(`${spool.url}/openai/v1/files/${done.output_file_id}/content`, { key: spool.apiKey });
    for (const line of parseJsonl(output.text)) assert.equal(line.response.body.usage.completion_tokens, 12);
  });

  it('is served by an API-only process (no worker) too', async () => {
    const apiOnly = await startTestSpool({
      config: { worker: { enabled: false }, engine: { gpu: false, models: [{ path: join(dir, 'tiny.gguf'), contextSize: 128, sequences: 1, threads: THREADS }] } },
    });
    try {
      assert.equal(apiOnly.app.runner, undefined);
      const answer = await client(apiOnly, '/v1').completions.create({ model: 'tiny', prompt: 'the cat', max_tokens: 3 });
      assert.equal(answer.usage?.completion_tokens, 3);
    } finally {
      await apiOnly.stop();
    }
  });

  it('writes English with a trained model (stories260K), when it is present', async (t) => {
    if (!existsSync(STORIES)) {
      t.skip(`no ${STORIES}: the trained-model check needs it`);
      return;
    }
    const stories = await startTestSpool({
      config: { worker: { enabled: false }, engine: { gpu: false, models: [{ path: STORIES, contextSize: 256, sequences: 1, threads: THREADS }] } },
    });
    try {
      const answer = await client(stories, '/v1').completions.create({ model: 'stories260K', prompt: 'Once upon a time, there was a little girl named Lily.', max_tokens: 48, temperature: 0 });
      const text = answer.choices[0].text;
      const words = text.match(/\b(the|a|and|was|she|he|to|her|day|said)\b/gi) ?? [];
      assert.ok(words.length >= 3, `expected English, got: ${text}`);
    } finally {
      await stories.stop();
    }
  });
});
