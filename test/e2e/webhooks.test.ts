// Webhooks end to end: a real Spool posts signed terminal-state events to a
// real loopback receiver. Checks the event shape in both dialects, the
// signature (by hand and with the OpenAI SDK's verifier), every terminal
// state, retries with backoff after receiver failures, giving up, the SSRF
// guard, delivery after a restart and after a crash (the outbox is in the
// database), and on PostgreSQL that concurrent processes claim each delivery
// exactly once.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import type { ConfigInput } from '../../src/config.ts';
import { openStore, type Store } from '../../src/store/index.ts';
import type { WebhookDeliveryRow } from '../../src/store/sql/schema.ts';
import { claimDueWebhookDeliveries, insertWebhookDeliveries, listBatchWebhookDeliveries } from '../../src/store/sql/webhooks.ts';
import { retryDelayMs } from '../../src/webhooks/deliver.ts';
import {
  api,
  cancelBatch,
  chatLines,
  cleanupAll,
  createPostgresDatabase,
  endpointOf,
  FAST_WORKER,
  makeTempDir,
  pollUntil,
  REPO_ROOT,
  SKIP_POSTGRES,
  startChildSpool,
  startHarness,
  submitBatch,
  toJsonl,
  uploadFile,
  waitForStatus,
  type Harness,
  type Json,
} from '../helpers/runner-harness.ts';
import { startWebhookReceiver, verifySignature, type WebhookReceiver } from '../helpers/webhook-receiver.ts';

/** Fast retries for tests: 50 ms, 200 ms, then 200 ms (the cap). */
const FAST_WEBHOOKS = { allowPrivateNetworks: true, retryBaseDelayMs: 50, retryMaxDelayMs: 200, timeoutMs: 2000 };

/** The webhook secret of the user `key` belongs to, read as that user would: GET /webhooks/secret. */
async function secretOf(base: string, key: string): Promise<string> {
  const res = await api(`${base}/webhooks/secret`, key);
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.object, 'webhook_secret');
  return res.json.secret as string;
}

function webhooksConfig(extra: Json = {}): Partial<ConfigInput> {
  return { webhooks: { ...FAST_WEBHOOKS, ...extra } };
}

async function deliveries(store: Store, batchId: string): Promise<WebhookDeliveryRow[]> {
  return listBatchWebhookDeliveries(store.sql.db, batchId);
}

/** Waits until every delivery of the batch has left 'pending' (or there are `count` of them, all settled). */
function settledDeliveries(store: Store, batchId: string, count: number): Promise<WebhookDeliveryRow[]> {
  return pollUntil(
    () => deliveries(store, batchId),
    (rows) => rows.length === count && rows.every((row) => row.state !== 'pending'),
    { what: `${count} settled webhook deliveries of ${batchId}` },
  );
}

after(cleanupAll);

