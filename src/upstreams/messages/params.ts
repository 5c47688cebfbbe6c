// What Spool accepts as an Anthropic Messages request (the `params` of a
// Message Batches request, or the body of a real-time POST /v1/messages). The
// same rules hold whether a request is translated to chat completions or passed
// through to a server that speaks /v1/messages, so a batch is accepted or
// refused at create whatever upstream its model later routes to. Features Spool
// cannot honour on every backend (streaming, extended thinking, server tools,
// documents) are refused here with a message that says so, never dropped.

export interface ParamsProblem {
  /** Where in the request, as a dotted path ("messages.2.content.0.source"). */
  param: string;
  message: string;
}

type JsonObject = Record<string, unknown>;

/** Top-level fields Spool cannot honour: the reason each is refused. */
const UNSUPPORTED_FIELDS: Record<string, string> = {
  stream: 'streaming is not supported: leave out "stream" (or set it to false) and read the whole message',
  mcp_servers: 'MCP servers are not supported',
  container: 'code-execution containers are not supported',
  context_management: 'context management is not supported',
};

const BLOCK_TYPES_IN = ['text', 'image', 'tool_use', 'tool_result'] as const;
const ROLES = ['user', 'assistant'] as const;
const TOOL_CHOICES = ['auto', 'any', 'tool', 'none'] as const;
const IMAGE_MEDIA_TYPES = ['image/jpeg', 'image/png', 'image/gif', 'image/webp'];

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The first problem with `params` as a non-streaming Messages request, or null when Spool can run it. */
export function messagesParamsProblem(params: unknown): ParamsProblem | null {
  if (!isObject(params)) return { param: 'params', message: 'must be a JSON object holding a Messages request ({"model", "max_tokens", "messages"})' };
  for (const [field, reason] of Object.entries(UNSUPPORTED_FIELDS)) {
    if (field === 'stream' ? params.stream === true : params[field] !== undefined) return { param: field, message: reason };
  }
  if (params.stream !== undefined && typeof params.stream !== 'boolean') return { param: 'stream', message: 'must be a boolean (and false: streaming is not supported)' };
  if (params.thinking !== undefined && !(isObject(params.thinking) && params.thinking.type === 'disabled')) {
    return { param: 'thinking', message: 'extended thinking is not supported: leave out "thinking"' };
  }
  if (typeof params.model !== 'string' || params.model.trim() === '') return { param: 'model', message: 'is required: the name of a model this server serves' };
  if (params.model.length > 256) return { param: 'model', message: 'is longer than 256 characters' };
  if (!Number.isInteger(params.max_tokens) || (params.max_tokens as number) < 1) return { param: 'max_tokens', message: 'is required: a positive integer' };
  return (
    systemProblem(params.system) ??
    messagesProblem(params.messages) ??
    samplingProblem(params) ??
    stopSequencesProblem(params.stop_sequences) ??
    metadataProblem(params.metadata) ??
    toolsProblem(params.tools) ??
    toolChoiceProblem(params.tool_choice)
  );
}

function systemProblem(system: unknown): ParamsProblem | null {
  if (system === undefined || typeof system === 'string') return null;
  if (!Array.isArray(system)) return { param: 'system', message: 'must be a string or an array of text blocks' };
  for (const [index, block] of system.entries()) {
    if (!isObject(block) || block.type !== 'text' || typeof block.text !== 'string') {
      return { param: `system.${index}`, message: 'must be a text block {"type": "text", "text": "..."}' };
    }
  }
  return null;
}

function messagesProblem(messages: unknown): ParamsProblem | null {
  if (!Array.isArray(messages) || messages.length === 0) return { param: 'messages', message: 'is required: a non-empty array of {"role", "content"}' };
  for (const [index, message] of messages.entries()) {
    const at = `messages.${index}`;
    if (!isObject(message)) return { param: at, message: 'must be an object {"role", "content"}' };
    if (!ROLES.includes(message.role as (typeof ROLES)[number])) return { param: `${at}.role`, message: 'must be "user" or "assistant"' };
    const problem = contentProblem(message.content, `${at}.content`, message.role as (typeof ROLES)[number]);
    if (problem) return problem;
  }
  return null;
}

function contentProblem(content: unknown, at: string, role: 'user' | 'assistant'): ParamsProblem | null {
  if (typeof content === 'string') return null;
  if (!Array.isArray(content)) return { param: at, message: 'must be a string or an array of content blocks' };
  for (const [index, block] of content.entries()) {
    const blockAt = `${at}.${index}`;
    if (!isObject(block) || typeof block.type !== 'string') return { param: blockAt, message: 'must be a content block with a "type"' };
    if (!BLOCK_TYPES_IN.includes(block.type as (typeof BLOCK_TYPES_IN)[number])) {
      return { param: `${blockAt}.type`, message: `content blocks of type "${block.type}" are not supported; Spool runs text, image, tool_use and tool_result blocks` };
    }
    const problem = blockProblem(block, blockAt, role);
    if (problem) return problem;
  }
  return null;
}

