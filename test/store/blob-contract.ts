// The blob store contract: the cases every BlobStore must pass, whatever
// holds the bytes. local-blobs.test.ts runs them on the local directory store,
// s3-blobs.test.ts on the S3 store against a real S3-protocol server. What a
// backend leaves behind mid-write (temp files, multipart uploads) is reported
// by its `leftovers()`, so "a failed write leaves nothing" means the same
// thing for each.
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { BlobNotFoundError, BlobTooLargeError, type BlobStore } from '../../src/store/blobs/types.ts';

export interface ContractInstance {
  store: BlobStore;
  /** Whatever unfinished or failed writes left behind; [] when clean. */
  leftovers(): Promise<string[]>;
  dispose(): Promise<void>;
}

export interface ContractBackend {
  name: string;
  /** A fresh, empty store for one test. */
  open(): Promise<ContractInstance>;
}

export async function* chunks(...parts: (string | Uint8Array)[]): AsyncGenerator<Uint8Array> {
  for (const part of parts) yield typeof part === 'string' ? Buffer.from(part) : part;
}

/** Yields `parts`, then throws `error`. */
export async function* failingAfter(error: Error, ...parts: (string | Uint8Array)[]): AsyncGenerator<Uint8Array> {
  yield* chunks(...parts);
  throw error;
}

export async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(Buffer.from(part as Uint8Array));
  return Buffer.concat(parts);
}

