// LocalBlobStore: atomic writes (temp file, fsync, rename), limits, the
// measurements every caller trusts (bytes, sha256, line count), ranged reads,
// idempotent deletes and the startup sweep of stale temporaries.
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { LocalBlobStore } from '../../src/store/blobs/local.ts';
import { BlobNotFoundError, BlobTooLargeError } from '../../src/store/blobs/types.ts';

let root: string;
let blobs: LocalBlobStore;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'spool-blobs-'));
  blobs = await new LocalBlobStore(root).init();
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function* chunks(...parts: (string | Uint8Array)[]): AsyncGenerator<Uint8Array> {
  for (const part of parts) yield typeof part === 'string' ? Buffer.from(part) : part;
}

/** Yields `parts`, then throws `error`. */
async function* failingAfter(error: Error, ...parts: string[]): AsyncGenerator<Uint8Array> {
  for (const part of parts) yield Buffer.from(part);
  throw error;
}

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(Buffer.from(part as Uint8Array));
  return Buffer.concat(parts);
}

const sha256 = (data: string | Uint8Array): string => createHash('sha256').update(data).digest('hex');
const tempFiles = (): Promise<string[]> => readdir(join(root, '.tmp'));

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

describe('LocalBlobStore.write: measurements', () => {
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
      assert.deepEqual(await readFile(join(root, 'files/m')), data);
      assert.deepEqual(await tempFiles(), []);
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

  it('overwriting a key replaces the blob whole', async () => {
    await blobs.write('files/o', chunks('old contents, longer than the new\n'));
    const result = await blobs.write('files/o', chunks('new\n'));
    assert.equal(result.bytes, 4);
    assert.equal((await collect(await blobs.read('files/o'))).toString(), 'new\n');
  });
});

describe('LocalBlobStore.write: atomicity', () => {
  it('a failing source leaves nothing behind, not even a temp file', async () => {
    const boom = new Error('source broke');
    await assert.rejects(blobs.write('files/f', failingAfter(boom, 'line 1\n', 'line 2\n')), (err) => err === boom);
    assert.equal(await blobs.size('files/f'), undefined);
    assert.equal(await exists(join(root, 'files/f')), false);
    assert.deepEqual(await tempFiles(), []);
  });

  it('a source failing before its first chunk leaves nothing either', async () => {
    await assert.rejects(blobs.write('files/f0', failingAfter(new Error('at once'))), /at once/);
    assert.equal(await blobs.size('files/f0'), undefined);
    assert.deepEqual(await tempFiles(), []);
  });

  it('a failed overwrite keeps the previous blob intact', async () => {
    await blobs.write('files/keep', chunks('original\n'));
    await assert.rejects(blobs.write('files/keep', failingAfter(new Error('mid-way'), 'replace')), /mid-way/);
    assert.equal((await collect(await blobs.read('files/keep'))).toString(), 'original\n');
    assert.deepEqual(await tempFiles(), []);
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
    const writingOld = blobs.write('files/old', (async function* () {
      yield Buffer.from('v2 of old\n');
      await gate;
    })());
    await taken;
    assert.equal(await blobs.size('files/new'), undefined, 'no partial blob is visible');
    assert.equal((await collect(await blobs.read('files/old'))).toString(), 'v1\n', 'the old blob is still whole');
    assert.equal((await tempFiles()).length, 2, 'the bytes so far live under a temp name');
    release();
    await writingNew;
    await writingOld;
    assert.equal((await collect(await blobs.read('files/new'))).toString(), 'v2 part 1\nv2 part 2\n');
    assert.equal((await collect(await blobs.read('files/old'))).toString(), 'v2 of old\n');
    assert.deepEqual(await tempFiles(), []);
  });

  it('concurrent writes to one key end with one of them, whole', async () => {
    const a = Buffer.alloc(200_000, 'a');
    const b = Buffer.alloc(150_000, 'b');
    const split = (buf: Buffer): Buffer[] => [buf.subarray(0, 70_000), buf.subarray(70_000)];
    await Promise.all([blobs.write('files/same', chunks(...split(a))), blobs.write('files/same', chunks(...split(b)))]);
    const final = await collect(await blobs.read('files/same'));
    assert.ok(final.equals(a) || final.equals(b), 'the blob is exactly one of the two writes');
    assert.deepEqual(await tempFiles(), []);
  });
});

