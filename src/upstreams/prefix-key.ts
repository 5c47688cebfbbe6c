// What two requests must share for an engine to reuse its KV cache between
// them: the leading part of the prompt. For chat, every message but the last
// (the system prompt and any fixed leading turns; the last is the part that
// varies per line); for completions, the leading text of the prompt. Hashed
// on at most PREFIX_BYTES, so a long prompt costs the same as a short one.
// A request with nothing shared to key on (one chat message, a short prompt)
// has no prefix: it goes where there is most room.
import { hash32 } from './pool-placement.ts';

/** Bytes of prefix hashed: past this much shared text, the cache hit is already worth having. */
export const PREFIX_BYTES = 8192;
/** A completion prompt shorter than this has no prefix worth a replica's cache. */
const MIN_PROMPT_PREFIX = 256;
const PROMPT_PREFIX = 1024;

export function prefixHashOf(endpoint: string, body: Record<string, unknown>): number | undefined {
  const text = prefixText(endpoint, body);
  if (!text) return undefined;
  return hash32(`${String(body.model ?? '')}\n${text.length > PREFIX_BYTES ? text.slice(0, PREFIX_BYTES) : text}`);
}

function prefixText(endpoint: string, body: Record<string, unknown>): string | undefined {
  if (endpoint.endsWith('/chat/completions') || endpoint.endsWith('/messages')) {
    const leading: unknown[] = [];
    // Anthropic's Messages API carries the system prompt outside the messages.
    if (body.system !== undefined) leading.push(body.system);
    const messages = Array.isArray(body.messages) ? body.messages : [];
    let size = 0;
    for (const message of messages.slice(0, -1)) {
      leading.push(message);
      size += approximateSize(message);
      if (size > PREFIX_BYTES) break;
    }
    return leading.length > 0 ? JSON.stringify(leading) : undefined;
  }
  if (endpoint.endsWith('/completions')) {
    const prompt = Array.isArray(body.prompt) && body.prompt.length === 1 ? body.prompt[0] : body.prompt;
    if (typeof prompt !== 'string' || prompt.length < MIN_PROMPT_PREFIX) return undefined;
    return prompt.slice(0, PROMPT_PREFIX);
  }
  return undefined;
}

function approximateSize(message: unknown): number {
  if (typeof message !== 'object' || message === null) return 16;
  const content = (message as { content?: unknown }).content;
  return typeof content === 'string' ? content.length : 256;
}