describe('webhooks: delivery and signature', () => {
  let h: Harness;
  let receiver: WebhookReceiver;

  before(async () => {
    receiver = await startWebhookReceiver();
    h = await startHarness({
      upstreams: [{ name: 'slow', kind: 'slow', delayMs: 200, models: ['slow-*'], maxConcurrency: 1, initialConcurrency: 1 }],
      // The harness key acts as user "default": its batches also go to its configured URL.
      config: webhooksConfig({ users: { default: `${receiver.url}/user-hook` } }),
    });
  });

  after(async () => {
    await h?.stop();
    await receiver?.close();
  });

  it('a completed OpenAI batch posts one signed batch.completed event to its metadata.webhook_url and to its user URL', async () => {
    const created = await submitBatch(endpointOf(h), chatLines(3, 'echo'), { extra: { metadata: { webhook_url: `${receiver.url}/batch-hook`, team: 'a' } } });
    assert.equal(created.webhook_url, `${receiver.url}/batch-hook`, 'the batch object shows its webhook URL');
    const batch = await waitForStatus(endpointOf(h), created.id, 'completed');
    const rows = await settledDeliveries(h.app.store, created.id, 2);
    assert.deepEqual(rows.map((row) => row.state), ['delivered', 'delivered']);
    for (const row of rows) assert.equal(row.attempts, 1);

    const SECRET = await secretOf(h.openai, h.apiKey);
    const posts = receiver.received.filter((r) => JSON.parse(r.body).data.id === created.id);
    assert.deepEqual(posts.map((p) => p.path).sort(), ['/batch-hook', '/user-hook']);
    const [first, second] = posts;
    assert.equal(first.body, second.body, 'one event, the same bytes to both URLs');
    assert.equal(first.headers['webhook-id'], second.headers['webhook-id']);
    for (const post of posts) {
      assert.match(String(post.headers['content-type']), /^application\/json/);
      assert.match(String(post.headers['webhook-signature']), /^v1,[A-Za-z0-9+/]+=*$/);
      const timestamp = Number(post.headers['webhook-timestamp']);
      assert.ok(Math.abs(timestamp - Date.now() / 1000) < 60, 'webhook-timestamp is now, in unix seconds');
      assert.ok(verifySignature(SECRET, post.headers, post.body), 'signature verifies with the secret');
      assert.ok(!verifySignature(`whsec_${randomBytes(32).toString('base64')}`, post.headers, post.body), 'and not with another secret');
      assert.ok(!verifySignature(SECRET, post.headers, post.body.replace('completed', 'cancelled')), 'nor over a changed body');
    }
    // The OpenAI SDK's own verifier accepts it as an OpenAI webhook.
    const client = new OpenAI({ apiKey: 'unused', webhookSecret: SECRET });
    const event = (await client.webhooks.unwrap(first.body, first.headers as Record<string, string>)) as unknown as Json;
    assert.equal(event.type, 'batch.completed');
    assert.equal(event.object, 'event');
    assert.equal(event.id, first.headers['webhook-id']);
    assert.equal(typeof event.created_at, 'number');
    // data is the batch object in the dialect it was created in (OpenAI here), as GET shows it.
    assert.equal(event.data.object, 'batch');
    assert.equal(event.data.status, 'completed');
    assert.deepEqual(event.data.request_counts, batch.request_counts);
    assert.equal(event.data.output_file_id, batch.output_file_id);
    assert.deepEqual(event.data.metadata, { webhook_url: `${receiver.url}/batch-hook`, team: 'a' });
  });

  it('a Together batch posts its event with the Together batch object, to its webhook_url', async () => {
    const other = await h.keyFor('together-user');
    const file = await uploadFile({ base: h.together, key: other }, toJsonl(chatLines(2, 'echo')), 'together.jsonl', { purpose: 'batch-api' });
    const res = await api(`${h.together}/batches`, other, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input_file_id: file.id, endpoint: '/v1/chat/completions', webhook_url: `${receiver.url}/together-hook` }),
    });
    assert.equal(res.status, 201, res.text);
    assert.equal(res.json.job.webhook_url, `${receiver.url}/together-hook`);
    const id = res.json.job.id as string;
    const [row] = await settledDeliveries(h.app.store, id, 1);
    assert.equal(row.state, 'delivered', 'only the batch URL: this user has none configured');
    const post = receiver.received.find((r) => r.path === '/together-hook' && JSON.parse(r.body).data.id === id)!;
    assert.ok(verifySignature(await secretOf(h.openai, other), post.headers, post.body), "signed with that user's own secret");
    assert.ok(!verifySignature(await secretOf(h.openai, h.apiKey), post.headers, post.body), "and not with another user's");
    const event = JSON.parse(post.body);
    assert.equal(event.type, 'batch.completed');
    assert.equal(event.data.status, 'COMPLETED', 'Together casing');
    assert.equal(event.data.progress, 100);
    assert.equal(typeof event.data.created_at, 'string', 'Together timestamps are ISO 8601');
    assert.equal(event.data.user_id, 'together-user');
  });

  it('failed, cancelled and expired batches post batch.failed, batch.cancelled and batch.expired', async () => {
    const ep = endpointOf(h);
    const hook = (name: string) => ({ extra: { metadata: { webhook_url: `${receiver.url}/${name}` } } });

    const invalidFile = await uploadFile(ep, '{"custom_id": "a", "body": {}}\nnot json\n');
    const invalid = await api(`${ep.base}/batches`, h.apiKey, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input_file_id: invalidFile.id, endpoint: '/v1/chat/completions', completion_window: '24h', metadata: { webhook_url: `${receiver.url}/failed` } }),
    });
    assert.equal(invalid.status, 200, invalid.text);

    const toCancel = await submitBatch(ep, chatLines(20, 'slow-model'), hook('cancelled'));
    const toExpire = await submitBatch(ep, chatLines(20, 'slow-model'), hook('expired'));
    await waitForStatus(ep, toExpire.id, 'in_progress');
    await cancelBatch(ep, toCancel.id);
    // Past its deadline: the expiry sweep takes it from here.
    await h.app.store.sql.db.updateTable('batches').set({ deadline_at: Date.now() - 1000 }).where('id', '=', toExpire.id).execute();

    for (const [id, status] of [
      [invalid.json.id, 'failed'],
      [toCancel.id, 'cancelled'],
      [toExpire.id, 'expired'],
    ] as const) {
      await waitForStatus(ep, id, status);
      // Two deliveries each: the batch's URL and the user's.
      const rows = await settledDeliveries(h.app.store, id, 2);
      assert.ok(rows.every((row) => row.state === 'delivered' && row.event_type === `batch.${status}`), JSON.stringify(rows));
      const post = receiver.received.find((r) => r.path === `/${status}`)!;
      const event = JSON.parse(post.body);
      assert.equal(event.type, `batch.${status}`);
      assert.equal(event.data.status, status);
      assert.ok(verifySignature(await secretOf(h.openai, h.apiKey), post.headers, post.body));
    }
  });

  it('a webhook URL that is not http(s) is refused at create, naming the field', async () => {
    const ep = endpointOf(h);
    const file = await uploadFile(ep, toJsonl(chatLines(1, 'echo')));
    const cases: Array<[Json, string]> = [
      [{ metadata: { webhook_url: 'ftp://example.com/hook' } }, 'metadata.webhook_url'],
      [{ metadata: { webhook_url: 'not a url' } }, 'metadata.webhook_url'],
      [{ webhook_url: 'file:///etc/passwd' }, 'webhook_url'],
      [{ webhook_url: 42 }, 'webhook_url'],
      [{ webhook_url: 'https://a.example/x', metadata: { webhook_url: 'https://b.example/y' } }, 'webhook_url'],
    ];
    for (const [extra, param] of cases) {
      for (const base of [h.openai, h.together]) {
        const res = await api(`${base}/batches`, h.apiKey, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ input_file_id: file.id, endpoint: '/v1/chat/completions', ...extra }),
        });
        assert.equal(res.status, 400, `${JSON.stringify(extra)}: ${res.text}`);
        assert.equal(res.json.error.param, param, res.text);
        assert.equal(res.json.message, res.json.error.message);
      }
    }
  });
});

