// Gives memory back after a large stream (an upload, a validation sweep).
//
// The memory behind Buffers (network chunks, file reads) is freed only when V8
// collects the small JS objects that own them. With a heap that is mostly
// young-generation churn, V8 waits until tens of MiB of that memory are dead
// ("external memory pressure") before it runs the full collection that frees
// them: after a 100 MB upload ~35 MiB of dead network buffers are still
// resident when validation of the same file starts and grows its own heap.
// One full collection at the end of such a stream returns them at once
// (bench --only upload,validate, 100 MB file: validate peak RSS 155 -> 139 MiB)
// and costs a few milliseconds; it runs at most once a second, so many
// concurrent uploads do not turn into a collection storm.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** Streams smaller than this leave too little behind to be worth a collection. */
const LARGE_STREAM_BYTES = 16 * 1024 * 1024;
const MIN_INTERVAL_MS = 1000;

let collect: (() => void) | null | undefined;
let lastRunAt = 0;

function collector(): (() => void) | null {
  if (collect !== undefined) return collect;
  try {
    // Exposes gc() to new contexts only; the main context's globals are unchanged.
    setFlagsFromString('--expose-gc');
    collect = runInNewContext('gc') as () => void;
  } catch {
    collect = null;
  }
  return collect;
}

/** Call when a stream of `bytes` has just ended; a no-op for small ones. */
export function reclaimAfterLargeStream(bytes: number): void {
  if (bytes < LARGE_STREAM_BYTES) return;
  const now = Date.now();
  if (now - lastRunAt < MIN_INTERVAL_MS) return;
  lastRunAt = now;
  collector()?.();
}
