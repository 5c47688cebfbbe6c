// A real S3-protocol server for tests: s3rver (npm) on 127.0.0.1, a random
// port, over a temporary directory, stopped (and the directory removed) by
// `close()`. It checks the access key id of each request, not the SigV4
// signature itself.
//
// s3rver 3.7.1 falls short of S3 in three ways the blob store contract
// depends on, and this helper fills them in, as S3 (and MinIO) behave:
//  - PutObject writes the body straight into the object's file, so a reader
//    or a second writer meets a half-written object. Here each write goes to
//    a temporary object and is renamed into place: visible whole or not at all.
//  - AbortMultipartUpload is not implemented (405). Here it removes the
//    upload's parts, as S3 does.
//  - Ranged GETs: "bytes=0-0" returns the whole object (end 0 is taken as
//    unset) and any range on an empty object promises a byte it never sends,
//    which hangs the reader. Here ranges follow S3: the end is inclusive and
//    clamped to the object, and a start at or past the end is a 416.
// It also counts UploadPart requests in flight, so tests can check the
// store's bound on them.
import { randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, rmSync } from 'node:fs';
import { readdir, rename, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { S3BlobStoreOptions } from '../../src/store/blobs/s3.ts';

/** s3rver's default credentials; it rejects any other access key id. */
export const S3RVER_ACCESS_KEY = 'S3RVER';
export const S3RVER_SECRET_KEY = 'S3RVER';

interface KoaContext {
  method: string;
  path: string;
  query: Record<string, string | string[] | undefined>;
  status: number;
  body: unknown;
  type: string;
  req: AsyncIterable<unknown>;
}
type Middleware = (ctx: KoaContext, next: () => Promise<void>) => Promise<void>;

interface S3rverObject {
  bucket: string;
  key: string;
}

interface StoredObject {
  size: number;
  content: Readable | null;
  range?: { start: number; end: number };
}

interface FilesystemStore {
  getResourcePath(bucket: string, key: string | undefined, resource: string): string;
  getObject(bucket: string, key: string, options?: { start?: number; end?: number }): Promise<StoredObject | null>;
  putBucket(name: string): Promise<unknown>;
  putObject(object: S3rverObject): Promise<{ size: number; md5: string }>;
}

interface S3rverInstance {
  middleware: Middleware[];
  store: FilesystemStore;
  httpServer?: Server;
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}

type S3rverConstructor = new (options: Record<string, unknown>) => S3rverInstance;

export interface TestS3 {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  directory: string;
  /** Makes a fresh, empty bucket and returns its name. */
  createBucket(prefix?: string): Promise<string>;
  /** Multipart uploads started in `bucket` and neither completed nor aborted. */
  pendingUploads(bucket: string): Promise<string[]>;
  /** The most UploadPart requests that were in flight at once since the last reset, and how many there were. */
  partStats(): { maxInFlight: number; total: number };
  resetPartStats(): void;
  /** While set, UploadPart requests after the first `afterParts` are refused with 403 AccessDenied (not retried by the SDK). */
  refuseParts(afterParts: number | undefined): void;
  /** Options for an S3BlobStore on `bucket` of this server. */
  storeOptions(bucket: string, extra?: Partial<S3BlobStoreOptions>): S3BlobStoreOptions;
  close(): Promise<void>;
}

const S3rver = createRequire(import.meta.url)('s3rver') as S3rverConstructor;

export async function startS3rver(): Promise<TestS3> {
  const directory = mkdtempSync(join(tmpdir(), 'spool-s3rver-'));
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory, configureBuckets: [] });
  const { store } = server;
  makePutObjectAtomic(store);
  fixRangedReads(store);
  const parts: PartCounters = { inFlight: 0, maxInFlight: 0, total: 0, refuseAfter: undefined };
  server.middleware.unshift(abortMultipartUpload(store), countParts(parts));
  let address: AddressInfo;
  try {
    address = await server.run();
  } catch (err) {
    rmSync(directory, { recursive: true, force: true });
    throw err;
  }
  const endpoint = `http://127.0.0.1:${address.port}`;
  let closed = false;
  return {
    endpoint,
    directory,
    async createBucket(prefix = 'spool-test') {
      const name = `${prefix}-${randomBytes(4).toString('hex')}`;
      await store.putBucket(name);
      return name;
    },
    async pendingUploads(bucket) {
      return readdir(store.getResourcePath(bucket, undefined, 'uploads')).catch(() => []);
    },
    partStats: () => ({ maxInFlight: parts.maxInFlight, total: parts.total }),
    resetPartStats() {
      parts.maxInFlight = 0;
      parts.total = 0;
    },
    refuseParts(afterParts) {
      parts.refuseAfter = afterParts;
    },
    storeOptions: (bucket, extra = {}) => ({
      endpoint,
      region: 'us-east-1',
      bucket,
      accessKeyId: S3RVER_ACCESS_KEY,
      secretAccessKey: S3RVER_SECRET_KEY,
      forcePathStyle: true,
      ...extra,
    }),
    async close() {
      if (closed) return;
      closed = true;
      // The SDK keeps connections alive; without this, close() waits for them to idle out.
      server.httpServer?.closeAllConnections();
      await server.close();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

/** Each PutObject (and each completed multipart upload) is written under a temporary key, then renamed into place. */
function makePutObjectAtomic(store: FilesystemStore): void {
  const putInPlace = store.putObject.bind(store);
  store.putObject = async (object) => {
    const tmpKey = `${object.key}.tmp-${randomBytes(8).toString('hex')}`;
    const staged = Object.assign(Object.create(Object.getPrototypeOf(object) as object) as S3rverObject, object, { key: tmpKey });
    try {
      const result = await putInPlace(staged);
      // Metadata first, bytes last: the object file's rename is the moment the new object appears.
      for (const resource of ['metadata.json', 'object.md5', 'object']) {
        await rename(store.getResourcePath(object.bucket, tmpKey, resource), store.getResourcePath(object.bucket, object.key, resource)).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT' || resource === 'object') throw err;
        });
      }
      return result;
    } catch (err) {
      for (const resource of ['metadata.json', 'object.md5', 'object']) await rm(store.getResourcePath(object.bucket, tmpKey, resource), { force: true });
      throw err;
    }
  };
}

