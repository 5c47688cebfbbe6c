// Whether an upstream can be reached at all. A few connection failures in a
// row (refused, reset, unreachable) take it out: its lines wait instead of
// spending their attempts on a server that is restarting (or, in a pool, go to
// the other replicas), and a prober asks GET {baseUrl}{healthPath} (/models),
// backing off from half a second to 30 s, until an answer says it is back. Without this, a vLLM restart longer than the retry budget (5 attempts,
// about 15 s) turned every line in flight into an error.
//
// A replica of a pool is also taken out by answers that say it is broken
// (5xx, timeouts) a few times in a row: the others can serve its lines. A
// server on its own is not: when it is the only one, its 5xx answers are
// retried and reported as they are, rather than holding every line back.
//
//   up ──N failures in a row──► down ──a probe gets an answer (below 500 for a replica of a pool)──► up
//   (any answer that is not a failure resets the count)  (lines wait or move; their deadline still applies)

import { getFromUpstream } from '../upstream-get.ts';

const FAILURES_TO_EJECT = 3;
const PROBE_MIN_MS = 500;
const PROBE_MAX_MS = 30_000;
const PROBE_TIMEOUT_MS = 5_000;

// What says "nothing answered at that address": the connection itself failed, not the request.
const CONNECTION_FAILURE = /ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|ECONNABORTED|UND_ERR_CONNECT_TIMEOUT|UND_ERR_SOCKET|socket hang up|other side closed/i;

export const isConnectionFailure = (message: string): boolean => CONNECTION_FAILURE.test(message);

export interface HealthStatus {
  up: boolean;
  /** When it went down (ms), or null while up. */
  downSince: number | null;
  /** The connection failure that took it out, or null. */
  reason: string | null;
  /** Times it was taken out since start. */
  ejections: number;
}

export class UpstreamHealth {
  private failuresInARow = 0;
  private downSince: number | null = null;
  private reason: string | null = null;
  private ejections = 0;
  private probeDelay = PROBE_MIN_MS;
  private probeTimer: NodeJS.Timeout | undefined;
  private readonly upListeners = new Set<() => void>();

  constructor(
    private readonly options: {
      name: string;
      baseUrl: string;
      apiKey?: string;
      /** GET on probes, relative to baseUrl; default "/models". */
      probePath?: string;
      /** 5xx answers and timeouts count toward taking it out (a replica of a pool). */
      ejectOnServerErrors?: boolean;
      log?: { warn(obj: object, msg?: string): void; info(obj: object, msg?: string): void };
    },
  ) {}

  get down(): boolean {
    return this.downSince !== null;
  }

  /** Called (once per call) whenever it comes back, so waiting work is sent. */
  onUp(listener: () => void): () => void {
    this.upListeners.add(listener);
    return () => this.upListeners.delete(listener);
  }

  /** Something answered over HTTP below 500: it is reachable and working. */
  onAnswer(): void {
    this.failuresInARow = 0;
    if (this.down) this.comeBack();
  }

  /**
   * A 5xx answer (`answered`) or a timeout: counts toward taking a replica of a pool out. A server on its own is
   * only told it was reached (a 5xx is an answer).
   */
  onServerError(message: string, answered: boolean): void {
    if (this.options.ejectOnServerErrors) this.countFailure(message);
    else if (answered) this.onAnswer();
  }

  /** A request got no answer; counts toward taking it out when the connection itself failed. */
  onNoAnswer(message: string): void {
    if (isConnectionFailure(message)) this.countFailure(message);
  }

  private countFailure(message: string): void {
    this.failuresInARow += 1;
    if (!this.down && this.failuresInARow >= FAILURES_TO_EJECT) {
      this.downSince = Date.now();
      this.reason = message;
      this.ejections += 1;
      this.probeDelay = PROBE_MIN_MS;
      this.options.log?.warn({ upstream: this.options.name, reason: message }, 'upstream unreachable: its lines wait until it answers again');
      this.scheduleProbe();
    }
  }

  status(): HealthStatus {
    return { up: !this.down, downSince: this.downSince, reason: this.reason, ejections: this.ejections };
  }

  close(): void {
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
  }

  private scheduleProbe(): void {
    clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => void this.probe(), this.probeDelay);
    this.probeTimer.unref();
    this.probeDelay = Math.min(PROBE_MAX_MS, this.probeDelay * 2);
  }

  private async probe(): Promise<void> {
    if (!this.down) return;
    try {
      // A server on its own is back on any answer (a proxy in front of it may answer 502 to /models while it
      // serves); a replica of a pool, which 5xx answers took out, on one below 500 (a server without a model
      // list answers 404). None of the body is needed.
      const { status } = await getFromUpstream(`${this.options.baseUrl.replace(/\/+$/, '')}${this.options.probePath ?? '/models'}`, {
        apiKey: this.options.apiKey,
        timeoutMs: PROBE_TIMEOUT_MS,
        maxBytes: 0,
      });
      if (status >= 500 && this.options.ejectOnServerErrors) throw new Error(`HTTP ${status}`);
      this.onAnswer();
    } catch {
      if (this.down) this.scheduleProbe();
    }
  }

  private comeBack(): void {
    this.options.log?.info({ upstream: this.options.name, downForMs: Date.now() - (this.downSince ?? Date.now()) }, 'upstream answers again');
    this.downSince = null;
    this.reason = null;
    this.failuresInARow = 0;
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    for (const listener of this.upListeners) listener();
  }
}
