// Blobs as files under one directory. Writes go to a temporary name, are
// fsynced, then renamed into place (and the directory fsynced), so a blob is
// either absent or complete, even across a crash or power loss.
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { access, constants, mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { StreamMeasure } from './measure.ts';
import { BlobNotFoundError, type BlobStore, type BlobWriteOptions, type BlobWriteResult } from './types.ts';

const STALE_TEMP_MS = 6 * 60 * 60 * 1000;

const WRITE_BUFFER_BYTES = 1024 * 1024;

async function writeFully(handle: FileHandle, buffer: Buffer, length: number): Promise<void> {
  let offset = 0;
  while (offset < length) {
    const { bytesWritten } = await handle.write(buffer, offset, length - offset);
    offset += bytesWritten;
  }
}

export class LocalBlobStore implements BlobStore {
  private readonly root: string;
  private readonly tmpDir: string;

  constructor(root: string) {
    this.root = resolve(root);
    this.tmpDir = join(this.root, '.tmp');
  }

  async init(): Promise<this> {
    await mkdir(this.tmpDir, { recursive: true });
    // Temporaries left by a crash mid-write are garbage: no row points at them.
    // Only stale ones go: another process may be writing into the same directory.
    const cutoff = Date.now() - STALE_TEMP_MS;
    for (const name of await readdir(this.tmpDir)) {
      const path = join(this.tmpDir, name);
      const info = await stat(path).catch(() => undefined);
      if (info && info.mtimeMs < cutoff) await rm(path, { force: true });
    }
    return this;
  }

  private pathOf(key: string): string {
    const path = resolve(this.root, key);
    // Judge the resolved path, not the spelling: "./.tmp/x" or "files/../.tmp/x"
    // would otherwise land in the temp directory, where init() deletes it.
    const inTmp = path === this.tmpDir || path.startsWith(this.tmpDir + sep);
    if (!path.startsWith(this.root + sep) || inTmp) throw new Error(`invalid blob key "${key}"`);
    return path;
  }

  async write(key: string, source: AsyncIterable<Uint8Array>, options: BlobWriteOptions = {}): Promise<BlobWriteResult> {
    const target = this.pathOf(key);
    const tmp = join(this.tmpDir, `${randomBytes(12).toString('hex')}.part`);
    const measure = new StreamMeasure(options.maxBytes);
    const handle = await open(tmp, 'w', 0o600);
    // Network chunks are ~64 KB; writing each with its own await made a 100 MB upload ~1,500 disk round
    // trips (bench: upload 160 MB/s). Chunks are copied into two 1 MiB buffers instead: one fills while the
    // other is written, so the disk and the socket work at the same time (bench: ~190-280 MB/s).
    const buffers = [Buffer.allocUnsafe(WRITE_BUFFER_BYTES), Buffer.allocUnsafe(WRITE_BUFFER_BYTES)];
    let current = 0;
    let filled = 0;
    let inFlight: Promise<void> = Promise.resolve();
    const startWrite = async () => {
      await inFlight;
      const buffer = buffers[current];
      const length = filled;
      inFlight = writeFully(handle, buffer, length);
      inFlight.catch(() => undefined);
      current = 1 - current;
      filled = 0;
    };
    let done = false;
    try {
      for await (const chunk of source) {
        measure.add(chunk);
        let offset = 0;
        while (offset < chunk.length) {
          const copied = Buffer.from(chunk.buffer, chunk.byteOffset + offset, chunk.length - offset).copy(buffers[current], filled);
          filled += copied;
          offset += copied;
          if (filled === WRITE_BUFFER_BYTES) await startWrite();
        }
      }
      if (filled > 0) await startWrite();
      await inFlight;
      await handle.sync();
      await handle.close();
      done = true;
      await mkdir(dirname(target), { recursive: true });
      await rename(tmp, target);
      await fsyncDir(dirname(target));
      return measure.result();
    } catch (err) {
      await inFlight.catch(() => undefined);
      if (!done) await handle.close().catch(() => undefined);
      await rm(tmp, { force: true });
      throw err;
    }
  }

  async read(key: string, range?: { start: number; end?: number }): Promise<Readable> {
    const path = this.pathOf(key);
    const size = await this.size(key);
    if (size === undefined) throw new BlobNotFoundError(key);
    const start = range?.start ?? 0;
    const end = range?.end ?? size;
    // createReadStream's `end` is inclusive and must be >= 0, so an empty range (an empty blob) gets an empty stream.
    if (end <= start) return Readable.from([]);
    return createReadStream(path, { start, end: end - 1, highWaterMark: 256 * 1024 });
  }

  async size(key: string): Promise<number | undefined> {
    try {
      return (await stat(this.pathOf(key))).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.pathOf(key), { force: true });
  }

  /** Every write starts in the temp directory, so that is what must exist and be writable. */
  async check(): Promise<void> {
    const info = await stat(this.tmpDir);
    if (!info.isDirectory()) throw Object.assign(new Error(`${this.tmpDir} is not a directory`), { code: 'ENOTDIR' });
    await access(this.tmpDir, constants.W_OK);
  }
}

async function fsyncDir(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
