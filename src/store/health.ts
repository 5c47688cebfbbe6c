// Whether the store has run out of space lately, for readiness and the admin
// status: a full disk under the blob directory or the database (SQLite's
// "database or disk is full", PostgreSQL's disk_full, ENOSPC, a quota). A write
// that fails for lack of space marks its part; the next write that goes through
// clears it. Other failures are not marked here: an unreachable database or
// bucket shows in readiness' own probes, and an upload cut short or too large
// is the client's, not the store's. Readiness re-probes a marked part with a tiny write of its own, so
// the mark also clears when nothing else writes (nobody uploads to a server
// that says it is not ready).
import { classifyStoreError, describeStoreFailure } from './errors.ts';

export type StorePart = 'database' | 'blob_store';

export interface WriteProblem {
  /** Short and safe to show: an error code, never a path or an address. */
  reason: string;
  since: number;
}

export class StoreHealth {
  private readonly problems = new Map<StorePart, WriteProblem>();

  /** A write to `part` failed; only a lack of space marks it. */
  noteFailure(part: StorePart, err: unknown): void {
    if (classifyStoreError(err) !== 'full') return;
    const since = this.problems.get(part)?.since ?? Date.now();
    this.problems.set(part, { reason: describeStoreFailure(err), since });
  }

  noteSuccess(part: StorePart): void {
    this.problems.delete(part);
  }

  problem(part: StorePart): WriteProblem | undefined {
    return this.problems.get(part);
  }

  all(): Partial<Record<StorePart, WriteProblem>> {
    return Object.fromEntries(this.problems);
  }
}
