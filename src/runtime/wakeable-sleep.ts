// The pause between passes of a polling loop (sweeps, webhook sends), which a
// poke (new work arrived) or a stop can cut short.
export class WakeableSleep {
  private readonly sleepers = new Set<() => void>();

  /** Resolves after `ms`, or at the next wakeAll(), whichever comes first. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }

  wakeAll(): void {
    for (const wake of this.sleepers) wake();
  }
}
