// Repeats a refresh while a view is shown. Each tick returns the delay before
// the next one (null stops), so a view polls fast only while something is
// running. A hidden tab does not poll; it refreshes as soon as it is shown.

export class Poller {
  constructor(tick) {
    this.tick = tick;
    this.timer = undefined;
    this.generation = 0;
    this.onVisible = () => {
      if (!document.hidden && this.waitingForVisible) this.run(this.generation);
    };
    document.addEventListener('visibilitychange', this.onVisible);
  }

  /** (Re)starts now; a tick still in flight from before is ignored when it ends. */
  start() {
    this.stop();
    this.run(this.generation);
  }

  stop() {
    this.generation++;
    this.waitingForVisible = false;
    clearTimeout(this.timer);
  }

  async run(generation) {
    if (generation !== this.generation) return;
    if (document.hidden) {
      this.waitingForVisible = true;
      return;
    }
    this.waitingForVisible = false;
    let delay = null;
    try {
      delay = await this.tick();
    } catch {
      // A tick shows its own errors; polling carries on at a calm pace so a passing outage heals by itself.
      delay = 5000;
    }
    if (generation !== this.generation || delay === null) return;
    this.timer = setTimeout(() => this.run(generation), delay);
  }
}
