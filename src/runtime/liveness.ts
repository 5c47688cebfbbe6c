// Fast liveness: a process that dies is noticed in seconds, and everything it
// held (running requests, batch leases, webhook deliveries, upstream ceiling
// slots) goes back to the others at once, instead of after a whole lease.
//
// Every Spool process (serve, worker) keeps a row in `workers`, beaten every
// worker.heartbeatMs, and on each beat looks at the others' rows. Another
// process is dead when:
//   - it ran on this host (same host name and PID namespace) and its pid is
//     gone, or is our own pid with another id (a container restarted: pid 1
//     again). Found at once; this is how a `spool serve` restarted on its own
//     SQLite data dir takes over its previous life's leases at start-up;
//   - on PostgreSQL, the advisory lock its liveness session held is gone (the
//     server ends a killed process's session at once) and its row has not
//     moved for two beats: about two seconds. A slow but live process keeps
//     its session, so a long pause never reads as death;
//   - its row has not moved for worker.livenessTimeoutSeconds (a host that
//     vanished, a hung process).
// "Not moved" is judged on this process's own clock, from when it last saw
// the row change: the rows carry each writer's clock, and clocks of different
// hosts never meet.
//
// Taking a live process for dead costs duplicate upstream work, never a
// duplicate line: every outcome write is conditional on the lease, and the
// process re-registers at its next beat.
import { randomInt } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import type { LivenessLock } from '../store/sql/liveness-lock.ts';
import { beatWorker, heldLivenessLocks, listWorkers, reapWorker, registerWorker, removeWorker, type WorkerRow } from '../store/sql/workers.ts';
import type { LifecycleContext } from './context.ts';

/** This host as far as pids go: a pid means something only within its PID namespace. */
const HOST_KEY = (() => {
  let namespace = '';
  try {
    namespace = readlinkSync('/proc/self/ns/pid');
  } catch {
    // Not Linux: the host name alone.
  }
  return namespace ? `${hostname()} ${namespace}` : hostname();
})();

/** Ids of the liveness rows this very process keeps (tests and embedders run several Spools in one process). */
const OWN_IDS = new Set<string>();

export type DeathReason = 'process gone' | 'liveness session ended' | 'no heartbeat';

interface Options {
  role: 'serve' | 'worker';
  /** Called after some dead process's work was handed back, so this process's loops look for it now. */
  onReaped?: () => void;
}

export class WorkerLiveness {
  private timer: NodeJS.Timeout | undefined;
  private lock: LivenessLock | undefined;
  private ticking: Promise<void> | undefined;
  /** Per other process: its heartbeat as last read, and when (our clock) we first read that value. */
  private readonly seen = new Map<string, { heartbeatAt: number; since: number }>();

  constructor(
    private readonly ctx: LifecycleContext,
    private readonly options: Options,
  ) {}

  private get heartbeatMs(): number {
    return this.ctx.config.worker.heartbeatMs;
  }

  /** Registers this process and takes over the work of processes already dead (before any loop claims work). */
  async start(): Promise<this> {
    await this.keepLock();
    OWN_IDS.add(this.ctx.workerId);
    await this.register(Date.now());
    await this.reapDead();
    this.timer = setInterval(() => void this.tick(), this.heartbeatMs);
    this.timer.unref();
    return this;
  }

