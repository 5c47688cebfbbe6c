// Cost and usage, on SQLite and PostgreSQL: a batch's cost (both dialects)
// and GET /usage equal what the output file's usage comes to at the
// configured prices, with each line counted once though every line of one
// model needed a retry; users see only their own usage, admins everyone's;
// `spool usage` prints the same.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, describe, it } from 'node:test';
import {
  api,
  chatLine,
  cleanupAll,
  createPostgresDatabase,
  endpointOf,
  readResults,
  REPO_ROOT,
  SKIP_POSTGRES,
  startHarness,
  submitBatch,
  waitForStatus,
  type Json,
} from '../helpers/runner-harness.ts';

after(cleanupAll);

const PRICES = [
  { models: ['flaky-*'], inputPerMillion: 3, outputPerMillion: 15 },
  { models: ['fast-a'], inputPerMillion: 0.2, outputPerMillion: 0.6 },
];
const DISCOUNT = 0.5;

/** What a line costs, in billionths, by the rule the docs state: usage x price per million, less the discount, rounded per line. */
function lineNanos(model: string, usage: { prompt_tokens: number; completion_tokens: number }): number {
  const price = model.startsWith('flaky-') ? PRICES[0] : model === 'fast-a' ? PRICES[1] : undefined;
  if (!price) return 0;
  return Math.round((usage.prompt_tokens * price.inputPerMillion + usage.completion_tokens * price.outputPerMillion) * 1000 * (1 - DISCOUNT));
}

