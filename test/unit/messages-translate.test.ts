// Messages <-> chat completions (upstreams/messages): every content block
// type Spool runs, and tool use, go to chat completions and come back as the
// Messages answer, through the real translating client in front of the echo
// emulator and of a chat server that answers with tool calls.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { answeringMessages } from '../../src/upstreams/messages/client.ts';
import { messagesParamsProblem } from '../../src/upstreams/messages/params.ts';
import { chatToMessage, messagesToChat, TranslationError } from '../../src/upstreams/messages/translate.ts';
import { createEchoUpstreamClient, type UpstreamCall, type UpstreamClient, type UpstreamOutcome } from '../../src/upstreams/http-client.ts';

type Json = Record<string, any>;

const PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';

/** A chat server in-process that records what it is sent and answers with `answer` (a chat completion). */
function chatServer(answer: (body: Json) => Json): UpstreamClient & { sent: UpstreamCall[] } {
  const sent: UpstreamCall[] = [];
  return {
    name: 'chat',
    sent,
    async send(call: UpstreamCall): Promise<UpstreamOutcome> {
      sent.push(call);
      return { kind: 'response', status: 200, body: answer(call.body), requestId: null, retryAfterMs: null };
    },
    async close() {},
  };
}

async function roundTrip(client: UpstreamClient, params: Json): Promise<Json> {
  assert.equal(messagesParamsProblem(params), null, 'the request is one Spool accepts');
  const outcome = await client.send({ endpoint: '/v1/messages', body: params, timeoutMs: 1000 });
  assert.equal(outcome.kind, 'response');
  if (outcome.kind !== 'response') throw new Error('unreachable');
  assert.equal(outcome.status, 200, JSON.stringify(outcome.body));
  return outcome.body as Json;
}

