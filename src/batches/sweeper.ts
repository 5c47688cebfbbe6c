// Drives the lifecycle: one loop validates batches, another runs the cancel,
// expiry and finalization sweeps. Each loop goes again at once while it finds
// work and otherwise sleeps pollIntervalMs. Separate loops, so validating a
// large file never delays a cancel.
import type { LifecycleContext } from '../runtime/context.ts';
import { runLifecycleSweeps } from './sweeps.ts';
import { validateNextBatch } from './validate.ts';
import { WakeableSleep } from '../runtime/wakeable-sleep.ts';

export class LifecycleSweeper {
  private stopping = false;
  private readonly pause = new WakeableSleep();
  private loops: Promise<void>[] = [];

  constructor(private readonly ctx: LifecycleContext) {}

  start(): this {
    this.loops = [this.loop('validation', () => validateNextBatch(this.ctx)), this.loop('lifecycle', () => runLifecycleSweeps(this.ctx))];
    return this;
  }

  /** Skips the current sleep, e.g. right after a batch was created or cancelled. */
  poke(): void {
    this.pause.wakeAll();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.poke();
    await Promise.all(this.loops);
  }

  private async loop(name: string, pass: () => Promise<boolean>): Promise<void> {
    while (!this.stopping) {
      let busy = false;
      try {
        busy = await pass();
      } catch (err) {
        // The database may be briefly unreachable; the sweeps are idempotent, so just come back later.
        this.ctx.log.error({ err, loop: name }, 'lifecycle sweep failed');
      }
      if (!busy && !this.stopping) await this.pause.sleep(this.ctx.config.worker.pollIntervalMs);
    }
  }
}
