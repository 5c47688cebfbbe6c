// Upstream entries: one server (baseUrl) or a pool (replicas), never both or
// neither; names unique across entries and replicas (they key metrics and
// shared ceilings); what each replica inherits from its entry.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig, type ConfigInput } from '../../src/config.ts';
import { replicasOf, upstreamsFromUrls } from '../../src/upstreams/replicas.ts';

const load = (upstreams: unknown) => loadConfig({ env: {}, flags: { upstreams } as Partial<ConfigInput> });

function refusal(upstreams: unknown): string {
  try {
    load(upstreams);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.message;
  }
  assert.fail('the config was accepted');
}

describe('upstream entries and replicas', () => {
  it('refuses an entry with both baseUrl and replicas, or neither, naming the entry', () => {
    assert.match(refusal([{ name: 'a', baseUrl: 'http://127.0.0.1:1/v1', replicas: [{ baseUrl: 'http://127.0.0.1:2/v1' }] }]), /upstreams\.0.*baseUrl \(one server\) or replicas/s);
    assert.match(refusal([{ name: 'a' }]), /upstreams\.0.*not both and not neither/s);
    assert.match(refusal([{ name: 'a', replicas: [] }]), /upstreams\.0\.replicas/);
  });

  it('refuses a name used twice, by entries or replicas', () => {
    assert.match(refusal([{ name: 'a', baseUrl: 'http://127.0.0.1:1/v1' }, { name: 'a', baseUrl: 'http://127.0.0.1:2/v1' }]), /"a" is used twice/);
    assert.match(
      refusal([
        { name: 'pool', replicas: [{ baseUrl: 'http://127.0.0.1:1/v1' }, { baseUrl: 'http://127.0.0.1:2/v1' }] },
        { name: 'pool-2', baseUrl: 'http://127.0.0.1:3/v1' },
      ]),
      /"pool-2" is used twice/,
    );
    assert.match(refusal([{ name: 'p', replicas: [{ name: 'x', baseUrl: 'http://127.0.0.1:1/v1' }, { name: 'x', baseUrl: 'http://127.0.0.1:2/v1' }] }]), /same name/);
    assert.match(refusal([{ name: 'p', replicas: [{ name: 'bad name', baseUrl: 'http://127.0.0.1:1/v1' }] }]), /letters, digits/);
    // Entries alike with differently named replicas: replicas belong to their entry by its name.
    assert.match(
      refusal([
        { name: 'x', models: ['llama'], replicas: [{ name: 'a1', baseUrl: 'http://127.0.0.1:1/v1' }, { name: 'a2', baseUrl: 'http://127.0.0.1:2/v1' }] },
        { name: 'x', models: ['mistral'], replicas: [{ name: 'b1', baseUrl: 'http://127.0.0.1:3/v1' }, { name: 'b2', baseUrl: 'http://127.0.0.1:4/v1' }] },
      ]),
      /upstream name "x" is used twice/,
    );
  });

  it('gives each replica its entry\'s settings unless it sets its own', () => {
    const config = load([
      {
        name: 'pool',
        apiKey: 'entry-key',
        maxConcurrency: 16,
        weight: 2,
        models: ['m'],
        replicas: [{ baseUrl: 'http://127.0.0.1:1/v1' }, { name: 'big', baseUrl: 'http://127.0.0.1:2/v1', maxConcurrency: 64, apiKey: 'own', weight: 5 }],
      },
      { name: 'single', baseUrl: 'http://127.0.0.1:3/v1', models: ['other'] },
    ]);
    const replicas = replicasOf(config.upstreams);
    assert.deepEqual(
      replicas.map(({ name, entry, apiKey, maxConcurrency, weight, pooled }) => ({ name, entry, apiKey, maxConcurrency, weight, pooled })),
      [
        { name: 'pool-1', entry: 'pool', apiKey: 'entry-key', maxConcurrency: 16, weight: 2, pooled: true },
        { name: 'big', entry: 'pool', apiKey: 'own', maxConcurrency: 64, weight: 5, pooled: true },
        { name: 'single', entry: 'single', apiKey: undefined, maxConcurrency: 64, weight: 1, pooled: false },
      ],
    );
    assert.equal(replicasOf(config.upstreams), replicas, 'worked out once per config');
  });

  it('pools entries that name the same model: their replicas are judged as a pool\'s', () => {
    const config = load([
      { name: 'a', baseUrl: 'http://127.0.0.1:1/v1', models: ['llama'] },
      { name: 'b', baseUrl: 'http://127.0.0.1:2/v1', models: ['llama', 'qwen'] },
      { name: 'c', baseUrl: 'http://127.0.0.1:3/v1', models: ['mistral-*'] },
    ]);
    assert.deepEqual(
      replicasOf(config.upstreams).map((replica) => replica.pooled),
      [true, true, false],
    );
    // What auto entries list is known only at run time: alone, they are judged as servers on their own.
    const auto = load([
      { name: 'a', baseUrl: 'http://127.0.0.1:1/v1', models: 'auto' },
      { name: 'b', baseUrl: 'http://127.0.0.1:2/v1', models: 'auto' },
    ]);
    assert.deepEqual(replicasOf(auto.upstreams).map((replica) => replica.pooled), [false, false]);
  });

  it('makes --upstream given several times one pool, and once a single server as before', () => {
    assert.deepEqual(upstreamsFromUrls([]), undefined);
    assert.deepEqual(load(upstreamsFromUrls(['http://127.0.0.1:1/v1'])).upstreams.map((u) => [u.name, u.baseUrl]), [['default', 'http://127.0.0.1:1/v1']]);
    const pooled = load(upstreamsFromUrls(['http://127.0.0.1:1/v1', 'http://127.0.0.1:2/v1']));
    assert.deepEqual(replicasOf(pooled.upstreams).map((r) => r.name), ['default-1', 'default-2']);
  });
});
