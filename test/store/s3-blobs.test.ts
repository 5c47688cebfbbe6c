// S3BlobStore against a real S3-protocol server (s3rver, started here on
// 127.0.0.1 over a temp dir): the blob store contract, then what only S3 has:
// multipart uploads with bounded parts in flight, aborts that leave no parts,
// key prefixes, and start-up failing with a one-line reason.
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { S3BlobStore } from '../../src/store/blobs/s3.ts';
import { BlobTooLargeError } from '../../src/store/blobs/types.ts';
import { startS3rver, type TestS3 } from '../helpers/s3rver.ts';
import { chunks, collect, describeBlobStoreContract, failingAfter, sha256 } from './blob-contract.ts';

const MiB = 1024 * 1024;
/** S3's smallest allowed part: tests use it so a few MiB already make a multipart upload. */
const PART = 5 * MiB;

let s3: TestS3;

before(async () => {
  s3 = await startS3rver();
});

after(async () => {
  await s3?.close();
});

describeBlobStoreContract({
  name: 's3 (s3rver)',
  async open() {
    const bucket = await s3.createBucket();
    // Small parts, so the contract's multi-megabyte cases run as real multipart uploads too.
    const store = await new S3BlobStore(s3.storeOptions(bucket, { partSize: PART })).init();
    return {
      store,
      leftovers: () => s3.pendingUploads(bucket),
      dispose: () => store.close(),
    };
  },
});

/** `count` MiB of recognisable bytes, in 1 MiB chunks. */
function mebibytes(count: number): Buffer[] {
  return Array.from({ length: count }, (_, i) => {
    const chunk = Buffer.alloc(MiB);
    for (let at = 0; at < MiB; at += 8) chunk.writeDoubleBE(i * MiB + at, at);
    return chunk;
  });
}

describe('S3BlobStore: multipart uploads', () => {
  let bucket: string;
  let store: S3BlobStore;

  beforeEach(async () => {
    bucket = await s3.createBucket();
    store = await new S3BlobStore(s3.storeOptions(bucket, { partSize: PART })).init();
    s3.resetPartStats();
    s3.refuseParts(undefined);
  });

  it('a blob of several parts is uploaded with at most two parts in flight and stored exactly', async () => {
    const body = mebibytes(23);
    const data = Buffer.concat(body);
    const result = await store.write('files/multi', chunks(...body));
    assert.deepEqual(result, { bytes: data.length, sha256: sha256(data), lineCount: result.lineCount });
    const stats = s3.partStats();
    assert.equal(stats.total, 5, '23 MiB in 5 MiB parts is 5 parts');
    assert.ok(stats.maxInFlight <= 2, `at most 2 parts in flight, saw ${stats.maxInFlight}`);
    assert.equal(await store.size('files/multi'), data.length);
    assert.ok((await collect(await store.read('files/multi'))).equals(data));
    // A range across the boundary of parts 2 and 3.
    const across = await collect(await store.read('files/multi', { start: 2 * PART - 100, end: 2 * PART + 100 }));
    assert.ok(across.equals(data.subarray(2 * PART - 100, 2 * PART + 100)));
    assert.deepEqual(await s3.pendingUploads(bucket), []);
    await store.close();
  });

  it('a blob of exactly one part is one PutObject, not a multipart upload', async () => {
    const data = Buffer.concat(mebibytes(5));
    await store.write('files/one-part', chunks(...mebibytes(5)));
    assert.equal(s3.partStats().total, 0);
    assert.deepEqual(await s3.pendingUploads(bucket), []);
    assert.ok((await collect(await store.read('files/one-part'))).equals(data));
    await store.close();
  });

  it('while parts are uploaded the object is invisible and the old blob stays readable', async () => {
    await store.write('files/v', chunks('v1\n'));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let partsSent!: () => void;
    const sent = new Promise<void>((resolve) => (partsSent = resolve));
    const body = mebibytes(12);
    const writing = store.write(
      'files/v',
      (async function* () {
        yield* body.slice(0, 11);
        partsSent();
        await gate;
        yield body[11];
      })(),
    );
    await sent;
    // Two full parts were handed to S3 before the source paused.
    await waitFor(async () => s3.partStats().total === 2);
    assert.equal((await s3.pendingUploads(bucket)).length, 1, 'the upload is in progress');
    assert.equal((await collect(await store.read('files/v'))).toString(), 'v1\n', 'readers still get the old blob');
    release();
    await writing;
    assert.ok((await collect(await store.read('files/v'))).equals(Buffer.concat(body)));
    assert.deepEqual(await s3.pendingUploads(bucket), []);
    await store.close();
  });

  it('running past maxBytes after some parts aborts the upload: no object, no parts kept', async () => {
    await assert.rejects(store.write('files/too-big', chunks(...mebibytes(13)), { maxBytes: 11 * MiB }), BlobTooLargeError);
    assert.ok(s3.partStats().total >= 1, 'parts had been uploaded before the limit was reached');
    assert.equal(await store.size('files/too-big'), undefined);
    assert.deepEqual(await s3.pendingUploads(bucket), []);
    await store.close();
  });

  it('a source failing after some parts aborts the upload and keeps the previous blob', async () => {
    await store.write('files/prev', chunks('previous\n'));
    await assert.rejects(store.write('files/prev', failingAfter(new Error('client went away'), ...mebibytes(11))), /client went away/);
    assert.equal((await collect(await store.read('files/prev'))).toString(), 'previous\n');
    assert.deepEqual(await s3.pendingUploads(bucket), []);
    await store.close();
  });

  it('a part the store refuses fails the write with S3\'s error and aborts the upload', async () => {
    s3.refuseParts(1);
    await assert.rejects(store.write('files/refused', chunks(...mebibytes(16))), (err: Error) => err.name === 'AccessDenied');
    s3.refuseParts(undefined);
    assert.equal(await store.size('files/refused'), undefined);
    assert.deepEqual(await s3.pendingUploads(bucket), []);
    await store.close();
  });
});