describe('Messages to chat completions and back', () => {
  it('text: a string and text blocks, the system prompt as a string and as blocks', async () => {
    const echo = createEchoUpstreamClient();
    const fromString = await roundTrip(echo, { model: 'echo', max_tokens: 50, system: 'Be brief.', messages: [{ role: 'user', content: 'plain text' }] });
    assert.deepEqual(fromString.content, [{ type: 'text', text: 'plain text' }]);
    assert.equal(fromString.type, 'message');
    assert.equal(fromString.role, 'assistant');
    assert.equal(fromString.stop_reason, 'end_turn');
    assert.equal(fromString.stop_sequence, null);
    assert.ok(fromString.usage.input_tokens > 0);
    assert.ok(fromString.usage.output_tokens > 0);

    const chat = messagesToChat({
      model: 'm',
      max_tokens: 5,
      system: [{ type: 'text', text: 'one' }, { type: 'text', text: 'two', cache_control: { type: 'ephemeral' } }],
      messages: [{ role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }],
    });
    assert.deepEqual(chat.messages, [
      { role: 'system', content: 'one\n\ntwo' },
      { role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] },
    ]);
    const fromBlocks = await roundTrip(echo, { model: 'echo', max_tokens: 50, messages: [{ role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }] });
    assert.deepEqual(fromBlocks.content, [{ type: 'text', text: 'a\nb' }]);
  });

  it('images: base64 and URL sources become image_url parts, next to the text', async () => {
    const server = chatServer(() => ({ id: 'chatcmpl-img', model: 'vision', choices: [{ index: 0, message: { role: 'assistant', content: 'a red dot' }, finish_reason: 'stop' }], usage: { prompt_tokens: 30, completion_tokens: 3 } }));
    const client = answeringMessages(server, 'translate');
    const message = await roundTrip(client, {
      model: 'vision',
      max_tokens: 20,
      messages: [
        {
          role: 'user',
          content: [
            { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } },
            { type: 'image', source: { type: 'url', url: 'https://example.com/cat.jpg' } },
            { type: 'text', text: 'What is in these?' },
          ],
        },
      ],
    });
    assert.deepEqual(server.sent[0].body.messages, [
      {
        role: 'user',
        content: [
          { type: 'image_url', image_url: { url: `data:image/png;base64,${PNG}` } },
          { type: 'image_url', image_url: { url: 'https://example.com/cat.jpg' } },
          { type: 'text', text: 'What is in these?' },
        ],
      },
    ]);
    assert.equal(server.sent[0].endpoint, '/v1/chat/completions');
    assert.deepEqual(message, {
      id: 'msg_img',
      type: 'message',
      role: 'assistant',
      model: 'vision',
      content: [{ type: 'text', text: 'a red dot' }],
      stop_reason: 'end_turn',
      stop_sequence: null,
      usage: { input_tokens: 30, output_tokens: 3, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
    });
  });

  it('tool use: tools and tool_choice go as functions, a tool call comes back as a tool_use block, and its tool_result goes back as a tool message', async () => {
    const weatherTool = { name: 'get_weather', description: 'Weather by city', input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } };
    const server = chatServer((body) =>
      body.messages.at(-1).role === 'tool'
        ? { id: 'chatcmpl-2', model: 'tools', choices: [{ index: 0, message: { role: 'assistant', content: 'It is sunny in Paris.' }, finish_reason: 'stop' }], usage: { prompt_tokens: 40, completion_tokens: 6 } }
        : {
            id: 'chatcmpl-1',
            model: 'tools',
            choices: [
              {
                index: 0,
                message: { role: 'assistant', content: 'Let me look.', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
                finish_reason: 'tool_calls',
              },
            ],
            usage: { prompt_tokens: 20, completion_tokens: 9 },
          },
    );
    const client = answeringMessages(server, 'translate');
    const ask = { role: 'user', content: 'Weather in Paris?' };
    const first = await roundTrip(client, { model: 'tools', max_tokens: 100, tools: [weatherTool], tool_choice: { type: 'any', disable_parallel_tool_use: true }, messages: [ask] });
    assert.deepEqual(server.sent[0].body.tools, [{ type: 'function', function: { name: 'get_weather', description: 'Weather by city', parameters: weatherTool.input_schema } }]);
    assert.equal(server.sent[0].body.tool_choice, 'required');
    assert.equal(server.sent[0].body.parallel_tool_calls, false);
    assert.deepEqual(first.content, [
      { type: 'text', text: 'Let me look.' },
      { type: 'tool_use', id: 'call_1', name: 'get_weather', input: { city: 'Paris' } },
    ]);
    assert.equal(first.stop_reason, 'tool_use');

    // The conversation goes on with the assistant's turn as it came back and the tool's result.
    const second = await roundTrip(client, {
      model: 'tools',
      max_tokens: 100,
      tools: [weatherTool],
      tool_choice: { type: 'tool', name: 'get_weather' },
      messages: [ask, { role: 'assistant', content: first.content }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'call_1', content: [{ type: 'text', text: 'sunny, 24C' }] }] }],
    });
    assert.deepEqual(server.sent[1].body.tool_choice, { type: 'function', function: { name: 'get_weather' } });
    assert.deepEqual(server.sent[1].body.messages, [
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: 'Let me look.', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: 'sunny, 24C' },
    ]);
    assert.deepEqual(second.content, [{ type: 'text', text: 'It is sunny in Paris.' }]);
    assert.equal(second.stop_reason, 'end_turn');
  });

  it('a tool_result with text and an image, next to more text: the tool message first, then a user message with the image and the text in their order', () => {
    const chat = messagesToChat({
      model: 'm',
      max_tokens: 5,
      messages: [
        { role: 'assistant', content: [{ type: 'tool_use', id: 't1', name: 'snap', input: {} }] },
        {
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: 't1', content: [{ type: 'text', text: 'took it' }, { type: 'image', source: { type: 'url', url: 'https://x/y.png' } }] },
            { type: 'text', text: 'describe it' },
          ],
        },
      ],
    });
    assert.deepEqual(chat.messages, [
      { role: 'assistant', content: null, tool_calls: [{ id: 't1', type: 'function', function: { name: 'snap', arguments: '{}' } }] },
      { role: 'tool', tool_call_id: 't1', content: 'took it' },
      // In the order the blocks came: the tool result's image, then the text after it.
      { role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://x/y.png' } }, { type: 'text', text: 'describe it' }] },
    ]);
  });

  it('sampling, limits and metadata: stop_sequences, temperature, top_p, top_k, max_tokens, metadata.user_id, structured output', () => {
    const chat = messagesToChat({
      model: 'm',
      max_tokens: 77,
      stop_sequences: ['END', '###'],
      temperature: 0.2,
      top_p: 0.9,
      top_k: 40,
      metadata: { user_id: 'user-7' },
      tool_choice: { type: 'none' },
      output_config: { format: { type: 'json_schema', schema: { type: 'object' } } },
      messages: [{ role: 'user', content: 'x' }],
    });
    assert.deepEqual(chat, {
      model: 'm',
      messages: [{ role: 'user', content: 'x' }],
      max_tokens: 77,
      stop: ['END', '###'],
      temperature: 0.2,
      top_p: 0.9,
      top_k: 40,
      user: 'user-7',
      tool_choice: 'none',
      response_format: { type: 'json_schema', json_schema: { name: 'output', schema: { type: 'object' } } },
    });
  });

  it('stop_reason from finish_reason: length is max_tokens, a matched stop sequence is stop_sequence', async () => {
    const echo = createEchoUpstreamClient();
    const cut = await roundTrip(echo, { model: 'echo', max_tokens: 2, messages: [{ role: 'user', content: 'one two three four five' }] });
    assert.equal(cut.stop_reason, 'max_tokens');
    assert.equal(cut.usage.output_tokens, 2);

    const params = { model: 'm', max_tokens: 9, stop_sequences: ['END'], messages: [{ role: 'user', content: 'x' }] };
    const stopped = chatToMessage({ id: 'c', choices: [{ message: { content: 'done' }, finish_reason: 'stop', stop_reason: 'END' }] }, params);
    assert.equal(stopped.stop_reason, 'stop_sequence');
    assert.equal(stopped.stop_sequence, 'END');
    const filtered = chatToMessage({ id: 'c', choices: [{ message: { content: '' }, finish_reason: 'content_filter' }] }, params);
    assert.equal(filtered.stop_reason, 'refusal');
    assert.deepEqual(filtered.content, []);
  });

  it('an answer that cannot be a message is a 502 with the reason; an upstream error keeps its status and body', async () => {
    const broken = answeringMessages(chatServer(() => ({ choices: [{ message: { tool_calls: [{ id: 'c', function: { name: 'f', arguments: 'not json' } }] } }] })), 'translate');
    const outcome = await broken.send({ endpoint: '/v1/messages', body: { model: 'm', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }, timeoutMs: 1000 });
    assert.equal(outcome.kind, 'response');
    if (outcome.kind === 'response') {
      assert.equal(outcome.status, 502);
      assert.match((outcome.body as Json).error.message, /arguments that are not a JSON object/);
    }
    assert.throws(() => chatToMessage({ choices: [] }, {}), TranslationError);

    const refusing: UpstreamClient = {
      name: 'refusing',
      send: async () => ({ kind: 'response', status: 400, body: { error: { message: 'bad', type: 'invalid_request_error' } }, requestId: 'r1', retryAfterMs: null }),
      close: async () => {},
    };
    const refused = await answeringMessages(refusing, 'translate').send({ endpoint: '/v1/messages', body: { model: 'm', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }, timeoutMs: 1000 });
    assert.deepEqual(refused, { kind: 'response', status: 400, body: { error: { message: 'bad', type: 'invalid_request_error' } }, requestId: 'r1', retryAfterMs: null });
  });

  it('native mode passes Messages calls through untouched, and other endpoints pass through in both modes', async () => {
    const server = chatServer((body) => ({ echoed: body }));
    const body = { model: 'm', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] };
    await answeringMessages(server, 'native').send({ endpoint: '/v1/messages', body, timeoutMs: 1000 });
    await answeringMessages(server, 'translate').send({ endpoint: '/v1/embeddings', body: { input: 'x' }, timeoutMs: 1000 });
    assert.deepEqual(server.sent.map((call) => [call.endpoint, call.body]), [['/v1/messages', body], ['/v1/embeddings', { input: 'x' }]]);
  });
});
