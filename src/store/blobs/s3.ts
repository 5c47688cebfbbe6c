// Blobs as objects in one S3-compatible bucket (AWS S3, MinIO, Ceph, R2...),
// the store every process of a scale-out deployment shares. Same contract as
// the local directory: a blob appears whole or not at all (S3 publishes an
// object only when its upload completes), failed writes leave nothing, reads
// are ranged GETs streamed straight through. Loaded with a dynamic import only
// when blobs.kind is "s3", so the embedded setup never pays for the AWS SDK.
import { Readable } from 'node:stream';
import { DeleteObjectCommand, GetObjectCommand, HeadBucketCommand, HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { StreamMeasure } from './measure.ts';
import { describeBucketProblem, httpStatusOf, isNotFound } from './s3-errors.ts';
import { MAX_PARTS, uploadStream } from './s3-upload.ts';
import { BlobNotFoundError, type BlobStore, type BlobWriteOptions, type BlobWriteResult } from './types.ts';

const MiB = 1024 * 1024;

export interface S3BlobStoreOptions {
  bucket: string;
  region: string;
  /** Unset: AWS S3 itself. */
  endpoint?: string;
  /** Both unset: the SDK's default credential chain. */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Unset: on when an endpoint is given (self-hosted stores rarely resolve bucket host names). */
  forcePathStyle?: boolean;
  prefix?: string;
  /** Bytes per multipart part; default 8 MiB. */
  partSize?: number;
  /** Parts of one upload sent at once; default 2. */
  maxInFlight?: number;
}

export class S3BlobStore implements BlobStore {
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly partSize: number;
  private readonly maxInFlight: number;
  private readonly where: string;

  constructor(options: S3BlobStoreOptions) {
    this.bucket = options.bucket;
    this.prefix = normalizePrefix(options.prefix ?? '');
    this.partSize = options.partSize ?? 8 * MiB;
    this.maxInFlight = options.maxInFlight ?? 2;
    this.where = options.endpoint ?? `AWS S3 (${options.region})`;
    this.client = new S3Client({
      region: options.region,
      endpoint: options.endpoint,
      forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
      credentials: options.accessKeyId && options.secretAccessKey ? { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey } : undefined,
      // The SDK's default CRC checksums (aws-chunked bodies, checksum trailers) are not understood by every
      // S3-compatible store; we hash every blob ourselves, so only send checksums where an operation requires one.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: {
        // A black-holed endpoint fails start-up in seconds instead of hanging it.
        connectionTimeout: 5_000,
        // Downloads hold a socket for as long as the client takes to read; 50 (the default) would let a few
        // slow downloads starve the worker's ranged reads.
        httpAgent: { keepAlive: true, maxSockets: 256 },
        httpsAgent: { keepAlive: true, maxSockets: 256 },
      },
    });
  }

  /** Confirms the bucket exists and is reachable with these credentials; the error is one line naming the bucket. */
  async init(): Promise<this> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      this.client.destroy();
      throw new Error(describeBucketProblem(err, this.bucket, this.where));
    }
    return this;
  }

  private objectKey(key: string): string {
    // The keys Spool makes are "files/<id>" and "batches/<id>/<kind>.jsonl"; refusing dot segments and empty
    // parts keeps S3 keys the same set the local store accepts, so a blob key means the same in both.
    const parts = key.split('/');
    if (key === '' || parts.some((part) => part === '' || part === '.' || part === '..')) throw new Error(`invalid blob key "${key}"`);
    return this.prefix + key;
  }

  async write(key: string, source: AsyncIterable<Uint8Array>, options: BlobWriteOptions = {}): Promise<BlobWriteResult> {
    const objectKey = this.objectKey(key);
    const measure = new StreamMeasure(options.maxBytes);
    // A limit larger than MAX_PARTS default parts grows the parts, so an allowed size never hits S3's part cap.
    const partSize = Math.max(this.partSize, Math.ceil((options.maxBytes ?? 0) / MAX_PARTS));
    await uploadStream({ client: this.client, bucket: this.bucket, key: objectKey, partSize, maxInFlight: this.maxInFlight }, source, (chunk) =>
      measure.add(chunk),
    );
    return measure.result();
  }

  async read(key: string, range?: { start: number; end?: number }): Promise<Readable> {
    const objectKey = this.objectKey(key);
    const start = range?.start ?? 0;
    const end = range?.end;
    if (end !== undefined && end <= start) {
      // Nothing to fetch, but a missing blob must still say so, as it does with the local store.
      if ((await this.size(key)) === undefined) throw new BlobNotFoundError(key);
      return Readable.from([]);
    }
    const wantsAll = start === 0 && end === undefined;
    try {
      const got = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: objectKey, Range: wantsAll ? undefined : `bytes=${start}-${end === undefined ? '' : end - 1}` }),
      );
      if (!(got.Body instanceof Readable)) throw new Error(`S3 returned no body stream for ${key}`);
      return got.Body;
    } catch (err) {
      if (isNotFound(err)) throw new BlobNotFoundError(key);
      // 416 comes only for an existing object whose size is at or before `start`: an empty read, as locally.
      if (httpStatusOf(err) === 416) return Readable.from([]);
      throw err;
    }
  }

  async size(key: string): Promise<number | undefined> {
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
      return head.ContentLength ?? 0;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    // S3 answers 204 for a key that is already gone, which is the idempotence the interface asks for.
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
  }

  async check(): Promise<void> {
    await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

/** "spool", "/spool/", "spool/" all mean keys under "spool/"; "" means the bucket root. */
function normalizePrefix(prefix: string): string {
  const trimmed = prefix.replace(/^\/+|\/+$/g, '');
  return trimmed === '' ? '' : `${trimmed}/`;
}
