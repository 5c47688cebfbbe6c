// Results so far (GET /batches/{id}/results, both prefixes, and `spool batches
// results --follow`): while a batch runs, the lines recorded until then, each
// once; once it has ended, its output file byte for byte. A real server, a
// slow upstream, the CLI as a child process.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  api,
  chatLine,
  chatLines,
  cleanupAll,
  downloadText,
  endpointOf,
  getBatch,
  makeTempDir,
  parseJsonl,
  pollUntil,
  REPO_ROOT,
  startHarness,
  submitBatch,
  waitForStatus,
  type Json,
} from '../helpers/runner-harness.ts';

after(cleanupAll);

describe('results so far', () => {
  it('while the batch runs: the recorded lines, each once; once it ends: the output file; the CLI follows it to the end', async () => {
    const h = await startHarness({
      upstreams: [{ name: 'slow', kind: 'slow', delayMs: 80, models: ['slow-*'], maxConcurrency: 2, initialConcurrency: 2 }],
    });
    const ep = endpointOf(h);
    // 60 lines, 2 at a time, 80 ms each: about 2.4 s of run, long enough to be seen midway and for the CLI to start.
    // The unserved line comes first: its chunk (of 16 lines) is the first claimed, so it has failed by mid-run.
    const lines = [chatLine('nobody', 'nobody-serves-this'), ...chatLines(60, 'slow-model', 'line')];
    const created = await submitBatch(ep, lines);
    await waitForStatus(ep, created.id, 'in_progress');

    // The CLI follows from the start, saving the results again every 200 ms until the batch ends.
    const target = join(makeTempDir('spool-results-'), 'results.jsonl');
    const cli = new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        ['bin/spool.js', 'batches', 'results', created.id, '--follow', '--interval', '0.2', '-o', target, '--server', h.url, '--api-key', h.apiKey],
        { cwd: REPO_ROOT, env: { ...process.env, SPOOL_API_KEY: '' } },
        (err, _stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stderr }),
      );
    });

    // Mid-run: some lines, not all, each custom_id once, in the output file's format.
    const midway = await pollUntil(
      async () => {
        const answer = await fetch(`${ep.base}/batches/${created.id}/results`, { headers: { authorization: `Bearer ${ep.key}` } });
        return { status: answer.status, complete: answer.headers.get('x-spool-results-complete'), batch: answer.headers.get('x-spool-batch-status'), lines: parseJsonl(await answer.text()) };
      },
      (got) => got.lines.length >= 5,
      { what: 'some results while the batch runs' },
    );
    assert.equal(midway.status, 200);
    assert.equal(midway.complete, 'false');
    assert.equal(midway.batch, 'in_progress');
    assert.ok(midway.lines.length < 60, `not everything yet (${midway.lines.length})`);
    const ids = midway.lines.map((line) => line.custom_id);
    assert.equal(new Set(ids).size, ids.length, 'each custom_id at most once');
    for (const line of midway.lines) {
      assert.match(line.custom_id, /^line-\d+$/);
      assert.equal(line.response.status_code, 200);
      assert.equal(line.error, null);
    }
    const sofar = (await getBatch(ep, created.id)).request_counts.completed;
    assert.ok(midway.lines.length <= sofar, 'never a line the batch has not counted');

    // Error lines so far: the line no upstream serves failed at once.
    const errorsSoFar = await api(`${h.together}/batches/${created.id}/results?errors=true`, ep.key);
    assert.equal(errorsSoFar.status, 200);
    assert.deepEqual(
      parseJsonl(errorsSoFar.text).map((line) => [line.custom_id, line.error.code]),
      [['nobody', 'invalid_model']],
    );

    const batch = await waitForStatus(ep, created.id, 'completed');
    const output = await downloadText(ep, batch.output_file_id);
    const errors = await downloadText(ep, batch.error_file_id);
    for (const base of [h.openai, h.together]) {
      const final = await fetch(`${base}/batches/${created.id}/results`, { headers: { authorization: `Bearer ${ep.key}` } });
      assert.equal(final.headers.get('x-spool-results-complete'), 'true');
      assert.equal(final.headers.get('x-spool-batch-status'), 'completed');
      assert.equal(await final.text(), output, 'the final stream is the output file, byte for byte');
    }
    assert.equal((await api(`${h.openai}/batches/${created.id}/results?errors=true`, ep.key)).text, errors);

    const followed = await cli;
    assert.equal(followed.code, 0, followed.stderr);
    assert.equal(readFileSync(target, 'utf8'), output, 'what the CLI saved last is the output file');
    assert.match(followed.stderr, /so far \(batch in_progress\)/, 'it saved results while the batch ran');
    assert.match(followed.stderr, /60 lines in all \(batch completed\)/);

    // Another user's batch does not exist for them; a bad switch names itself.
    const other = await h.keyFor('mallory');
    assert.equal((await api(`${h.openai}/batches/${created.id}/results`, other)).status, 404);
    const bad = await api(`${h.openai}/batches/${created.id}/results?errors=maybe`, ep.key);
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.param, 'errors');

    // Once its files are gone, a finished batch's results are gone: 410, not an empty 200.
    for (const fileId of [batch.output_file_id, batch.error_file_id]) assert.equal((await api(`${h.openai}/files/${fileId}`, ep.key, { method: 'DELETE' })).status, 200);
    const gone = await api(`${h.openai}/batches/${created.id}/results`, ep.key);
    assert.equal(gone.status, 410);
    assert.equal(gone.json.error.code, 'results_expired');

    // A batch that failed validation ran nothing: complete and empty.
    const invalid = await waitForStatus(ep, (await submitBatch(ep, [{ custom_id: 'x' } as Json])).id, 'failed');
    const nothing = await fetch(`${h.openai}/batches/${invalid.id}/results`, { headers: { authorization: `Bearer ${ep.key}` } });
    assert.equal(nothing.status, 200);
    assert.equal(nothing.headers.get('x-spool-results-complete'), 'true');
    assert.equal(await nothing.text(), '');
    await h.stop();
  });
});