  /** Removes this process's row (its work was handed back by the loops' own stop) and ends its session. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.ticking;
    OWN_IDS.delete(this.ctx.workerId);
    try {
      await removeWorker(this.ctx.store.sql.db, this.ctx.workerId);
    } catch (err) {
      // Others will find the row stale and reap it; nothing it names is still held.
      this.ctx.log.warn({ err }, 'removing the liveness row failed');
    }
    await this.lock?.release();
    this.lock = undefined;
  }

  private tick(): Promise<void> {
    // One at a time: on a slow database, beats queue behind each other instead of piling up connections.
    this.ticking ??= this.beatAndReap().finally(() => {
      this.ticking = undefined;
    });
    return this.ticking;
  }

  private async beatAndReap(): Promise<void> {
    try {
      await this.keepLock();
      const db = this.ctx.store.sql.db;
      const now = Date.now();
      if (!(await beatWorker(db, this.ctx.workerId, now, this.lock?.key ?? null))) {
        this.ctx.log.warn({ worker: this.ctx.workerId }, 'another process took this one for dead and handed back its work; registering again');
        await this.register(now);
      }
      await this.reapDead();
    } catch (err) {
      // The next beat tries again; a database that stays away makes this process look dead to others, which is
      // what it is to them.
      this.ctx.log.warn({ err }, 'liveness heartbeat failed');
    }
  }

  private register(now: number): Promise<void> {
    return registerWorker(this.ctx.store.sql.db, {
      id: this.ctx.workerId,
      host: HOST_KEY,
      pid: process.pid,
      role: this.options.role,
      started_at: now,
      heartbeat_at: now,
      lock_key: this.lock?.key ?? null,
    });
  }

  /** PostgreSQL: holds a liveness session, taking a new one (under a new key) when the last one ended. */
  private async keepLock(): Promise<void> {
    const take = this.ctx.store.sql.takeLivenessLock;
    if (!take || this.lock?.held) return;
    if (this.lock) {
      this.ctx.log.warn({ worker: this.ctx.workerId }, 'the liveness session ended; opening a new one');
      await this.lock.release();
      this.lock = undefined;
    }
    try {
      // A key another live session holds is refused, not shared: try another.
      for (let attempt = 0; attempt < 5 && !this.lock; attempt++) this.lock = await take(randomInt(1, 2 ** 31 - 1));
    } catch (err) {
      // Without a session this process is found dead by its heartbeat only (livenessTimeoutSeconds), never sooner.
      this.ctx.log.warn({ err }, 'opening the liveness session failed');
    }
  }

  private async reapDead(): Promise<void> {
    const db = this.ctx.store.sql.db;
    const rows = await listWorkers(db);
    const locks = await heldLivenessLocks(db, this.ctx.store.sql.dialect);
    const now = Date.now();
    let reaped = false;
    for (const row of rows) {
      if (OWN_IDS.has(row.id)) continue;
      const seen = this.seen.get(row.id);
      if (!seen || seen.heartbeatAt !== row.heartbeat_at) this.seen.set(row.id, { heartbeatAt: row.heartbeat_at, since: now });
      const reason = deathReason(row, now - this.seen.get(row.id)!.since, locks, {
        heartbeatMs: this.heartbeatMs,
        timeoutMs: this.ctx.config.worker.livenessTimeoutSeconds * 1000,
      });
      if (!reason) continue;
      const work = await reapWorker(db, row.id);
      this.seen.delete(row.id);
      if (!work) continue;
      reaped = true;
      this.ctx.log.info(
        { worker: row.id, role: row.role, host: row.host, pid: row.pid, reason, ...work },
        'found a dead Spool process; handed back what it held',
      );
    }
    const listed = new Set(rows.map((row) => row.id));
    for (const id of this.seen.keys()) if (!listed.has(id)) this.seen.delete(id);
    if (reaped) this.options.onReaped?.();
  }
}

/** Why another process's row says it is dead, or undefined while it may live. `unmovedMs`: on our clock. */
export function deathReason(
  row: Pick<WorkerRow, 'host' | 'pid' | 'lock_key'>,
  unmovedMs: number,
  heldLocks: Set<number> | undefined,
  timing: { heartbeatMs: number; timeoutMs: number },
): DeathReason | undefined {
  if (row.host === HOST_KEY && (row.pid === process.pid || !pidRuns(row.pid))) return 'process gone';
  if (heldLocks && row.lock_key !== null && !heldLocks.has(row.lock_key) && unmovedMs >= 2 * timing.heartbeatMs) return 'liveness session ended';
  if (unmovedMs >= timing.timeoutMs) return 'no heartbeat';
  return undefined;
}

function pidRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it runs, as another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** For tests: the host key rows of this process carry. */
export const thisHostKey = (): string => HOST_KEY;
