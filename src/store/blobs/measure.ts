// Running measurements of a byte stream as it passes: size, sha256, lines.
// Shared by every blob store so they all report the same numbers.
import { createHash, type Hash } from 'node:crypto';
import { BlobTooLargeError, type BlobWriteResult } from './types.ts';

const NEWLINE = 0x0a;

export class StreamMeasure {
  private readonly hash: Hash = createHash('sha256');
  private bytes = 0;
  private newlines = 0;
  private lastByte = -1;

  constructor(private readonly maxBytes = Number.POSITIVE_INFINITY) {}

  /** Accounts for one chunk; throws BlobTooLargeError once past the limit. */
  add(chunk: Uint8Array): void {
    this.bytes += chunk.length;
    if (this.bytes > this.maxBytes) throw new BlobTooLargeError(this.maxBytes);
    this.hash.update(chunk);
    let at = chunk.indexOf(NEWLINE);
    while (at !== -1) {
      this.newlines += 1;
      at = chunk.indexOf(NEWLINE, at + 1);
    }
    if (chunk.length > 0) this.lastByte = chunk[chunk.length - 1];
  }

  result(): BlobWriteResult {
    const unterminated = this.bytes > 0 && this.lastByte !== NEWLINE ? 1 : 0;
    return { bytes: this.bytes, sha256: this.hash.digest('hex'), lineCount: this.newlines + unterminated };
  }
}
