// Anthropic Messages <-> OpenAI chat completions, for upstreams that do not
// answer /v1/messages themselves. Requests are checked by params.ts first, so
// the translation meets only the block types and fields it knows; what chat
// completions cannot say (cache_control, is_error, citations) is dropped and
// listed in docs/anthropic.md.

type JsonObject = Record<string, unknown>;

export class TranslationError extends Error {
  override name = 'TranslationError';
}

interface ChatPart {
  type: 'text' | 'image_url';
  text?: string;
  image_url?: { url: string };
}

interface ChatToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string | ChatPart[] | null;
  tool_calls?: ChatToolCall[];
  tool_call_id?: string;
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function blocksOf(content: unknown): JsonObject[] {
  if (typeof content === 'string') return [{ type: 'text', text: content }];
  return Array.isArray(content) ? content.filter(isObject) : [];
}

function imageUrlOf(source: JsonObject): string {
  if (source.type === 'url') return String(source.url);
  return `data:${String(source.media_type)};base64,${String(source.data)}`;
}

function imagePart(block: JsonObject): ChatPart {
  return { type: 'image_url', image_url: { url: imageUrlOf(block.source as JsonObject) } };
}

/** The body of a chat completions request asking what `params` (a valid Messages request) asks. */
export function messagesToChat(params: JsonObject): JsonObject {
  const messages: ChatMessage[] = [];
  const system = blocksOf(params.system)
    .map((block) => String(block.text))
    .join('\n\n');
  if (params.system !== undefined && system !== '') messages.push({ role: 'system', content: system });
  for (const message of params.messages as JsonObject[]) {
    if (message.role === 'assistant') messages.push(assistantToChat(message.content));
    else messages.push(...userToChat(message.content));
  }

  const chat: JsonObject = { model: params.model, messages, max_tokens: params.max_tokens };
  if (params.stop_sequences !== undefined) chat.stop = params.stop_sequences;
  for (const field of ['temperature', 'top_p', 'top_k'] as const) {
    // top_k is no OpenAI field, but vLLM, SGLang and llama.cpp read it from the same body.
    if (params[field] !== undefined) chat[field] = params[field];
  }
  const userId = isObject(params.metadata) ? params.metadata.user_id : undefined;
  if (typeof userId === 'string') chat.user = userId;
  if (Array.isArray(params.tools) && params.tools.length > 0) {
    chat.tools = (params.tools as JsonObject[]).map((tool) => ({
      type: 'function',
      function: { name: tool.name, ...(tool.description !== undefined ? { description: tool.description } : {}), parameters: tool.input_schema },
    }));
  }
  // Structured output: the JSON schema the answer must follow, as chat completions' response_format says it.
  const format = isObject(params.output_config) ? params.output_config.format : undefined;
  if (isObject(format) && format.type === 'json_schema') {
    chat.response_format = { type: 'json_schema', json_schema: { name: 'output', schema: format.schema } };
  }
  if (isObject(params.tool_choice)) {
    const choice = params.tool_choice;
    if (choice.type === 'auto') chat.tool_choice = 'auto';
    else if (choice.type === 'any') chat.tool_choice = 'required';
    else if (choice.type === 'none') chat.tool_choice = 'none';
    else if (choice.type === 'tool') chat.tool_choice = { type: 'function', function: { name: choice.name } };
    if (choice.disable_parallel_tool_use === true) chat.parallel_tool_calls = false;
  }
  return chat;
}

function assistantToChat(content: unknown): ChatMessage {
  const blocks = blocksOf(content);
  const text = blocks
    .filter((block) => block.type === 'text')
    .map((block) => String(block.text))
    .join('');
  const toolCalls: ChatToolCall[] = blocks
    .filter((block) => block.type === 'tool_use')
    .map((block) => ({ id: String(block.id), type: 'function', function: { name: String(block.name), arguments: JSON.stringify(block.input ?? {}) } }));
  const message: ChatMessage = { role: 'assistant', content: text === '' && toolCalls.length > 0 ? null : text };
  if (toolCalls.length > 0) message.tool_calls = toolCalls;
  return message;
}

/**
 * A user turn: its tool results first, each as a "tool" message (chat completions wants them right after the
 * assistant's tool calls), then what else it holds as one user message. Images inside a tool result go in that
 * user message, as tool messages carry text only.
 */