function blockProblem(block: JsonObject, at: string, role: 'user' | 'assistant'): ParamsProblem | null {
  switch (block.type) {
    case 'text':
      return typeof block.text === 'string' ? null : { param: `${at}.text`, message: 'must be a string' };
    case 'image':
      if (role !== 'user') return { param: at, message: 'image blocks belong in user messages' };
      return imageSourceProblem(block.source, `${at}.source`);
    case 'tool_use':
      if (role !== 'assistant') return { param: at, message: 'tool_use blocks belong in assistant messages' };
      if (typeof block.id !== 'string' || block.id === '') return { param: `${at}.id`, message: 'must be a non-empty string' };
      if (typeof block.name !== 'string' || block.name === '') return { param: `${at}.name`, message: 'must be a non-empty string' };
      return isObject(block.input) ? null : { param: `${at}.input`, message: 'must be a JSON object' };
    case 'tool_result':
      if (role !== 'user') return { param: at, message: 'tool_result blocks belong in user messages' };
      if (typeof block.tool_use_id !== 'string' || block.tool_use_id === '') return { param: `${at}.tool_use_id`, message: 'must be a non-empty string' };
      if (block.is_error !== undefined && typeof block.is_error !== 'boolean') return { param: `${at}.is_error`, message: 'must be a boolean' };
      return toolResultContentProblem(block.content, `${at}.content`);
    default:
      return null;
  }
}

function toolResultContentProblem(content: unknown, at: string): ParamsProblem | null {
  if (content === undefined || typeof content === 'string') return null;
  if (!Array.isArray(content)) return { param: at, message: 'must be a string or an array of text and image blocks' };
  for (const [index, block] of content.entries()) {
    const blockAt = `${at}.${index}`;
    if (isObject(block) && block.type === 'text' && typeof block.text === 'string') continue;
    if (isObject(block) && block.type === 'image') {
      const problem = imageSourceProblem(block.source, `${blockAt}.source`);
      if (problem) return problem;
      continue;
    }
    return { param: blockAt, message: 'must be a text or image block' };
  }
  return null;
}

function imageSourceProblem(source: unknown, at: string): ParamsProblem | null {
  if (!isObject(source)) return { param: at, message: 'must be {"type": "base64", "media_type", "data"} or {"type": "url", "url"}' };
  if (source.type === 'base64') {
    if (!IMAGE_MEDIA_TYPES.includes(source.media_type as string)) return { param: `${at}.media_type`, message: `must be one of ${IMAGE_MEDIA_TYPES.join(', ')}` };
    return typeof source.data === 'string' && source.data !== '' ? null : { param: `${at}.data`, message: 'must be the base64 of the image' };
  }
  if (source.type === 'url') return typeof source.url === 'string' && source.url !== '' ? null : { param: `${at}.url`, message: 'must be the URL of the image' };
  return { param: `${at}.type`, message: 'must be "base64" or "url" (file ids are not supported)' };
}

function samplingProblem(params: JsonObject): ParamsProblem | null {
  for (const field of ['temperature', 'top_p'] as const) {
    const value = params[field];
    if (value !== undefined && (typeof value !== 'number' || value < 0 || value > 1)) return { param: field, message: 'must be a number from 0 to 1' };
  }
  if (params.top_k !== undefined && (!Number.isInteger(params.top_k) || (params.top_k as number) < 0)) return { param: 'top_k', message: 'must be a non-negative integer' };
  return null;
}

function stopSequencesProblem(stops: unknown): ParamsProblem | null {
  if (stops === undefined) return null;
  if (!Array.isArray(stops) || stops.some((stop) => typeof stop !== 'string' || stop === '')) {
    return { param: 'stop_sequences', message: 'must be an array of non-empty strings' };
  }
  return null;
}

function metadataProblem(metadata: unknown): ParamsProblem | null {
  if (metadata === undefined) return null;
  if (!isObject(metadata)) return { param: 'metadata', message: 'must be an object such as {"user_id": "..."}' };
  if (metadata.user_id !== undefined && metadata.user_id !== null && typeof metadata.user_id !== 'string') return { param: 'metadata.user_id', message: 'must be a string' };
  return null;
}

function toolsProblem(tools: unknown): ParamsProblem | null {
  if (tools === undefined) return null;
  if (!Array.isArray(tools)) return { param: 'tools', message: 'must be an array of tool definitions' };
  for (const [index, tool] of tools.entries()) {
    const at = `tools.${index}`;
    if (!isObject(tool)) return { param: at, message: 'must be a tool definition {"name", "description", "input_schema"}' };
    if (tool.type !== undefined && tool.type !== null && tool.type !== 'custom') {
      return { param: `${at}.type`, message: `server tools ("${String(tool.type)}") are not supported; define client tools with "name" and "input_schema"` };
    }
    if (typeof tool.name !== 'string' || !/^[a-zA-Z0-9_-]{1,128}$/.test(tool.name)) return { param: `${at}.name`, message: 'must be 1-128 letters, digits, "_" or "-"' };
    if (tool.description !== undefined && typeof tool.description !== 'string') return { param: `${at}.description`, message: 'must be a string' };
    if (!isObject(tool.input_schema)) return { param: `${at}.input_schema`, message: 'must be a JSON Schema object' };
  }
  return null;
}

function toolChoiceProblem(choice: unknown): ParamsProblem | null {
  if (choice === undefined) return null;
  if (!isObject(choice) || !TOOL_CHOICES.includes(choice.type as (typeof TOOL_CHOICES)[number])) {
    return { param: 'tool_choice', message: 'must be {"type": "auto" | "any" | "tool" | "none"}' };
  }
  if (choice.type === 'tool' && (typeof choice.name !== 'string' || choice.name === '')) return { param: 'tool_choice.name', message: 'names the tool to use' };
  return null;
}
