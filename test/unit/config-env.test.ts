// Settings from the environment: only keys the schema has, each converted by
// its schema type; every other SPOOL_* variable (Kubernetes service links,
// test and tool switches) is ignored with one warning instead of stopping
// start-up; the CLI's SPOOL_API_KEY is never the server's admin key.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigError, configEnvBindings, loadConfig } from '../../src/config.ts';
import { KUBERNETES_SERVICE_LINKS } from '../helpers/kubernetes-env.ts';
import { makeTempDir, removeAllTempDirs } from '../helpers/spool.ts';

after(removeAllTempDirs);

function load(env: Record<string, string>, configPath?: string) {
  const warnings: string[] = [];
  const config = loadConfig({ env, configPath, warn: (message) => warnings.push(message) });
  return { config, warnings };
}

describe('config from the environment', () => {
  it('ignores Kubernetes service links, with one warning naming them, and keeps the default port', () => {
    const { config, warnings } = load(KUBERNETES_SERVICE_LINKS);
    assert.equal(config.port, 8080);
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(warnings[0], /SPOOL_PORT_8080_TCP_ADDR/);
    assert.match(warnings[0], /SPOOL_SERVICE_HOST/);
    assert.match(warnings[0], /enableServiceLinks: false/);
  });

  it('still takes a real SPOOL_PORT beside the service links', () => {
    const { config } = load({ ...KUBERNETES_SERVICE_LINKS, SPOOL_PORT: '9090' });
    assert.equal(config.port, 9090);
  });

  it('ignores SPOOL_* variables that are not settings, with one warning line for all of them', () => {
    const { config, warnings } = load({ SPOOL_TEST_SKIP_POSTGRES: '1', SPOOL_SOMETHING_ELSE: 'x', SPOOL_DATA_DIR: '/srv/spool' });
    assert.equal(config.dataDir, '/srv/spool');
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /SPOOL_SOMETHING_ELSE, SPOOL_TEST_SKIP_POSTGRES: not a Spool setting/);
    assert.doesNotMatch(warnings[0], /\/srv\/spool/, 'values are never echoed: they may be secrets');
  });

  it('converts by the schema type: a numeric admin key stays a string, numbers and booleans convert', () => {
    const { config, warnings } = load({
      SPOOL_ADMIN_KEY: '12345678',
      SPOOL_LIMITS__MAX_FILE_BYTES: '2048',
      SPOOL_WORKER__LEASE_SECONDS: '1.5',
      SPOOL_LOG__PRETTY: 'yes',
      SPOOL_METRICS__ENABLED: '0',
      SPOOL_ENGINE__GPU: 'false',
      SPOOL_UPLOADS__SIGNING_SECRET: '0123456789012345',
      SPOOL_METRICS__WORKER_PORT: '9100',
    });
    assert.deepEqual(warnings, []);
    assert.equal(config.adminKey, '12345678');
    assert.equal(config.limits.maxFileBytes, 2048);
    assert.equal(config.worker.leaseSeconds, 1.5);
    assert.equal(config.log.pretty, true);
    assert.equal(config.metrics.enabled, false);
    assert.equal(config.engine.gpu, false);
    assert.equal(config.uploads.signingSecret, '0123456789012345');
    assert.equal(config.metrics.workerPort, 9100);
  });

  it('reads lists and maps as JSON, and a list of hosts comma-separated too', () => {
    const { config } = load({
      SPOOL_UPSTREAMS: '[{"name":"vllm","baseUrl":"http://127.0.0.1:8000/v1"}]',
      SPOOL_WEBHOOKS__USERS: '{"alice":"https://hooks.example.com/a"}',
      SPOOL_AUDIO__ALLOWED_HOSTS: 'media.internal, 10.0.0.0/8',
    });
    assert.equal(config.upstreams[0].name, 'vllm');
    assert.deepEqual(config.webhooks.users, { alice: 'https://hooks.example.com/a' });
    assert.deepEqual(config.audio.allowedHosts, ['media.internal', '10.0.0.0/8']);
  });

  it('names the key when a value cannot be converted', () => {
    assert.throws(() => load({ SPOOL_WORKER__MAX_ATTEMPTS: 'five' }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /worker\.maxAttempts/);
      return true;
    });
  });

  it('never takes the CLI key SPOOL_API_KEY as the admin key, nor warns about it', () => {
    const { config, warnings } = load({ SPOOL_API_KEY: 'a-client-key-for-the-cli', SPOOL_SERVER: 'http://127.0.0.1:8080' });
    assert.equal(config.adminKey, undefined);
    assert.deepEqual(warnings, []);
  });

  it('keeps DATABASE_URL and SPOOL_LOG_LEVEL', () => {
    const { config } = load({ DATABASE_URL: 'postgres://db/spool', SPOOL_LOG_LEVEL: 'warn' });
    assert.equal(config.databaseUrl, 'postgres://db/spool');
    assert.equal(config.log.level, 'warn');
  });

  it('has one variable for every leaf setting', () => {
    const names = [...configEnvBindings().keys()];
    for (const name of ['SPOOL_HOST', 'SPOOL_PORT', 'SPOOL_DATA_DIR', 'SPOOL_ADMIN_KEY', 'SPOOL_BLOBS__S3__ACCESS_KEY_ID', 'SPOOL_ENGINE__WHISPER__PATH', 'SPOOL_WORKER__GLOBAL_CEILINGS']) {
      assert.ok(names.includes(name), `${name} is a setting`);
    }
    assert.ok(!names.includes('SPOOL_API_KEY'));
  });

  it('reads a config file written for older versions: apiKey becomes adminKey, with a warning', () => {
    const path = join(makeTempDir('spool-config-'), 'spool.config.json');
    writeFileSync(path, JSON.stringify({ apiKey: 'an-old-admin-key' }));
    const { config, warnings } = load({}, path);
    assert.equal(config.adminKey, 'an-old-admin-key');
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /"apiKey" is now "adminKey"/);
  });
});
