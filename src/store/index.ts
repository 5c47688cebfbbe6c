// The storage facade handed to every other layer: metadata (SQL) and bytes (blobs).
import { join } from 'node:path';
import type { Config } from '../config.ts';
import { LocalBlobStore } from './blobs/local.ts';
import type { BlobStore } from './blobs/types.ts';
import { openSqlStore, type SqlStore } from './sql/database.ts';

export interface Store {
  sql: SqlStore;
  blobs: BlobStore;
  close(): Promise<void>;
}

export async function openStore(config: Pick<Config, 'dataDir' | 'databaseUrl'>): Promise<Store> {
  const sql = await openSqlStore({ dataDir: config.dataDir, databaseUrl: config.databaseUrl });
  const blobs = await new LocalBlobStore(join(config.dataDir, 'blobs')).init();
  return { sql, blobs, close: () => sql.close() };
}

export const blobKeyForUpload = (fileId: string): string => `files/${fileId}`;
export const blobKeyForBatchOutput = (batchId: string, kind: 'output' | 'errors'): string => `batches/${batchId}/${kind}.jsonl`;
