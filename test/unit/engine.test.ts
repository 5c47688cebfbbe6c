// The embedded llama.cpp engine, end to end through its UpstreamClient, on
// tiny random-weight GGUF models the test writes itself (test/helpers/tiny-gguf.ts):
// no model file from outside the repository is needed. A trained model,
// ../shared/models/stories260K.gguf, is used too when it is present.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { echoJson } from '../../src/upstreams/echo.ts';
import type { UpstreamOutcome } from '../../src/upstreams/http-client.ts';
import { createEngine, EngineLoadError, loadEngineModel, type Engine } from '../../src/upstreams/engine/index.ts';
import { tinyGguf, writeTinyGguf } from '../helpers/tiny-gguf.ts';

// One thread per context: llama.cpp's threads spin-wait on each other, and
// test files run two at a time on a 2-core machine.
const THREADS = 1;
const STORIES = resolve('../shared/models/stories260K.gguf');

type Json = Record<string, any>;

let dir: string;
let engine: Engine;

async function send(endpoint: string, body: Json, options: { timeoutMs?: number; signal?: AbortSignal; on?: Engine } = {}): Promise<UpstreamOutcome> {
  return (options.on ?? engine).client.send({ endpoint, body, timeoutMs: options.timeoutMs ?? 30_000, signal: options.signal });
}

/** The 200 body of a response outcome; fails the test on anything else. */
async function ok(endpoint: string, body: Json, options?: Parameters<typeof send>[2]): Promise<Json> {
  const outcome = await send(endpoint, body, options);
  assert.equal(outcome.kind, 'response', JSON.stringify(outcome));
  if (outcome.kind !== 'response') throw new Error('unreachable');
  assert.equal(outcome.status, 200, JSON.stringify(outcome.body));
  return outcome.body as Json;
}

async function failing(endpoint: string, body: Json, status = 400): Promise<Json['error']> {
  const outcome = await send(endpoint, body);
  assert.equal(outcome.kind, 'response');
  if (outcome.kind !== 'response') throw new Error('unreachable');
  assert.equal(outcome.status, status, JSON.stringify(outcome.body));
  const error = (outcome.body as Json).error;
  assert.deepEqual(Object.keys(error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(typeof error.message, 'string');
  return error;
}

/** The same keys at every level (arrays compared by their first item), values' types aside. */
function assertSameShape(actual: unknown, expected: unknown, path = '$'): void {
  if (Array.isArray(expected)) {
    assert.ok(Array.isArray(actual), `${path} should be an array`);
    if (expected.length > 0 && (actual as unknown[]).length > 0) assertSameShape((actual as unknown[])[0], expected[0], `${path}[0]`);
    return;
  }
  if (typeof expected === 'object' && expected !== null) {
    assert.ok(typeof actual === 'object' && actual !== null, `${path} should be an object`);
    assert.deepEqual(Object.keys(actual as object).sort(), Object.keys(expected).sort(), `keys of ${path}`);
    for (const key of Object.keys(expected)) assertSameShape((actual as Json)[key], (expected as Json)[key], `${path}.${key}`);
    return;
  }
  assert.equal(typeof actual, typeof expected, `type of ${path}`);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'spool-engine-'));
  // 'tiny': ChatML template, never ends on its own. 'tiny-eos': no template, always ends at once.
  await writeTinyGguf(join(dir, 'tiny.gguf'), { seed: 7 });
  await writeTinyGguf(join(dir, 'tiny-eos.gguf'), { seed: 8, eos: 'always', chatTemplate: null });
  engine = await createEngine({
    gpu: false,
    models: [
      { path: join(dir, 'tiny.gguf'), contextSize: 256, sequences: 2, threads: THREADS, embeddings: true },
      { path: join(dir, 'tiny-eos.gguf'), contextSize: 256, sequences: 2, threads: THREADS },
    ],
  });
});