describe('LocalBlobStore.write: maxBytes', () => {
  it('exceeding maxBytes rejects with BlobTooLargeError and leaves nothing', async () => {
    await assert.rejects(blobs.write('files/big', chunks('12345', '67890', 'X'), { maxBytes: 10 }), (err) => {
      assert.ok(err instanceof BlobTooLargeError);
      assert.equal(err.maxBytes, 10);
      return true;
    });
    assert.equal(await blobs.size('files/big'), undefined);
    assert.deepEqual(await tempFiles(), []);
  });

  it('exceeding maxBytes within the first chunk also leaves nothing', async () => {
    await assert.rejects(blobs.write('files/big1', chunks('x'.repeat(1000)), { maxBytes: 999 }), BlobTooLargeError);
    assert.equal(await blobs.size('files/big1'), undefined);
    assert.deepEqual(await tempFiles(), []);
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
  });
});

describe('LocalBlobStore.read', () => {
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

  it('an empty blob reads as empty', async () => {
    await blobs.write('files/empty', chunks());
    assert.equal(await blobs.size('files/empty'), 0);
    assert.equal((await collect(await blobs.read('files/empty'))).length, 0);
  });

  it('a missing blob: BlobNotFoundError, size undefined', async () => {
    await assert.rejects(blobs.read('files/missing'), (err) => err instanceof BlobNotFoundError && err.key === 'files/missing');
    assert.equal(await blobs.size('files/missing'), undefined);
  });
});

describe('LocalBlobStore.delete and keys', () => {
  it('delete is idempotent', async () => {
    await blobs.write('files/d', chunks('x'));
    await blobs.delete('files/d');
    assert.equal(await blobs.size('files/d'), undefined);
    await blobs.delete('files/d');
    await blobs.delete('files/never-existed');
    await blobs.delete('nested/never/existed');
  });

  it('keys may not escape the root or reach into the temp directory', async () => {
    for (const key of ['../outside', 'files/../../outside', '', '.', '.tmp/x', './.tmp/x', 'files/../.tmp/x', '.tmp']) {
      await assert.rejects(blobs.write(key, chunks('x')), /invalid blob key/, `write ${JSON.stringify(key)}`);
      await assert.rejects(blobs.read(key), /invalid blob key/, `read ${JSON.stringify(key)}`);
      await assert.rejects(blobs.delete(key), /invalid blob key/, `delete ${JSON.stringify(key)}`);
    }
    assert.equal(await exists(join(root, '..', 'outside')), false);
    assert.deepEqual(await tempFiles(), []);
  });

  it('check() passes on a live store and fails once the root is gone', async () => {
    await blobs.check();
    await rm(root, { recursive: true, force: true });
    await assert.rejects(blobs.check());
  });
});

describe('LocalBlobStore.init', () => {
  it('removes stale temp files only: fresh temporaries and old blobs stay', async () => {
    const tmp = join(root, '.tmp');
    const longAgo = new Date(Date.now() - 7 * 60 * 60 * 1000);
    await writeFile(join(tmp, 'stale.part'), 'left by a crash');
    await utimes(join(tmp, 'stale.part'), longAgo, longAgo);
    await writeFile(join(tmp, 'fresh.part'), 'another process is writing this');
    await blobs.write('files/old-blob', chunks('kept\n'));
    await utimes(join(root, 'files/old-blob'), longAgo, longAgo);
    await mkdir(join(root, 'other'), { recursive: true });
    await writeFile(join(root, 'other', 'old.part'), 'not in .tmp');
    await utimes(join(root, 'other', 'old.part'), longAgo, longAgo);

    const again = await new LocalBlobStore(root).init();
    assert.deepEqual((await tempFiles()).sort(), ['fresh.part']);
    assert.equal((await collect(await again.read('files/old-blob'))).toString(), 'kept\n');
    assert.equal(await exists(join(root, 'other', 'old.part')), true);
  });

  it('creates the root and temp directory when missing', async () => {
    const fresh = join(root, 'sub', 'blobs');
    const store = await new LocalBlobStore(fresh).init();
    await store.check();
    assert.equal(await exists(join(fresh, '.tmp')), true);
    await store.write('files/a', chunks('a'));
    assert.equal(await store.size('files/a'), 1);
  });
});