for (const backend of [
  { name: 'SQLite', skip: false as const, databaseUrl: async () => undefined },
  { name: 'PostgreSQL', skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : (false as const), databaseUrl: createPostgresDatabase },
]) {
  describe(`cost and usage on ${backend.name}`, { skip: backend.skip }, () => {
    it("a batch's cost and GET /usage are its output's usage at the prices, each line once despite retries; users see only their own", async () => {
      const h = await startHarness({
        upstreams: [
          { name: 'flaky', kind: 'fail-then-succeed', failuresPerRequest: 1, models: ['flaky-*'] },
          { name: 'fast', kind: 'fast', models: ['fast-*'] },
        ],
        config: { databaseUrl: await backend.databaseUrl(), billing: { currency: 'EUR', batchDiscount: DISCOUNT, prices: PRICES } },
      });
      const alice = { base: h.openai, key: await h.keyFor('alice') };
      const bob = { base: h.openai, key: await h.keyFor('bob') };
      const lines = [
        ...Array.from({ length: 12 }, (_, i) => chatLine(`f${i}`, 'flaky-model', { messages: [{ role: 'user', content: `flaky line ${i} `.repeat(i + 1) }] })),
        ...Array.from({ length: 10 }, (_, i) => chatLine(`a${i}`, 'fast-a')),
        ...Array.from({ length: 5 }, (_, i) => chatLine(`b${i}`, 'fast-b')),
      ];
      const batch = await waitForStatus(alice, (await submitBatch(alice, lines)).id, 'completed');
      const results = await readResults(alice, batch);
      assert.equal(results.output.length, lines.length);
      assert.ok(h.upstreams.flaky.stats.requests >= 24, 'every flaky line was sent twice');

      const modelOf = new Map(lines.map((line) => [line.custom_id, line.body.model as string]));
      const byModel = new Map<string, { requests: number; input: number; output: number; nanos: number }>();
      for (const line of results.output) {
        const model = modelOf.get(line.custom_id)!;
        const usage = line.response.body.usage;
        const sum = byModel.get(model) ?? { requests: 0, input: 0, output: 0, nanos: 0 };
        sum.requests += 1;
        sum.input += usage.prompt_tokens;
        sum.output += usage.completion_tokens;
        sum.nanos += lineNanos(model, usage);
        byModel.set(model, sum);
      }
      const totalNanos = [...byModel.values()].reduce((t, m) => t + m.nanos, 0);
      assert.ok(totalNanos > 0);
      assert.deepEqual(batch.cost, { amount: totalNanos / 1e9, currency: 'EUR' }, 'OpenAI batch object');
      const together = await api(`${h.together}/batches/${batch.id}`, alice.key);
      assert.deepEqual(together.json.cost, { amount: totalNanos / 1e9, currency: 'EUR' }, 'Together batch object');

      const today = new Date().toISOString().slice(0, 10);
      const expectedRows = [...byModel.entries()]
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([model, m]) => ({
          object: 'usage',
          date: today,
          model,
          requests: m.requests,
          input_tokens: m.input,
          output_tokens: m.output,
          total_tokens: m.input + m.output,
          cost: { amount: m.nanos / 1e9, currency: 'EUR' },
        }));
      for (const base of [h.openai, h.together]) {
        const usage = await api(`${base}/usage`, alice.key);
        assert.equal(usage.status, 200);
        assert.deepEqual(usage.json.data, expectedRows, `${base}/usage`);
        assert.equal(usage.json.user_id, 'alice');
      }

      // The dashboard's statistics of the batch: every line finished once, each with the latency of its last attempt.
      for (const base of [h.openai, h.together]) {
        const stats = await api(`${base}/batches/${batch.id}/stats`, alice.key);
        assert.equal(stats.status, 200);
        assert.equal(stats.json.object, 'batch.stats');
        assert.equal(stats.json.finished.reduce((t: number, b: Json) => t + b.succeeded, 0), lines.length);
        assert.equal(stats.json.finished.reduce((t: number, b: Json) => t + b.failed, 0), 0);
        assert.equal(stats.json.latency_ms.counts.reduce((t: number, n: number) => t + n, 0), lines.length);
        assert.equal(stats.json.latency_ms.counts.length, stats.json.latency_ms.bounds.length + 1);
        assert.deepEqual(stats.json.errors, []);
      }
      assert.equal((await api(`${h.openai}/batches/${batch.id}/stats`, bob.key)).status, 404, "another user's batch does not exist for bob");

      // Bob ran nothing: his usage is empty, and alice's is not his to see; an admin sees both, per user.
      await waitForStatus(bob, (await submitBatch(bob, [chatLine('x', 'fast-a')])).id, 'completed');
      const own = await api(`${h.openai}/usage`, bob.key);
      assert.deepEqual(own.json.data.map((row: Json) => [row.model, row.requests]), [['fast-a', 1]]);
      for (const query of ['user_id=alice', 'user_id=*', 'group_by=user']) {
        const refused = await api(`${h.openai}/usage?${query}`, bob.key);
        assert.equal(refused.status, 403, query);
        assert.equal(refused.json.error.code, 'admin_required');
      }
      const everyone = await api(`${h.openai}/usage?user_id=*&group_by=user`, h.apiKey);
      assert.equal(everyone.status, 200);
      assert.deepEqual(
        everyone.json.data.map((row: Json) => [row.user_id, row.model, row.requests]),
        [
          ['alice', 'fast-a', 10],
          ['bob', 'fast-a', 1],
          ['alice', 'fast-b', 5],
          ['alice', 'flaky-model', 12],
        ],
      );
      const aliceByAdmin = await api(`${h.openai}/usage?user_id=alice`, h.apiKey);
      assert.deepEqual(aliceByAdmin.json.data, expectedRows);

      // A range before any usage is empty; bad ranges name their parameter.
      assert.deepEqual((await api(`${h.openai}/usage?start_date=2020-01-01&end_date=2020-01-31`, alice.key)).json.data, []);
      for (const [query, param] of [
        ['start_date=2026-13-01', 'start_date'],
        ['end_date=yesterday', 'end_date'],
        ['start_date=2026-02-01&end_date=2026-01-01', 'start_date'],
        ['start_date=2020-01-01&end_date=2026-01-01', 'start_date'],
        ['group_by=model', 'group_by'],
      ]) {
        const bad = await api(`${h.openai}/usage?${query}`, alice.key);
        assert.equal(bad.status, 400, query);
        assert.equal(bad.json.error.param, param, query);
      }

      // The CLI prints the same numbers, with a total.
      // Asynchronously: the server answering it runs in this process.
      const cli = (...args: string[]) =>
        new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
          execFile(process.execPath, ['bin/spool.js', 'usage', '--server', h.url, '--api-key', alice.key, ...args], { cwd: REPO_ROOT, env: { ...process.env, SPOOL_API_KEY: '' } }, (err, stdout, stderr) =>
            resolve({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
          );
        });
      const json = await cli('--json');
      assert.equal(json.status, 0, json.stderr);
      assert.deepEqual(JSON.parse(json.stdout).data, expectedRows);
      const table = await cli();
      assert.equal(table.status, 0, table.stderr);
      assert.match(table.stdout, /flaky-model\s+12\s/);
      assert.match(table.stdout, new RegExp(`total\\s+${lines.length}\\s+.*${(totalNanos / 1e9).toFixed(6)} EUR`));
      const refused = await cli('--by-user');
      assert.notEqual(refused.status, 0);
      assert.match(refused.stderr, /Only admin keys/);
      await h.stop();
    });
  });
}