function userToChat(content: unknown): ChatMessage[] {
  if (typeof content === 'string') return [{ role: 'user', content }];
  const out: ChatMessage[] = [];
  const parts: ChatPart[] = [];
  for (const block of blocksOf(content)) {
    if (block.type === 'text') parts.push({ type: 'text', text: String(block.text) });
    else if (block.type === 'image') parts.push(imagePart(block));
    else if (block.type === 'tool_result') {
      const inner = blocksOf(block.content ?? '');
      const text = inner
        .filter((part) => part.type === 'text')
        .map((part) => String(part.text))
        .join('\n');
      out.push({ role: 'tool', tool_call_id: String(block.tool_use_id), content: text });
      for (const part of inner) if (part.type === 'image') parts.push(imagePart(part));
    }
  }
  if (parts.length > 0) {
    const onlyText = parts.every((part) => part.type === 'text');
    out.push({ role: 'user', content: onlyText && parts.length === 1 ? parts[0].text! : parts });
  }
  return out;
}

const STOP_REASONS: Record<string, string> = {
  stop: 'end_turn',
  length: 'max_tokens',
  tool_calls: 'tool_use',
  function_call: 'tool_use',
  content_filter: 'refusal',
};

/**
 * The Messages answer for a chat completion `chat` answering `params`. Throws TranslationError when the answer
 * has no choice, or a tool call whose arguments are not a JSON object (Messages has no way to carry those).
 */
export function chatToMessage(chat: unknown, params: JsonObject): JsonObject {
  if (!isObject(chat) || !Array.isArray(chat.choices) || !isObject(chat.choices[0])) {
    throw new TranslationError('the upstream answered the chat completion without a choice');
  }
  const choice = chat.choices[0] as JsonObject;
  const message = isObject(choice.message) ? choice.message : {};
  const content: JsonObject[] = [];
  const text = typeof message.content === 'string' ? message.content : textOfParts(message.content);
  if (text !== '') content.push({ type: 'text', text });
  for (const call of Array.isArray(message.tool_calls) ? message.tool_calls : []) {
    if (!isObject(call) || !isObject(call.function)) continue;
    content.push({ type: 'tool_use', id: String(call.id ?? ''), name: String(call.function.name ?? ''), input: toolInputOf(call.function.arguments) });
  }

  // vLLM says which stop string ended the text (choice.stop_reason); plain OpenAI servers only say "stop".
  const stops = Array.isArray(params.stop_sequences) ? (params.stop_sequences as string[]) : [];
  const matchedStop = typeof choice.stop_reason === 'string' && stops.includes(choice.stop_reason) ? choice.stop_reason : null;
  const finish = typeof choice.finish_reason === 'string' ? choice.finish_reason : 'stop';
  const stopReason = matchedStop !== null ? 'stop_sequence' : content.some((block) => block.type === 'tool_use') ? 'tool_use' : (STOP_REASONS[finish] ?? 'end_turn');

  const usage = isObject(chat.usage) ? chat.usage : {};
  const details = isObject(usage.prompt_tokens_details) ? usage.prompt_tokens_details : {};
  return {
    id: messageIdOf(chat.id),
    type: 'message',
    role: 'assistant',
    model: typeof chat.model === 'string' ? chat.model : params.model,
    content,
    stop_reason: stopReason,
    stop_sequence: matchedStop,
    usage: {
      input_tokens: count(usage.prompt_tokens),
      output_tokens: count(usage.completion_tokens),
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: count(details.cached_tokens),
    },
  };
}

function textOfParts(content: unknown): string {
  if (!Array.isArray(content)) return '';
  return content
    .filter((part) => isObject(part) && part.type === 'text' && typeof part.text === 'string')
    .map((part) => (part as JsonObject).text as string)
    .join('');
}

function toolInputOf(args: unknown): JsonObject {
  if (isObject(args)) return args;
  if (args === undefined || args === null || args === '') return {};
  try {
    const parsed: unknown = JSON.parse(String(args));
    if (isObject(parsed)) return parsed;
  } catch {
    // fall through
  }
  throw new TranslationError(`the model called a tool with arguments that are not a JSON object: ${String(args).slice(0, 200)}`);
}

function messageIdOf(id: unknown): string {
  const tail = typeof id === 'string' ? id.replace(/^chatcmpl-/, '').replace(/[^A-Za-z0-9_]/g, '') : '';
  return `msg_${tail || Date.now().toString(36)}`;
}

function count(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? Math.round(value) : 0;
}
