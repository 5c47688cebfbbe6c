import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { canonicalBodyKey, startUpstream, type MultipartRecord, type TestUpstream, type UpstreamOptions } from '../helpers/upstreams.ts';

const open: TestUpstream[] = [];
after(async () => {
  await Promise.all(open.map((upstream) => upstream.close()));
});

async function upstream(options?: UpstreamOptions): Promise<TestUpstream> {
  const started = await startUpstream(options);
  open.push(started);
  return started;
}

const chat = (content: string, model = 'echo') => ({ model, messages: [{ role: 'user', content }] });

async function post(base: string, path: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  let json: unknown = text;
  try {
    json = JSON.parse(text);
  } catch {
    // plain text answer
  }
  return { status: response.status, headers: response.headers, body: json as any };
}

describe('startUpstream', () => {
  test('fast: answers every JSON endpoint with the echo emulator and counts it', async () => {
    const server = await upstream();
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/v1$/);

    const completion = await post(server.url, '/chat/completions', chat('hello there'));
    assert.equal(completion.status, 200);
    assert.equal(completion.body.object, 'chat.completion');
    assert.equal(completion.body.choices[0].message.content, 'hello there');
    assert.match(completion.headers.get('x-request-id') ?? '', /^req_test_\d+$/);

    const text = await post(server.url, '/completions', { model: 'echo', prompt: 'abc', max_tokens: 5 });
    assert.equal(text.status, 200);
    assert.equal(text.body.object, 'text_completion');

    const embedding = await post(server.url, '/embeddings', { model: 'echo', input: ['a', 'b'] });
    assert.equal(embedding.status, 200);
    assert.equal(embedding.body.data.length, 2);

    const invalid = await post(server.url, '/chat/completions', { model: 'echo', messages: [] });
    assert.equal(invalid.status, 400);
    assert.equal(invalid.body.error.type, 'invalid_request_error');

    const models = await fetch(`${server.url}/models`);
    assert.equal(models.status, 200);
    assert.equal(((await models.json()) as any).object, 'list');

    assert.equal(server.stats.requests, 5);
    assert.equal(server.stats.inFlight, 0);
    assert.equal(server.stats.maxInFlight, 1);
    assert.deepEqual(server.stats.byStatus, { 200: 4, 400: 1 });
    assert.equal(server.stats.bodies.length, 4);
    assert.deepEqual(server.stats.bodies[0], chat('hello there'));
    assert.equal(server.stats.byBody.get(canonicalBodyKey(chat('hello there'))), 1);
  });

  test('byBody keys ignore object key order', async () => {
    const server = await upstream();
    await post(server.url, '/embeddings', { model: 'echo', input: 'x' });
    await post(server.url, '/embeddings', { input: 'x', model: 'echo' });
    assert.equal(server.stats.byBody.size, 1);
    assert.equal(server.stats.byBody.get(canonicalBodyKey({ input: 'x', model: 'echo' })), 2);
  });

  test('unknown routes 404, wrong methods 405, broken JSON 400', async () => {
    const server = await upstream();
    assert.equal((await post(server.url, '/nope', {})).status, 404);
    assert.equal((await fetch(`${server.url}/embeddings`)).status, 405);
    const broken = await fetch(`${server.url}/embeddings`, { method: 'POST', body: '{nope' });
    assert.equal(broken.status, 400);
    await broken.arrayBuffer();
  });

  test("model 'missing' answers the OpenAI 404 in every kind", async () => {
    for (const kind of ['fast', 'fail-then-succeed', 'rate-limit', 'hang', 'bad-request', 'capacity', 'slow'] as const) {
      const server = await upstream({ kind, delayMs: 0 });
      const response = await post(server.url, '/chat/completions', chat('hi', 'missing'));
      assert.equal(response.status, 404, kind);
      assert.deepEqual(response.body, {
        error: { message: 'The model `missing` does not exist.', type: 'invalid_request_error', code: 'model_not_found' },
      });
      await server.close();
    }
  });

  test('audio: parses multipart, answers with echoAudio, records fields and file', async () => {
    const server = await upstream();
    const audio = new Uint8Array(64_000).map((_, index) => index % 251);
    const form = new FormData();
    form.append('model', 'whisper-1');
    form.append('response_format', 'verbose_json');
    form.append('language', 'de');
    form.append('timestamp_granularities[]', 'word');
    form.append('timestamp_granularities[]', 'segment');
    form.append('file', new Blob([audio], { type: 'audio/wav' }), 'clip.wav');
    const response = await fetch(`${server.url}/audio/transcriptions`, { method: 'POST', body: form });
    assert.equal(response.status, 200);
    const body = (await response.json()) as any;
    assert.equal(body.task, 'transcribe');
    assert.equal(body.language, 'de');
    assert.equal(body.duration, 2);
    assert.match(body.text, /^echo transcription of clip\.wav: 64000 bytes/);

    const record = server.stats.bodies[0] as MultipartRecord;
    assert.deepEqual(record.fields, {
      model: 'whisper-1',
      response_format: 'verbose_json',
      language: 'de',
      'timestamp_granularities[]': ['word', 'segment'],
    });
    assert.equal(record.fileName, 'clip.wav');
    assert.deepEqual(Buffer.from(record.fileBytes), Buffer.from(audio));
    assert.equal(server.stats.byBody.get(canonicalBodyKey(record)), 1);

    const translation = new FormData();
    translation.append('model', 'whisper-1');
    translation.append('response_format', 'text');
    translation.append('file', new Blob([new Uint8Array(10)]), 'x.mp3');
    const text = await fetch(`${server.url}/audio/translations`, { method: 'POST', body: translation });
    assert.equal(text.status, 200);
    assert.match(text.headers.get('content-type') ?? '', /^text\/plain/);
    assert.match(await text.text(), /^echo translation of x\.mp3: 10 bytes/);

    const noFile = new FormData();
    noFile.append('model', 'whisper-1');
    const rejected = await fetch(`${server.url}/audio/transcriptions`, { method: 'POST', body: noFile });
    assert.equal(rejected.status, 400);
    await rejected.arrayBuffer();
  });

  test('apiKey: requests without the bearer get 401', async () => {
    const server = await upstream({ apiKey: 'sk-test' });
    const denied = await post(server.url, '/embeddings', { model: 'echo', input: 'x' });
    assert.equal(denied.status, 401);
    assert.equal(denied.body.error.code, 'invalid_api_key');
    const wrong = await post(server.url, '/embeddings', { model: 'echo', input: 'x' }, { authorization: 'Bearer nope' });
    assert.equal(wrong.status, 401);
    const allowed = await post(server.url, '/embeddings', { model: 'echo', input: 'x' }, { authorization: 'Bearer sk-test' });
    assert.equal(allowed.status, 200);
  });

  test('slow: answers after the delay, and concurrent requests overlap', async () => {
    const server = await upstream({ kind: 'slow', delayMs: 200 });
    const responses = await Promise.all([1, 2, 3].map((n) => post(server.url, '/embeddings', { model: 'echo', input: `x${n}` })));
    assert.deepEqual(
      responses.map((response) => response.status),
      [200, 200, 200],
    );
    assert.equal(server.stats.maxInFlight, 3);
    assert.equal(server.stats.inFlight, 0);
  });

  test('fail-then-succeed: the first N attempts of each body fail with 500 then 503', async () => {
    const server = await upstream({ kind: 'fail-then-succeed', failuresPerRequest: 2 });
    const a = chat('a');
    const b = chat('b');
    assert.equal((await post(server.url, '/chat/completions', a)).status, 500);
    assert.equal((await post(server.url, '/chat/completions', b)).status, 500);
    const second = await post(server.url, '/chat/completions', a);
    assert.equal(second.status, 503);
    assert.equal(second.body.error.type, 'server_error');
    assert.equal((await post(server.url, '/chat/completions', a)).status, 200);
    assert.equal((await post(server.url, '/chat/completions', a)).status, 200);
    assert.equal((await post(server.url, '/chat/completions', b)).status, 503);
    assert.equal((await post(server.url, '/chat/completions', b)).status, 200);
    assert.equal(server.stats.byBody.get(canonicalBodyKey(a)), 4);
    assert.equal(server.stats.byBody.get(canonicalBodyKey(b)), 3);
    assert.deepEqual(server.stats.byStatus, { 500: 2, 503: 2, 200: 3 });
  });

  test('rate-limit: every Nth request gets 429 with retry-after-ms', async () => {
    const server = await upstream({ kind: 'rate-limit', rateLimitEvery: 3, retryAfterMs: 1500 });
    const statuses: number[] = [];
    for (let n = 0; n < 6; n += 1) {
      const response = await post(server.url, '/embeddings', { model: 'echo', input: 'x' });
      statuses.push(response.status);
      if (response.status === 429) {
        assert.equal(response.headers.get('retry-after-ms'), '1500');
        assert.equal(response.headers.get('retry-after'), '2');
        assert.equal(response.body.error.code, 'rate_limit_exceeded');
      }
    }
    assert.deepEqual(statuses, [200, 200, 429, 200, 200, 429]);
    assert.deepEqual(server.stats.byStatus, { 200: 4, 429: 2 });
  });

  test('capacity: concurrent requests above the capacity get 429', async () => {
    const server = await upstream({ kind: 'capacity', capacity: 2, delayMs: 200, retryAfterMs: 25 });
    const responses = await Promise.all([1, 2, 3, 4, 5].map((n) => post(server.url, '/embeddings', { model: 'echo', input: `x${n}` })));
    const statuses = responses.map((response) => response.status).sort();
    assert.deepEqual(statuses, [200, 200, 429, 429, 429]);
    for (const response of responses.filter((r) => r.status === 429)) assert.equal(response.headers.get('retry-after-ms'), '25');
    // Once those finished there is room again.
    assert.equal((await post(server.url, '/embeddings', { model: 'echo', input: 'again' })).status, 200);
  });

  test('bad-request: model "bad" gets a 400 envelope, others are answered', async () => {
    const server = await upstream({ kind: 'bad-request' });
    const bad = await post(server.url, '/chat/completions', chat('x', 'bad'));
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.type, 'invalid_request_error');
    assert.equal(typeof bad.body.error.message, 'string');
    assert.equal((await post(server.url, '/chat/completions', chat('x'))).status, 200);
  });

  test('reset: every other request has its socket destroyed', async () => {
    const server = await upstream({ kind: 'reset' });
    await assert.rejects(post(server.url, '/embeddings', { model: 'echo', input: 'x' }));
    assert.equal((await post(server.url, '/embeddings', { model: 'echo', input: 'x' })).status, 200);
    await assert.rejects(post(server.url, '/embeddings', { model: 'echo', input: 'x' }));
    assert.equal((await post(server.url, '/embeddings', { model: 'echo', input: 'x' })).status, 200);
    assert.equal(server.stats.requests, 4);
    assert.deepEqual(server.stats.byStatus, { 200: 2 });
    assert.equal(server.stats.inFlight, 0);
  });

  test('hang: never answers, and close() ends the hanging requests', async () => {
    const server = await startUpstream({ kind: 'hang' });
    const pending = post(server.url, '/embeddings', { model: 'echo', input: 'x' });
    const settled = pending.then(
      () => 'answered',
      () => 'failed',
    );
    while (server.stats.inFlight === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    const early = await Promise.race([settled, new Promise((resolve) => setTimeout(() => resolve('pending'), 100))]);
    assert.equal(early, 'pending');
    assert.equal(server.stats.bodies.length, 1);
    await server.close();
    assert.equal(await settled, 'failed');
    assert.equal(server.stats.inFlight, 0);
    await server.close(); // idempotent
  });

  test('close() also cuts a slow answer short and frees the port', async () => {
    const server = await startUpstream({ kind: 'slow', delayMs: 60_000 });
    const pending = post(server.url, '/embeddings', { model: 'echo', input: 'x' }).then(
      () => 'answered',
      () => 'failed',
    );
    while (server.stats.inFlight === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    await server.close();
    assert.equal(await pending, 'failed');
    await assert.rejects(fetch(`${server.url}/models`));
  });
});
