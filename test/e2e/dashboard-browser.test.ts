// The dashboard end to end in headless Chromium (Debian's `chromium`, driven
// by playwright-core; no browser is ever downloaded): a wrong key, sign-in,
// upload a JSONL and create a batch, watch its bar reach 100%, download the
// output (the bytes are compared with the API's), the files page, sign-out,
// cancel, and the operations panel for an admin key only. Screenshots go to
// test-artifacts/dashboard/. Without /usr/bin/chromium the suite is skipped.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import {
  call,
  chatLine,
  createBatch,
  jsonl,
  parseJsonl,
  removeAllTempDirs,
  SLOW_MODEL,
  startTestSpool,
  uploadBatchFile,
  type Json,
  type TestSpool,
} from '../helpers/spool.ts';

const CHROMIUM = '/usr/bin/chromium';
const SKIP = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; .ci/run does) to run the dashboard's browser test`;
const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ARTIFACTS = join(REPO_ROOT, 'test-artifacts', 'dashboard');
const LINES = 20;
// One request at a time, this long each: the batch runs for a few seconds, several of the page's polls.
const UPSTREAM_DELAY_MS = 150;
const STEP_TIMEOUT_MS = 30_000;
// Page-side code as expressions: the tests compile without the DOM library.
const STORED_KEY = "sessionStorage.getItem('spool.apiKey')";
interface ProgressLike {
  value: number;
  max: number;
  hasAttribute(name: string): boolean;
}

/** OpenAI-form completions lines (so the page must take the endpoint from the first line), one of them for a model nobody serves. */
function inputJsonl(): string {
  const lines: Json[] = [];
  for (let i = 1; i <= LINES; i++) {
    const model = i === 7 ? 'nobody-serves-this' : SLOW_MODEL;
    lines.push({ custom_id: `line-${i}`, method: 'POST', url: '/v1/completions', body: { model, prompt: `prompt number ${i}`, max_tokens: 8 } });
  }
  return jsonl(lines);
}

