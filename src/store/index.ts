// The storage facade handed to every other layer: metadata (SQL) and bytes (blobs).
import type { BlobsConfig, Config } from '../config.ts';
import { openBlobStore } from './blobs/open.ts';
import type { BlobStore } from './blobs/types.ts';
import { openSqlStore, type SqlStore } from './sql/database.ts';

export interface Store {
  sql: SqlStore;
  blobs: BlobStore;
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
  return {
    sql,
    blobs,
    async close() {
      await sql.close();
      await blobs.close?.();
    },
  };
}

export const blobKeyForUpload = (fileId: string): string => `files/${fileId}`;
export const blobKeyForBatchOutput = (batchId: string, kind: 'output' | 'errors'): string => `batches/${batchId}/${kind}.jsonl`;
