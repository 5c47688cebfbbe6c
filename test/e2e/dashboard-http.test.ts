// The dashboard's server side over plain HTTP: the page and its assets at /
// and /dashboard/, that nothing else changed for unknown paths (still the
// error envelope), and GET /v1/admin/status: who may read it and what it
// reports while a batch runs and after it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { createApiKey } from '../../src/auth/keys.ts';
import { findStaticDir } from '../../src/web/dashboard.ts';
import {
  assertEnvelope,
  call,
  chatJsonl,
  chatLine,
  createBatch,
  jsonl,
  pollUntil,
  removeAllTempDirs,
  startTestSpool,
  uploadBatchFile,
  waitForBatchStatus,
  type Json,
  type TestSpool,
} from '../helpers/spool.ts';

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const STATIC_DIR = join(REPO_ROOT, 'src', 'web', 'static');

describe('dashboard: served at /', () => {
  let spool: TestSpool;
  before(async () => {
    spool = await startTestSpool();
  });
  after(async () => {
    await spool?.stop();
    removeAllTempDirs();
  });

  it('GET / is the page, with a same-origin-only CSP and no key needed', async () => {
    const res = await call(`${spool.url}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    const csp = res.headers.get('content-security-policy') ?? '';
    assert.match(csp, /script-src 'self'/);
    assert.match(csp, /connect-src 'self'/);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    assert.match(res.text, /<script type="module" src="\/dashboard\/app\.js"><\/script>/);
    assert.doesNotMatch(res.text, /https?:\/\//, 'nothing is loaded from another origin');
  });

  it('serves every module the page imports, with its content type, and answers If-None-Match with 304', async () => {
    const seen = new Set<string>();
    const queue = ['app.js', 'style.css'];
    while (queue.length > 0) {
      const name = queue.shift()!;
      if (seen.has(name)) continue;
      seen.add(name);
      const res = await call(`${spool.url}/dashboard/${name}`);
      assert.equal(res.status, 200, `/dashboard/${name}: ${res.status}`);
      assert.match(res.headers.get('content-type') ?? '', name.endsWith('.css') ? /^text\/css/ : /^text\/javascript/);
      assert.equal(res.text, readFileSync(join(STATIC_DIR, name), 'utf8'));
      for (const match of res.text.matchAll(/from '\.\/([a-z-]+\.js)'/g)) queue.push(match[1]);
    }
    assert.ok(seen.size >= 10, `the module graph was walked: ${[...seen].join(', ')}`);
    const first = await call(`${spool.url}/dashboard/app.js`);
    const etag = first.headers.get('etag');
    assert.ok(etag);
    const again = await call(`${spool.url}/dashboard/app.js`, { headers: { 'if-none-match': etag } });
    assert.equal(again.status, 304);
    assert.equal((await call(`${spool.url}/`, { method: 'HEAD' })).status, 200);
  });

  it('unknown paths keep the 404 envelope; the API keeps its routes and its 401', async () => {
    for (const path of ['/nope', '/dashboard/', '/dashboard/missing.js', '/dashboard/..%2Fpackage.json', '/index.html', '/v1/nope']) {
      assertEnvelope(await call(`${spool.url}${path}`), 404, { code: 'not_found' });
    }
    assertEnvelope(await call(`${spool.url}/openai/v1/batches`), 401, { code: 'invalid_api_key' });
    assertEnvelope(await call(`${spool.url}/v1/files`), 401, { code: 'invalid_api_key' });
    assert.equal((await call(`${spool.url}/openai/v1/batches`, { key: spool.apiKey })).status, 200);
  });

  it('finds its files from the sources, from dist/ and from the benchmark bundle', () => {
    assert.equal(findStaticDir(join(REPO_ROOT, 'src', 'web')), STATIC_DIR);
    assert.equal(findStaticDir(join(REPO_ROOT, 'dist')), STATIC_DIR);
    assert.equal(findStaticDir(join(REPO_ROOT, 'dist', 'cli')), STATIC_DIR);
    assert.equal(findStaticDir(join(REPO_ROOT, 'bench', '.out', 'bundle')), STATIC_DIR);
  });
});

describe('GET /v1/admin/status', () => {
  let spool: TestSpool;
  let userKey: string;
  let adminKey: string;
  before(async () => {
    // 120 ms a request, one at a time: a 6-line batch runs for most of a second, long enough to look at.
    spool = await startTestSpool({ upstreamDelayMs: 120 });
    userKey = await spool.keyFor('alice');
    adminKey = (await createApiKey(spool.app.store.sql.db, 'ops', true)).key;
  });
  after(async () => {
    await spool?.stop();
    removeAllTempDirs();
  });

  const status = (key: string | null) => call(`${spool.url}/v1/admin/status`, { key });

  it('needs a key (401), and an admin one (403 with the envelope)', async () => {
    assertEnvelope(await status(null), 401, { code: 'invalid_api_key' });
    assertEnvelope(await status('not-a-key'), 401, { code: 'invalid_api_key' });
    const forbidden = assertEnvelope(await status(userKey), 403, { code: 'admin_required', messageMatch: /admin API key/ });
    assert.equal(forbidden.error.type, 'permission_error');
    assert.equal((await status(adminKey)).status, 200, 'a key minted with --admin');
    assert.equal((await status(spool.apiKey)).status, 200, 'SPOOL_ADMIN_KEY is an admin key');
    assertEnvelope(await call(`${spool.url}/openai/v1/admin/status`, { key: adminKey }), 404, { code: 'not_found' });
  });

  it('reports the lane, the queue and recent outcomes while a batch runs and after it', async () => {
    const idle = (await status(adminKey)).json as Json;
    assert.equal(idle.object, 'admin.status');
    assert.equal(idle.window_seconds, 300);
    assert.ok(idle.worker, 'this process runs a worker');
    const configured = idle.upstreams.find((u: Json) => u.name === 'slow');
    assert.deepEqual(
      { kind: configured.kind, max: configured.max_concurrency, pending: configured.pending, running: configured.running },
      { kind: 'upstream', max: 1, pending: 0, running: 0 },
      'a configured upstream shows before it has served anything',
    );

    const batch = await createBatch(spool, await uploadBatchFile(spool, chatJsonl(6), userKey), userKey);
    const busy = await pollUntil(
      async () => (await status(adminKey)).json as Json,
      // Rows are claimed in the database a moment before the runner makes the upstream's lane for them.
      (s) =>
        (s.models.find((m: Json) => m.model === 'slow-model')?.running ?? 0) > 0 &&
        s.upstreams.find((u: Json) => u.name === 'slow')?.concurrency_limit !== null,
      { what: 'the batch to be claimed and its lane made', intervalMs: 20 },
    );
    const slow = busy.upstreams.find((u: Json) => u.name === 'slow');
    assert.equal(slow.concurrency_limit, 1);
    assert.ok(slow.in_flight <= 1);
    assert.equal(busy.models.find((m: Json) => m.model === 'slow-model').upstream, 'slow');

    await waitForBatchStatus(`${spool.url}/openai/v1`, userKey, batch.id, 'completed');
    // A model no upstream serves: its lines fail at once with invalid_model.
    const unrouted = await createBatch(spool, await uploadBatchFile(spool, jsonl([chatLine('x-1', { model: 'nobody-serves-this' })]), userKey), userKey);
    await waitForBatchStatus(`${spool.url}/openai/v1`, userKey, unrouted.id, 'completed');

    const done = (await status(adminKey)).json as Json;
    const model = done.models.find((m: Json) => m.model === 'slow-model');
    assert.deepEqual(
      { pending: model.pending, running: model.running, recent: model.recent },
      { pending: 0, running: 0, recent: { succeeded: 6, failed: 0, retries: 0, error_rate: 0 } },
    );
    assert.deepEqual(done.upstreams.find((u: Json) => u.name === 'slow').recent, { succeeded: 6, failed: 0, retries: 0, error_rate: 0 });
    const nobody = done.models.find((m: Json) => m.model === 'nobody-serves-this');
    assert.equal(nobody.upstream, null);
    assert.equal(nobody.recent.failed, 1);
    assert.equal(nobody.recent.error_rate, 1);
    assert.ok(done.worker.succeeded >= 6);
  });
});