describe('webhooks: a secret per user', () => {
  let h: Harness;
  let receiver: WebhookReceiver;

  before(async () => {
    receiver = await startWebhookReceiver();
    h = await startHarness({ config: webhooksConfig() });
  });

  after(async () => {
    await h?.stop();
    await receiver?.close();
  });

  /** Runs one echo batch for `key` with a webhook, and returns the POST its event arrived in. */
  async function eventFor(key: string, path: string) {
    const created = await submitBatch({ base: h.openai, key }, chatLines(1, 'echo'), { extra: { metadata: { webhook_url: `${receiver.url}/${path}` } } });
    await settledDeliveries(h.app.store, created.id, 1);
    return receiver.received.find((r) => r.path === `/${path}` && JSON.parse(r.body).data.id === created.id)!;
  }

  it("each user's events verify with that user's secret only: a user cannot sign events another user's receiver accepts", async () => {
    const alice = await h.keyFor('alice');
    const bob = await h.keyFor('bob');
    const aliceSecret = await secretOf(h.openai, alice);
    const bobSecret = await secretOf(h.together, bob);
    assert.notEqual(aliceSecret, bobSecret);
    assert.match(aliceSecret, /^whsec_[A-Za-z0-9+/]{43}=$/);
    assert.equal(await secretOf(h.together, alice), aliceSecret, 'the same secret under both prefixes, and on every read');

    const toAlice = await eventFor(alice, 'alice');
    const toBob = await eventFor(bob, 'bob');
    assert.match(String(toAlice.headers['webhook-signature']), /^v1,[A-Za-z0-9+/]+=*$/, 'one signature: this install never had a shared secret');
    assert.ok(verifySignature(aliceSecret, toAlice.headers, toAlice.body));
    assert.ok(!verifySignature(bobSecret, toAlice.headers, toAlice.body));
    assert.ok(verifySignature(bobSecret, toBob.headers, toBob.body));
    assert.ok(!verifySignature(aliceSecret, toBob.headers, toBob.body), "alice's secret signs nothing bob's receiver accepts");
  });

  it("rotating one user's secret changes only that user's; later events use the new one", async () => {
    const carol = await h.keyFor('carol');
    const dave = await h.keyFor('dave');
    const [carolBefore, daveBefore] = [await secretOf(h.openai, carol), await secretOf(h.openai, dave)];
    const rotated = await api(`${h.openai}/webhooks/secret/rotate`, carol, { method: 'POST' });
    assert.equal(rotated.status, 200, rotated.text);
    assert.notEqual(rotated.json.secret, carolBefore);
    assert.equal(await secretOf(h.openai, carol), rotated.json.secret);
    assert.equal(await secretOf(h.openai, dave), daveBefore, "dave's secret is untouched");
    const post = await eventFor(carol, 'carol');
    assert.ok(verifySignature(rotated.json.secret, post.headers, post.body));
    assert.ok(!verifySignature(carolBefore, post.headers, post.body));
  });

  it("another user's secret: 403 for other keys, readable by admin keys with ?user_id=, and by `spool webhooks secret --user`", async () => {
    const erin = await h.keyFor('erin');
    const frank = await h.keyFor('frank');
    const erinSecret = await secretOf(h.openai, erin);
    const denied = await api(`${h.openai}/webhooks/secret?user_id=erin`, frank);
    assert.equal(denied.status, 403);
    assert.equal(denied.json.error.code, 'admin_required');
    assert.equal((await api(`${h.openai}/webhooks/secret/rotate?user_id=erin`, frank, { method: 'POST' })).status, 403);
    const byAdmin = await api(`${h.openai}/webhooks/secret?user_id=erin`, h.apiKey);
    assert.equal(byAdmin.json.secret, erinSecret);
    const cli = spawnSync(process.execPath, ['bin/spool.js', 'webhooks', 'secret', '--user', 'erin', '--data-dir', h.dataDir], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      env: { ...process.env, SPOOL_LOG_LEVEL: 'silent' },
      timeout: 60_000,
    });
    assert.equal(cli.status, 0, cli.stderr);
    assert.equal(cli.stdout.trim(), erinSecret);
  });
});