/** Ranges as S3 serves them: [start, min(end, size - 1)], and 416 when start is at or past the end. */
function fixRangedReads(store: FilesystemStore): void {
  const getWhole = store.getObject.bind(store);
  store.getObject = async (bucket, key, options) => {
    const object = await getWhole(bucket, key);
    if (!object || !options || (options.start === undefined && options.end === undefined)) return object;
    object.content?.destroy();
    const start = options.start ?? 0;
    const end = Math.min(options.end ?? Number.POSITIVE_INFINITY, object.size - 1);
    // s3rver answers 416 InvalidRange when a ranged object comes back without content.
    object.range = { start, end };
    object.content = start > end ? null : createReadStream(store.getResourcePath(bucket, key, 'object'), { start, end });
    return object;
  };
}

/** DELETE /bucket/key?uploadId=ID: S3's AbortMultipartUpload, which s3rver lacks. */
function abortMultipartUpload(store: FilesystemStore): Middleware {
  return async (ctx, next) => {
    const uploadId = ctx.query.uploadId;
    if (ctx.method !== 'DELETE' || typeof uploadId !== 'string') return next();
    const bucket = decodeURIComponent(ctx.path.split('/')[1] ?? '');
    if (!/^[0-9a-f]+$/.test(uploadId) || bucket === '') {
      ctx.status = 400;
      return;
    }
    await rm(join(store.getResourcePath(bucket, undefined, 'uploads'), uploadId), { recursive: true, force: true });
    ctx.status = 204;
  };
}

interface PartCounters {
  inFlight: number;
  maxInFlight: number;
  total: number;
  refuseAfter: number | undefined;
}

function countParts(parts: PartCounters): Middleware {
  return async (ctx, next) => {
    if (ctx.method !== 'PUT' || ctx.query.partNumber === undefined) return next();
    if (parts.refuseAfter !== undefined && parts.total >= parts.refuseAfter) {
      // Read the body first, as S3 does: answering mid-upload would look like a network failure, which the SDK retries.
      for await (const _ of ctx.req);
      ctx.status = 403;
      ctx.body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied (test)</Message></Error>';
      ctx.type = 'application/xml';
      return;
    }
    parts.inFlight += 1;
    parts.total += 1;
    parts.maxInFlight = Math.max(parts.maxInFlight, parts.inFlight);
    try {
      await next();
    } finally {
      parts.inFlight -= 1;
    }
  };
}
