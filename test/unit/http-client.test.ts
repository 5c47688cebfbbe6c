import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import {
  createEchoUpstreamClient,
  createHttpUpstreamClient,
  joinUpstreamUrl,
  type UpstreamClient,
  type UpstreamOutcome,
} from '../../src/upstreams/http-client.ts';
import { startUpstream, type MultipartRecord, type TestUpstream, type UpstreamOptions } from '../helpers/upstreams.ts';

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  await Promise.all(cleanups.map((cleanup) => cleanup()));
});

async function upstream(options?: UpstreamOptions): Promise<TestUpstream> {
  const started = await startUpstream(options);
  cleanups.push(() => started.close());
  return started;
}

function client(baseUrl: string, extra: { apiKey?: string; maxConnections?: number; maxResponseBytes?: number } = {}): UpstreamClient {
  const created = createHttpUpstreamClient({ name: 'test', baseUrl, maxConnections: extra.maxConnections ?? 4, ...extra });
  cleanups.push(() => created.close());
  return created;
}

/** A bare server answering with `handler`, for headers and bodies the emulator never sends. */
async function customServer(handler: (req: IncomingMessage, res: ServerResponse, body: string) => void): Promise<string> {
  const server = createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    handler(req, res, body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
}

const chat = (content: string, model = 'echo') => ({ model, messages: [{ role: 'user', content }] });

function asResponse(outcome: UpstreamOutcome) {
  assert.equal(outcome.kind, 'response', `expected a response, got ${JSON.stringify(outcome)}`);
  return outcome as Extract<UpstreamOutcome, { kind: 'response' }>;
}

describe('joinUpstreamUrl', () => {
  test('joins with or without /v1 in the base URL', () => {
    assert.equal(joinUpstreamUrl('http://h:1/v1', '/v1/embeddings'), 'http://h:1/v1/embeddings');
    assert.equal(joinUpstreamUrl('http://h:1/v1/', '/v1/embeddings'), 'http://h:1/v1/embeddings');
    assert.equal(joinUpstreamUrl('http://h:1', '/v1/embeddings'), 'http://h:1/v1/embeddings');
    assert.equal(joinUpstreamUrl('http://h:1/', '/v1/embeddings'), 'http://h:1/v1/embeddings');
    assert.equal(joinUpstreamUrl('http://h:1/openai/v1', '/v1/chat/completions'), 'http://h:1/openai/v1/chat/completions');
    assert.equal(joinUpstreamUrl('http://h:1/openai', '/v1/chat/completions'), 'http://h:1/openai/v1/chat/completions');
    assert.equal(joinUpstreamUrl('https://h/v1', '/v1/audio/transcriptions'), 'https://h/v1/audio/transcriptions');
  });
});

describe('createHttpUpstreamClient', () => {
  test('JSON success: status, parsed body, request id from x-request-id', async () => {
    const server = await upstream();
    const upstreamClient = client(server.url);
    assert.equal(upstreamClient.name, 'test');
    const response = asResponse(await upstreamClient.send({ endpoint: '/v1/chat/completions', body: chat('hi there'), timeoutMs: 5000 }));
    assert.equal(response.status, 200);
    assert.equal((response.body as any).choices[0].message.content, 'hi there');
    assert.equal(response.requestId, 'req_test_1');
    assert.equal(response.retryAfterMs, null);
    assert.deepEqual(server.stats.bodies, [chat('hi there')]);

    const embedding = asResponse(await upstreamClient.send({ endpoint: '/v1/embeddings', body: { model: 'echo', input: 'x' }, timeoutMs: 5000 }));
    assert.equal(embedding.status, 200);
    assert.equal((embedding.body as any).data[0].embedding.length, 64);
  });

  test('base URL without /v1 reaches the same endpoints', async () => {
    const server = await upstream();
    const upstreamClient = client(server.url.replace(/\/v1$/, ''));
    const response = asResponse(await upstreamClient.send({ endpoint: '/v1/completions', body: { model: 'echo', prompt: 'abc' }, timeoutMs: 5000 }));
    assert.equal(response.status, 200);
    assert.equal((response.body as any).object, 'text_completion');
  });

  test('sends headers: content type, user agent, bearer key', async () => {
    let seen: IncomingMessage['headers'] = {};
    const url = await customServer((req, res) => {
      seen = req.headers;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
    asResponse(await client(url, { apiKey: 'sk-secret' }).send({ endpoint: '/v1/embeddings', body: { input: 'x' }, timeoutMs: 5000 }));
    assert.equal(seen.authorization, 'Bearer sk-secret');
    assert.equal(seen['content-type'], 'application/json');
    assert.equal(seen['user-agent'], 'spool/0.1');

    asResponse(await client(url).send({ endpoint: '/v1/embeddings', body: { input: 'x' }, timeoutMs: 5000 }));
    assert.equal(seen.authorization, undefined);
  });

  test('an upstream that requires a key accepts the bearer and rejects its absence', async () => {
    const server = await upstream({ apiKey: 'sk-upstream' });
    const call = { endpoint: '/v1/embeddings', body: { model: 'echo', input: 'x' }, timeoutMs: 5000 };
    assert.equal(asResponse(await client(server.url, { apiKey: 'sk-upstream' }).send(call)).status, 200);
    const denied = asResponse(await client(server.url).send(call));
    assert.equal(denied.status, 401);
    assert.equal((denied.body as any).error.code, 'invalid_api_key');
  });

  test('request id falls back to the body id', async () => {
    const url = await customServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: 'chatcmpl-xyz', object: 'chat.completion' }));
    });
    const response = asResponse(await client(url).send({ endpoint: '/v1/chat/completions', body: chat('x'), timeoutMs: 5000 }));
    assert.equal(response.requestId, 'chatcmpl-xyz');
  });

  test('429 carries retry-after-ms', async () => {
    const server = await upstream({ kind: 'rate-limit', rateLimitEvery: 1, retryAfterMs: 1234 });
    const response = asResponse(await client(server.url).send({ endpoint: '/v1/embeddings', body: { model: 'echo', input: 'x' }, timeoutMs: 5000 }));
    assert.equal(response.status, 429);
    assert.equal(response.retryAfterMs, 1234);
    assert.equal((response.body as any).error.code, 'rate_limit_exceeded');
  });

  test('retry-after in seconds and as an HTTP date', async () => {
    let header: Record<string, string> = {};
    const url = await customServer((_req, res) => {
      res.writeHead(429, { 'content-type': 'application/json', ...header }).end('{"error":{"message":"slow down"}}');
    });
    const upstreamClient = client(url);
    const call = { endpoint: '/v1/embeddings', body: { input: 'x' }, timeoutMs: 5000 };

    header = { 'retry-after': '7' };
    assert.equal(asResponse(await upstreamClient.send(call)).retryAfterMs, 7000);

    header = { 'retry-after': '7', 'retry-after-ms': '250' };
    assert.equal(asResponse(await upstreamClient.send(call)).retryAfterMs, 250);

    header = { 'retry-after': new Date(Date.now() + 60_000).toUTCString() };
    const fromDate = asResponse(await upstreamClient.send(call)).retryAfterMs;
    assert.ok(fromDate !== null && fromDate > 50_000 && fromDate <= 60_000, `got ${fromDate}`);

    header = { 'retry-after': new Date(Date.now() - 60_000).toUTCString() };
    assert.equal(asResponse(await upstreamClient.send(call)).retryAfterMs, 0);

    header = { 'retry-after': 'soon' };
    assert.equal(asResponse(await upstreamClient.send(call)).retryAfterMs, null);
  });

  test('500 and 503 are responses, not failures', async () => {
    const server = await upstream({ kind: 'fail-then-succeed', failuresPerRequest: 2 });
    const upstreamClient = client(server.url);
    const call = { endpoint: '/v1/chat/completions', body: chat('retry me'), timeoutMs: 5000 };
    const first = asResponse(await upstreamClient.send(call));
    assert.equal(first.status, 500);
    assert.equal((first.body as any).error.type, 'server_error');
    assert.equal(asResponse(await upstreamClient.send(call)).status, 503);
    assert.equal(asResponse(await upstreamClient.send(call)).status, 200);
  });

  test('400 and 404 envelopes come back as they are', async () => {
    const server = await upstream({ kind: 'bad-request' });
    const upstreamClient = client(server.url);
    const bad = asResponse(await upstreamClient.send({ endpoint: '/v1/chat/completions', body: chat('x', 'bad'), timeoutMs: 5000 }));
    assert.equal(bad.status, 400);
    const missing = asResponse(await upstreamClient.send({ endpoint: '/v1/chat/completions', body: chat('x', 'missing'), timeoutMs: 5000 }));
    assert.equal(missing.status, 404);
    assert.deepEqual(missing.body, {
      error: { message: 'The model `missing` does not exist.', type: 'invalid_request_error', code: 'model_not_found' },
    });
  });

  test('a hanging upstream times out', async () => {
    const server = await upstream({ kind: 'hang' });
    const outcome = await client(server.url).send({ endpoint: '/v1/embeddings', body: { model: 'echo', input: 'x' }, timeoutMs: 200 });
    assert.equal(outcome.kind, 'timeout');
  });

  test('the timeout covers the body too', async () => {
    const url = await customServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"partial":'); // and never the rest
    });
    const outcome = await client(url).send({ endpoint: '/v1/embeddings', body: { input: 'x' }, timeoutMs: 200 });
    assert.equal(outcome.kind, 'timeout');
  });

  test("the caller's signal aborts the request", async () => {
    const server = await upstream({ kind: 'hang' });
    const upstreamClient = client(server.url);
    const controller = new AbortController();
    const pending = upstreamClient.send({
      endpoint: '/v1/embeddings',
      body: { model: 'echo', input: 'x' },
      timeoutMs: 60_000,
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(), 50);
    assert.deepEqual(await pending, { kind: 'network_error', message: 'aborted' });

    const already = AbortSignal.abort();
    assert.deepEqual(await upstreamClient.send({ endpoint: '/v1/embeddings', body: {}, timeoutMs: 1000, signal: already }), {
      kind: 'network_error',
      message: 'aborted',
    });
  });

  test('a reset connection is a network_error; the next request succeeds', async () => {
    const server = await upstream({ kind: 'reset' });
    const upstreamClient = client(server.url);
    const call = { endpoint: '/v1/embeddings', body: { model: 'echo', input: 'x' }, timeoutMs: 5000 };
    const first = await upstreamClient.send(call);
    assert.equal(first.kind, 'network_error');
    assert.equal(asResponse(await upstreamClient.send(call)).status, 200);
  });

  test('a closed port is a network_error', async () => {
    const server = await startUpstream();
    const url = server.url;
    await server.close();
    const outcome = await client(url).send({ endpoint: '/v1/embeddings', body: { model: 'echo', input: 'x' }, timeoutMs: 5000 });
    assert.equal(outcome.kind, 'network_error');
    assert.match((outcome as { message: string }).message, /ECONNREFUSED/);
  });

  test('a response over the size cap is a network_error', async () => {
    const url = await customServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ data: 'x'.repeat(10_000) }));
    });
    const outcome = await client(url, { maxResponseBytes: 1000 }).send({ endpoint: '/v1/embeddings', body: {}, timeoutMs: 5000 });
    assert.equal(outcome.kind, 'network_error');
    assert.match((outcome as { message: string }).message, /response too large/);

    const chunked = await customServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }); // no content-length: chunked
      for (let n = 0; n < 10; n += 1) res.write('x'.repeat(500));
      res.end();
    });
    const streamed = await client(chunked, { maxResponseBytes: 1000 }).send({ endpoint: '/v1/embeddings', body: {}, timeoutMs: 5000 });
    assert.equal(streamed.kind, 'network_error');
    assert.match((streamed as { message: string }).message, /response too large/);
  });

  test('a non-JSON body comes back as text', async () => {
    const url = await customServer((_req, res) => {
      res.writeHead(502, { 'content-type': 'text/html' }).end('<html>bad gateway</html>');
    });
    const response = asResponse(await client(url).send({ endpoint: '/v1/embeddings', body: {}, timeoutMs: 5000 }));
    assert.equal(response.status, 502);
    assert.equal(response.body, '<html>bad gateway</html>');
    assert.equal(response.requestId, null);
  });

  test('audio: multipart round trip with fields, repeated fields and the file', async () => {
    const server = await upstream();
    const upstreamClient = client(server.url);
    const bytes = new Uint8Array(32_000).map((_, index) => (index * 7) % 256);
    const response = asResponse(
      await upstreamClient.send({
        endpoint: '/v1/audio/transcriptions',
        body: {
          model: 'whisper-1',
          language: 'fr',
          response_format: 'verbose_json',
          temperature: 0.2,
          timestamp_granularities: ['word', 'segment'],
          prompt: 'quote " and\nnewline',
          ignored: null,
        },
        audio: { bytes, fileName: 'meeting "final".wav', contentType: 'audio/wav' },
        timeoutMs: 5000,
      }),
    );
    assert.equal(response.status, 200);
    const body = response.body as any;
    assert.equal(body.task, 'transcribe');
    assert.equal(body.language, 'fr');
    assert.equal(body.duration, 1);
    const digest = createHash('sha256').update(bytes).digest('hex');
    assert.ok(body.text.endsWith(`32000 bytes, sha256 prefix ${digest.slice(0, 16)}`), body.text);

    const record = server.stats.bodies[0] as MultipartRecord;
    assert.deepEqual(record.fields, {
      model: 'whisper-1',
      language: 'fr',
      response_format: 'verbose_json',
      temperature: '0.2',
      'timestamp_granularities[]': ['word', 'segment'],
      prompt: 'quote " and\nnewline',
    });
    assert.deepEqual(Buffer.from(record.fileBytes), Buffer.from(bytes));

    const text = asResponse(
      await upstreamClient.send({
        endpoint: '/v1/audio/translations',
        body: { model: 'whisper-1', response_format: 'text' },
        audio: { bytes: new Uint8Array([1, 2, 3]), fileName: 'a.mp3' },
        timeoutMs: 5000,
      }),
    );
    assert.equal(text.status, 200);
    assert.equal(typeof text.body, 'string');
    assert.match(text.body as string, /^echo translation of a\.mp3: 3 bytes/);
  });

  test('many concurrent requests share a bounded pool', async () => {
    const server = await upstream({ kind: 'slow', delayMs: 50 });
    const upstreamClient = client(server.url, { maxConnections: 3 });
    const outcomes = await Promise.all(
      Array.from({ length: 12 }, (_, n) => upstreamClient.send({ endpoint: '/v1/embeddings', body: { model: 'echo', input: `x${n}` }, timeoutMs: 10_000 })),
    );
    assert.ok(outcomes.every((outcome) => outcome.kind === 'response' && outcome.status === 200));
    assert.equal(server.stats.maxInFlight, 3);
  });

  test('send after close is a network_error, close is idempotent', async () => {
    const server = await upstream();
    const upstreamClient = createHttpUpstreamClient({ name: 'x', baseUrl: server.url, maxConnections: 1 });
    asResponse(await upstreamClient.send({ endpoint: '/v1/embeddings', body: { model: 'echo', input: 'x' }, timeoutMs: 5000 }));
    await upstreamClient.close();
    await upstreamClient.close();
    const outcome = await upstreamClient.send({ endpoint: '/v1/embeddings', body: { model: 'echo', input: 'x' }, timeoutMs: 5000 });
    assert.equal(outcome.kind, 'network_error');
  });

  test('close() does not wait forever on a hanging request', async () => {
    const server = await upstream({ kind: 'hang' });
    const upstreamClient = createHttpUpstreamClient({ name: 'x', baseUrl: server.url, maxConnections: 1 });
    const pending = upstreamClient.send({ endpoint: '/v1/embeddings', body: { model: 'echo', input: 'x' }, timeoutMs: 60_000 });
    while (server.stats.inFlight === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    await upstreamClient.close();
    assert.equal((await pending).kind, 'network_error');
  });
});

