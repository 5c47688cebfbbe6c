// Picks the blob store the configuration names. The S3 store (and with it the
// AWS SDK, tens of MiB of modules) is imported only when it is configured, so
// the embedded default starts and idles exactly as it did without it.
import { join } from 'node:path';
import type { BlobsConfig, Config } from '../../config.ts';
import { LocalBlobStore } from './local.ts';
import type { BlobStore } from './types.ts';

export async function openBlobStore(config: Pick<Config, 'dataDir'> & { blobs?: BlobsConfig }): Promise<BlobStore> {
  if (config.blobs?.kind !== 's3') return new LocalBlobStore(join(config.dataDir, 'blobs')).init();
  const { bucket, ...s3 } = config.blobs.s3;
  // The config schema already demands a bucket for kind "s3"; this guards callers that built a config by hand.
  if (!bucket) throw new Error('blobs.s3.bucket: required when blobs.kind is "s3"');
  const { S3BlobStore } = await import('./s3.ts');
  return new S3BlobStore({ ...s3, bucket }).init();
}
