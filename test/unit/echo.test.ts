import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { ECHO_EMBEDDING_DIMENSIONS, echoAudio, echoJson, type EchoResult } from '../../src/upstreams/echo.ts';

const CHAT = '/v1/chat/completions';
const COMPLETIONS = '/v1/completions';
const EMBEDDINGS = '/v1/embeddings';

type Json = Record<string, any>;

function ok(result: EchoResult): Json {
  assert.equal(result.status, 200, `expected 200, got ${result.status}: ${JSON.stringify(result.body)}`);
  assert.equal(typeof result.body, 'object');
  assert.notEqual(result.body, null);
  return result.body as Json;
}

function okText(result: EchoResult): string {
  assert.equal(result.status, 200, `expected 200, got ${result.status}: ${JSON.stringify(result.body)}`);
  assert.equal(typeof result.body, 'string');
  return result.body as string;
}

/** Asserts an OpenAI-style 400 and returns its error object. */
function badRequest(result: EchoResult, param: string | null): { message: string; type: string; param: string | null; code: null } {
  assert.equal(result.status, 400, `expected 400, got ${result.status}: ${JSON.stringify(result.body)}`);
  const body = result.body as Json;
  assert.deepEqual(Object.keys(body), ['error']);
  const error = body.error;
  assert.deepEqual(Object.keys(error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(error.type, 'invalid_request_error');
  assert.equal(error.param, param);
  assert.equal(error.code, null);
  assert.equal(typeof error.message, 'string');
  assert.ok(error.message.length > 10, 'the message must explain the problem');
  // Must survive a JSON round trip unchanged (it is sent over the wire).
  assert.deepEqual(JSON.parse(JSON.stringify(body)), body);
  return error;
}

function withoutCreated(body: Json): Json {
  const { created: _created, ...rest } = body;
  return rest;
}

function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function norm(vector: number[]): number {
  return Math.sqrt(vector.reduce((sum, value) => sum + value * value, 0));
}

function decodeBase64Floats(text: string): number[] {
  const bytes = Buffer.from(text, 'base64');
  assert.equal(bytes.length % 4, 0);
  const out: number[] = [];
  for (let i = 0; i < bytes.length; i += 4) out.push(bytes.readFloatLE(i));
  return out;
}

function chat(body: Json): EchoResult {
  return echoJson(CHAT, body);
}

const user = (content: unknown) => ({ role: 'user', content });

describe('echoJson: chat completions', () => {
  it('answers with the OpenAI chat.completion shape', () => {
    const before = Math.floor(Date.now() / 1000);
    const body = ok(chat({ model: 'echo-chat', messages: [user('Hello there')] }));
    const after = Math.floor(Date.now() / 1000);
    assert.deepEqual(Object.keys(body).sort(), ['choices', 'created', 'id', 'model', 'object', 'usage']);
    assert.match(body.id, /^chatcmpl-[0-9a-f]{32}$/);
    assert.equal(body.object, 'chat.completion');
    assert.equal(body.model, 'echo-chat');
    assert.ok(Number.isInteger(body.created) && body.created >= before && body.created <= after, 'created is the current unix time in seconds');
    assert.deepEqual(body.choices, [{ index: 0, message: { role: 'assistant', content: 'Hello there' }, finish_reason: 'stop', logprobs: null }]);
    assert.deepEqual(body.usage, { prompt_tokens: 2, completion_tokens: 2, total_tokens: 4 });
  });

  it('echoes the last user message and counts prompt tokens over all messages', () => {
    const body = ok(
      chat({
        messages: [
          { role: 'system', content: 'You are terse.' }, // You are terse . -> 4
          user('first question'), // 2
          { role: 'assistant', content: 'an answer' }, // 2
          user('What is 2+2?'), // What is 2 + 2 ? -> 6
          { role: 'assistant', content: null }, // 0 (tool-call style message)
        ],
      }),
    );
    assert.equal(body.model, 'echo', 'model defaults to echo');
    assert.equal(body.choices[0].message.content, 'What is 2+2?');
    assert.deepEqual(body.usage, { prompt_tokens: 14, completion_tokens: 6, total_tokens: 20 });
  });

  it('echoes the last message when no message is from the user', () => {
    const body = ok(chat({ messages: [{ role: 'system', content: 'sys one' }, { role: 'system', content: 'sys two' }] }));
    assert.equal(body.choices[0].message.content, 'sys two');
  });

  it('reads multi-part content, joining text parts and ignoring others', () => {
    const body = ok(
      chat({
        messages: [
          user([
            { type: 'text', text: 'look at' },
            { type: 'image_url', image_url: { url: 'https://example.com/x.png' } },
            { type: 'text', text: 'this picture' },
          ]),
        ],
      }),
    );
    assert.equal(body.choices[0].message.content, 'look at\nthis picture');
    assert.equal(body.usage.prompt_tokens, 4);
  });

  it('honours max_tokens: truncates to that many tokens with finish_reason length', () => {
    const body = ok(chat({ messages: [user('Hello, world! How are you?')], max_tokens: 3 }));
    // Tokens: Hello , world ! How are you ? -> the first three keep their spacing.
    assert.equal(body.choices[0].message.content, 'Hello, world');
    assert.equal(body.choices[0].finish_reason, 'length');
    assert.deepEqual(body.usage, { prompt_tokens: 8, completion_tokens: 3, total_tokens: 11 });
  });

  it('does not truncate when max_tokens is at least the answer length', () => {
    for (const max_tokens of [8, 9, 1000]) {
      const body = ok(chat({ messages: [user('Hello, world! How are you?')], max_tokens }));
      assert.equal(body.choices[0].message.content, 'Hello, world! How are you?');
      assert.equal(body.choices[0].finish_reason, 'stop');
      assert.equal(body.usage.completion_tokens, 8);
    }
  });

  it('prefers max_completion_tokens over max_tokens', () => {
    const body = ok(chat({ messages: [user('one two three four five')], max_tokens: 4, max_completion_tokens: 2 }));
    assert.equal(body.choices[0].message.content, 'one two');
    assert.equal(body.usage.completion_tokens, 2);
    const onlyNew = ok(chat({ messages: [user('one two three four five')], max_completion_tokens: 1 }));
    assert.equal(onlyNew.choices[0].message.content, 'one');
    const nullNew = ok(chat({ messages: [user('one two three four five')], max_tokens: 3, max_completion_tokens: null }));
    assert.equal(nullNew.choices[0].message.content, 'one two three');
  });

  it('honours n: n identical choices with indexes, completion tokens multiplied', () => {
    const body = ok(chat({ messages: [user('a b c')], n: 3, max_tokens: 2 }));
    assert.equal(body.choices.length, 3);
    assert.deepEqual(
      body.choices.map((choice: Json) => choice.index),
      [0, 1, 2],
    );
    for (const choice of body.choices) {
      assert.deepEqual(choice.message, { role: 'assistant', content: 'a b' });
      assert.equal(choice.finish_reason, 'length');
    }
    assert.deepEqual(body.usage, { prompt_tokens: 3, completion_tokens: 6, total_tokens: 9 });
    assert.equal(ok(chat({ messages: [user('x')], n: 8 })).choices.length, 8);
    assert.equal(ok(chat({ messages: [user('x')], n: null })).choices.length, 1);
  });

  it('honours stop sequences (string or list, earliest wins, empty ones ignored)', () => {
    const text = 'alpha beta. gamma; delta';
    assert.equal(ok(chat({ messages: [user(text)], stop: '.' })).choices[0].message.content, 'alpha beta');
    const list = ok(chat({ messages: [user(text)], stop: [';', ' beta'] }));
    assert.equal(list.choices[0].message.content, 'alpha');
    assert.equal(list.choices[0].finish_reason, 'stop');
    assert.equal(list.usage.completion_tokens, 1);
    assert.equal(ok(chat({ messages: [user(text)], stop: ['', 'zzz'] })).choices[0].message.content, text);
    assert.equal(ok(chat({ messages: [user(text)], stop: null })).choices[0].message.content, text);
  });

  it('counts words, numbers and punctuation as tokens, Unicode-aware', () => {
    const body = ok(chat({ messages: [user('Grüße, 東京 snake_case 42!')] }));
    // Grüße , 東京 snake_case 42 ! -> 6
    assert.equal(body.usage.prompt_tokens, 6);
    assert.equal(ok(chat({ messages: [user('   ')] })).usage.prompt_tokens, 0);
  });

  it('is deterministic: the same request gives the same id and content', () => {
    const request = { model: 'm', messages: [user('repeat me')], n: 2, max_tokens: 5, temperature: 1.5 };
    const first = ok(chat(request));
    const second = ok(chat(structuredClone(request)));
    assert.deepEqual(withoutCreated(second), withoutCreated(first));
    const other = ok(chat({ ...request, messages: [user('something else')] }));
    assert.notEqual(other.id, first.id, 'a different request gets a different id');
    const otherParams = ok(chat({ ...request, temperature: 0 }));
    assert.notEqual(otherParams.id, first.id);
  });

  it('does not modify the request body', () => {
    const request = { model: 'm', messages: [user('x y z')], stop: ['y'], n: 2 };
    const copy = structuredClone(request);
    chat(request);
    assert.deepEqual(request, copy);
  });

  it('rejects a missing, empty or non-array messages', () => {
    for (const messages of [undefined, [], 'hello', { role: 'user', content: 'x' }, null]) {
      const error = badRequest(chat(messages === undefined ? {} : { messages }), 'messages');
      assert.match(error.message, /messages/);
    }
  });

  it('rejects malformed messages, naming the index', () => {
    const cases: unknown[] = [
      'just a string',
      { content: 'no role' },
      { role: 5, content: 'x' },
      { role: 'user', content: 42 },
      { role: 'user', content: [{ text: 'no type' }] },
      { role: 'user', content: [{ type: 'text', text: 7 }] },
      { role: 'user', content: { type: 'text', text: 'x' } },
    ];
    for (const bad of cases) {
      const error = badRequest(chat({ messages: [user('fine'), bad] }), 'messages[1]');
      assert.match(error.message, /messages\[1\]/, JSON.stringify(bad));
    }
  });

  it('rejects invalid max_tokens / max_completion_tokens', () => {
    for (const param of ['max_tokens', 'max_completion_tokens']) {
      for (const value of [0, -1, 1.5, '10', true]) {
        const error = badRequest(chat({ messages: [user('x')], [param]: value }), param);
        assert.match(error.message, new RegExp(param));
      }
    }
  });

  it('rejects n outside 1..8', () => {
    for (const n of [0, 9, -1, 1.5, '2']) {
      const error = badRequest(chat({ messages: [user('x')], n }), 'n');
      assert.match(error.message, /1 to 8/);
    }
  });

  it('rejects a stop that is not a string or list of strings', () => {
    for (const stop of [5, ['a', 5], { s: 'a' }]) badRequest(chat({ messages: [user('x')], stop }), 'stop');
  });

  it('rejects stream: true and a non-string model', () => {
    badRequest(chat({ messages: [user('x')], stream: true }), 'stream');
    ok(chat({ messages: [user('x')], stream: false }));
    badRequest(chat({ messages: [user('x')], model: 42 }), 'model');
    badRequest(chat({ messages: [user('x')], model: null }), 'model');
  });
});

describe('echoJson: completions', () => {
  it('answers with the OpenAI text_completion shape', () => {
    const body = ok(echoJson(COMPLETIONS, { model: 'echo-base', prompt: 'Once upon a time' }));
    assert.deepEqual(Object.keys(body).sort(), ['choices', 'created', 'id', 'model', 'object', 'usage']);
    assert.match(body.id, /^cmpl-[0-9a-f]{32}$/);
    assert.equal(body.object, 'text_completion');
    assert.equal(body.model, 'echo-base');
    assert.ok(Number.isInteger(body.created));
    assert.deepEqual(body.choices, [{ index: 0, text: 'Once upon a time', finish_reason: 'stop', logprobs: null }]);
    assert.deepEqual(body.usage, { prompt_tokens: 4, completion_tokens: 4, total_tokens: 8 });
  });

  it('honours max_tokens, n and stop', () => {
    const body = ok(echoJson(COMPLETIONS, { prompt: 'one, two, three', max_tokens: 3, n: 2 }));
    assert.deepEqual(
      body.choices.map((choice: Json) => [choice.index, choice.text, choice.finish_reason]),
      [
        [0, 'one, two', 'length'],
        [1, 'one, two', 'length'],
      ],
    );
    assert.deepEqual(body.usage, { prompt_tokens: 5, completion_tokens: 6, total_tokens: 11 });
    const stopped = ok(echoJson(COMPLETIONS, { prompt: 'a b c d', stop: ['c'] }));
    assert.equal(stopped.choices[0].text, 'a b ');
    assert.equal(stopped.usage.completion_tokens, 2);
  });

  it('accepts a list of prompts and answers the first one', () => {
    const body = ok(echoJson(COMPLETIONS, { prompt: ['first prompt here', 'second'] }));
    assert.equal(body.choices.length, 1);
    assert.equal(body.choices[0].text, 'first prompt here');
    assert.equal(body.usage.prompt_tokens, 3);
  });

  it('accepts token ids and lists of token ids, one token per id', () => {
    const ids = ok(echoJson(COMPLETIONS, { prompt: [101, 7592, 0] }));
    assert.equal(ids.choices[0].text, '101 7592 0');
    assert.equal(ids.usage.prompt_tokens, 3);
    const lists = ok(echoJson(COMPLETIONS, { prompt: [[5, 6], [7]] }));
    assert.equal(lists.choices[0].text, '5 6');
    assert.equal(lists.usage.prompt_tokens, 2);
  });

  it('answers an empty prompt with empty text', () => {
    const body = ok(echoJson(COMPLETIONS, { prompt: '' }));
    assert.equal(body.choices[0].text, '');
    assert.deepEqual(body.usage, { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 });
  });

  it('is deterministic', () => {
    const request = { prompt: 'same again', max_tokens: 1, n: 3 };
    assert.deepEqual(withoutCreated(ok(echoJson(COMPLETIONS, request))), withoutCreated(ok(echoJson(COMPLETIONS, { ...request }))));
  });

  it('rejects a missing or malformed prompt', () => {
    for (const prompt of [undefined, null, 42, [], ['a', 1], [1, -2], [1.5], [[]], [[1], ['a']], { text: 'x' }]) {
      const error = badRequest(echoJson(COMPLETIONS, prompt === undefined ? {} : { prompt }), 'prompt');
      assert.match(error.message, /prompt is required/);
    }
  });

  it('rejects bad generation parameters and stream', () => {
    badRequest(echoJson(COMPLETIONS, { prompt: 'x', max_tokens: 0 }), 'max_tokens');
    badRequest(echoJson(COMPLETIONS, { prompt: 'x', n: 20 }), 'n');
    badRequest(echoJson(COMPLETIONS, { prompt: 'x', stop: 3 }), 'stop');
    badRequest(echoJson(COMPLETIONS, { prompt: 'x', stream: true }), 'stream');
  });
});

describe('echoJson: embeddings', () => {
  it('answers with the OpenAI embedding list shape', () => {
    const body = ok(echoJson(EMBEDDINGS, { model: 'echo-embed', input: 'hello world' }));
    assert.deepEqual(Object.keys(body).sort(), ['data', 'model', 'object', 'usage']);
    assert.equal(body.object, 'list');
    assert.equal(body.model, 'echo-embed');
    assert.equal(body.data.length, 1);
    assert.equal(body.data[0].object, 'embedding');
    assert.equal(body.data[0].index, 0);
    assert.deepEqual(body.usage, { prompt_tokens: 2, total_tokens: 2 });
  });

  it(`returns unit vectors of ${ECHO_EMBEDDING_DIMENSIONS} finite floats`, () => {
    assert.equal(ECHO_EMBEDDING_DIMENSIONS, 64);
    for (const input of ['hello world', '', 'Ünïcødé 🎉']) {
      const vector = ok(echoJson(EMBEDDINGS, { input })).data[0].embedding as number[];
      assert.equal(vector.length, ECHO_EMBEDDING_DIMENSIONS);
      assert.ok(vector.every((value) => typeof value === 'number' && Number.isFinite(value) && Math.abs(value) <= 1));
      assert.ok(Math.abs(norm(vector) - 1) < 1e-9, `norm ${norm(vector)}`);
      assert.ok(new Set(vector).size > ECHO_EMBEDDING_DIMENSIONS / 2, 'not a constant vector');
    }
  });

  it('returns one embedding per input, in order, for array input', () => {
    const inputs = ['alpha', 'beta gamma', 'alpha', 'delta'];
    const body = ok(echoJson(EMBEDDINGS, { input: inputs }));
    assert.equal(body.data.length, 4);
    assert.deepEqual(
      body.data.map((item: Json) => item.index),
      [0, 1, 2, 3],
    );
    for (const item of body.data) assert.equal(item.embedding.length, ECHO_EMBEDDING_DIMENSIONS);
    assert.deepEqual(body.data[0].embedding, body.data[2].embedding, 'equal texts embed identically');
    assert.notDeepEqual(body.data[0].embedding, body.data[1].embedding);
    assert.notDeepEqual(body.data[1].embedding, body.data[3].embedding);
    assert.deepEqual(body.usage, { prompt_tokens: 5, total_tokens: 5 });
    // Each vector matches the single-input request for the same text.
    assert.deepEqual(body.data[1].embedding, ok(echoJson(EMBEDDINGS, { input: 'beta gamma' })).data[0].embedding);
  });

  it('embeds token-id input: a flat list is one input, a list of lists is one per list', () => {
    const flat = ok(echoJson(EMBEDDINGS, { input: [1, 2, 3] }));
    assert.equal(flat.data.length, 1);
    assert.equal(flat.usage.prompt_tokens, 3);
    const nested = ok(echoJson(EMBEDDINGS, { input: [[1, 2], [3], [1, 2]] }));
    assert.equal(nested.data.length, 3);
    assert.deepEqual(nested.data[0].embedding, nested.data[2].embedding);
    assert.deepEqual(nested.data[0].embedding, ok(echoJson(EMBEDDINGS, { input: '1 2' })).data[0].embedding);
    assert.equal(nested.usage.prompt_tokens, 5);
  });

  it('is deterministic across calls', () => {
    const request = { model: 'e', input: ['stable', 'vectors'] };
    assert.deepEqual(ok(echoJson(EMBEDDINGS, request)), ok(echoJson(EMBEDDINGS, structuredClone(request))));
  });

  it('encodes base64 as little-endian float32 of the float vector', () => {
    const floats = ok(echoJson(EMBEDDINGS, { input: ['x', 'y'] }));
    const base64 = ok(echoJson(EMBEDDINGS, { input: ['x', 'y'], encoding_format: 'base64' }));
    assert.equal(base64.data.length, 2);
    for (let i = 0; i < 2; i++) {
      assert.equal(typeof base64.data[i].embedding, 'string');
      const decoded = decodeBase64Floats(base64.data[i].embedding);
      assert.equal(decoded.length, ECHO_EMBEDDING_DIMENSIONS);
      const expected = Array.from(Float32Array.from(floats.data[i].embedding as number[]));
      assert.deepEqual(decoded, expected);
    }
    assert.deepEqual(base64.usage, floats.usage);
    assert.deepEqual(ok(echoJson(EMBEDDINGS, { input: 'x', encoding_format: 'float' })).data[0].embedding, floats.data[0].embedding);
  });

  it(`accepts dimensions ${ECHO_EMBEDDING_DIMENSIONS} (or null) and rejects any other`, () => {
    assert.equal(ok(echoJson(EMBEDDINGS, { input: 'x', dimensions: ECHO_EMBEDDING_DIMENSIONS })).data[0].embedding.length, ECHO_EMBEDDING_DIMENSIONS);
    ok(echoJson(EMBEDDINGS, { input: 'x', dimensions: null }));
    for (const dimensions of [32, 128, 0, '64']) {
      const error = badRequest(echoJson(EMBEDDINGS, { input: 'x', dimensions }), 'dimensions');
      assert.match(error.message, /64-dimensional/);
    }
  });

  it('rejects a bad encoding_format, missing or malformed input, stream and a non-string model', () => {
    badRequest(echoJson(EMBEDDINGS, { input: 'x', encoding_format: 'binary' }), 'encoding_format');
    for (const input of [undefined, null, [], 5, [['a']], ['a', 2], [{}]]) {
      const error = badRequest(echoJson(EMBEDDINGS, input === undefined ? {} : { input }), 'input');
      assert.match(error.message, /input is required/);
    }
    badRequest(echoJson(EMBEDDINGS, { input: 'x', stream: true }), 'stream');
    badRequest(echoJson(EMBEDDINGS, { input: 'x', model: ['m'] }), 'model');
  });
});

describe('echoJson: other endpoints', () => {
  it('answers an endpoint it does not serve with an OpenAI-style 400', () => {
    for (const endpoint of ['/v1/images/generations', '/v1/audio/transcriptions', '/v1/chat/completions/', '']) {
      const error = badRequest(echoJson(endpoint, { messages: [user('x')], input: 'x', prompt: 'x' }), null);
      assert.match(error.message, /does not serve/);
    }
  });
});

describe('echoAudio', () => {
  const audio = Uint8Array.from({ length: 100_000 }, (_, i) => (i * 31) & 0xff);
  const digest = sha256Hex(audio).slice(0, 16);
  const transcriptionText = `echo transcription of clip.wav: 100000 bytes, sha256 prefix ${digest}`;

  it('defaults to json: { text }', () => {
    const body = ok(echoAudio('transcriptions', {}, audio, 'clip.wav'));
    assert.deepEqual(body, { text: transcriptionText });
    assert.deepEqual(ok(echoAudio('transcriptions', { response_format: 'json', model: 'whisper-1' }, audio, 'clip.wav')), { text: transcriptionText });
  });

  it('names the task in the text for translations', () => {
    const body = ok(echoAudio('translations', {}, audio, 'clip.wav'));
    assert.deepEqual(body, { text: `echo translation of clip.wav: 100000 bytes, sha256 prefix ${digest}` });
  });

  it('text format returns the bare text', () => {
    assert.equal(okText(echoAudio('transcriptions', { response_format: 'text' }, audio, 'clip.wav')), transcriptionText);
  });

  it('verbose_json carries task, language, duration, text and segments', () => {
    // 100000 bytes of 16 kHz 16-bit mono PCM = 3.125 s, rounded to 3.13.
    const body = ok(echoAudio('transcriptions', { response_format: 'verbose_json', language: 'de' }, audio, 'clip.wav'));
    assert.deepEqual(body, { task: 'transcribe', language: 'de', duration: 3.13, text: transcriptionText, segments: [] });
    const noHint = ok(echoAudio('transcriptions', { response_format: 'verbose_json' }, audio, 'clip.wav'));
    assert.equal(noHint.language, 'en');
    const translated = ok(echoAudio('translations', { response_format: 'verbose_json', language: 'de' }, audio, 'clip.wav'));
    assert.equal(translated.task, 'translate');
    assert.equal(translated.language, 'en', 'translations always produce English');
    assert.equal(translated.duration, 3.13);
  });

  it('srt format is a single well-formed cue spanning the duration', () => {
    const srt = okText(echoAudio('transcriptions', { response_format: 'srt' }, audio, 'clip.wav'));
    assert.equal(srt, `1\n00:00:00,000 --> 00:00:03,130\n${transcriptionText}\n\n`);
  });

  it('vtt format has the WEBVTT header and dot-separated milliseconds', () => {
    const vtt = okText(echoAudio('translations', { response_format: 'vtt' }, audio, 'clip.wav'));
    assert.equal(vtt, `WEBVTT\n\n00:00:00.000 --> 00:00:03.130\necho translation of clip.wav: 100000 bytes, sha256 prefix ${digest}\n\n`);
  });

  it('formats minutes in subtitle timestamps', () => {
    const long = new Uint8Array(32_000 * 61 + 8_000); // 61.25 s
    const srt = okText(echoAudio('transcriptions', { response_format: 'srt' }, long, 'long.wav'));
    assert.match(srt, /^1\n00:00:00,000 --> 00:01:01,250\n/);
    const body = ok(echoAudio('transcriptions', { response_format: 'verbose_json' }, long, 'long.wav'));
    assert.equal(body.duration, 61.25);
  });

  it('is deterministic and depends on the audio bytes and file name', () => {
    for (const response_format of ['json', 'text', 'verbose_json', 'srt', 'vtt']) {
      const first = echoAudio('transcriptions', { response_format }, audio, 'clip.wav');
      const second = echoAudio('transcriptions', { response_format }, Uint8Array.from(audio), 'clip.wav');
      assert.deepEqual(second, first, response_format);
    }
    const changed = Uint8Array.from(audio);
    changed[500] ^= 1;
    assert.notDeepEqual(ok(echoAudio('transcriptions', {}, changed, 'clip.wav')), ok(echoAudio('transcriptions', {}, audio, 'clip.wav')));
    assert.match(ok(echoAudio('transcriptions', {}, audio, 'other.mp3')).text, /^echo transcription of other\.mp3: /);
  });

  it('hashes only the bytes of a Uint8Array view, not its whole backing buffer', () => {
    const backing = new Uint8Array(audio.length + 20);
    backing.set(audio, 10);
    const view = backing.subarray(10, 10 + audio.length);
    assert.deepEqual(echoAudio('transcriptions', {}, view, 'clip.wav'), echoAudio('transcriptions', {}, audio, 'clip.wav'));
  });

  it('rejects empty audio, stream=true and an unknown response_format', () => {
    badRequest(echoAudio('transcriptions', {}, new Uint8Array(0), 'empty.wav'), 'file');
    badRequest(echoAudio('translations', {}, new Uint8Array(0), 'empty.wav'), 'file');
    badRequest(echoAudio('transcriptions', { stream: 'true' }, audio, 'clip.wav'), 'stream');
    ok(echoAudio('transcriptions', { stream: 'false' }, audio, 'clip.wav'));
    for (const response_format of ['xml', 'JSON', '']) {
      const error = badRequest(echoAudio('transcriptions', { response_format }, audio, 'clip.wav'), 'response_format');
      assert.match(error.message, /json, text, verbose_json, srt, vtt/);
    }
  });
});