describe('monthly budgets', () => {
  it('a batch estimated over what is left fails validation saying how much is left and when it resets; with nothing left, create answers 429', async () => {
    const h = await startHarness({
      upstreams: [{ name: 'fast', kind: 'fast', models: ['fast-*'] }],
      // A tenth of a cent a token, so a few lines make a visible cost; 0.5 USD a month each, dave nothing.
      config: { billing: { prices: [{ models: ['fast-*'], inputPerMillion: 1000, outputPerMillion: 1000 }], monthlyBudget: 0.5, userBudgets: { dave: 0 } } },
    });
    const alice = { base: h.openai, key: await h.keyFor('alice') };
    const resets = new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth() + 1, 1)).toISOString().slice(0, 10);

    // 10 lines x max_tokens 100: about 1.1 USD estimated, more than the 0.5 left.
    const big = Array.from({ length: 10 }, (_, i) => chatLine(`big${i}`, 'fast-a', { max_tokens: 100 }));
    const refused = await waitForStatus(alice, (await submitBatch(alice, big)).id, 'failed');
    assert.equal(refused.errors.data[0].code, 'budget_exceeded');
    assert.match(refused.errors.data[0].message, /this batch would cost about 1\.\d\d USD, and 0\.50 USD of 0\.50 USD is left/);
    assert.match(refused.errors.data[0].message, new RegExp(`resets on ${resets} \\(UTC\\)`));

    // 2 lines x max_tokens 10 fit, run, and what they cost is spent.
    const small = [chatLine('s1', 'fast-a', { max_tokens: 10 }), chatLine('s2', 'fast-a', { max_tokens: 10 })];
    const ran = await waitForStatus(alice, (await submitBatch(alice, small)).id, 'completed');
    assert.ok(ran.cost.amount > 0 && ran.cost.amount < 0.5, JSON.stringify(ran.cost));
    const again = await waitForStatus(alice, (await submitBatch(alice, big)).id, 'failed');
    // As the server counts: in billionths.
    const left = ((500_000_000 - Math.round(ran.cost.amount * 1e9)) / 1e9).toFixed(2);
    assert.match(again.errors.data[0].message, new RegExp(`${left.replace('.', '\\.')} USD of 0\\.50 USD is left \\(${ran.cost.amount.toFixed(2).replace('.', '\\.')} USD spent this month`));

    // Nothing left at all: refused at create, in the error envelope, not to be retried before the reset.
    const dave = await h.keyFor('dave');
    const file = await api(`${h.openai}/files`, dave, { method: 'POST', body: (() => {
      const form = new FormData();
      form.append('purpose', 'batch');
      form.append('file', new Blob([`${JSON.stringify(chatLine('d', 'fast-a'))}\n`]), 'd.jsonl');
      return form;
    })() });
    assert.equal(file.status, 200);
    const created = await api(`${h.openai}/batches`, dave, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input_file_id: file.json.id, endpoint: '/v1/chat/completions', completion_window: '24h' }),
    });
    assert.equal(created.status, 429);
    assert.equal(created.json.error.code, 'budget_exceeded');
    assert.equal(created.json.error.type, 'rate_limit_error');
    assert.match(created.json.error.message, new RegExp(`0\\.00 USD of 0\\.00 USD is left .* resets on ${resets} \\(UTC\\)`));
    assert.equal(created.headers.get('x-should-retry'), 'false');
    await h.stop();
  });
});
