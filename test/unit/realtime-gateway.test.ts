// The real-time gateway on its own: routing by model, and a shutdown that
// gives requests in flight a grace period and then ends them.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseConfig } from '../../src/config.ts';
import { RealtimeGateway } from '../../src/upstreams/realtime.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstreams.ts';

describe('RealtimeGateway', () => {
  let hanging: TestUpstream;
  let fast: TestUpstream;

  before(async () => {
    hanging = await startUpstream({ kind: 'hang' });
    fast = await startUpstream({ kind: 'fast' });
  });

  after(async () => {
    await Promise.all([hanging?.close(), fast?.close()]);
  });

  function gateway(): RealtimeGateway {
    const { upstreams } = parseConfig({
      upstreams: [
        { name: 'hanging', baseUrl: hanging.url, models: ['hang-*'] },
        { name: 'fast', baseUrl: fast.url, models: ['fast-*'] },
      ],
    });
    return new RealtimeGateway({ upstreams });
  }

  it('routes to upstreams and echo, and knows no other model', async () => {
    const gw = gateway();
    try {
      assert.equal(await gw.route('nobody'), null);
      assert.equal((await gw.route('echo'))?.kind, 'echo');
      assert.equal(await gw.route('engine-model'), null, 'no engine, so its names are unknown');
      const route = await gw.route('fast-1');
      assert.ok(route?.kind === 'upstream' && route.pool.replicas[0].name === 'fast');
      const outcome = await gw.send(route, { endpoint: '/v1/completions', body: { model: 'fast-1', prompt: 'hi', max_tokens: 2 }, timeoutMs: 5_000 });
      assert.equal(outcome.kind, 'response');
      assert.equal(outcome.kind === 'response' && outcome.status, 200);
    } finally {
      await gw.close(0);
    }
  });

  it('close() ends what is still in flight after its grace period, and refuses new requests', async () => {
    const gw = gateway();
    const route = (await gw.route('hang-1'))!;
    const pending = gw.send(route, { endpoint: '/v1/completions', body: { model: 'hang-1', prompt: 'x' }, timeoutMs: 60_000 });
    while (hanging.stats.inFlight === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    let settled = false;
    void pending.finally(() => {
      settled = true;
    });
    const closing = gw.close(100);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(settled, false, 'the request in flight gets the grace period');
    await closing;
    const outcome = await pending;
    assert.equal(outcome.kind, 'network_error');
    assert.ok(gw.closed);
    const refused = await gw.send((await gw.route('echo'))!, { endpoint: '/v1/embeddings', body: { model: 'echo', input: 'x' }, timeoutMs: 1_000 });
    assert.deepEqual(refused, { kind: 'network_error', message: 'the server is shutting down' });
  });
});
