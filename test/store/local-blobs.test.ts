// LocalBlobStore: the blob store contract (blob-contract.ts: measurements,
// atomicity, limits, ranged reads, deletes), plus what only a directory has:
// bytes at <root>/<key> under temp names until done, keys kept out of the temp
// directory, check() once the root is gone, and the startup sweep of stale
// temporaries.
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalBlobStore } from '../../src/store/blobs/local.ts';
import { chunks, collect, describeBlobStoreContract, INVALID_KEYS } from './blob-contract.ts';

describeBlobStoreContract({
  name: 'local directory',
  async open() {
    const dir = await mkdtemp(join(tmpdir(), 'spool-blobs-'));
    return {
      store: await new LocalBlobStore(dir).init(),
      leftovers: () => readdir(join(dir, '.tmp')),
      dispose: () => rm(dir, { recursive: true, force: true }),
    };
  },
});

describe('LocalBlobStore', () => {
  let root: string;
  let blobs: LocalBlobStore;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'spool-blobs-'));
    blobs = await new LocalBlobStore(root).init();
  });

  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const tempFiles = (): Promise<string[]> => readdir(join(root, '.tmp'));

  async function exists(path: string): Promise<boolean> {
    return stat(path).then(
      () => true,
      () => false,
    );
  }

  describe('LocalBlobStore: on disk', () => {
    it('a blob is the file <root>/<key>, byte for byte', async () => {
      const data = Buffer.from('héllo\nwörld ✓');
      await blobs.write('files/m', chunks(data.subarray(0, 3), data.subarray(3)));
      assert.deepEqual(await readFile(join(root, 'files/m')), data);
      assert.deepEqual(await tempFiles(), []);
    });

    it('a failing source leaves no file at the key', async () => {
      await assert.rejects(
        blobs.write(
          'files/f',
          (async function* () {
            yield Buffer.from('line 1\n');
            throw new Error('source broke');
          })(),
        ),
        /source broke/,
      );
      assert.equal(await exists(join(root, 'files/f')), false);
    });

    it('the bytes of an unfinished write live under a temp name', async () => {
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      let firstChunkTaken!: () => void;
      const taken = new Promise<void>((resolve) => (firstChunkTaken = resolve));
      const writing = blobs.write(
        'files/new',
        (async function* () {
          yield Buffer.from('part 1\n');
          firstChunkTaken();
          await gate;
        })(),
      );
      await taken;
      assert.equal((await tempFiles()).length, 1);
      assert.equal(await exists(join(root, 'files/new')), false);
      release();
      await writing;
      assert.deepEqual(await tempFiles(), []);
    });
  });

  describe('LocalBlobStore: keys and check', () => {
    it('keys may not escape the root or reach into the temp directory', async () => {
      for (const key of [...INVALID_KEYS, '.tmp/x', './.tmp/x', 'files/../.tmp/x', '.tmp']) {
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
});
