// One small GET to an upstream outside its inference routes (its model list,
// an engine's /props or /metrics): with the upstream's key, a time limit, and
// at most `maxBytes` of answer read, so a server that answers with something
// huge or never finishes cannot hold memory or a connection.
import { request } from 'undici';

export interface UpstreamGetOptions {
  apiKey?: string;
  timeoutMs: number;
  maxBytes: number;
}

/** The status and body text; `text` is undefined when the body was over maxBytes (then left unread). Throws when nothing answered. */
export async function getFromUpstream(url: string, options: UpstreamGetOptions): Promise<{ status: number; text: string | undefined }> {
  const response = await request(url, {
    method: 'GET',
    headers: options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {},
    headersTimeout: options.timeoutMs,
    bodyTimeout: options.timeoutMs,
  });
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of response.body) {
    size += (chunk as Buffer).length;
    if (size > options.maxBytes) {
      response.body.destroy();
      return { status: response.statusCode, text: undefined };
    }
    chunks.push(chunk as Buffer);
  }
  return { status: response.statusCode, text: Buffer.concat(chunks).toString('utf8') };
}