describe('S3BlobStore: prefix and start-up', () => {
  it('a prefix puts every key under it, and two prefixes in one bucket do not meet', async () => {
    const bucket = await s3.createBucket();
    const a = await new S3BlobStore(s3.storeOptions(bucket, { prefix: '/deploy-a/' })).init();
    const b = await new S3BlobStore(s3.storeOptions(bucket, { prefix: 'deploy-b' })).init();
    const root = await new S3BlobStore(s3.storeOptions(bucket)).init();
    await a.write('files/x', chunks('from a\n'));
    await b.write('files/x', chunks('from b\n'));
    assert.equal((await collect(await root.read('deploy-a/files/x'))).toString(), 'from a\n');
    assert.equal((await collect(await root.read('deploy-b/files/x'))).toString(), 'from b\n');
    assert.equal(await root.size('files/x'), undefined);
    await a.delete('files/x');
    assert.equal((await collect(await b.read('files/x'))).toString(), 'from b\n');
    await Promise.all([a.close(), b.close(), root.close()]);
  });

  it('a missing bucket stops init() with one line naming it', async () => {
    await assert.rejects(new S3BlobStore(s3.storeOptions('no-such-bucket')).init(), (err: Error) => {
      assert.match(err.message, /^S3 bucket "no-such-bucket" at http:\/\/127\.0\.0\.1:\d+ does not exist/);
      assert.doesNotMatch(err.message, /\n/);
      return true;
    });
  });

  it('wrong credentials stop init() with one line naming the keys to check', async () => {
    const bucket = await s3.createBucket();
    await assert.rejects(new S3BlobStore(s3.storeOptions(bucket, { accessKeyId: 'NOT-A-KEY' })).init(), (err: Error) => {
      assert.match(err.message, /refused access: check blobs\.s3\.accessKeyId and blobs\.s3\.secretAccessKey$/);
      return true;
    });
  });

  it('an unreachable endpoint stops init() with one line', async () => {
    const bucket = await s3.createBucket();
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    await assert.rejects(new S3BlobStore(s3.storeOptions(bucket, { endpoint: 'http://127.0.0.1:1' })).init(), (err: Error) => {
      assert.match(err.message, /^S3 bucket "[^"]+" at http:\/\/127\.0\.0\.1:1 is unreachable: \S/);
      assert.doesNotMatch(err.message, /\n/);
      return true;
    });
  });
});

async function waitFor(condition: () => Promise<boolean>, deadlineMs = 10_000): Promise<void> {
  const giveUpAt = Date.now() + deadlineMs;
  while (!(await condition())) {
    if (Date.now() > giveUpAt) assert.fail('timed out waiting for a condition');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
