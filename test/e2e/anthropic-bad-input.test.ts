// Bad Message Batches creates and Messages requests, over real HTTP: each gets
// Anthropic's envelope {"type": "error", "error": {"type", "message"}} with the
// right status and a message naming the offending request index, and nothing
// of a refused create is left behind (no batch, no file, no blob).
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { call, listFilesRecursive, removeAllTempDirs, startTestSpool, type ApiCall, type TestSpool } from '../helpers/spool.ts';

const MAX_REQUESTS = 5;
const MAX_BYTES = 64 * 1024;

let spool: TestSpool;
let key: string;

before(async () => {
  spool = await startTestSpool({ config: { messageBatches: { maxRequests: MAX_REQUESTS, maxBytes: MAX_BYTES } } });
  key = await spool.keyFor('anthropic-bad-input');
});

after(async () => {
  await spool?.stop();
  removeAllTempDirs();
});

const params = (text = 'hi', extra: Record<string, unknown> = {}) => ({ model: 'echo', max_tokens: 16, messages: [{ role: 'user', content: text }], ...extra });

function post(path: string, body: string | object, headers: Record<string, string> = {}): Promise<ApiCall> {
  return call(`${spool.url}${path}`, {
    method: 'POST',
    headers: { 'x-api-key': key, 'anthropic-version': '2023-06-01', 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    key: null,
  });
}

/** Anthropic's envelope, exactly: two keys at the top, two inside. */
function assertAnthropicError(res: ApiCall, status: number, type: string, message: RegExp): void {
  assert.equal(res.status, status, res.text);
  assert.deepEqual(Object.keys(res.json).sort(), ['error', 'type']);
  assert.equal(res.json.type, 'error');
  assert.deepEqual(Object.keys(res.json.error).sort(), ['message', 'type']);
  assert.equal(res.json.error.type, type);
  assert.match(res.json.error.message, message);
}

async function assertNothingStored(): Promise<void> {
  const batches = await call(`${spool.url}/v1/messages/batches`, { headers: { 'x-api-key': key }, key: null });
  assert.deepEqual(batches.json.data, []);
  const files = await call(`${spool.url}/openai/v1/files`, { key });
  assert.deepEqual(files.json.data, []);
  // Temporary .part files of an interrupted write included.
  const blobs = listFilesRecursive(join(spool.dataDir, 'blobs'));
  assert.deepEqual(blobs, [], `blobs left behind: ${blobs.join(', ')}`);
}

describe('Message Batches create refuses bad input with Anthropic errors naming the request', () => {
  it('more requests than the limit: 413 request_too_large', async () => {
    const requests = Array.from({ length: MAX_REQUESTS + 1 }, (_, i) => ({ custom_id: `r${i}`, params: params() }));
    assertAnthropicError(await post('/v1/messages/batches', { requests }), 413, 'request_too_large', new RegExp(`at most ${MAX_REQUESTS} requests`));
  });

  it('a body over the byte limit: 413 request_too_large', async () => {
    const requests = [{ custom_id: 'big', params: params('x'.repeat(MAX_BYTES)) }];
    assertAnthropicError(await post('/v1/messages/batches', { requests }), 413, 'request_too_large', new RegExp(`larger than ${MAX_BYTES} bytes`));
  });

  for (const [what, customId] of [
    ['empty', ''],
    ['with a space', 'has space'],
    ['with a slash', 'a/b'],
    ['65 characters', 'x'.repeat(65)],
    ['a number', 7],
    ['missing', undefined],
  ] as const) {
    it(`a custom_id ${what}: 400 naming requests.1.custom_id`, async () => {
      const requests = [{ custom_id: 'fine', params: params() }, { custom_id: customId, params: params() }];
      assertAnthropicError(await post('/v1/messages/batches', { requests }), 400, 'invalid_request_error', /^requests\.1\.custom_id: must be 1 to 64 letters, digits, "_" or "-"/);
    });
  }

  it('a duplicate custom_id: 400 naming both requests', async () => {
    const requests = [{ custom_id: 'a', params: params() }, { custom_id: 'b', params: params() }, { custom_id: 'a', params: params() }];
    assertAnthropicError(await post('/v1/messages/batches', { requests }), 400, 'invalid_request_error', /^requests\.2\.custom_id: "a" is already used by requests\.0/);
  });

  it('a streaming request: 400 saying streaming is not supported', async () => {
    const requests = [{ custom_id: 'a', params: params() }, { custom_id: 'b', params: params('hi', { stream: true }) }];
    assertAnthropicError(await post('/v1/messages/batches', { requests }), 400, 'invalid_request_error', /^requests\.1\.params\.stream: streaming is not supported/);
  });

  it('an unknown model: 400 naming the request and the model', async () => {
    const requests = [{ custom_id: 'a', params: params() }, { custom_id: 'b', params: { ...params(), model: 'no-such-model' } }];
    assertAnthropicError(await post('/v1/messages/batches', { requests }), 400, 'invalid_request_error', /^requests\.1\.params\.model: no model named "no-such-model" is served here/);
  });

  it('extended thinking, a document block, a server tool, a missing max_tokens: 400 each, saying what', async () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [params('hi', { thinking: { type: 'enabled', budget_tokens: 1024 } }), /params\.thinking: extended thinking is not supported/],
      [{ ...params(), messages: [{ role: 'user', content: [{ type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'x' } }] }] }, /params\.messages\.0\.content\.0\.type: content blocks of type "document" are not supported/],
      [params('hi', { tools: [{ type: 'web_search_20250305', name: 'web_search' }] }), /params\.tools\.0\.type: server tools/],
      [{ model: 'echo', messages: [{ role: 'user', content: 'x' }] }, /params\.max_tokens: is required/],
    ];
    for (const [bad, message] of cases) {
      const res = await post('/v1/messages/batches', { requests: [{ custom_id: 'ok', params: params() }, { custom_id: 'bad', params: bad }] });
      assertAnthropicError(res, 400, 'invalid_request_error', message);
      assert.match(res.json.error.message, /^requests\.1\./);
    }
  });

  it('a body that is not the expected JSON: 400 saying what to send', async () => {
    assertAnthropicError(await post('/v1/messages/batches', '{"requests": [{"custom_id": "a", "params": '), 400, 'invalid_request_error', /ends before its JSON does/);
    assertAnthropicError(await post('/v1/messages/batches', '{"requests": [}'), 400, 'invalid_request_error', /not valid JSON/);
    assertAnthropicError(await post('/v1/messages/batches', '[1, 2]'), 400, 'invalid_request_error', /must be a JSON object/);
    assertAnthropicError(await post('/v1/messages/batches', { requests: [] }), 400, 'invalid_request_error', /requests: is required/);
    assertAnthropicError(await post('/v1/messages/batches', { requests: { a: { custom_id: 'a', params: params() } } }), 400, 'invalid_request_error', /requests: must be an array/);
    assertAnthropicError(await post('/v1/messages/batches', { requests: ['nope'] }), 400, 'invalid_request_error', /^requests\.0: must be an object/);
  });

  it('nothing of any refused create was stored', async () => {
    await assertNothingStored();
  });
});

