// Following one batch with the progress display: what `spool run` and
// `spool batches wait` share. Ctrl-C is the caller's to interpret (cancel the
// batch, or just stop watching), so it is only reported here.
import { BatchProgress } from '../progress.ts';
import type { SpoolClient, WireBatch } from '../client.ts';
import { followBatch } from '../follow.ts';

export interface WatchOptions {
  quiet: boolean;
  intervalMs: number;
  timeoutMs?: number;
}

export interface Watch {
  progress: BatchProgress;
  done: Promise<WireBatch>;
}

export function watchBatch(client: SpoolClient, batchId: string, options: WatchOptions): Watch {
  const progress = new BatchProgress({ enabled: !options.quiet });
  const done = followBatch(client, batchId, {
    intervalMs: options.intervalMs,
    timeoutMs: options.timeoutMs,
    onUpdate: (batch) => progress.update(batch),
    onOutage: (message) => progress.log(`spool: ${message}`),
  }).finally(() => progress.stop());
  return { progress, done };
}

/**
 * Calls `handler` with 1, 2, ... on each Ctrl-C until the returned function is
 * called. While it is installed Node does not exit on SIGINT by itself.
 */
export function onInterrupt(handler: (count: number) => void): () => void {
  let count = 0;
  const listener = () => handler(++count);
  process.on('SIGINT', listener);
  return () => process.off('SIGINT', listener);
}
