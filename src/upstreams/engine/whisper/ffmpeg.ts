// Formats other than PCM WAV (mp3, m4a, ogg, flac, webm...) are converted by
// the ffmpeg command, when it is on PATH: 16 kHz mono float32 comes back on
// its stdout. It runs as its own process, so a hostile or broken file can at
// worst fail that process, and the conversion never blocks the event loop.
import { spawn } from 'node:child_process';
import { WHISPER_SAMPLE_RATE } from './resample.ts';

export class AudioDecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AudioDecodeError';
  }
}

/** ffmpeg is not installed (or not on PATH): the caller explains which formats work without it. */
export class FfmpegMissingError extends Error {
  constructor() {
    super('ffmpeg is not on PATH');
    this.name = 'FfmpegMissingError';
  }
}

const STDERR_BYTES = 4096;

/** Decodes `bytes` with ffmpeg; at most `maxSamples` samples, else an AudioDecodeError saying the audio is too long. */
export function decodeWithFfmpeg(bytes: Uint8Array, maxSamples: number, signal: AbortSignal, tooLong: string): Promise<Float32Array> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      'ffmpeg',
      ['-nostdin', '-hide_banner', '-loglevel', 'error', '-i', 'pipe:0', '-vn', '-ac', '1', '-ar', String(WHISPER_SAMPLE_RATE), '-f', 'f32le', 'pipe:1'],
      { stdio: ['pipe', 'pipe', 'pipe'], signal },
    );
    const chunks: Buffer[] = [];
    let received = 0;
    let stderr = '';
    let failure: Error | null = null;
    const maxBytes = maxSamples * 4;

    child.stdout.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received > maxBytes) {
        failure ??= new AudioDecodeError(tooLong);
        child.kill('SIGKILL');
        return;
      }
      chunks.push(chunk);
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      if (stderr.length < STDERR_BYTES) stderr += chunk;
    });
    // ffmpeg may stop reading early (it found the audio unreadable); that is its exit's story, not an error here.
    child.stdin.on('error', () => {});
    child.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') failure ??= new FfmpegMissingError();
      else if (error.name === 'AbortError') failure ??= signal.reason instanceof Error ? signal.reason : error;
      else failure ??= new AudioDecodeError(`could not run ffmpeg: ${error.message}`);
    });
    child.on('close', (code) => {
      if (failure) return reject(failure);
      if (code !== 0) {
        const reason = stderr.split('\n').map((line) => line.trim()).filter(Boolean).pop() ?? `ffmpeg exited with code ${code}`;
        return reject(new AudioDecodeError(`ffmpeg could not decode the audio: ${reason}`));
      }
      const pcm = Buffer.concat(chunks);
      // Copied into a fresh, aligned buffer: a Float32Array view needs a 4-byte-aligned offset.
      const samples = new Float32Array(Math.floor(pcm.length / 4));
      new Uint8Array(samples.buffer).set(pcm.subarray(0, samples.length * 4));
      resolve(samples);
    });
    child.stdin.end(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  });
}
