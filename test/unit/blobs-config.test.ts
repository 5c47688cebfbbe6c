// The `blobs` config section: defaults, the S3 keys from a file or from
// SPOOL_BLOBS__* variables, and errors that name the key at fault.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig, parseConfig } from '../../src/config.ts';

function rejects(input: unknown, message: RegExp): void {
  assert.throws(() => parseConfig(input), (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.match(err.message, message);
    return true;
  });
}

describe('config: blobs', () => {
  it('defaults to the local directory store', () => {
    assert.deepEqual(parseConfig({}).blobs, { kind: 'local', s3: { region: 'us-east-1', prefix: '' } });
  });

  it('accepts a complete S3 section', () => {
    const s3 = { endpoint: 'http://minio:9000', region: 'eu-west-1', bucket: 'spool', accessKeyId: 'AK', secretAccessKey: 'SK', forcePathStyle: true, prefix: 'prod/' };
    assert.deepEqual(parseConfig({ blobs: { kind: 's3', s3 } }).blobs, { kind: 's3', s3 });
  });

  it('reads the S3 keys from SPOOL_BLOBS__* variables', () => {
    const config = loadConfig({
      env: {
        SPOOL_BLOBS__KIND: 's3',
        SPOOL_BLOBS__S3__ENDPOINT: 'http://minio:9000',
        SPOOL_BLOBS__S3__BUCKET: 'spool',
        SPOOL_BLOBS__S3__ACCESS_KEY_ID: 'minioadmin',
        SPOOL_BLOBS__S3__SECRET_ACCESS_KEY: 'minioadmin-secret',
        SPOOL_BLOBS__S3__FORCE_PATH_STYLE: 'true',
      },
    });
    assert.deepEqual(config.blobs, {
      kind: 's3',
      s3: { endpoint: 'http://minio:9000', region: 'us-east-1', bucket: 'spool', accessKeyId: 'minioadmin', secretAccessKey: 'minioadmin-secret', forcePathStyle: true, prefix: '' },
    });
  });

  it('kind "s3" needs a bucket', () => {
    rejects({ blobs: { kind: 's3' } }, /blobs\.s3\.bucket: required when blobs\.kind is "s3"/);
  });

  it('credentials come in pairs', () => {
    rejects({ blobs: { kind: 's3', s3: { bucket: 'b', accessKeyId: 'AK' } } }, /blobs\.s3\.secretAccessKey: set accessKeyId and secretAccessKey together/);
    rejects({ blobs: { kind: 's3', s3: { bucket: 'b', secretAccessKey: 'SK' } } }, /blobs\.s3\.accessKeyId: set accessKeyId and secretAccessKey together/);
  });

  it('a local store ignores an incomplete S3 section', () => {
    assert.equal(parseConfig({ blobs: { kind: 'local', s3: { accessKeyId: 'AK' } } }).blobs.kind, 'local');
  });

  it('errors name the key: unknown kind, bad endpoint, unknown key', () => {
    rejects({ blobs: { kind: 'gcs' } }, /blobs\.kind: /);
    rejects({ blobs: { kind: 's3', s3: { bucket: 'b', endpoint: 'not a url' } } }, /blobs\.s3\.endpoint: /);
    rejects({ blobs: { s3: { bucket: 'b', pathStyle: true } } }, /blobs\.s3: unknown key\(s\) "pathStyle"/);
  });
});
