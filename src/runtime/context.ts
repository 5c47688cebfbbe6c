// What the lifecycle sweeps and the runner share: the store, the knobs they
// read, and the identity this process uses for leases.
import type { Config } from '../config.ts';
import type { Store } from '../store/index.ts';
import type { BatchRow } from '../store/sql/schema.ts';

export interface LifecycleContext {
  store: Store;
  config: Config;
  /** Lease owner id of this process. */
  workerId: string;
  /**
   * The batch object in the dialect the batch was created in, as the API shows it: what its webhook events carry.
   * Given by the API layer (app.ts), which alone knows the dialects.
   */
  presentBatch: (batch: BatchRow) => unknown;
  /** Called when a batch becomes runnable, so a worker in this process starts on it without waiting for its poll. */
  onRunnable?: () => void;
  /** Called when a worker in this process holds no more lines of some batch, which may then be ready to finalize. */
  onBatchDrained?: () => void;
  log: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void; error(obj: object, msg?: string): void };
  /** Where lifecycle timings go (/metrics); left out, nothing is measured. */
  metrics?: LifecycleMetrics;
}

/** Durations of the lifecycle steps, reported once per batch step that finished. */
export interface LifecycleMetrics {
  /** One validation pass: `valid` moved the batch on to run, `invalid` failed it with line errors. */
  validated(outcome: 'valid' | 'invalid', seconds: number): void;
  /** Writing a batch's output and error files and moving it to its final state. */
  finalized(status: 'completed' | 'expired' | 'cancelled', seconds: number): void;
}

export const leaseMs = (ctx: LifecycleContext): number => Math.round(ctx.config.worker.leaseSeconds * 1000);