describe('webhooks: migrating an install that had one shared secret', () => {
  it('events carry a signature with the shared secret too, until webhooks.signWithSharedSecret is false', async () => {
    const receiver = await startWebhookReceiver();
    const dataDir = makeTempDir();
    const shared = `whsec_${randomBytes(32).toString('base64')}`;
    // An older Spool generated and kept this one secret for every user.
    const older = await openStore({ dataDir });
    await older.sql.db.insertInto('settings').values({ key: 'webhook_signing_secret', value: shared }).execute();
    await older.close();
    try {
      for (const signWithSharedSecret of [true, false]) {
        const h = await startHarness({ dataDir, config: webhooksConfig({ signWithSharedSecret }) });
        const key = await h.keyFor('grace');
        const created = await submitBatch({ base: h.openai, key }, chatLines(1, 'echo'), { extra: { metadata: { webhook_url: `${receiver.url}/grace` } } });
        await settledDeliveries(h.app.store, created.id, 1);
        const post = receiver.received.find((r) => JSON.parse(r.body).data.id === created.id)!;
        assert.ok(verifySignature(await secretOf(h.openai, key), post.headers, post.body), "always signed with the user's own secret");
        assert.equal(verifySignature(shared, post.headers, post.body), signWithSharedSecret, `shared signature while signWithSharedSecret is ${signWithSharedSecret}`);
        await h.stop();
      }
    } finally {
      await receiver.close();
    }
  });
});

