// Fetches the audio an audio line points at (CONTRACT.md: `body.file` is an
// http(s) URL, a data: URL, or the id of a file the user uploaded) so it can
// be sent upstream as the multipart `file` part.
import { basename } from 'node:path';
import type { AudioPayload } from './http-client.ts';

// OpenAI's limit for one audio file.
export const MAX_AUDIO_BYTES = 25 * 1024 * 1024;
const FETCH_TIMEOUT_MS = 60_000;

export class AudioSourceError extends Error {
  override name = 'AudioSourceError';
}

export type ReadUserFile = (fileId: string) => Promise<AudioPayload | undefined>;

export async function loadAudio(file: unknown, readUserFile: ReadUserFile, signal?: AbortSignal): Promise<AudioPayload> {
  if (typeof file !== 'string' || file === '') throw new AudioSourceError("'body.file' must be an http(s) URL, a data: URL or an uploaded file id.");
  if (file.startsWith('data:')) return fromDataUrl(file);
  if (/^https?:\/\//i.test(file)) return fromHttp(file, signal);
  const uploaded = await readUserFile(file);
  if (!uploaded) throw new AudioSourceError(`'body.file' ${file} is not one of your uploaded files.`);
  return uploaded;
}

function fromDataUrl(url: string): AudioPayload {
  const match = /^data:([^;,]*)((?:;[^;,]*)*?)(;base64)?,(.*)$/s.exec(url);
  if (!match) throw new AudioSourceError("'body.file' is not a valid data: URL.");
  const bytes = match[3] ? Buffer.from(match[4], 'base64') : Buffer.from(decodeURIComponent(match[4]), 'utf8');
  if (bytes.length > MAX_AUDIO_BYTES) throw new AudioSourceError(`The audio is larger than ${MAX_AUDIO_BYTES} bytes.`);
  const contentType = match[1] || 'application/octet-stream';
  const extension = contentType.split('/')[1]?.replace(/^x-/, '').replace('mpeg', 'mp3') || 'bin';
  return { bytes, fileName: `audio.${extension}`, contentType };
}

async function fromHttp(url: string, signal?: AbortSignal): Promise<AudioPayload> {
  const timeout = AbortSignal.timeout(FETCH_TIMEOUT_MS);
  const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
  try {
    const response = await fetch(url, { signal: combined, redirect: 'follow' });
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new AudioSourceError(`Fetching the audio at ${url} answered HTTP ${response.status}.`);
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of response.body ?? []) {
      size += chunk.length;
      if (size > MAX_AUDIO_BYTES) {
        await response.body?.cancel().catch(() => undefined);
        throw new AudioSourceError(`The audio at ${url} is larger than ${MAX_AUDIO_BYTES} bytes.`);
      }
      chunks.push(chunk);
    }
    const contentType = response.headers.get('content-type') ?? 'application/octet-stream';
    const name = basename(new URL(url).pathname) || 'audio';
    return { bytes: Buffer.concat(chunks), fileName: name, contentType };
  } catch (err) {
    if (err instanceof AudioSourceError) throw err;
    throw new AudioSourceError(`Could not fetch the audio at ${url}: ${(err as Error).message}`);
  }
}
