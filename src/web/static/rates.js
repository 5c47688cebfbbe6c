// Throughput and ETA of running batches, measured in the page: finished
// requests per second between polls over the last few seconds. The API
// reports counts, not rates, and a rate from the whole run would hide a
// slowdown (an upstream answering 429s) that a recent window shows.
import { isTerminal, progressOf } from './format.js';

const WINDOW_MS = 10_000;
// Below this the first two samples say more about poll timing than throughput.
const MIN_SPAN_MS = 900;

export class RateTracker {
  constructor() {
    this.samples = new Map();
  }

  observe(batch, now = performance.now()) {
    const { done } = progressOf(batch);
    const list = this.samples.get(batch.id) ?? [];
    // A count going down means a different view of the batch (a re-validation): start over.
    if (list.length > 0 && done < list[list.length - 1].done) list.length = 0;
    list.push({ t: now, done });
    while (list.length > 2 && now - list[1].t >= WINDOW_MS) list.shift();
    this.samples.set(batch.id, list);
  }

  /** Requests per second over the window, or null until two polls are far enough apart. */
  rate(id) {
    const list = this.samples.get(id);
    if (!list || list.length < 2) return null;
    const first = list[0];
    const last = list[list.length - 1];
    const span = last.t - first.t;
    return span < MIN_SPAN_MS ? null : ((last.done - first.done) * 1000) / span;
  }

  forget(id) {
    this.samples.delete(id);
  }
}

/**
 * What to show for a batch: the live rate and ETA while it runs; once it has
 * stopped running, its average over the run (seconds resolution, so only for
 * runs of a second or more).
 */
export function throughputOf(tracker, batch) {
  const { done, total } = progressOf(batch);
  if (isTerminal(batch) || batch.status === 'finalizing') {
    const end = batch.finalizing_at ?? batch.completed_at ?? batch.cancelled_at ?? batch.expired_at;
    const start = batch.in_progress_at;
    return { rate: start && end && end > start ? done / (end - start) : null, eta: null, average: true };
  }
  if (batch.status !== 'in_progress') return { rate: null, eta: null, average: false };
  const rate = tracker.rate(batch.id);
  const eta = rate && rate > 0 && total > done ? (total - done) / rate : null;
  return { rate, eta, average: false };
}
