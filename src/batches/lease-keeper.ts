// Keeps a batch lease alive while long work (validating or finalizing a
// 100 MB file) runs, and tells the work when the lease was lost so it stops
// before a second process's writes and ours interleave.
import { renewBatchLease } from '../store/sql/batches.ts';
import { leaseMs, type LifecycleContext } from '../runtime/context.ts';

export class LeaseLostError extends Error {
  override name = 'LeaseLostError';
  constructor(batchId: string) {
    super(`lost the lease on batch ${batchId}`);
  }
}

export class BatchLeaseKeeper {
  private lost = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly ctx: LifecycleContext,
    readonly batchId: string,
  ) {
    const every = Math.max(50, Math.floor(leaseMs(ctx) / 3));
    this.timer = setInterval(() => void this.renew(), every);
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    try {
      const held = await renewBatchLease(this.ctx.store.sql.db, this.batchId, this.ctx.workerId, leaseMs(this.ctx), Date.now());
      if (!held) this.lost = true;
    } catch (err) {
      // A failed renewal is not a lost lease: the next tick tries again before it lapses.
      this.ctx.log.warn({ err, batchId: this.batchId }, 'batch lease renewal failed');
    }
  }

  /** Throws once the lease is known to be gone. */
  check(): void {
    if (this.lost) throw new LeaseLostError(this.batchId);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
