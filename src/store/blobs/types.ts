// The blob store holds file bytes: uploads, batch outputs and error files.
// Implementations: a local directory (embedded default) and S3 (scale-out).
import type { Readable } from 'node:stream';

export interface BlobWriteResult {
  bytes: number;
  sha256: string;
  /** Newline-terminated lines, plus one for a final unterminated line. */
  lineCount: number;
}

export interface BlobWriteOptions {
  /** Abort with BlobTooLargeError once the source passes this many bytes. */
  maxBytes?: number;
}

export interface BlobStore {
  /**
   * Streams `source` into `key`. Atomic: a reader sees the old blob, or none,
   * until the whole new blob is durable. On any failure nothing is left behind.
   */
  write(key: string, source: AsyncIterable<Uint8Array>, options?: BlobWriteOptions): Promise<BlobWriteResult>;
  /** Bytes [start, end) of the blob (end defaults to its size). */
  read(key: string, range?: { start: number; end?: number }): Promise<Readable>;
  /** Size in bytes, or undefined when the blob does not exist. */
  size(key: string): Promise<number | undefined>;
  /** Idempotent: deleting a missing blob is not an error. */
  delete(key: string): Promise<void>;
  /** Confirms the store is reachable (readiness). */
  check(): Promise<void>;
  /** Releases connections, for stores that hold any. */
  close?(): Promise<void>;
}

export class BlobTooLargeError extends Error {
  override name = 'BlobTooLargeError';
  constructor(readonly maxBytes: number) {
    super(`blob exceeds the limit of ${maxBytes} bytes`);
  }
}

export class BlobNotFoundError extends Error {
  override name = 'BlobNotFoundError';
  constructor(readonly key: string) {
    super(`blob ${key} does not exist`);
  }
}
