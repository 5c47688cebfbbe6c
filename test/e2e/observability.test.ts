// /metrics, /healthz and /readyz on a real server. A batch against a loopback
// upstream that fails each request twice (500, then 503) before answering
// must show up in the Prometheus text exactly: successes, failures, retries
// by cause, tokens (equal to the usage in the output file), latency samples,
// ceilings, batches by status, lifecycle durations; a `spool worker` serves
// its own on metrics.workerPort. /readyz answers 503
// naming the blob store when the local blob directory or the S3 endpoint
// goes away, and 200 again once it is back.
import assert from 'node:assert/strict';
import { renameSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { startWorker } from '../../src/app.ts';
import { parseConfig } from '../../src/config.ts';
import { UNROUTED_UPSTREAM } from '../../src/metrics/spool-metrics.ts';
import { parseExposition } from '../helpers/prometheus.ts';
import {
  chatLine,
  chatLines,
  cleanupAll,
  endpointOf,
  lifecycleContext,
  pollUntil,
  readResults,
  startHarness,
  submitBatch,
  sumUsage,
  uploadFile,
  createBatch,
  waitForStatus,
  type Harness,
} from '../helpers/runner-harness.ts';
import { startS3rver } from '../helpers/s3rver.ts';
import { assertEnvelope, call, removeAllTempDirs, startTestSpool } from '../helpers/spool.ts';

after(async () => {
  await cleanupAll();
  removeAllTempDirs();
});

async function scrape(url: string, key?: string) {
  const res = await call(`${url}/metrics`, { key });
  assert.equal(res.status, 200, res.text);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parseExposition(res.text);
}

describe('/metrics', () => {
  it('counts a batch: outcomes, retries by cause, tokens, latency, ceilings, batches, lifecycle durations', async () => {
    const h = await startHarness({
      upstreams: [{ name: 'flaky', models: ['flaky-*', 'missing'], kind: 'fail-then-succeed', failuresPerRequest: 2, maxConcurrency: 3, initialConcurrency: 3 }],
      // Fresh database aggregates on every scrape: this test reads them as they change.
      config: { metrics: { cacheSeconds: 0 } },
    });
    const ep = endpointOf(h);
    // 'missing' answers 404 model_not_found at once (no retry); no upstream serves 'nobody-serves'.
    const lines = [...chatLines(4, 'flaky-a'), chatLine('gone-1', 'missing'), chatLine('unrouted-1', 'nobody-serves')];
    const batch = await waitForStatus(ep, (await submitBatch(ep, lines)).id, 'completed');
    const results = await readResults(ep, batch);
    assert.equal(results.output.length, 4);
    assert.equal(results.errors.length, 2);

    const m = await scrape(h.url);
    assert.equal(m.types.get('spool_upstream_requests_total'), 'counter');
    assert.equal(m.value('spool_upstream_requests_total', { upstream: 'flaky', outcome: 'succeeded' }), 4);
    assert.equal(m.value('spool_upstream_requests_total', { upstream: 'flaky', outcome: 'failed' }), 1);
    assert.equal(m.value('spool_upstream_requests_total', { upstream: 'flaky', outcome: 'retried' }), 8);
    assert.equal(m.value('spool_upstream_requests_total', { upstream: UNROUTED_UPSTREAM, outcome: 'failed' }), 1);
    assert.equal(m.value('spool_upstream_retries_total', { upstream: 'flaky', cause: 'server_error' }), 4, 'the 500s');
    assert.equal(m.value('spool_upstream_retries_total', { upstream: 'flaky', cause: 'overloaded' }), 4, 'the 503s');
    assert.equal(m.value('spool_upstream_retries_total', { upstream: 'flaky', cause: 'timeout' }), 0);

    const usage = sumUsage(results.output);
    assert.ok(usage.input > 0 && usage.output > 0, 'echo reports usage');
    assert.equal(m.value('spool_upstream_tokens_total', { upstream: 'flaky', direction: 'input' }), usage.input);
    assert.equal(m.value('spool_upstream_tokens_total', { upstream: 'flaky', direction: 'output' }), usage.output);
    assert.equal(m.value('spool_upstream_tokens_total', { upstream: 'flaky', direction: 'output' }), batch.usage.output_tokens);

    // Every attempt sent: 4 lines x 3 attempts, and the one 404.
    assert.equal(m.types.get('spool_upstream_request_duration_seconds'), 'histogram');
    assert.equal(m.value('spool_upstream_request_duration_seconds_count', { upstream: 'flaky' }), 13);
    assert.equal(m.value('spool_upstream_request_duration_seconds_bucket', { upstream: 'flaky', le: '+Inf' }), 13);
    const latencySum = m.value('spool_upstream_request_duration_seconds_sum', { upstream: 'flaky' });
    assert.ok(latencySum > 0 && latencySum < 60, `latency sum ${latencySum}`);

    assert.equal(m.value('spool_upstream_concurrency_ceiling', { upstream: 'flaky' }), 3);
    const limit = m.value('spool_upstream_concurrency_limit', { upstream: 'flaky' });
    assert.ok(limit >= 1 && limit <= 3, `limit ${limit} within [1, ceiling]`);
    assert.equal(m.value('spool_upstream_in_flight', { upstream: 'flaky' }), 0);
    assert.equal(m.value('spool_upstream_queued', { upstream: 'flaky' }), 0);

    assert.equal(m.value('spool_batches', { status: 'completed' }), 1);
    assert.equal(m.value('spool_batches', { status: 'in_progress' }), 0);
    assert.equal(m.value('spool_batch_validation_duration_seconds_count', { outcome: 'valid' }), 1);
    assert.equal(m.value('spool_batch_finalization_duration_seconds_count', { status: 'completed' }), 1);
    // The process's own metrics come along, once.
    assert.ok(m.all('process_cpu_user_seconds_total').length === 1);
    assert.ok(m.all('nodejs_eventloop_lag_seconds').length === 1);
    await h.stop();
  });

  it('shows queue depth by model while a batch waits, and counts an invalid file', async () => {
    // One request at a time, one chunk (16 of the 40 lines) claimed at once: the other chunks stay pending for a while.
    const h: Harness = await startHarness({
      upstreams: [{ name: 'slow', models: ['slow-*'], kind: 'slow', delayMs: 60, maxConcurrency: 1, initialConcurrency: 1 }],
      worker: { claimBatchSize: 2 },
      config: { metrics: { cacheSeconds: 0 } },
    });
    const ep = endpointOf(h);
    const batch = await submitBatch(ep, chatLines(40, 'slow-q'));
    const seen = await pollUntil(
      () => scrape(h.url),
      (m) => m.all('spool_queue_depth', { model: 'slow-q' }).some((s) => s.value > 0) && m.all('spool_requests_running', { model: 'slow-q' }).some((s) => s.value > 0),
      { what: 'queue depth of slow-q above 0 with some running', intervalMs: 20 },
    );
    assert.ok(seen.value('spool_queue_depth', { model: 'slow-q' }) + seen.value('spool_requests_running', { model: 'slow-q' }) <= 40);
    assert.equal(seen.value('spool_batches', { status: 'in_progress' }), 1);
    await waitForStatus(ep, batch.id, 'completed');
    const drained = await scrape(h.url);
    assert.equal(drained.value('spool_queue_depth', { model: 'slow-q' }), 0, 'a drained model reads 0 rather than vanishing');

    const bad = await uploadFile(ep, '{"custom_id": "x", "body": {"model": "slow-q"}}\nnot json\n');
    await waitForStatus(ep, (await createBatch(ep, bad.id)).id, 'failed');
    const after = await scrape(h.url);
    assert.equal(after.value('spool_batch_validation_duration_seconds_count', { outcome: 'invalid' }), 1);
    assert.equal(after.value('spool_batches', { status: 'failed' }), 1);
    await h.stop();
  });

  it('is served by `spool worker` on metrics.workerPort, where the requests run; the API-only process has none of them', async () => {
    const h = await startHarness({ worker: { enabled: false } });
    const config = parseConfig({ ...h.config, port: 0, worker: { ...h.config.worker, enabled: true }, metrics: { workerPort: 0 } });
    const worker = await startWorker(config, lifecycleContext(h.app.store, config).log);
    try {
      assert.ok(worker.opsUrl, 'the worker says where it listens');
      const ep = endpointOf(h);
      const batch = await waitForStatus(ep, (await submitBatch(ep, chatLines(5, 'echo'))).id, 'completed');
      assert.equal(batch.request_counts.completed, 5);

      const m = await scrape(worker.opsUrl);
      assert.equal(m.value('spool_upstream_requests_total', { upstream: 'echo', outcome: 'succeeded' }), 5);
      assert.equal(m.value('spool_batches', { status: 'completed' }), 1);
      assert.equal((await call(`${worker.opsUrl}/healthz`)).status, 200);
      assert.equal((await call(`${worker.opsUrl}/readyz`)).status, 200);
      assertEnvelope(await call(`${worker.opsUrl}/v1/files`), 404, { code: 'not_found' });

      const api = await scrape(h.url);
      assert.equal(api.all('spool_upstream_requests_total').length, 0, 'an API-only process runs no requests');
      assert.equal(api.value('spool_batches', { status: 'completed' }), 1, 'but sees every batch in the database');
      // Both processes run the lifecycle sweeps; exactly one of them validated the batch.
      const validated = (x: typeof m) => x.all('spool_batch_validation_duration_seconds_count', { outcome: 'valid' }).reduce((n, s) => n + s.value, 0);
      assert.equal(validated(m) + validated(api), 1);
    } finally {
      await worker.close();
      await h.stop();
    }
  });

  it('reads the database aggregates at most once per metrics.cacheSeconds, however often it is scraped', async () => {
    const h = await startHarness({ config: { metrics: { cacheSeconds: 600 } } });
    const ep = endpointOf(h);
    const before = await scrape(h.url);
    assert.equal(before.value('spool_batches', { status: 'completed' }), 0);
    await waitForStatus(ep, (await submitBatch(ep, chatLines(2, 'echo'))).id, 'completed');
    const again = await scrape(h.url);
    assert.equal(again.value('spool_batches', { status: 'completed' }), 0, 'the cached aggregate, not a new query');
    assert.equal(again.value('spool_upstream_requests_total', { upstream: 'echo', outcome: 'succeeded' }), 2, "this process's own counters are always current");
    await h.stop();
  });

  it('is open on a loopback address by default and admin-only on any other (metrics.auth "auto"); "none" and "admin" say so explicitly; absent when disabled', async () => {
    const open = await startTestSpool();
    try {
      assert.equal((await call(`${open.url}/metrics`)).status, 200, 'on 127.0.0.1 anyone on the machine may scrape');
    } finally {
      await open.stop();
    }

    // The Docker image's address: reachable from other machines, so every user's model names and queue depths are not public.
    const exposed = await startTestSpool({ config: { host: '0.0.0.0' } });
    try {
      assertEnvelope(await call(`${exposed.url}/metrics`), 401, { code: 'invalid_api_key' });
      await scrape(exposed.url, exposed.apiKey);
    } finally {
      await exposed.stop();
    }
    const reopened = await startTestSpool({ config: { host: '0.0.0.0', metrics: { auth: 'none' } } });
    try {
      assert.equal((await call(`${reopened.url}/metrics`)).status, 200, 'metrics.auth "none" opens it again');
    } finally {
      await reopened.stop();
    }

    const guarded = await startTestSpool({ config: { metrics: { auth: 'admin' } } });
    try {
      assertEnvelope(await call(`${guarded.url}/metrics`), 401, { code: 'invalid_api_key' });
      const userKey = await guarded.keyFor('alice');
      assertEnvelope(await call(`${guarded.url}/metrics`, { key: userKey }), 403, { code: 'admin_required' });
      await scrape(guarded.url, guarded.apiKey);
    } finally {
      await guarded.stop();
    }

    const disabled = await startTestSpool({ config: { metrics: { enabled: false } } });
    try {
      assertEnvelope(await call(`${disabled.url}/metrics`), 404, { code: 'not_found' });
    } finally {
      await disabled.stop();
    }
  });
});

describe('/healthz and /readyz', () => {
  it('healthz answers 200; readyz 503 naming the blob store while its directory is gone, 200 once it is back', async () => {
    const spool = await startTestSpool();
    try {
      const health = await call(`${spool.url}/healthz`);
      assert.equal(health.status, 200);
      assert.deepEqual(health.json, { status: 'ok' });
      const ready = await call(`${spool.url}/readyz`);
      assert.equal(ready.status, 200, ready.text);
      assert.deepEqual(ready.json, { status: 'ready', checks: { database: 'ok', blob_store: 'ok' } });

      const blobs = join(spool.dataDir, 'blobs');
      renameSync(blobs, `${blobs}.away`);
      try {
        const down = await call(`${spool.url}/readyz`);
        const body = assertEnvelope(down, 503, { code: 'not_ready', messageMatch: /blob store/ });
        assert.deepEqual(body.checks, { database: 'ok', blob_store: 'ENOENT' });
        assert.ok(!down.text.includes(spool.dataDir), 'the unauthenticated answer does not reveal paths');
        // Liveness is not readiness.
        assert.equal((await call(`${spool.url}/healthz`)).status, 200);
      } finally {
        renameSync(`${blobs}.away`, blobs);
      }
      assert.equal((await call(`${spool.url}/readyz`)).status, 200);
    } finally {
      await spool.stop();
    }
  });

  it('readyz answers 503 naming the blob store when the S3 endpoint stops answering', async () => {
    const s3 = await startS3rver();
    let spool;
    try {
      const bucket = await s3.createBucket();
      const { endpoint, region, accessKeyId, secretAccessKey, forcePathStyle } = s3.storeOptions(bucket);
      spool = await startTestSpool({ config: { blobs: { kind: 's3', s3: { endpoint, region, bucket, accessKeyId, secretAccessKey, forcePathStyle } } } });
      assert.equal((await call(`${spool.url}/readyz`)).status, 200);
      await s3.close();
      const down = await call(`${spool.url}/readyz`);
      const body = assertEnvelope(down, 503, { code: 'not_ready', messageMatch: /blob store/ });
      assert.equal(body.checks.database, 'ok');
      assert.notEqual(body.checks.blob_store, 'ok');
      assert.ok(!down.text.includes(bucket), 'the unauthenticated answer does not reveal the bucket');
    } finally {
      await spool?.stop();
      await s3.close();
    }
  });
});