describe('dashboard in Chromium', { skip: SKIP }, () => {
  let spool: TestSpool;
  let browser: Browser;
  let userKey: string;
  const pageErrors: string[] = [];

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    spool = await startTestSpool({
      upstreamDelayMs: UPSTREAM_DELAY_MS,
      // Priced, so the usage page has costs to chart (a tenth of a cent a token).
      config: { billing: { prices: [{ models: ['slow-*'], inputPerMillion: 1000, outputPerMillion: 1000 }] } },
    });
    userKey = await spool.keyFor('alice');
    const { chromium } = await import('playwright-core');
    // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  });
  after(async () => {
    await browser?.close();
    await spool?.stop();
    removeAllTempDirs();
  });

  async function newPage(): Promise<Page> {
    const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.on('pageerror', (err) => pageErrors.push(err.message));
    return page;
  }

  /** A signed-in page on one batch. */
  async function batchPage(key: string, batchId: string): Promise<Page> {
    const page = await newPage();
    await page.goto(`${spool.url}/`);
    await signIn(page, key);
    await page.goto(`${spool.url}/#/batches/${batchId}`);
    return page;
  }

  const shot = (page: Page, name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true, animations: 'disabled' });

  async function signIn(page: Page, key: string): Promise<void> {
    await page.getByLabel('API key').fill(key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Log out' }).waitFor();
  }

  it('a user: wrong key, sign in, upload and create, watch the bar reach 100%, download, files, sign out', async () => {
    const page = await newPage();
    await page.goto(`${spool.url}/`);

    // A wrong key shows the API's own message.
    await page.getByLabel('API key').fill('spool_not-a-real-key');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'The API key is not valid or has been revoked.' }).waitFor();
    await shot(page, '01-wrong-key');

    await signIn(page, userKey);
    assert.equal(await page.evaluate(STORED_KEY), userKey, 'the key is kept in sessionStorage');
    assert.equal(await page.getByRole('link', { name: 'Operations' }).count(), 0, 'no operations panel for a user key');
    await page.goto(`${spool.url}/#/operations`);
    await page.getByRole('heading', { name: 'Batches', level: 1 }).waitFor();

    // Upload and create.
    await page.getByRole('link', { name: 'New batch' }).first().click();
    const input = inputJsonl();
    await page.getByLabel('JSONL file').setInputFiles({ name: 'requests.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(input) });
    await page.getByRole('status').filter({ hasText: 'Endpoint /v1/completions, from the first line.' }).waitFor();
    assert.equal(await page.getByLabel('Endpoint', { exact: true }).inputValue(), '/v1/completions');
    await shot(page, '02-new-batch');
    await page.getByRole('button', { name: 'Upload and create batch' }).click();
    await page.waitForURL(/#\/batches\/.+/);
    const batchId = decodeURIComponent(new URL(page.url()).hash.replace('#/batches/', ''));
    await page.getByRole('heading', { name: `Batch ${batchId}` }).waitFor();

    // Watch the bar: it must be seen part-way, then full.
    const bar = page.locator('#batch-progress');
    const seen: number[] = [];
    let shotMidway = false;
    const deadline = Date.now() + 60_000;
    for (;;) {
      const { value, max, indeterminate } = await bar.evaluate((el) => {
        const progress = el as unknown as ProgressLike;
        return { value: progress.value, max: progress.max, indeterminate: !progress.hasAttribute('value') };
      });
      if (!indeterminate) seen.push(value / max);
      if (!indeterminate && value > 0 && value < max && !shotMidway) {
        shotMidway = true;
        await shot(page, '03-batch-running');
      }
      if (!indeterminate && value === max && max === LINES) break;
      assert.ok(Date.now() < deadline, `the bar did not reach 100% in time; saw ${JSON.stringify(seen)}`);
      await page.waitForTimeout(100);
    }
    assert.ok(
      seen.some((f) => f > 0 && f < 1),
      `the bar showed progress part-way before 100%: ${JSON.stringify(seen)}`,
    );
    await page.getByText('100%').first().waitFor();
    await page.locator('#batch-summary .status').filter({ hasText: 'Completed' }).waitFor();
    assert.match((await page.locator('#batch-live').textContent()) ?? '', /Completed, 100% done\./, 'the live region says it is done');
    assert.match((await page.locator('#batch-summary').textContent()) ?? '', /19 succeeded, 1 failed/);

    // The error file preview names the line that failed.
    const errorRow = page.locator('#batch-error-file-body tr');
    await errorRow.first().waitFor();
    assert.equal(await errorRow.count(), 1);
    assert.match((await errorRow.textContent()) ?? '', /line-7.*invalid_model/);
    await shot(page, '04-batch-completed');

    // Download the output: the saved bytes are exactly the API's.
    const batch = (await call(`${spool.url}/openai/v1/batches/${batchId}`, { key: userKey })).json as Json;
    const apiOutput = await (await fetch(`${spool.url}/openai/v1/files/${batch.output_file_id}/content`, { headers: { authorization: `Bearer ${userKey}` } })).arrayBuffer();
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: /^Download output file/ }).click()]);
    const saved = readFileSync((await download.path())!);
    assert.ok(saved.equals(Buffer.from(apiOutput)), 'downloaded output equals the API content');
    const outputLines = parseJsonl(saved.toString('utf8'));
    assert.equal(outputLines.length, LINES - 1);
    assert.deepEqual(
      outputLines.map((l) => l.custom_id).sort(),
      Array.from({ length: LINES }, (_, i) => `line-${i + 1}`)
        .filter((id) => id !== 'line-7')
        .sort(),
    );
    assert.ok(outputLines.every((l) => l.response.status_code === 200 && l.error === null));
    await page.getByRole('status').filter({ hasText: /^Downloaded / }).waitFor();

    // The list shows it completed, at 100%.
    await page.getByRole('link', { name: 'Batches', exact: true }).click();
    const row = page.locator(`tr[data-batch-id="${batchId}"]`);
    await row.getByText('Completed').waitFor();
    assert.equal(await row.locator('.progress-text').textContent(), '100%');
    assert.match((await row.textContent()) ?? '', /20 \/ 20 \(1 failed\)/);
    await shot(page, '05-batches');

    // Files: download the input (bytes as uploaded), then delete it.
    await page.getByRole('link', { name: 'Files' }).click();
    const inputRow = page.locator('#files-body tr', { hasText: 'requests.jsonl' });
    await inputRow.waitFor();
    await shot(page, '06-files');
    const [inputDownload] = await Promise.all([page.waitForEvent('download'), inputRow.getByRole('button', { name: /^Download requests\.jsonl/ }).click()]);
    assert.equal(readFileSync((await inputDownload.path())!, 'utf8'), input);
    page.once('dialog', (dialog) => void dialog.accept());
    await inputRow.getByRole('button', { name: /^Delete requests\.jsonl/ }).click();
    await page.getByRole('status').filter({ hasText: 'Deleted requests.jsonl.' }).waitFor();
    assert.equal(await page.locator('#files-body tr', { hasText: 'requests.jsonl' }).count(), 0);
    assert.equal((await call(`${spool.url}/openai/v1/files/${batch.input_file_id}`, { key: userKey })).status, 404, 'deleted on the server');

    // Sign out: the key leaves sessionStorage.
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.getByLabel('API key').waitFor();
    assert.equal(await page.evaluate(STORED_KEY), null);
    await page.context().close();
  });

  it('cancels a running batch from its page', async () => {
    const fileId = await uploadBatchFile(spool, jsonl(Array.from({ length: 40 }, (_, i) => chatLine(`c-${i}`))), userKey);
    const batch = await createBatch(spool, fileId, userKey);
    const page = await batchPage(userKey, batch.id);
    await page.locator('#batch-summary .status').filter({ hasText: 'In progress' }).waitFor();
    page.once('dialog', (dialog) => void dialog.accept());
    await page.getByRole('button', { name: 'Cancel batch' }).click();
    await page.locator('#batch-summary .status').filter({ hasText: 'Cancelled' }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Cancel batch' }).count(), 0, 'no cancel once it is over');
    assert.equal(((await call(`${spool.url}/openai/v1/batches/${batch.id}`, { key: userKey })).json as Json).status, 'cancelled');
    await page.context().close();
  });

  it('an admin key sees the operations panel, keyboard first', async () => {
    const page = await newPage();
    await page.goto(`${spool.url}/`);
    await signIn(page, spool.apiKey);
    // The skip link comes first; from there Tab reaches the Operations link, and Enter follows it.
    // A click on the brand (not focusable) moves the keyboard's starting point to the top bar.
    await page.locator('.brand').click();
    const focused = () => page.evaluate<string>("document.activeElement?.textContent?.trim() ?? ''");
    await page.keyboard.press('Shift+Tab');
    assert.equal(await focused(), 'Skip to content');
    for (let i = 0; i < 8 && (await focused()) !== 'Operations'; i++) await page.keyboard.press('Tab');
    assert.equal(await focused(), 'Operations', 'the keyboard reaches the Operations link');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Operations', level: 1 }).waitFor();
    assert.equal(await page.evaluate<string>('document.activeElement?.id'), 'operations-title', 'focus moves to the new view');
    const upstream = page.locator('#operations-upstreams tr[data-upstream="slow"]');
    await upstream.waitFor();
    const cells = await upstream.locator('td').allTextContents();
    assert.equal(cells[1], '1', 'the ceiling of the slow upstream');
    const model = page.locator('#operations-models tr', { hasText: 'nobody-serves-this' });
    await model.waitFor();
    assert.match((await model.textContent()) ?? '', /invalid_model/);
    await shot(page, '07-operations');
    await page.context().close();
  });

  it("a batch's charts (lines finished, throughput, latency, errors by code) and the usage page's, drawn from real data", async () => {
    const lines = [...Array.from({ length: 12 }, (_, i) => chatLine(`chart-${i}`)), chatLine('chart-bad', { model: 'nobody-serves-this' })];
    const fileId = await uploadBatchFile(spool, jsonl(lines), userKey);
    const batch = await createBatch(spool, fileId, userKey);
    const page = await batchPage(userKey, batch.id);
    await page.locator('#batch-summary .status').filter({ hasText: 'Completed' }).waitFor();
    await page.locator('#batch-charts').waitFor({ state: 'visible' });
    // What each chart holds, read from Chart.js itself: the page drew the server's numbers.
    const chartData = (id: string) =>
      page.evaluate<{ labels: string[]; data: number[][] }>(
        `(() => { const c = Chart.getChart(document.getElementById('${id}')); return c ? { labels: c.data.labels, data: c.data.datasets.map((d) => d.data) } : null; })()`,
      );
    await page.waitForFunction(`Chart.getChart(document.getElementById('chart-finished'))?.data.datasets[0].data.at(-1) === 12`);
    const finished = await chartData('chart-finished');
    assert.equal(finished.data[0].at(-1), 12, 'succeeded, cumulative');
    assert.equal(finished.data[1].at(-1), 1, 'failed, cumulative');
    const throughput = await chartData('chart-throughput');
    assert.ok(throughput.data[0].some((rate) => rate > 0), 'some lines per second');
    const latency = await chartData('chart-latency');
    assert.equal(latency.data[0].reduce((a, b) => a + b, 0), 12, 'every line that reached the upstream, once');
    assert.ok(latency.labels.includes('≤ 250 ms'), latency.labels.join(', '));
    const errors = await chartData('chart-errors');
    assert.deepEqual(errors.labels, ['invalid_model']);
    assert.deepEqual(errors.data[0], [1]);
    await shot(page, '08-batch-charts');

    await page.getByRole('link', { name: 'Usage' }).click();
    await page.getByRole('heading', { name: 'Usage', level: 1 }).waitFor();
    await page.locator('#usage-body tr').first().waitFor();
    const usage = (await call(`${spool.url}/openai/v1/usage`, { key: userKey })).json as Json;
    const cost = await chartData('chart-cost');
    const tokens = await chartData('chart-tokens');
    const sum = (rows: number[][]) => rows.flat().reduce((a, b) => a + b, 0);
    assert.ok(usage.data.length > 0);
    assert.equal(Math.round(sum(cost.data) * 1e9), Math.round(usage.data.reduce((t: number, r: Json) => t + r.cost.amount, 0) * 1e9), 'the cost chart adds up to GET /usage');
    assert.equal(sum(tokens.data), usage.data.reduce((t: number, r: Json) => t + r.total_tokens, 0), 'the token chart too');
    assert.ok(sum(cost.data) > 0, 'priced lines cost something');
    assert.equal(await page.locator('#usage-everyone-label').isVisible(), false, 'only admins may see every user');
    await shot(page, '09-usage');
    await page.context().close();
  });

  it('a running batch shows its results so far, each line once, and hides them once the output file exists', async () => {
    const lines = Array.from({ length: 30 }, (_, i) => chatLine(`sofar-${i}`));
    const fileId = await uploadBatchFile(spool, jsonl(lines), userKey);
    const batch = await createBatch(spool, fileId, userKey);
    const page = await batchPage(userKey, batch.id);
    await page.locator('#batch-results').waitFor({ state: 'visible' });
    await page.locator('#batch-results-body tr').first().waitFor();
    const ids = await page.evaluate<string[]>("Array.from(document.querySelectorAll('#batch-results-body tr')).map((row) => row.dataset.customId)");
    assert.ok(ids.length > 0 && ids.length < lines.length, `some lines, not all (${ids.length})`);
    assert.equal(new Set(ids).size, ids.length, 'each line once');
    for (const id of ids) assert.match(id, /^sofar-\d+$/);
    await shot(page, '10-results-so-far');
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download results so far' }).click()]);
    const saved = parseJsonl(readFileSync((await download.path())!, 'utf8'));
    const savedIds = saved.map((line) => line.custom_id as string);
    assert.ok(savedIds.length >= ids.length && savedIds.length <= lines.length, `the lines so far (${savedIds.length})`);
    assert.equal(new Set(savedIds).size, savedIds.length, 'each line once in the download too');
    assert.equal(download.suggestedFilename(), `${batch.id}.results-so-far.jsonl`);
    await page.locator('#batch-summary .status').filter({ hasText: 'Completed' }).waitFor({ timeout: 60_000 });
    await page.locator('#batch-results').waitFor({ state: 'hidden' });
    await page.context().close();
  });

  it('raised no uncaught error in the page', () => {
    assert.deepEqual(pageErrors, []);
  });
});
