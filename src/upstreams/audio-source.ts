// Fetches the audio an audio line points at (CONTRACT.md: `body.file` is an
// http(s) URL, a data: URL, or the id of a file the user uploaded) so it can
// be sent upstream as the multipart `file` part.
import { basename } from 'node:path';
import type { AudioPayload } from './http-client.ts';
import { GuardedFetchError, guardedFetch, type NetworkPolicy, type Resolver } from './ssrf-guard.ts';

// OpenAI's limit for one audio file.
export const MAX_AUDIO_BYTES = 25 * 1024 * 1024;
const FETCH_TIMEOUT_MS = 60_000;
const MAX_REDIRECTS = 5;

export class AudioSourceError extends Error {
  override name = 'AudioSourceError';
}

export type ReadUserFile = (fileId: string) => Promise<AudioPayload | undefined>;

export interface LoadAudioOptions extends NetworkPolicy {
  /** Aborts an http(s) fetch (the batch was cancelled, the worker is stopping). */
  signal?: AbortSignal;
  /** Name resolution for http(s) URLs; dns.lookup by default. For tests. */
  resolve?: Resolver;
}

/**
 * `options` takes the `audio` config block as is (allowPrivateNetworks, allowedHosts) plus the signal:
 * `loadAudio(file, readUserFile, { ...config.audio, signal })`. http(s) URLs go through the SSRF guard.
 */
export async function loadAudio(file: unknown, readUserFile: ReadUserFile, options: LoadAudioOptions = {}): Promise<AudioPayload> {
  if (typeof file !== 'string' || file === '') throw new AudioSourceError("'body.file' must be an http(s) URL, a data: URL or an uploaded file id.");
  if (file.startsWith('data:')) return fromDataUrl(file);
  if (/^https?:\/\//i.test(file)) return fromHttp(file, options);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(file)) throw new AudioSourceError("'body.file' URLs must be http or https (or data:).");
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

async function fromHttp(url: string, options: LoadAudioOptions): Promise<AudioPayload> {
  const timeout = AbortSignal.timeout(FETCH_TIMEOUT_MS);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  try {
    const response = await guardedFetch(url, {
      signal,
      maxBytes: MAX_AUDIO_BYTES,
      maxRedirects: MAX_REDIRECTS,
      allowPrivateNetworks: options.allowPrivateNetworks,
      allowedHosts: options.allowedHosts,
      resolve: options.resolve,
      headers: { 'user-agent': 'spool/0.1', accept: '*/*' },
    });
    if (response.status !== 200) throw new AudioSourceError(`Fetching the audio at ${url} answered HTTP ${response.status}.`);
    const contentType = headerValue(response.headers['content-type']) ?? 'application/octet-stream';
    const name = basename(new URL(url).pathname) || 'audio';
    return { bytes: response.bytes, fileName: name, contentType };
  } catch (err) {
    if (err instanceof AudioSourceError) throw err;
    if (err instanceof GuardedFetchError) {
      if (err.code === 'blocked_address') {
        throw new AudioSourceError(
          `Refused to fetch the audio at ${url}: ${err.message}. ` +
            `An operator can allow "${err.host}" by adding it (or its address or network, as a CIDR) to the "audio.allowedHosts" config, ` +
            `or allow every non-public address with "audio.allowPrivateNetworks": true.`,
        );
      }
      if (err.code === 'too_large') throw new AudioSourceError(`The audio at ${url} is larger than ${MAX_AUDIO_BYTES} bytes.`);
      throw new AudioSourceError(`Could not fetch the audio at ${url}: ${err.message}.`);
    }
    throw new AudioSourceError(`Could not fetch the audio at ${url}: ${describe(err)}`);
  }
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function describe(err: unknown): string {
  const error = err as Error & { code?: string; cause?: { code?: string; message?: string } };
  if (error.name === 'AbortError' || error.name === 'TimeoutError') return error.message || 'aborted';
  return error.message || error.cause?.message || error.code || String(err);
}
