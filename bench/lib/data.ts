// Generated batch input files: chat/completions lines of an exact byte
// length, written in large chunks.
import { open } from 'node:fs/promises';

export interface JsonlSpec {
  lines: number;
  /** Bytes per line including its newline; at least ~160. */
  lineBytes: number;
  model: string;
  /** Lines share this many system prompts of about `bytes` each, in turn (the prefix-affinity bench); none by default. */
  systemPrompts?: { count: number; bytes: number };
}

const WORDS = ['the', 'quick', 'brown', 'fox', 'jumps', 'over', 'lazy', 'dog', 'batch', 'inference', 'spool', 'request', 'token', 'model', 'answer'];

export function jsonlLine(index: number, spec: JsonlSpec): string {
  const customId = `req-${String(index).padStart(7, '0')}`;
  const system = spec.systemPrompts ? `{"role":"system","content":"${systemPrompt(index % spec.systemPrompts.count, spec.systemPrompts.bytes)}"},` : '';
  const before = `{"custom_id":"${customId}","method":"POST","url":"/v1/chat/completions","body":{"model":"${spec.model}","messages":[${system}{"role":"user","content":"`;
  const after = '"}],"max_tokens":16}}\n';
  // The user message fills lineBytes on its own when there is a system prompt: the prompt comes on top.
  const room = spec.lineBytes - before.length + system.length - after.length;
  if (room < 1) throw new Error(`lineBytes ${spec.lineBytes} is too small for a request line`);
  let content = '';
  for (let i = index; content.length < room; i++) content += `${WORDS[i % WORDS.length]} `;
  return before + content.slice(0, room - 1) + '.' + after;
}

/** System prompt number `n`: about `bytes` of text that differs from every other prompt from its first word. */
export function systemPrompt(n: number, bytes: number): string {
  let text = `You are assistant number ${n}.`;
  for (let i = n; text.length < bytes; i++) text += ` ${WORDS[(i * 7 + n) % WORDS.length]}`;
  return text.slice(0, bytes);
}

/** Writes the file and returns its size in bytes. */
export async function writeJsonl(path: string, spec: JsonlSpec): Promise<number> {
  const handle = await open(path, 'w');
  let bytes = 0;
  try {
    let buffer: string[] = [];
    let buffered = 0;
    for (let i = 1; i <= spec.lines; i++) {
      const line = jsonlLine(i, spec);
      buffer.push(line);
      buffered += line.length;
      if (buffered >= 4 * 1024 * 1024 || i === spec.lines) {
        const chunk = Buffer.from(buffer.join(''));
        await handle.write(chunk);
        bytes += chunk.length;
        buffer = [];
        buffered = 0;
      }
    }
  } finally {
    await handle.close();
  }
  return bytes;
}