export const sha256 = (data: string | Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** Keys no store accepts: they would escape the store's root or name nothing. */
export const INVALID_KEYS = ['../outside', 'files/../../outside', '', '.'];

export function describeBlobStoreContract(backend: ContractBackend): void {
  let instance: ContractInstance;
  let blobs: BlobStore;
  const leftovers = () => instance.leftovers();

  describe(`blob store contract: ${backend.name}`, () => {
    beforeEach(async () => {
      instance = await backend.open();
      blobs = instance.store;
    });

    afterEach(async () => {
      await instance.dispose();
    });

    describe('write: measurements', () => {
      const cases: { name: string; parts: string[]; lines: number }[] = [
        { name: 'empty', parts: [], lines: 0 },
        { name: 'empty chunks only', parts: ['', ''], lines: 0 },
        { name: 'one terminated line', parts: ['{"a":1}\n'], lines: 1 },
        { name: 'one unterminated line', parts: ['{"a":1}'], lines: 1 },
        { name: 'a lone newline', parts: ['\n'], lines: 1 },
        { name: 'two lines, last unterminated', parts: ['a\nb'], lines: 2 },
        { name: 'blank lines count', parts: ['a\n\n\nb\n'], lines: 4 },
        { name: 'newlines split across chunks', parts: ['ab', '\n', 'cd\nef', '', '\ngh', '\n'], lines: 4 },
        { name: 'CRLF', parts: ['a\r\nb\r\n'], lines: 2 },
        { name: 'multi-byte UTF-8', parts: ['héllo\n', 'wörld ✓'], lines: 2 },
      ];
      for (const c of cases) {
        it(`bytes, sha256 and lineCount: ${c.name}`, async () => {
          const data = Buffer.from(c.parts.join(''));
          const result = await blobs.write('files/m', chunks(...c.parts));
          assert.deepEqual(result, { bytes: data.length, sha256: sha256(data), lineCount: c.lines });
          assert.equal(await blobs.size('files/m'), data.length);
          assert.deepEqual(await collect(await blobs.read('files/m')), data);
          assert.deepEqual(await leftovers(), []);
        });
      }

      it('a large multi-chunk write is measured and stored exactly', async () => {
        const parts: Buffer[] = [];
        for (let i = 0; i < 300; i++) parts.push(Buffer.from(`{"custom_id":"r${i}","pad":"${'x'.repeat(i * 37)}"}\n`));
        const data = Buffer.concat(parts);
        // Re-chunk at odd sizes so lines straddle chunk boundaries.
        const odd: Buffer[] = [];
        for (let i = 0; i < data.length; i += 4093) odd.push(data.subarray(i, i + 4093));
        const result = await blobs.write('batches/b/output.jsonl', chunks(...odd));
        assert.deepEqual(result, { bytes: data.length, sha256: sha256(data), lineCount: 300 });
        assert.deepEqual(await collect(await blobs.read('batches/b/output.jsonl')), data);
      });

      it('a source that reuses one buffer for every chunk is stored as it was at each yield', async () => {
        // Stores must copy what they keep: a reader may hand out the same buffer again once it is taken.
        const reused = Buffer.alloc(4);
        async function* recycling(): AsyncGenerator<Uint8Array> {
          for (const word of ['abc\n', 'def\n', 'ghi\n']) {
            reused.write(word);
            yield reused;
          }
        }
        await blobs.write('files/reuse', recycling());
        assert.equal((await collect(await blobs.read('files/reuse'))).toString(), 'abc\ndef\nghi\n');
      });

      it('overwriting a key replaces the blob whole', async () => {
        await blobs.write('files/o', chunks('old contents, longer than the new\n'));
        const result = await blobs.write('files/o', chunks('new\n'));
        assert.equal(result.bytes, 4);
        assert.equal((await collect(await blobs.read('files/o'))).toString(), 'new\n');
      });
    });

    describe('write: atomicity', () => {
      it('a failing source leaves nothing behind', async () => {
        const boom = new Error('source broke');
        await assert.rejects(blobs.write('files/f', failingAfter(boom, 'line 1\n', 'line 2\n')), (err) => err === boom);
        assert.equal(await blobs.size('files/f'), undefined);
        await assert.rejects(blobs.read('files/f'), BlobNotFoundError);
        assert.deepEqual(await leftovers(), []);
      });

      it('a source failing before its first chunk leaves nothing either', async () => {
        await assert.rejects(blobs.write('files/f0', failingAfter(new Error('at once'))), /at once/);
        assert.equal(await blobs.size('files/f0'), undefined);
        assert.deepEqual(await leftovers(), []);
      });

      it('a failed overwrite keeps the previous blob intact', async () => {
        await blobs.write('files/keep', chunks('original\n'));
        await assert.rejects(blobs.write('files/keep', failingAfter(new Error('mid-way'), 'replace')), /mid-way/);
        assert.equal((await collect(await blobs.read('files/keep'))).toString(), 'original\n');
        assert.deepEqual(await leftovers(), []);
      });

      it('until the write completes, readers see the old blob (or none), never a partial one', async () => {
        await blobs.write('files/old', chunks('v1\n'));
        let release!: () => void;
        const gate = new Promise<void>((resolve) => (release = resolve));
        let firstChunkTaken!: () => void;
        const taken = new Promise<void>((resolve) => (firstChunkTaken = resolve));
        async function* slow(): AsyncGenerator<Uint8Array> {
          yield Buffer.from('v2 part 1\n');
          firstChunkTaken();
          await gate;
          yield Buffer.from('v2 part 2\n');
        }
        const writingNew = blobs.write('files/new', slow());
        const writingOld = blobs.write(
          'files/old',
          (async function* () {
            yield Buffer.from('v2 of old\n');
            await gate;
          })(),
        );
        await taken;
        assert.equal(await blobs.size('files/new'), undefined, 'no partial blob is visible');
        await assert.rejects(blobs.read('files/new'), BlobNotFoundError);
        assert.equal((await collect(await blobs.read('files/old'))).toString(), 'v1\n', 'the old blob is still whole');
        release();
        await writingNew;
        await writingOld;
        assert.equal((await collect(await blobs.read('files/new'))).toString(), 'v2 part 1\nv2 part 2\n');
        assert.equal((await collect(await blobs.read('files/old'))).toString(), 'v2 of old\n');
        assert.deepEqual(await leftovers(), []);
      });

      it('concurrent writes to one key end with one of them, whole', async () => {
        const a = Buffer.alloc(200_000, 'a');
        const b = Buffer.alloc(150_000, 'b');
        const split = (buf: Buffer): Buffer[] => [buf.subarray(0, 70_000), buf.subarray(70_000)];
        await Promise.all([blobs.write('files/same', chunks(...split(a))), blobs.write('files/same', chunks(...split(b)))]);
        const final = await collect(await blobs.read('files/same'));
        assert.ok(final.equals(a) || final.equals(b), 'the blob is exactly one of the two writes');
        assert.deepEqual(await leftovers(), []);
      });

      it('concurrent writes to different keys each land whole', async () => {
        const bodies = Array.from({ length: 8 }, (_, i) => Buffer.alloc(50_000 + i * 1_000, String.fromCharCode(97 + i)));
        const results = await Promise.all(bodies.map((body, i) => blobs.write(`files/many-${i}`, chunks(body.subarray(0, 10_000), body.subarray(10_000)))));
        for (const [i, body] of bodies.entries()) {
          assert.equal(results[i].sha256, sha256(body));
          assert.deepEqual(await collect(await blobs.read(`files/many-${i}`)), body);
        }
        assert.deepEqual(await leftovers(), []);
      });
    });

    describe('write: maxBytes', () => {
      it('exceeding maxBytes rejects with BlobTooLargeError and leaves nothing', async () => {
        await assert.rejects(blobs.write('files/big', chunks('12345', '67890', 'X'), { maxBytes: 10 }), (err) => {
          assert.ok(err instanceof BlobTooLargeError);
          assert.equal(err.maxBytes, 10);
          return true;
        });
        assert.equal(await blobs.size('files/big'), undefined);
        assert.deepEqual(await leftovers(), []);
      });

      it('exceeding maxBytes within the first chunk also leaves nothing', async () => {
        await assert.rejects(blobs.write('files/big1', chunks('x'.repeat(1000)), { maxBytes: 999 }), BlobTooLargeError);
        assert.equal(await blobs.size('files/big1'), undefined);
        assert.deepEqual(await leftovers(), []);
      });

      it('exactly maxBytes is accepted', async () => {
        const result = await blobs.write('files/exact', chunks('12345', '67890'), { maxBytes: 10 });
        assert.equal(result.bytes, 10);
        assert.equal(await blobs.size('files/exact'), 10);
      });

      it('a too-large overwrite keeps the previous blob', async () => {
        await blobs.write('files/prev', chunks('small\n'));
        await assert.rejects(blobs.write('files/prev', chunks('far too large\n'), { maxBytes: 6 }), BlobTooLargeError);
        assert.equal((await collect(await blobs.read('files/prev'))).toString(), 'small\n');
        assert.deepEqual(await leftovers(), []);
      });
    });

    describe('read', () => {
      const text = '0123456789abcdefghij'; // 20 bytes

      beforeEach(async () => {
        await blobs.write('files/r', chunks(text));
      });

      const cases: { range: { start: number; end?: number }; expected: string }[] = [
        { range: { start: 0 }, expected: text },
        { range: { start: 0, end: 20 }, expected: text },
        { range: { start: 0, end: 1 }, expected: '0' },
        { range: { start: 5, end: 10 }, expected: '56789' },
        { range: { start: 10 }, expected: 'abcdefghij' },
        { range: { start: 19, end: 20 }, expected: 'j' },
        { range: { start: 15, end: 1000 }, expected: 'fghij' },
        { range: { start: 7, end: 7 }, expected: '' },
        { range: { start: 9, end: 3 }, expected: '' },
        { range: { start: 20 }, expected: '' },
        { range: { start: 25, end: 30 }, expected: '' },
      ];
      for (const { range, expected } of cases) {
        it(`range [${range.start}, ${range.end ?? 'size'}) reads ${JSON.stringify(expected)}`, async () => {
          assert.equal((await collect(await blobs.read('files/r', range))).toString(), expected);
        });
      }

      it('no range reads the whole blob', async () => {
        assert.equal((await collect(await blobs.read('files/r'))).toString(), text);
      });

      it('a range deep inside a multi-megabyte blob streams exactly those bytes', async () => {
        const big = Buffer.alloc(3 * 1024 * 1024);
        for (let i = 0; i < big.length; i += 4) big.writeUInt32BE(i, i);
        await blobs.write('files/big', chunks(big.subarray(0, 1_000_003), big.subarray(1_000_003)));
        const stream = await blobs.read('files/big', { start: 1_234_567, end: 2_987_654 });
        let pieces = 0;
        const parts: Buffer[] = [];
        for await (const part of stream) {
          pieces += 1;
          parts.push(Buffer.from(part as Uint8Array));
        }
        assert.deepEqual(Buffer.concat(parts), big.subarray(1_234_567, 2_987_654));
        assert.ok(pieces > 1, 'the range arrives as a stream of chunks, not one buffer');
      });

      it('an empty blob reads as empty', async () => {
        await blobs.write('files/empty', chunks());
        assert.equal(await blobs.size('files/empty'), 0);
        assert.equal((await collect(await blobs.read('files/empty'))).length, 0);
        assert.equal((await collect(await blobs.read('files/empty', { start: 0, end: 0 }))).length, 0);
        assert.equal((await collect(await blobs.read('files/empty', { start: 0, end: 10 }))).length, 0);
        assert.equal((await collect(await blobs.read('files/empty', { start: 0 }))).length, 0);
      });

      it('a missing blob: BlobNotFoundError, size undefined', async () => {
        await assert.rejects(blobs.read('files/missing'), (err) => err instanceof BlobNotFoundError && err.key === 'files/missing');
        await assert.rejects(blobs.read('files/missing', { start: 3, end: 9 }), BlobNotFoundError);
        await assert.rejects(blobs.read('files/missing', { start: 3, end: 3 }), BlobNotFoundError);
        assert.equal(await blobs.size('files/missing'), undefined);
      });
    });

    describe('delete, keys and check', () => {
      it('delete is idempotent', async () => {
        await blobs.write('files/d', chunks('x'));
        await blobs.delete('files/d');
        assert.equal(await blobs.size('files/d'), undefined);
        await assert.rejects(blobs.read('files/d'), BlobNotFoundError);
        await blobs.delete('files/d');
        await blobs.delete('files/never-existed');
        await blobs.delete('nested/never/existed');
      });

      it('deleting one blob leaves its neighbours', async () => {
        await blobs.write('batches/b1/output.jsonl', chunks('out\n'));
        await blobs.write('batches/b1/errors.jsonl', chunks('err\n'));
        await blobs.delete('batches/b1/output.jsonl');
        assert.equal(await blobs.size('batches/b1/output.jsonl'), undefined);
        assert.equal((await collect(await blobs.read('batches/b1/errors.jsonl'))).toString(), 'err\n');
      });

      it('keys that would escape the store or name nothing are refused', async () => {
        for (const key of INVALID_KEYS) {
          await assert.rejects(blobs.write(key, chunks('x')), /invalid blob key/, `write ${JSON.stringify(key)}`);
          await assert.rejects(blobs.read(key), /invalid blob key/, `read ${JSON.stringify(key)}`);
          await assert.rejects(blobs.delete(key), /invalid blob key/, `delete ${JSON.stringify(key)}`);
        }
        assert.deepEqual(await leftovers(), []);
      });

      it('check() passes on a live store', async () => {
        await blobs.check();
      });
    });
  });
}