after(async () => {
  await engine?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('engine: loading', () => {
  it('serves each model under its file name, with its chat template or the documented fallback', () => {
    assert.deepEqual(engine.models, ['tiny', 'tiny-eos']);
    assert.equal(engine.maxConcurrency, 8, 'two models with two sequences each, one request running and one waiting per sequence');
    const [tiny, eos] = engine.info;
    assert.deepEqual(tiny.chatTemplate, { source: 'gguf', wrapper: 'ChatML' });
    assert.deepEqual(eos.chatTemplate, { source: 'fallback', wrapper: 'General' });
    assert.equal(tiny.architecture, 'llama');
    assert.equal(tiny.sequences, 2);
    assert.equal(tiny.threads, THREADS);
    assert.ok(tiny.contextSize >= 256);
    assert.equal(tiny.embeddings, true);
    assert.equal(eos.embeddings, false, "a generative model without a pooling type does not embed unless asked");
  });

  it('the tiny GGUF is deterministic for a seed', () => {
    assert.ok(tinyGguf({ seed: 3 }).equals(tinyGguf({ seed: 3 })));
    assert.ok(!tinyGguf({ seed: 3 }).equals(tinyGguf({ seed: 4 })));
  });

  it('fails fast with a one-line reason for a missing file, a directory, a non-GGUF file and a broken GGUF', async () => {
    const text = join(dir, 'notes.gguf');
    await writeFile(text, 'these are not weights\n');
    const truncated = join(dir, 'truncated.gguf');
    await writeFile(truncated, tinyGguf().subarray(0, 4000));
    const folder = join(dir, 'folder.gguf');
    await mkdir(folder, { recursive: true });
    const cases: [string, string, RegExp][] = [
      [join(dir, 'missing.gguf'), 'NOT_FOUND', /model file not found: .*missing\.gguf/],
      [folder, 'NOT_A_FILE', /not a file/],
      [text, 'NOT_GGUF', /not a GGUF model file/],
      [truncated, 'LOAD_FAILED', /cannot load model .*truncated\.gguf/],
    ];
    for (const [path, code, message] of cases) {
      await assert.rejects(loadEngineModel({ path, gpu: false, threads: THREADS }), (error: unknown) => {
        assert.ok(error instanceof EngineLoadError, String(error));
        assert.equal(error.code, code);
        assert.match(error.message, message);
        assert.ok(!error.message.includes('\n'), 'one line');
        return true;
      });
    }
  });

  it('rejects bad options and duplicate names before loading anything', async () => {
    const path = join(dir, 'tiny.gguf');
    await assert.rejects(loadEngineModel({ path, sequences: 0 }), { name: 'EngineLoadError', code: 'INVALID_OPTIONS' });
    await assert.rejects(loadEngineModel({ path, contextSize: 2.5 }), { code: 'INVALID_OPTIONS' });
    await assert.rejects(createEngine({ models: [{ path }, { path, contextSize: 128 }] }), { code: 'INVALID_OPTIONS', message: /two models are named tiny/ });
    await assert.rejects(createEngine({ models: [] }), { code: 'INVALID_OPTIONS' });
  });
});

describe('engine: /v1/completions', () => {
  it('answers in the same shape as the echo model, with real usage', async () => {
    const request = { model: 'tiny', prompt: 'the cat', max_tokens: 5, temperature: 0 };
    const body = await ok('/v1/completions', request);
    assertSameShape(body, echoJson('/v1/completions', request).body);
    assert.equal(body.object, 'text_completion');
    assert.match(body.id, /^cmpl-/);
    assert.equal(body.model, 'tiny');
    assert.equal(body.choices.length, 1);
    assert.equal(body.choices[0].finish_reason, 'length');
    assert.ok(body.choices[0].text.length > 0);
    // <s> ▁the ▁cat: BOS plus one token per known word.
    assert.deepEqual(body.usage, { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 });
  });

  it("defaults max_tokens to 16, as OpenAI's completions endpoint does", async () => {
    const body = await ok('/v1/completions', { model: 'tiny', prompt: 'the cat', temperature: 0 });
    assert.equal(body.usage.completion_tokens, 16);
    assert.equal(body.choices[0].finish_reason, 'length');
  });

  it('is deterministic at temperature 0, and for a seed at temperature 1', async () => {
    const greedy = { model: 'tiny', prompt: 'once upon a time', max_tokens: 12, temperature: 0 };
    assert.equal((await ok('/v1/completions', greedy)).choices[0].text, (await ok('/v1/completions', greedy)).choices[0].text);

    const seeded = (seed: number) => ok('/v1/completions', { model: 'tiny', prompt: 'once upon a time', max_tokens: 20, temperature: 1, seed });
    const first = (await seeded(42)).choices[0].text;
    assert.equal((await seeded(42)).choices[0].text, first);
    assert.notEqual((await seeded(43)).choices[0].text, first);
  });

  it('ends at a stop sequence, leaving it out, with finish_reason stop', async () => {
    const request = { model: 'tiny', prompt: 'the dog', max_tokens: 24, temperature: 0 };
    const full = (await ok('/v1/completions', request)).choices[0].text as string;
    // A stop sequence from the middle of what the model says anyway.
    const words = full.trim().split(/\s+/);
    assert.ok(words.length >= 3, `enough words to cut: ${JSON.stringify(full)}`);
    const stop = ` ${words[Math.floor(words.length / 2)]}`;
    const cut = full.indexOf(stop);
    assert.ok(cut > 0);
    const stopped = await ok('/v1/completions', { ...request, stop: [stop, 'never-generated'] });
    assert.equal(stopped.choices[0].text, full.slice(0, cut));
    assert.equal(stopped.choices[0].finish_reason, 'stop');
    assert.ok(stopped.usage.completion_tokens < 24);
    assert.equal(stopped.usage.total_tokens, stopped.usage.prompt_tokens + stopped.usage.completion_tokens);
  });

  it('ends at end-of-sequence with finish_reason stop and counts that token', async () => {
    const body = await ok('/v1/completions', { model: 'tiny-eos', prompt: 'the cat', max_tokens: 10 });
    assert.equal(body.choices[0].text, '');
    assert.equal(body.choices[0].finish_reason, 'stop');
    assert.deepEqual(body.usage, { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 });
  });

  it('answers n choices per prompt, prompt-major, each seeded on its own', async () => {
    const body = await ok('/v1/completions', { model: 'tiny', prompt: ['the cat', 'a big red ball'], n: 2, max_tokens: 6, temperature: 1, seed: 9 });
    assert.deepEqual(body.choices.map((choice: Json) => choice.index), [0, 1, 2, 3]);
    assert.ok(body.choices.every((choice: Json) => choice.finish_reason === 'length'));
    assert.notEqual(body.choices[0].text, body.choices[1].text, 'choices of one prompt differ');
    // <s> ▁the ▁cat + <s> ▁a ▁big ▁red ▁ball
    assert.deepEqual(body.usage, { prompt_tokens: 3 + 5, completion_tokens: 4 * 6, total_tokens: 8 + 24 });
    const again = await ok('/v1/completions', { model: 'tiny', prompt: ['the cat', 'a big red ball'], n: 2, max_tokens: 6, temperature: 1, seed: 9 });
    assert.deepEqual(again.choices.map((choice: Json) => choice.text), body.choices.map((choice: Json) => choice.text));
  });

  it('takes token-id prompts as they are, and echoes the prompt when asked', async () => {
    const body = await ok('/v1/completions', { model: 'tiny', prompt: [1, 300, 301, 302], max_tokens: 3, temperature: 0 });
    assert.equal(body.usage.prompt_tokens, 4);
    const echoed = await ok('/v1/completions', { model: 'tiny', prompt: 'the cat', max_tokens: 3, temperature: 0, echo: true });
    const plain = await ok('/v1/completions', { model: 'tiny', prompt: 'the cat', max_tokens: 3, temperature: 0 });
    assert.equal(echoed.choices[0].text, `the cat${plain.choices[0].text}`);
  });

  it('honours logit_bias and the repetition penalties', async () => {
    const request = { model: 'tiny', prompt: 'the cat', max_tokens: 8, temperature: 0 };
    // +100 on one token makes it the only choice: eight times the same piece.
    const biased = (await ok('/v1/completions', { ...request, logit_bias: { 600: 100 } })).choices[0].text;
    assert.match(biased, /^(.+)\1{7}$/s);
    const plain = (await ok('/v1/completions', request)).choices[0].text;
    const penalised = (await ok('/v1/completions', { ...request, presence_penalty: 2, frequency_penalty: 2 })).choices[0].text;
    assert.notEqual(penalised, plain, 'penalties change a greedy answer that repeats itself');
  });

  it('stops at the end of the context with finish_reason length', async () => {
    const contextSize = engine.info[0].contextSize;
    const prompt = Array.from({ length: contextSize - 4 }, (_, index) => 300 + (index % 300));
    const body = await ok('/v1/completions', { model: 'tiny', prompt, max_tokens: 50, temperature: 0 });
    assert.equal(body.choices[0].finish_reason, 'length');
    assert.equal(body.usage.completion_tokens, 4);
  });
});

describe('engine: /v1/chat/completions', () => {
  it("answers in the echo model's shape, counting the template's tokens as the prompt", async () => {
    const request = { model: 'tiny', messages: [{ role: 'system', content: 'be nice' }, { role: 'user', content: 'the cat' }], max_tokens: 4, temperature: 0 };
    const body = await ok('/v1/chat/completions', request);
    assertSameShape(body, echoJson('/v1/chat/completions', request).body);
    assert.equal(body.object, 'chat.completion');
    assert.match(body.id, /^chatcmpl-/);
    assert.equal(body.choices[0].message.role, 'assistant');
    assert.equal(typeof body.choices[0].message.content, 'string');
    assert.equal(body.choices[0].finish_reason, 'length');

    // The ChatML prompt, tokenized by the completions endpoint (special tokens read as such) must count the same.
    const chatml = '<|im_start|>system\nbe nice<|im_end|>\n<|im_start|>user\nthe cat<|im_end|>\n<|im_start|>assistant\n';
    const raw = await ok('/v1/completions', { model: 'tiny', prompt: chatml, max_tokens: 4, temperature: 0 });
    assert.equal(body.usage.prompt_tokens, raw.usage.prompt_tokens);
    assert.equal(body.choices[0].message.content, raw.choices[0].text, 'the same prompt gives the same greedy answer');
    assert.deepEqual(body.usage, { prompt_tokens: raw.usage.prompt_tokens, completion_tokens: 4, total_tokens: raw.usage.prompt_tokens + 4 });
  });

  it('is deterministic for a seed, and honours max_completion_tokens over max_tokens', async () => {
    const request = { model: 'tiny', messages: [{ role: 'user', content: 'hello' }], max_tokens: 50, max_completion_tokens: 7, temperature: 0.9, top_p: 0.9, seed: 1234 };
    const first = await ok('/v1/chat/completions', request);
    const second = await ok('/v1/chat/completions', request);
    assert.equal(first.choices[0].message.content, second.choices[0].message.content);
    assert.equal(first.usage.completion_tokens, 7);
  });

  it('uses the fallback template for a model without one, and stops at end-of-sequence', async () => {
    const body = await ok('/v1/chat/completions', { model: 'tiny-eos', messages: [{ role: 'user', content: [{ type: 'text', text: 'the cat' }] }] });
    assert.equal(body.choices[0].message.content, '');
    assert.equal(body.choices[0].finish_reason, 'stop');
    assert.equal(body.usage.completion_tokens, 1);
    assert.ok(body.usage.prompt_tokens > 3, 'the General template wraps the message');
  });

  it('answers n choices', async () => {
    const body = await ok('/v1/chat/completions', { model: 'tiny', messages: [{ role: 'user', content: 'the cat' }], n: 3, max_tokens: 5, seed: 5 });
    assert.deepEqual(body.choices.map((choice: Json) => choice.index), [0, 1, 2]);
    assert.equal(body.usage.completion_tokens, 15);
  });

  it('rejects what the engine cannot do with a 400, as an OpenAI-compatible server does', async () => {
    const messages = [{ role: 'user', content: 'the cat' }];
    assert.equal((await failing('/v1/chat/completions', { model: 'tiny', messages: [] })).param, 'messages');
    assert.equal((await failing('/v1/chat/completions', { model: 'tiny', messages: [{ role: 'tool', content: 'x', tool_call_id: 'a' }] })).param, 'messages[0].role');
    assert.match(
      (await failing('/v1/chat/completions', { model: 'tiny', messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:' } }] }] })).message,
      /image_url is not supported/,
    );
    assert.equal((await failing('/v1/chat/completions', { model: 'tiny', messages, stream: true })).param, 'stream');
    assert.equal((await failing('/v1/chat/completions', { model: 'tiny', messages, logprobs: true })).param, 'logprobs');
    assert.equal((await failing('/v1/chat/completions', { model: 'tiny', messages, tools: [{ type: 'function', function: { name: 'f' } }] })).param, 'tools');
    assert.equal((await failing('/v1/chat/completions', { model: 'tiny', messages, response_format: { type: 'json_object' } })).param, 'response_format');
    assert.equal((await failing('/v1/chat/completions', { model: 'tiny', messages, temperature: 3 })).param, 'temperature');
    assert.equal((await failing('/v1/chat/completions', { model: 'tiny', messages, top_p: 0 })).param, 'top_p');
    assert.equal((await failing('/v1/chat/completions', { model: 'tiny', messages, n: 9 })).param, 'n');
    assert.equal((await failing('/v1/chat/completions', { model: 'tiny', messages, max_tokens: 0 })).param, 'max_tokens');
    assert.equal((await failing('/v1/chat/completions', { model: 'tiny', messages, seed: 1.5 })).param, 'seed');
    assert.equal((await failing('/v1/chat/completions', { model: 'tiny', messages, stop: [1] })).param, 'stop');
    assert.equal((await failing('/v1/chat/completions', { model: 'tiny', messages, logit_bias: { 99999: 1 } })).param, 'logit_bias');
    // Bookkeeping parameters are ignored.
    await ok('/v1/chat/completions', { model: 'tiny', messages, max_tokens: 1, user: 'u', metadata: { a: 'b' }, store: false, response_format: { type: 'text' } });
  });
});

describe('engine: /v1/embeddings', () => {
  it('embeds each input as a unit vector, in the echo shape, with real usage', async () => {
    const request = { model: 'tiny', input: ['the cat', 'a big red ball', 'the cat'] };
    const body = await ok('/v1/embeddings', request);
    assertSameShape(body, echoJson('/v1/embeddings', request).body);
    assert.equal(body.data.length, 3);
    for (const [index, item] of body.data.entries()) {
      assert.equal(item.index, index);
      assert.equal(item.embedding.length, 64);
      assert.ok(Math.abs(Math.hypot(...item.embedding) - 1) < 1e-6);
    }
    assert.deepEqual(body.data[0].embedding, body.data[2].embedding);
    assert.notDeepEqual(body.data[0].embedding, body.data[1].embedding);
    assert.deepEqual(body.usage, { prompt_tokens: 3 + 5 + 3, total_tokens: 11 });

    const base64 = await ok('/v1/embeddings', { model: 'tiny', input: 'the cat', encoding_format: 'base64' });
    const bytes = Buffer.from(base64.data[0].embedding, 'base64');
    const floats = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    assert.deepEqual([...floats], body.data[0].embedding.map((value: number) => Math.fround(value)));
  });

  it('answers 400 for a model that does not embed, and for bad parameters', async () => {
    assert.match((await failing('/v1/embeddings', { model: 'tiny-eos', input: 'the cat' })).message, /does not support embeddings/);
    assert.equal((await failing('/v1/embeddings', { model: 'tiny', input: 'the cat', dimensions: 8 })).param, 'dimensions');
    assert.equal((await failing('/v1/embeddings', { model: 'tiny', input: '' })).param, 'input');
    assert.equal((await failing('/v1/embeddings', { model: 'tiny', input: 'x', encoding_format: 'int8' })).param, 'encoding_format');
  });
});

describe('engine: the upstream client', () => {
  it('answers 404 for an unknown model and 400 for what it does not serve', async () => {
    const missing = await failing('/v1/completions', { model: 'gpt-4', prompt: 'x' }, 404);
    assert.equal(missing.code, 'model_not_found');
    assert.match((await failing('/v1/completions', { prompt: 'x' })).message, /model is required/);
    assert.match((await failing('/v1/responses', { model: 'tiny', input: 'x' })).message, /does not serve \/v1\/responses/);
    const audio = await engine.client.send({ endpoint: '/v1/audio/transcriptions', body: { model: 'tiny' }, audio: { bytes: new Uint8Array(4), fileName: 'a.wav' }, timeoutMs: 1000 });
    assert.equal(audio.kind === 'response' && audio.status, 400);
    // Endpoints may come with or without /v1.
    await ok('completions', { model: 'tiny', prompt: 'the cat', max_tokens: 1 });
  });

  it('answers 400 for a prompt that leaves no room in the context', async () => {
    const contextSize = engine.info[0].contextSize;
    const error = await failing('/v1/completions', { model: 'tiny', prompt: Array.from({ length: contextSize }, () => 300) });
    assert.equal(error.code, 'context_length_exceeded');
  });

  it('times out, aborts, and is ready for the next request afterwards', async () => {
    const long = { model: 'tiny', prompt: 'the cat', max_tokens: 200, temperature: 1, stop: ['never-generated'] };
    const timedOut = await send('/v1/completions', long, { timeoutMs: 5 });
    assert.equal(timedOut.kind, 'timeout');

    const controller = new AbortController();
    const pending = send('/v1/completions', long, { signal: controller.signal });
    setTimeout(() => controller.abort(), 5);
    const aborted = await pending;
    assert.deepEqual(aborted, { kind: 'network_error', message: 'aborted' });

    const already = new AbortController();
    already.abort();
    assert.equal((await send('/v1/completions', long, { signal: already.signal })).kind, 'network_error');

    // Both sequences came back: two requests at once still run.
    const [a, b] = await Promise.all([ok('/v1/completions', { ...long, max_tokens: 3 }), ok('/v1/completions', { ...long, max_tokens: 3 })]);
    assert.equal(a.usage.completion_tokens + b.usage.completion_tokens, 6);
  });

  it('runs more requests than sequences: they queue for a free sequence and all finish', async () => {
    const bodies = await Promise.all(
      Array.from({ length: 6 }, (_, seed) => ok('/v1/completions', { model: 'tiny', prompt: 'the cat', max_tokens: 20, temperature: 1, seed })),
    );
    assert.ok(bodies.every((body) => body.usage.completion_tokens === 20 && body.choices[0].finish_reason === 'length'));
  });

  it('never throws, whatever it is handed', async () => {
    const outcome = await engine.client.send({ endpoint: '/v1/completions', body: null as unknown as Record<string, unknown>, timeoutMs: 1000 });
    assert.equal(outcome.kind === 'response' && outcome.status, 400);
  });

  it('keeps the event loop free while it generates', async () => {
    const server = createServer((_request, response) => response.end('ok'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    // Probes answered while generation is under way: a generation that held the event loop would let none through.
    let generating = false;
    let answeredDuring = 0;
    let probing = true;
    const probes = (async () => {
      while (probing) {
        await (await fetch(`http://127.0.0.1:${port}/`)).text();
        if (generating) answeredDuring += 1;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
    try {
      generating = true;
      await Promise.all([1, 2].map((seed) => ok('/v1/completions', { model: 'tiny', prompt: 'the cat', max_tokens: 150, temperature: 1, seed })));
      generating = false;
    } finally {
      probing = false;
      await probes;
      server.close();
    }
    assert.ok(answeredDuring > 0, 'HTTP requests were answered while the engine generated');
  });

  it('close() ends requests in flight and refuses new ones', async () => {
    const own = await createEngine({ gpu: false, models: [{ path: join(dir, 'tiny.gguf'), name: 'own', contextSize: 256, sequences: 1, threads: THREADS }] });
    const running = own.client.send({ endpoint: '/v1/completions', body: { model: 'own', prompt: 'the cat', max_tokens: 200, stop: ['never-generated'] }, timeoutMs: 30_000 });
    const queued = own.client.send({ endpoint: '/v1/completions', body: { model: 'own', prompt: 'the cat', max_tokens: 5 }, timeoutMs: 30_000 });
    await new Promise((resolve) => setTimeout(resolve, 5));
    await own.close();
    assert.equal((await running).kind, 'network_error');
    assert.equal((await queued).kind, 'network_error');
    const after = await own.client.send({ endpoint: '/v1/completions', body: { model: 'own', prompt: 'x' }, timeoutMs: 1000 });
    assert.deepEqual(after, { kind: 'network_error', message: 'upstream client engine is closed' });
  });
});

describe('engine: stories260K (a trained model)', { skip: existsSync(STORIES) ? false : `${STORIES} is absent` }, () => {
  let stories: Engine;
  before(async () => {
    stories = await createEngine({ gpu: false, models: [{ path: STORIES, sequences: 4, threads: THREADS }] });
  });
  after(async () => {
    await stories?.close();
  });

  it('continues a story in English in completion mode, several sequences at once', async () => {
    const bodies = await Promise.all(
      [0, 1, 2, 3].map((seed) =>
        ok('/v1/completions', { model: 'stories260K', prompt: 'Once upon a time, there was a little', max_tokens: 60, temperature: seed === 0 ? 0 : 0.7, seed }, { on: stories }),
      ),
    );
    const common = new Set(['the', 'a', 'was', 'she', 'he', 'her', 'his', 'and', 'to', 'they', 'it', 'in', 'with', 'said', 'day', 'one']);
    for (const body of bodies) {
      const text: string = body.choices[0].text;
      const words = text.toLowerCase().match(/[a-z']+/g) ?? [];
      assert.ok(words.length >= 20, `enough words: ${JSON.stringify(text)}`);
      const known = words.filter((word) => common.has(word)).length;
      assert.ok(known / words.length > 0.2, `reads like English: ${JSON.stringify(text)}`);
      assert.equal(body.usage.completion_tokens, 60);
    }
    assert.match(bodies[0].choices[0].text, /\b(girl|boy|dog|cat|bird)\b/);
  });
});

describe('engine: /v1/messages', () => {
  it('answers a Messages request, translated: the greedy answer of the same chat completion, as a message', async () => {
    const chat = await ok('/v1/chat/completions', { model: 'tiny', messages: [{ role: 'system', content: 'be nice' }, { role: 'user', content: 'the cat' }], max_tokens: 4, temperature: 0 });
    const message = await ok('/v1/messages', { model: 'tiny', system: 'be nice', messages: [{ role: 'user', content: 'the cat' }], max_tokens: 4, temperature: 0 });
    assert.equal(message.type, 'message');
    assert.equal(message.role, 'assistant');
    assert.deepEqual(message.content, [{ type: 'text', text: chat.choices[0].message.content }]);
    assert.equal(message.stop_reason, 'max_tokens');
    assert.equal(message.usage.input_tokens, chat.usage.prompt_tokens);
    assert.equal(message.usage.output_tokens, 4);
  });
});
