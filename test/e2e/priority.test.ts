// Scheduling between batches that share an upstream. A large batch (3,000
// lines) keeps a slow-ish upstream with low concurrency busy; then a 10-line
// batch arrives. With a higher priority it overtakes the large one's claimed
// work; with the same priority (another user) it gets its fair share and
// still finishes long before the large one. No timing is asserted: "first"
// and "long before" are read off the large batch's progress at the moment
// the small one completes.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import {
  assertEchoOutput,
  assertExactlyOnce,
  byCustomId,
  cancelBatch,
  chatLines,
  cleanupAll,
  endpointOf,
  getBatch,
  readResults,
  startHarness,
  submitBatch,
  waitForProgress,
  waitForStatus,
  type Endpoint,
  type Harness,
  type Json,
} from '../helpers/runner-harness.ts';

const CHAT = '/v1/chat/completions';
const LARGE = 3000;
const SMALL = 10;

after(cleanupAll);

async function startBusy(): Promise<{ h: Harness; ep: Endpoint; large: Json }> {
  const h = await startHarness({
    upstreams: [{ name: 'slowish', kind: 'slow', delayMs: 20, models: ['slowish-*'], maxConcurrency: 2, initialConcurrency: 2 }],
  });
  const ep = endpointOf(h);
  const large = await submitBatch(ep, chatLines(LARGE, 'slowish-llama', 'large'), { fileName: 'large.jsonl' });
  // The large batch is running and has the upstream's full attention.
  await waitForProgress(ep, large.id, 20);
  return { h, ep, large };
}

/** The user message of a chat request the test upstream received. */
const contentOf = (body: unknown): string => String((body as { messages?: { content?: unknown }[] }).messages?.[0]?.content ?? '');

const doneOf = (batch: Json): number => batch.request_counts.completed + batch.request_counts.failed;

/**
 * Waits for the small batch to start and then to complete, and reads how far
 * the large one had got by then.
 */
async function raceOutcome(ep: Endpoint, largeEp: Endpoint, smallId: string, largeId: string, lines: Json[]) {
  await waitForStatus(ep, smallId, ['in_progress', 'completed']);
  const small = await waitForStatus(ep, smallId, 'completed');
  const large = await getBatch(largeEp, largeId);
  const results = await readResults(ep, small);
  assertExactlyOnce(lines.map((l) => l.custom_id), results);
  assert.equal(results.errors.length, 0);
  assertEchoOutput(CHAT, byCustomId(lines), results.output);
  return { small, large, largeDone: doneOf(large) };
}

describe('priority and fair share', () => {
  it('a small batch with a higher priority completes before a large one already running', async () => {
    const { h, ep, large } = await startBusy();
    const lines = chatLines(SMALL, 'slowish-llama', 'urgent');
    const small = await submitBatch(ep, lines, { priority: 10, fileName: 'urgent.jsonl' });
    const outcome = await raceOutcome(ep, ep, small.id, large.id, lines);
    assert.equal(outcome.large.status, 'in_progress', 'the large batch is still running when the small one completes');
    assert.ok(outcome.largeDone < LARGE / 2, `the large batch had ${outcome.largeDone} of ${LARGE} lines done`);
    // The large batch had a claim buffer's worth of lines queued in the worker; the urgent lines overtake them
    // instead of waiting behind them. Read off the order the upstream received requests in (not off timing):
    // once the first urgent request went out, every urgent one went out before any more large ones.
    const arrivals = h.upstreams.slowish.stats.bodies.map((body) => contentOf(body));
    const first = arrivals.findIndex((text) => text.includes('urgent-'));
    const last = arrivals.findLastIndex((text) => text.includes('urgent-'));
    const largeBetween = arrivals.slice(first, last + 1).filter((text) => text.includes('large-')).length;
    assert.equal(last - first + 1 - largeBetween, SMALL, 'every urgent request reached the upstream once');
    assert.equal(largeBetween, 0, `${largeBetween} large requests were sent between the first and the last urgent one`);
    assert.equal(typeof outcome.small.completed_at, 'number');
    await cancelBatch(ep, large.id);
    await waitForStatus(ep, large.id, 'cancelled');
    await h.stop();
  });

  it('a small batch of the same priority from another user gets its fair share and completes long before the large one', async () => {
    const { h, ep, large } = await startBusy();
    const other: Endpoint = { base: h.openai, key: await h.keyFor('second-user') };
    const lines = chatLines(SMALL, 'slowish-llama', 'fair');
    const small = await submitBatch(other, lines, { fileName: 'fair.jsonl' });
    const outcome = await raceOutcome(other, ep, small.id, large.id, lines);
    assert.equal(outcome.large.status, 'in_progress', 'the large batch is still running when the small one completes');
    assert.ok(outcome.largeDone < LARGE / 2, `the large batch had ${outcome.largeDone} of ${LARGE} lines done`);
    await cancelBatch(ep, large.id);
    const cancelled = await waitForStatus(ep, large.id, 'cancelled');
    const results = await readResults(ep, cancelled);
    assertExactlyOnce(
      Array.from({ length: LARGE }, (_, i) => `large-${i + 1}`),
      results,
    );
    await h.stop();
  });
});
