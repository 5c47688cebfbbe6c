// A chunk taken over after its worker died mid-chunk: the lines its committed
// segments hold are not sent again; only the rest are. Asserted on what the
// upstream received per line, not on timing.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { openStore } from '../../src/store/index.ts';
import {
  assertExactlyOnce,
  chatLines,
  cleanupAll,
  HARNESS_API_KEY,
  makeTempDir,
  parseJsonl,
  pollUntil,
  readResults,
  startChildSpool,
  startTestUpstream,
  submitBatch,
  waitForStatus,
  type ChildSpool,
  type Endpoint,
  type Json,
} from '../helpers/runner-harness.ts';

after(cleanupAll);

const endpoint = (child: ChildSpool): Endpoint => ({ base: child.openai, key: HARNESS_API_KEY });

describe('a chunk reclaimed after its worker died', () => {
  it('lines already in its committed segments are not sent again; the rest are, and every line ends once', async () => {
    // Chunks of clamp(ceil(64 / 16), 16, 256) = 16 lines: 4 chunks; one upstream slot at 40 ms a line keeps the first mid-way for a while.
    const LINES = 64;
    const upstream = await startTestUpstream({ kind: 'slow', delayMs: 40 });
    const dataDir = makeTempDir('spool-reclaim-');
    const config = {
      upstreams: [{ name: 'loop', baseUrl: upstream.url, models: ['loop-*'], maxConcurrency: 1, initialConcurrency: 1 }],
      worker: { leaseSeconds: 1, pollIntervalMs: 50, retryBaseDelayMs: 20, retryMaxDelayMs: 200, maxAttempts: 10 },
    };
    let child = await startChildSpool({ dataDir, config });
    const lines = chatLines(LINES, 'loop-llama', 'line');
    const created = await submitBatch(endpoint(child), lines, { fileName: 'reclaim.jsonl' });

    // Wait until the first chunk has committed part of its lines but not all: then kill the process.
    const committed = await pollUntil(
      async () => {
        const answer = await fetch(`${child.openai}/batches/${created.id}/results`, { headers: { authorization: `Bearer ${HARNESS_API_KEY}` } });
        return parseJsonl(await answer.text());
      },
      (got) => got.length >= 3,
      { what: 'a few committed lines', intervalMs: 20 },
    );
    await child.kill();
    const store = await openStore({ dataDir });
    const chunks = await store.sql.db.selectFrom('chunks').selectAll().where('batch_id', '=', created.id).orderBy('chunk').execute();
    await store.close();
    const partial = chunks.find((chunk) => chunk.segments > 0 && chunk.state === 'running');
    assert.ok(partial, `a chunk was left mid-way with committed segments: ${JSON.stringify(chunks.map((c) => [c.chunk, c.state, c.segments, c.succeeded]))}`);

    const sentBefore = upstream.stats.bodies.length;
    child = await startChildSpool({ dataDir, config });
    const batch = await waitForStatus(endpoint(child), created.id, 'completed', 60_000);
    const results = await readResults(endpoint(child), batch);
    assertExactlyOnce(lines.map((l) => l.custom_id), results);
    assert.equal(results.errors.length, 0);

    // Which line each request upstream was for: the echo of the line's own message.
    const contentOf = (body: unknown) => JSON.stringify((body as Json).messages);
    const customIdByContent = new Map(lines.map((line) => [contentOf(line.body), line.custom_id as string]));
    const sentAfter = upstream.stats.bodies.slice(sentBefore).map((body) => customIdByContent.get(contentOf(body)));
    for (const line of committed) {
      assert.ok(!sentAfter.includes(line.custom_id), `${line.custom_id} was committed before the kill and was sent again after it`);
    }
    // The reclaimed chunk's other lines did go upstream after the restart.
    const reclaimedIds = lines.slice(partial.line_start - 1, partial.line_start - 1 + partial.line_count).map((l) => l.custom_id as string);
    const doneBefore = new Set(committed.map((l) => l.custom_id as string));
    assert.ok(
      reclaimedIds.filter((id) => !doneBefore.has(id)).some((id) => sentAfter.includes(id)),
      'the lines of the reclaimed chunk not yet committed were sent after the restart',
    );
    await child.kill();
  });
});
