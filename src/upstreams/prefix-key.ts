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
  return hash32(`${String(body.model ?? '')}\n${text}`);
}

/** The shared part as text, at most PREFIX_BYTES of it; strings are cut before anything is serialised. */
function prefixText(endpoint: string, body: Record<string, unknown>): string | undefined {
  if (endpoint.endsWith('/chat/completions') || endpoint.endsWith('/messages')) {
    const leading: unknown[] = [];
    // Anthropic's Messages API carries the system prompt outside the messages.
    if (body.system !== undefined) leading.push({ system: body.system });
    const messages = Array.isArray(body.messages) ? body.messages : [];
    leading.push(...messages.slice(0, -1));
    if (leading.length === 0) return undefined;
    let text = '';
    for (const part of leading) {
      text += `${bounded(part, PREFIX_BYTES - text.length)}\u0000`;
      if (text.length >= PREFIX_BYTES) break;
    }
    return text.slice(0, PREFIX_BYTES);
  }
  if (endpoint.endsWith('/completions')) {
    const prompt = Array.isArray(body.prompt) && body.prompt.length === 1 ? body.prompt[0] : body.prompt;
    if (typeof prompt !== 'string' || prompt.length < MIN_PROMPT_PREFIX) return undefined;
    return prompt.slice(0, PROMPT_PREFIX);
  }
  return undefined;
}

/** A message as text of at most `room` characters: role and string content without serialising the whole of it. */
function bounded(part: unknown, room: number): string {
  if (typeof part === 'object' && part !== null && !Array.isArray(part)) {
    const { content, ...rest } = part as Record<string, unknown>;
    if (typeof content === 'string') return `${JSON.stringify(rest)}${content.slice(0, Math.max(0, room))}`;
    if (Array.isArray(content)) return `${JSON.stringify(rest)}${content.map((block) => bounded(block, room)).join('').slice(0, Math.max(0, room))}`;
    // Other shapes (a content block, a system field): their string values cut the same way.
    return JSON.stringify(part, (_key, value: unknown) => (typeof value === 'string' ? value.slice(0, Math.max(0, room)) : value)).slice(0, Math.max(0, room));
  }
  return typeof part === 'string' ? part.slice(0, Math.max(0, room)) : JSON.stringify(part ?? null).slice(0, Math.max(0, room));
}
