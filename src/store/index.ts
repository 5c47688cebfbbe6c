// The storage facade handed to every other layer: metadata (SQL) and bytes (blobs).
import type { BlobsConfig, Config } from '../config.ts';
import { openBlobStore } from './blobs/open.ts';
import type { BlobStore } from './blobs/types.ts';
import { StoreHealth, type StorePart } from './health.ts';
import { openSqlStore, type SqlStore } from './sql/database.ts';
import { recordWriteProbe } from './sql/settings.ts';

export interface Store {
  sql: SqlStore;
  /** Every write through here marks or clears the blob store's part of `health`. */
  blobs: BlobStore;
  /** Write failures seen lately (a full disk, a database refusing writes), for readiness and the admin status. */
  health: StoreHealth;
  /** One tiny write to `part`, recorded in `health`: how a part marked as failing is found to work again. */
  probeWrite(part: StorePart): Promise<void>;
  close(): Promise<void>;
}

export async function openStore(config: Pick<Config, 'dataDir' | 'databaseUrl'> & { blobs?: BlobsConfig }): Promise<Store> {
  // Blobs first: an unusable bucket stops start-up with its reason before any database work.
  const blobs = await openBlobStore(config);
  let sql: SqlStore;
  try {
    sql = await openSqlStore({ dataDir: config.dataDir, databaseUrl: config.databaseUrl });
  } catch (err) {
    await blobs.close?.();
    throw err;
  }
  const health = new StoreHealth();
  const observed = observeWrites(blobs, health);
  return {
    sql,
    blobs: observed,
    health,
    async probeWrite(part) {
      try {
        if (part === 'database') await recordWriteProbe(sql.db, Date.now());
        else await observed.write(WRITE_PROBE_KEY, (async function* () {
          yield Buffer.from('probe\n');
        })());
        health.noteSuccess(part);
      } catch (err) {
        health.noteFailure(part, err);
        throw err;
      }
    },
    async close() {
      await sql.close();
      await blobs.close?.();
    },
  };
}

export const blobKeyForUpload = (fileId: string): string => `files/${fileId}`;
export const blobKeyForBatchOutput = (batchId: string, kind: 'output' | 'errors'): string => `batches/${batchId}/${kind}.jsonl`;
/** A result segment: which worker's claim (`claim`: the chunk's claim count) and which of its segments; unique without a lookup. */
export const blobKeyForSegment = (batchId: string, chunk: number, claim: number, seq: number, owner: string): string =>
  `batches/${batchId}/segments/${chunk}/${claim}-${seq}-${owner.replace(/[^A-Za-z0-9_-]/g, '')}`;

const WRITE_PROBE_KEY = 'probes/write';

/** The same blob store, with every write's outcome noted in `health`. */
function observeWrites(blobs: BlobStore, health: StoreHealth): BlobStore {
  return {
    async write(key, source, options) {
      try {
        const result = await blobs.write(key, source, options);
        health.noteSuccess('blob_store');
        return result;
      } catch (err) {
        health.noteFailure('blob_store', err);
        throw err;
      }
    },
    read: (key, range) => blobs.read(key, range),
    size: (key) => blobs.size(key),
    delete: (key) => blobs.delete(key),
    check: () => blobs.check(),
    close: blobs.close ? () => blobs.close!() : undefined,
  };
}