describe('webhooks: retries', () => {
  it('retries after receiver failures (500, 500, then 200) and records every attempt', async () => {
    const receiver = await startWebhookReceiver(({ previous }) => (previous < 2 ? 500 : 200));
    const h = await startHarness({ config: webhooksConfig() });
    try {
      const created = await submitBatch(endpointOf(h), chatLines(2, 'echo'), { extra: { metadata: { webhook_url: `${receiver.url}/flaky` } } });
      const [row] = await settledDeliveries(h.app.store, created.id, 1);
      assert.equal(row.state, 'delivered');
      assert.equal(row.attempts, 3, 'two failures, then the success');
      assert.equal(row.last_status, 200);
      assert.equal(row.last_error, null);
      assert.deepEqual(receiver.received.map((r) => r.answered), [500, 500, 200]);
      const ids = new Set(receiver.received.map((r) => r.headers['webhook-id']));
      assert.equal(ids.size, 1, 'every attempt carries the same webhook-id');
      assert.equal(new Set(receiver.received.map((r) => r.body)).size, 1, 'and the same body');
      const secret = await secretOf(h.openai, h.apiKey);
      for (const post of receiver.received) assert.ok(verifySignature(secret, post.headers, post.body), 'each attempt is signed afresh');
      // Backoff: the retries did not come back at once.
      const gaps = receiver.received.slice(1).map((r, i) => r.at - receiver.received[i].at);
      assert.ok(gaps.every((gap) => gap >= 35), `retries waited for their backoff (gaps ${gaps.join(', ')} ms)`);
    } finally {
      await h.stop();
      await receiver.close();
    }
  });

  it('gives up after webhooks.maxAttempts, keeping the last error', async () => {
    const receiver = await startWebhookReceiver(() => 503);
    const h = await startHarness({ config: webhooksConfig({ maxAttempts: 3 }) });
    try {
      const created = await submitBatch(endpointOf(h), chatLines(1, 'echo'), { extra: { metadata: { webhook_url: `${receiver.url}/down` } } });
      const [row] = await settledDeliveries(h.app.store, created.id, 1);
      assert.equal(row.state, 'failed');
      assert.equal(row.attempts, 3);
      assert.equal(row.last_status, 503);
      assert.match(row.last_error ?? '', /HTTP 503/);
      assert.equal(receiver.received.length, 3);
    } finally {
      await h.stop();
      await receiver.close();
    }
  });

  it('the backoff grows 4x per attempt with +-20% jitter, up to the cap', () => {
    const config = { retryBaseDelayMs: 10_000, retryMaxDelayMs: 6 * 3_600_000 };
    assert.equal(retryDelayMs(1, config, () => 0.5), 10_000);
    assert.equal(retryDelayMs(2, config, () => 0.5), 40_000);
    assert.equal(retryDelayMs(3, config, () => 0), 160_000 * 0.8);
    assert.equal(retryDelayMs(3, config, () => 1), 160_000 * 1.2);
    assert.equal(retryDelayMs(9, config, () => 1), 6 * 3_600_000, 'capped, jitter included');
    // The defaults (10 attempts) spread over most of a day.
    const total = Array.from({ length: 9 }, (_, i) => retryDelayMs(i + 1, config, () => 0.5)).reduce((a, b) => a + b, 0);
    assert.ok(total > 20 * 3_600_000 && total < 26 * 3_600_000, `total ${total / 3_600_000} h`);
  });

  it('the SSRF guard refuses a loopback webhook URL unless allowed, and gives up at once', async () => {
    const receiver = await startWebhookReceiver();
    const h = await startHarness({ config: webhooksConfig({ allowPrivateNetworks: false }) });
    try {
      const created = await submitBatch(endpointOf(h), chatLines(1, 'echo'), { extra: { metadata: { webhook_url: `${receiver.url}/internal` } } });
      const [row] = await settledDeliveries(h.app.store, created.id, 1);
      assert.equal(row.state, 'failed');
      assert.equal(row.attempts, 1, 'a refused address is not retried');
      assert.match(row.last_error ?? '', /loopback address.*webhooks\.allowedHosts/);
      assert.equal(receiver.received.length, 0, 'nothing reached the receiver');
    } finally {
      await h.stop();
      await receiver.close();
    }
    // An allowlisted host is posted to.
    const allowed = await startHarness({ config: webhooksConfig({ allowPrivateNetworks: false, allowedHosts: ['127.0.0.1'] }) });
    const open = await startWebhookReceiver();
    try {
      const created = await submitBatch(endpointOf(allowed), chatLines(1, 'echo'), { extra: { metadata: { webhook_url: `${open.url}/allowed` } } });
      const [row] = await settledDeliveries(allowed.app.store, created.id, 1);
      assert.equal(row.state, 'delivered');
    } finally {
      await allowed.stop();
      await open.close();
    }
  });
});