describe('createEchoUpstreamClient', () => {
  test('answers JSON endpoints in-process', async () => {
    const echo = createEchoUpstreamClient();
    assert.equal(echo.name, 'echo');
    const response = asResponse(await echo.send({ endpoint: '/v1/chat/completions', body: chat('ping'), timeoutMs: 1000 }));
    assert.equal(response.status, 200);
    assert.equal((response.body as any).choices[0].message.content, 'ping');
    assert.match(response.requestId ?? '', /^chatcmpl-/);
    assert.equal(response.retryAfterMs, null);

    const invalid = asResponse(await echo.send({ endpoint: '/v1/embeddings', body: { model: 'echo' }, timeoutMs: 1000 }));
    assert.equal(invalid.status, 400);
    await echo.close();
  });

  test('gives the same answers as the HTTP emulator', async () => {
    const server = await upstream();
    const call = { endpoint: '/v1/embeddings', body: { model: 'echo', input: ['a', 'b'] }, timeoutMs: 5000 };
    const overHttp = asResponse(await client(server.url).send(call));
    const inProcess = asResponse(await createEchoUpstreamClient().send(call));
    assert.deepEqual(inProcess.body, overHttp.body);
  });

  test('answers audio endpoints', async () => {
    const echo = createEchoUpstreamClient();
    const response = asResponse(
      await echo.send({
        endpoint: '/v1/audio/transcriptions',
        body: { model: 'whisper-1', response_format: 'verbose_json', language: 'es', timestamp_granularities: ['word'] },
        audio: { bytes: new Uint8Array(64_000), fileName: 'x.wav' },
        timeoutMs: 1000,
      }),
    );
    assert.equal(response.status, 200);
    assert.equal((response.body as any).language, 'es');
    assert.equal((response.body as any).duration, 2);
  });

  test('honours an aborted signal', async () => {
    const outcome = await createEchoUpstreamClient().send({ endpoint: '/v1/embeddings', body: {}, timeoutMs: 1000, signal: AbortSignal.abort() });
    assert.deepEqual(outcome, { kind: 'network_error', message: 'aborted' });
  });
});
