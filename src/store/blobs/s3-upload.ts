// Streams a byte source into one S3 object with bounded memory. Bytes are
// copied into part-sized buffers; a source that ends within the first part is
// sent as one PutObject, anything longer as a multipart upload with at most
// `maxInFlight` parts travelling at once (the source is not read while they
// are, so a fast client cannot make the process buffer a whole file). S3 only
// shows an object once PutObject or CompleteMultipartUpload succeeds, which is
// what makes a write atomic; on any failure the multipart upload is aborted so
// its parts are not kept (and billed) by the store.
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from '@aws-sdk/client-s3';

/** S3's ceiling on the parts of one upload. */
export const MAX_PARTS = 10_000;

export interface UploadTarget {
  client: S3Client;
  bucket: string;
  key: string;
  /** Bytes per part (S3 wants at least 5 MiB for every part but the last). */
  partSize: number;
  maxInFlight: number;
}

/**
 * Uploads `source` to the target. `inspect` sees every chunk before it is
 * buffered and may throw (the size limit does) to abandon the upload.
 */
export async function uploadStream(target: UploadTarget, source: AsyncIterable<Uint8Array>, inspect: (chunk: Uint8Array) => void): Promise<void> {
  // Unzeroed memory: the OS backs only the pages bytes are copied into, so a small blob costs little of the 8 MiB.
  let buffer: Buffer = Buffer.allocUnsafe(target.partSize);
  let filled = 0;
  let upload: MultipartUpload | undefined;
  try {
    for await (const chunk of source) {
      inspect(chunk);
      let offset = 0;
      while (offset < chunk.length) {
        // A full buffer is sent only once more bytes arrive, so a blob of exactly one part stays a single PutObject.
        if (filled === target.partSize) {
          upload ??= await MultipartUpload.start(target);
          await upload.send(buffer);
          buffer = upload.spareBuffer() ?? Buffer.allocUnsafe(target.partSize);
          filled = 0;
        }
        const copied = Buffer.from(chunk.buffer, chunk.byteOffset + offset, chunk.length - offset).copy(buffer, filled);
        filled += copied;
        offset += copied;
      }
    }
    if (!upload) {
      await target.client.send(new PutObjectCommand({ Bucket: target.bucket, Key: target.key, Body: buffer.subarray(0, filled), ContentLength: filled }));
      return;
    }
    if (filled > 0) await upload.send(buffer.subarray(0, filled));
    await upload.complete();
  } catch (err) {
    await upload?.abort();
    throw err;
  }
}

class MultipartUpload {
  private readonly parts: CompletedPart[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  /** Buffers of finished full-size parts, reused so a long upload does not allocate a fresh 8 MiB per part. */
  private readonly spare: Buffer[] = [];
  private failure: { error: unknown } | undefined;
  private nextPartNumber = 1;

  private constructor(
    private readonly target: UploadTarget,
    private readonly uploadId: string,
  ) {}

  static async start(target: UploadTarget): Promise<MultipartUpload> {
    const created = await target.client.send(new CreateMultipartUploadCommand({ Bucket: target.bucket, Key: target.key }));
    if (!created.UploadId) throw new Error(`S3 returned no upload id for ${target.key}`);
    return new MultipartUpload(target, created.UploadId);
  }

  /** Starts sending `body` as the next part; waits first while `maxInFlight` parts are already travelling. */
  async send(body: Buffer): Promise<void> {
    while (this.inFlight.size >= this.target.maxInFlight && !this.failure) await Promise.race(this.inFlight);
    this.throwIfFailed();
    const partNumber = this.nextPartNumber++;
    if (partNumber > MAX_PARTS) throw new Error(`blob ${this.target.key} needs more than ${MAX_PARTS} parts of ${this.target.partSize} bytes`);
    // Settles rather than rejects: a failure is recorded and rethrown by the next send or complete,
    // so no part's rejection is ever left unhandled while the loop is busy elsewhere.
    const travelling: Promise<void> = this.target.client
      .send(new UploadPartCommand({ Bucket: this.target.bucket, Key: this.target.key, UploadId: this.uploadId, PartNumber: partNumber, Body: body }))
      .then(
        (sent) => {
          this.parts.push({ PartNumber: partNumber, ETag: sent.ETag });
          if (body.length === this.target.partSize) this.spare.push(body);
        },
        (error: unknown) => {
          this.failure ??= { error };
        },
      )
      .finally(() => this.inFlight.delete(travelling));
    this.inFlight.add(travelling);
  }

  spareBuffer(): Buffer | undefined {
    return this.spare.pop();
  }

  async complete(): Promise<void> {
    await Promise.all(this.inFlight);
    this.throwIfFailed();
    const parts = [...this.parts].sort((a, b) => a.PartNumber! - b.PartNumber!);
    await this.target.client.send(
      new CompleteMultipartUploadCommand({ Bucket: this.target.bucket, Key: this.target.key, UploadId: this.uploadId, MultipartUpload: { Parts: parts } }),
    );
  }

  /** Best effort: the caller's error is the one that matters; a bucket lifecycle rule sweeps uploads an abort missed. */
  async abort(): Promise<void> {
    await Promise.all(this.inFlight);
    await this.target.client
      .send(new AbortMultipartUploadCommand({ Bucket: this.target.bucket, Key: this.target.key, UploadId: this.uploadId }))
      .catch(() => undefined);
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.error;
  }
}