describe('webhooks: durability', () => {
  it('a delivery pending when Spool stops is sent after it starts again on the same data dir', async () => {
    // Down: every connection is cut before an answer.
    const receiver = await startWebhookReceiver(() => 'reset');
    const dataDir = makeTempDir();
    const config = webhooksConfig({ retryBaseDelayMs: 100, retryMaxDelayMs: 300 });
    const first = await startHarness({ dataDir, config });
    const created = await submitBatch(endpointOf(first), chatLines(2, 'echo'), { extra: { metadata: { webhook_url: `${receiver.url}/later` } } });
    await waitForStatus(endpointOf(first), created.id, 'completed');
    const failing = await pollUntil(
      () => deliveries(first.app.store, created.id),
      (rows) => rows.length === 1 && rows[0].attempts >= 1 && rows[0].last_error !== null,
      { what: 'a failed first attempt' },
    );
    assert.equal(failing[0].state, 'pending');
    await first.stop();
    const triedBefore = receiver.received.length;

    receiver.answer = () => 200;
    const second = await startHarness({ dataDir, config });
    try {
      const [row] = await settledDeliveries(second.app.store, created.id, 1);
      assert.equal(row.state, 'delivered');
      assert.ok(row.attempts > failing[0].attempts - 1, 'the count carried over the restart');
      const delivered = receiver.received.slice(triedBefore).filter((r) => r.answered === 200);
      assert.equal(delivered.length, 1, 'delivered once');
      assert.ok(verifySignature(await secretOf(second.openai, second.apiKey), delivered[0].headers, delivered[0].body));
      assert.equal(JSON.parse(delivered[0].body).data.id, created.id);
    } finally {
      await second.stop();
      await receiver.close();
    }
  });

  it('a batch that finished just before a crash (SIGKILL) still gets its webhook from the next process', async () => {
    const receiver = await startWebhookReceiver(() => 'reset');
    const dataDir = makeTempDir();
    const config = { worker: FAST_WORKER, webhooks: { ...FAST_WEBHOOKS, retryBaseDelayMs: 100, retryMaxDelayMs: 300 } };
    const first = await startChildSpool({ dataDir, config });
    const ep = { base: first.openai, key: 'harness-key-0123456789' };
    const created = await submitBatch(ep, chatLines(2, 'echo'), { extra: { metadata: { webhook_url: `${receiver.url}/crash` } } });
    await waitForStatus(ep, created.id, 'completed');
    await pollUntil(
      async () => receiver.received.length,
      (n) => n >= 1,
      { what: 'an attempt that was cut off' },
    );
    await first.kill();

    receiver.answer = () => 200;
    const second = await startChildSpool({ dataDir, config });
    try {
      await pollUntil(
        async () => receiver.received.filter((r) => r.answered === 200).length,
        (n) => n >= 1,
        { what: 'the delivery after the crash' },
      );
      const delivered = receiver.received.filter((r) => r.answered === 200);
      assert.equal(delivered.length, 1);
      assert.equal(JSON.parse(delivered[0].body).data.id, created.id);
      assert.ok(verifySignature(await secretOf(second.openai, 'harness-key-0123456789'), delivered[0].headers, delivered[0].body));
    } finally {
      await second.kill();
      await receiver.close();
    }
  });
});

