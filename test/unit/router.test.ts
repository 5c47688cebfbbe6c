import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { UpstreamConfig } from '../../src/config.ts';
import { compilePattern, isEchoModel, ModelRouter } from '../../src/upstreams/router.ts';

function upstream(name: string, models: string[] | 'auto', extra: Partial<UpstreamConfig> = {}): UpstreamConfig {
  return { name, baseUrl: `http://${name}.test/v1`, models, maxConcurrency: 8, initialConcurrency: 2, weight: 1, healthPath: '/models', sendPriority: false, ...extra };
}

/** The replicas of the pool a model routes to, joined by ","; null when it routes to no configured upstream. */
function upstreamName(router: ModelRouter, model: string): string | null {
  const route = router.route(model);
  return route?.kind === 'upstream' ? route.pool.replicas.map((replica) => replica.name).join(',') : null;
}

describe('ModelRouter', () => {
  it('routes an exact model name to the upstream listing it', () => {
    const a = upstream('a', ['llama-3-8b']);
    const router = new ModelRouter([a]);
    const route = router.route('llama-3-8b');
    assert.equal(route?.kind, 'upstream');
    assert.ok(route?.kind === 'upstream');
    assert.equal(route.pool.replicas.length, 1);
    assert.deepEqual(
      { name: route.pool.replicas[0].name, baseUrl: route.pool.replicas[0].baseUrl, maxConcurrency: route.pool.replicas[0].maxConcurrency },
      { name: 'a', baseUrl: 'http://a.test/v1', maxConcurrency: 8 },
    );
    assert.equal(route.pool.affinity, false, 'one replica: nothing to choose between');
    assert.equal(router.route('llama-3-8b'), route, 'the same answer object each time');
  });

  it('checks globs in configuration order, the first match wins; an exact name beats a glob', () => {
    const router = new ModelRouter([upstream('first', ['llama-*']), upstream('second', ['llama-3-8b', '*'])]);
    assert.equal(upstreamName(router, 'llama-3-8b'), 'second', 'named exactly');
    assert.equal(upstreamName(router, 'llama-2'), 'first');
    assert.equal(upstreamName(router, 'qwen'), 'second');
  });

  it('pools every entry that names a model exactly, and every replica of an entry with replicas', () => {
    const router = new ModelRouter([
      upstream('a', ['llama']),
      upstream('b', ['llama', 'qwen'], { baseUrl: undefined, replicas: [{ baseUrl: 'http://b1.test/v1' }, { baseUrl: 'http://b2.test/v1', name: 'b-east' }] }),
      upstream('c', ['*']),
    ]);
    assert.equal(upstreamName(router, 'llama'), 'a,b-1,b-east');
    assert.equal(upstreamName(router, 'qwen'), 'b-1,b-east');
    assert.equal(upstreamName(router, 'mistral'), 'c');
    const llama = router.route('llama');
    assert.ok(llama?.kind === 'upstream' && llama.pool.affinity, 'prefix affinity is on by default for a pool of several');
    const off = new ModelRouter([upstream('p', ['m'], { baseUrl: undefined, affinity: 'none', replicas: [{ baseUrl: 'http://p1.test/v1' }, { baseUrl: 'http://p2.test/v1' }] })]);
    const route = off.route('m');
    assert.ok(route?.kind === 'upstream' && !route.pool.affinity, 'affinity: none turns it off');
  });

  it('matches any entry of an upstream models list', () => {
    const router = new ModelRouter([upstream('a', ['qwen', 'mistral-*', 'gpt-?'])]);
    assert.equal(upstreamName(router, 'qwen'), 'a');
    assert.equal(upstreamName(router, 'mistral-7b'), 'a');
    assert.equal(upstreamName(router, 'gpt-4'), 'a');
    assert.equal(router.route('llama'), null);
  });

  it('supports * (any run, including empty and "/") and ? (exactly one character)', () => {
    const router = new ModelRouter([upstream('a', ['meta-llama/*-Instruct', 'm?del'])]);
    assert.equal(upstreamName(router, 'meta-llama/Llama-3.1-8B-Instruct'), 'a');
    assert.equal(upstreamName(router, 'meta-llama/-Instruct'), 'a', '* matches the empty string');
    assert.equal(upstreamName(router, 'meta-llama/a/b-Instruct'), 'a', '* crosses "/"');
    assert.equal(upstreamName(router, 'model'), 'a');
    assert.equal(router.route('mdel'), null, '? needs exactly one character');
    assert.equal(router.route('mooodel'), null);
    assert.equal(router.route('meta-llama/Llama-3.1-8B-Instruct-AWQ'), null, 'globs are anchored at both ends');
    assert.equal(router.route('xmeta-llama/x-Instruct'), null);
  });

  it('is case-sensitive', () => {
    const router = new ModelRouter([upstream('a', ['Qwen/*', 'exact-Name'])]);
    assert.equal(upstreamName(router, 'Qwen/Qwen2.5-7B'), 'a');
    assert.equal(router.route('qwen/Qwen2.5-7B'), null);
    assert.equal(router.route('exact-name'), null);
  });

  it('treats regex metacharacters in patterns literally', () => {
    const router = new ModelRouter([upstream('a', ['a.b+c(d)[e]{1}^$|\\-*'])]);
    assert.equal(upstreamName(router, 'a.b+c(d)[e]{1}^$|\\-tail'), 'a');
    assert.equal(router.route('aXb+c(d)[e]{1}^$|\\-tail'), null, '"." is not a wildcard');
    assert.equal(router.route('a.bbc(d)[e]{1}^$|\\-'), null, '"+" is not a quantifier');
  });

  it('a "*" upstream takes every name, echo included, because upstreams come first', () => {
    const router = new ModelRouter([upstream('catch-all', ['*'])], { engineModels: ['tiny'] });
    assert.equal(upstreamName(router, 'echo'), 'catch-all');
    assert.equal(upstreamName(router, 'tiny'), 'catch-all');
    assert.equal(upstreamName(router, ''), 'catch-all');
  });

  it('routes engine models (exact names only) after upstreams', () => {
    const router = new ModelRouter([upstream('a', ['big-*'])], { engineModels: ['tiny-llm', 'big-engine'] });
    assert.deepEqual(router.route('tiny-llm'), { kind: 'engine' });
    assert.equal(upstreamName(router, 'big-engine'), 'a', 'an upstream match beats the engine');
    assert.equal(router.route('tiny-*'), null, 'engine names are not globs');
    assert.equal(router.route('tiny-llm2'), null);
    assert.equal(router.route('Tiny-LLM'), null);
  });

  it('engine models come before the echo emulator', () => {
    const router = new ModelRouter([], { engineModels: ['echo-engine'] });
    assert.deepEqual(router.route('echo-engine'), { kind: 'engine' });
    assert.deepEqual(router.route('echo-other'), { kind: 'echo' });
  });

  it('routes echo, echo-* and echo/* to the emulator, and nothing else', () => {
    const router = new ModelRouter([]);
    for (const model of ['echo', 'echo-', 'echo-large', 'echo/', 'echo/whisper-1', 'echo-a/b']) {
      assert.deepEqual(router.route(model), { kind: 'echo' }, model);
    }
    for (const model of ['Echo', 'ECHO', 'echoes', 'echo_x', 'echo.1', 'my-echo', ' echo', 'echo ', '']) {
      assert.equal(router.route(model), null, JSON.stringify(model));
    }
  });

  it('returns null with no upstreams, engine or echo match', () => {
    const router = new ModelRouter([upstream('a', ['llama'])], { engineModels: ['tiny'] });
    assert.equal(router.route('gpt-4o'), null);
  });

  it('caches answers: repeated lookups give the same object, and null stays null', () => {
    const router = new ModelRouter([upstream('a', ['llama-*'])]);
    const first = router.route('llama-1');
    assert.equal(router.route('llama-1'), first);
    assert.equal(router.route('missing'), null);
    assert.equal(router.route('missing'), null);
  });

  it('keeps answering correctly past the cache bound (evicts least recently used)', () => {
    const router = new ModelRouter([upstream('a', ['m-*'])], { cacheSize: 2 });
    const m1 = router.route('m-1');
    router.route('m-2');
    assert.equal(router.route('m-1'), m1, 'a hit refreshes m-1');
    router.route('m-3'); // evicts m-2, the least recently used
    const cache = (router as unknown as { cache: Map<string, unknown> }).cache;
    assert.deepEqual([...cache.keys()], ['m-1', 'm-3']);
    assert.equal(upstreamName(router, 'm-2'), 'a');
    assert.equal(cache.size, 2);
    for (let i = 0; i < 100; i++) assert.equal(upstreamName(router, `m-x${i}`), 'a');
    assert.equal(cache.size, 2);
  });

  it('cacheSize 0 disables caching without changing answers', () => {
    const router = new ModelRouter([upstream('a', ['m-*'])], { cacheSize: 0 });
    assert.equal(upstreamName(router, 'm-1'), 'a');
    assert.deepEqual(router.route('echo'), { kind: 'echo' });
    assert.equal((router as unknown as { cache: Map<string, unknown> }).cache.size, 0);
  });

  it('rejects a bad cacheSize', () => {
    assert.throws(() => new ModelRouter([], { cacheSize: -1 }), RangeError);
    assert.throws(() => new ModelRouter([], { cacheSize: 1.5 }), RangeError);
  });
});

describe('compilePattern', () => {
  it('exact patterns compare whole strings', () => {
    const matches = compilePattern('gpt-4o');
    assert.equal(matches('gpt-4o'), true);
    assert.equal(matches('gpt-4o-mini'), false);
    assert.equal(matches('xgpt-4o'), false);
  });

  it('"*" and "**" match anything, including the empty string and line breaks', () => {
    for (const pattern of ['*', '**']) {
      const matches = compilePattern(pattern);
      assert.equal(matches(''), true);
      assert.equal(matches('a\nb'), true);
    }
    assert.equal(compilePattern('a*b')('a\nb'), true);
  });

  it('"?" is one code point, not one UTF-16 unit', () => {
    assert.equal(compilePattern('model-?')('model-😀'), true);
    assert.equal(compilePattern('model-??')('model-😀'), false);
  });
});

describe('isEchoModel', () => {
  it('accepts echo and its prefixed variants only', () => {
    assert.equal(isEchoModel('echo'), true);
    assert.equal(isEchoModel('echo-1'), true);
    assert.equal(isEchoModel('echo/x'), true);
    assert.equal(isEchoModel('echoes'), false);
  });
});
