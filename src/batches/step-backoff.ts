// How long a batch whose lifecycle step failed is left alone before this
// process tries it again: doubling from the poll interval with each
// consecutive failure of that batch, up to MAX_BACKOFF_MS, and forgotten once a
// step on it goes through. A step that fails the same way forever (a bucket
// that is down, a disk that is full) is then retried a few times an hour, not
// hundreds of times a second, and the batch is parked under its lease
// meanwhile, so every other batch's steps go ahead.
import type { LifecycleContext } from '../runtime/context.ts';

const MAX_BACKOFF_MS = 5 * 60_000;
// Batches remembered at once; past it the oldest are forgotten (they restart from the poll interval).
const MAX_TRACKED = 10_000;

class StepBackoff {
  private readonly failures = new Map<string, number>();

  constructor(private readonly baseMs: number) {}

  /** Counts one more failure of `batchId`; returns how long to park it. */
  failed(batchId: string): number {
    const count = (this.failures.get(batchId) ?? 0) + 1;
    this.failures.delete(batchId);
    if (this.failures.size >= MAX_TRACKED) this.failures.delete(this.failures.keys().next().value as string);
    this.failures.set(batchId, count);
    return Math.min(MAX_BACKOFF_MS, this.baseMs * 2 ** Math.min(count - 1, 20));
  }

  succeeded(batchId: string): void {
    this.failures.delete(batchId);
  }

  failuresOf(batchId: string): number {
    return this.failures.get(batchId) ?? 0;
  }
}

const perContext = new WeakMap<LifecycleContext, StepBackoff>();

/** This process's backoff for batch steps (one per lifecycle context). */
export function stepBackoff(ctx: LifecycleContext): StepBackoff {
  let backoff = perContext.get(ctx);
  if (!backoff) {
    backoff = new StepBackoff(ctx.config.worker.pollIntervalMs);
    perContext.set(ctx, backoff);
  }
  return backoff;
}