describe('webhooks on PostgreSQL', { skip: SKIP_POSTGRES && 'SPOOL_TEST_SKIP_POSTGRES=1' }, () => {
  it('concurrent claimers never take the same delivery (FOR UPDATE SKIP LOCKED)', async () => {
    const databaseUrl = await createPostgresDatabase();
    const dir = makeTempDir();
    const stores = [await openStore({ dataDir: dir, databaseUrl }), await openStore({ dataDir: dir, databaseUrl })];
    try {
      const now = Date.now();
      const rows = Array.from({ length: 300 }, (_, i) => ({
        id: `whd-test-${String(i).padStart(4, '0')}`,
        event_id: `evt-test-${i}`,
        event_type: 'batch.completed' as const,
        batch_id: `batch-test-${i}`,
        user_id: 'u',
        url: 'http://127.0.0.1:9/hook',
        payload: '{}',
        state: 'pending' as const,
        attempts: 0,
        next_attempt_at: now - 1000,
        created_at: now,
      }));
      await insertWebhookDeliveries(stores[0].sql.db, rows);
      const taken: string[][] = [[], [], [], []];
      // Four claimers over two connection pools, racing until the outbox is drained.
      await Promise.all(
        taken.map(async (mine, i) => {
          for (;;) {
            const claimed = await claimDueWebhookDeliveries(stores[i % 2].sql.db, { owner: `owner-${i}`, leaseMs: 60_000, now: Date.now(), limit: 7 });
            if (claimed.length === 0) return;
            for (const row of claimed) {
              assert.equal(row.lease_owner, `owner-${i}`);
              assert.equal(row.attempts, 1);
              mine.push(row.id);
            }
            // Paced like a sender working through its deliveries, so one claimer whose connection came up first
            // cannot drain the whole outbox before the others' first claim (it did once, on a busy machine).
            await new Promise((resolve) => setTimeout(resolve, 5));
          }
        }),
      );
      const all = taken.flat();
      assert.equal(all.length, rows.length, 'every delivery claimed');
      assert.equal(new Set(all).size, rows.length, 'and none twice');
      // None stopped early: a claim never came back empty while deliveries were due (it did, as `id IN (SELECT ...
      // FOR UPDATE SKIP LOCKED)`, leaving one claimer 209-279 of the 300), so each paced claimer has its share.
      assert.ok(
        taken.every((mine) => mine.length > 0 && mine.length <= rows.length / 2),
        `the claimers shared the work: ${taken.map((mine) => mine.length).join(', ')}`,
      );
    } finally {
      for (const store of stores) await store.close();
    }
  });

  it('two Spool processes on one database deliver each event exactly once', async () => {
    const databaseUrl = await createPostgresDatabase();
    const receiver = await startWebhookReceiver();
    const config = { ...webhooksConfig({ users: { default: `${receiver.url}/user` } }), databaseUrl };
    // One data dir for both: its blob directory stands in for the shared bucket of a scale-out deployment.
    const dataDir = makeTempDir();
    const a = await startHarness({ config, dataDir });
    const b = await startHarness({ config, dataDir });
    try {
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) {
        const created = await submitBatch(endpointOf(i % 2 === 0 ? a : b), chatLines(2, 'echo'), {
          extra: { metadata: { webhook_url: `${receiver.url}/batch` } },
        });
        ids.push(created.id);
      }
      for (const id of ids) {
        const rows = await settledDeliveries(a.app.store, id, 2);
        assert.ok(rows.every((row) => row.state === 'delivered' && row.attempts === 1), JSON.stringify(rows));
      }
      const perTarget = new Map<string, number>();
      for (const post of receiver.received) {
        const key = `${post.headers['webhook-id']} ${post.path}`;
        perTarget.set(key, (perTarget.get(key) ?? 0) + 1);
      }
      assert.equal(perTarget.size, ids.length * 2);
      assert.ok([...perTarget.values()].every((n) => n === 1), 'no delivery sent twice');
    } finally {
      await b.stop();
      await a.stop();
      await receiver.close();
    }
  });
});