describe('keys, unknown batches and the SDK', () => {
  it('no key or a wrong key: 401 authentication_error; a bearer key works as well as x-api-key', async () => {
    const none = await call(`${spool.url}/v1/messages/batches`, { key: null });
    assertAnthropicError(none, 401, 'authentication_error', /Missing API key/);
    const wrong = await call(`${spool.url}/v1/messages/batches`, { headers: { 'x-api-key': 'spool_wrong' }, key: null });
    assertAnthropicError(wrong, 401, 'authentication_error', /not valid/);
    const bearer = await call(`${spool.url}/v1/messages/batches`, { key });
    assert.equal(bearer.status, 200, bearer.text);
  });

  it('an unknown batch or route: 404 not_found_error', async () => {
    const res = await call(`${spool.url}/v1/messages/batches/msgbatch_nope`, { headers: { 'x-api-key': key }, key: null });
    assertAnthropicError(res, 404, 'not_found_error', /No message batch found with id 'msgbatch_nope'/);
    const route = await call(`${spool.url}/v1/messages/nothing-here`, { headers: { 'x-api-key': key }, key: null });
    assertAnthropicError(route, 404, 'not_found_error', /No route/);
  });

  it('the SDK reads the refusals as its own error classes', async () => {
    const client = new Anthropic({ apiKey: key, baseURL: spool.url, maxRetries: 0 });
    await assert.rejects(
      client.messages.batches.create({ requests: [{ custom_id: 'a b', params: params() as Anthropic.MessageCreateParamsNonStreaming }] }),
      (err: unknown) => err instanceof Anthropic.BadRequestError && /requests\.0\.custom_id/.test(err.message),
    );
    await assert.rejects(
      client.messages.batches.create({ requests: Array.from({ length: MAX_REQUESTS + 1 }, (_, i) => ({ custom_id: `r${i}`, params: params() as Anthropic.MessageCreateParamsNonStreaming })) }),
      (err: unknown) => err instanceof Anthropic.APIError && err.status === 413,
    );
    await assert.rejects(new Anthropic({ apiKey: 'spool_wrong', baseURL: spool.url, maxRetries: 0 }).messages.batches.list(), Anthropic.AuthenticationError);
    await assertNothingStored();
  });

  it('a real-time request with bad params: 400 naming the field', async () => {
    const res = await post('/v1/messages', { model: 'echo', max_tokens: 0, messages: [] });
    assertAnthropicError(res, 400, 'invalid_request_error', /^max_tokens: is required: a positive integer/);
    assert.deepEqual(readdirSync(spool.dataDir).includes('blobs') ? listFilesRecursive(join(spool.dataDir, 'blobs')) : [], []);
  });
});
