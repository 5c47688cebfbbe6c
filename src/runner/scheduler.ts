// Which batch the next claim serves: fair between users first, then between a
// user's own batches. Spool is shared by many users on one database, so no
// user may starve another, whatever priority they set or however many batches
// they create.
//
//   urgent       priority above limits.priority.max (admin keys only):
//                before everyone, strictly by priority
//   normal       limits.priority.min .. max (what any key may set): users take
//                turns, one claim each; within a user, that user's highest
//                priority first, batches of equal priority taking turns
//   background   priority below limits.priority.min (admin keys only): after
//                everyone, strictly by priority
//
// Within an urgent or background priority level users take turns too. The
// order lists every runnable batch, so a claim that finds nothing due in the
// first batches (all their lines waiting to retry) goes on to the next ones
// instead of coming back empty while other batches have work due.

export interface SchedulableBatch {
  id: string;
  user_id: string;
  priority: number;
}

export interface PriorityBounds {
  min: number;
  max: number;
}

/** Rank of a batch's band: higher goes first. */
export function bandOf(priority: number, bounds: PriorityBounds): 0 | 1 | 2 {
  if (priority > bounds.max) return 2;
  if (priority < bounds.min) return 0;
  return 1;
}

export class FairScheduler {
  /** Per level (a band, or a priority within the urgent and background bands): the user served last. */
  private readonly lastUser = new Map<string, string>();
  /** Per user and priority: the batch served last. */
  private readonly lastBatch = new Map<string, string>();

  constructor(private readonly bounds: PriorityBounds) {}

  /** Every batch, in the order claims should try them. */
  order<B extends SchedulableBatch>(batches: readonly B[]): B[] {
    const levels = new Map<string, { rank: number; batches: B[] }>();
    for (const batch of batches) {
      const key = this.levelOf(batch);
      const band = bandOf(batch.priority, this.bounds);
      // Bands first; inside urgent and background, priorities; the normal band is one level.
      const rank = band * 4_000_000 + (band === 1 ? 0 : batch.priority + 2_000_000);
      let level = levels.get(key);
      if (!level) levels.set(key, (level = { rank, batches: [] }));
      level.batches.push(batch);
    }
    const ordered: B[] = [];
    for (const [key, level] of [...levels].sort((a, b) => b[1].rank - a[1].rank)) ordered.push(...this.orderLevel(key, level.batches));
    return ordered;
  }

  /** A claim on `batch` took lines: the turn passes to the next user of its level, and to its user's next batch. */
  served(batch: SchedulableBatch): void {
    remember(this.lastUser, this.levelOf(batch), batch.user_id);
    remember(this.lastBatch, `${batch.user_id}\u0000${batch.priority}`, batch.id);
  }

  private levelOf(batch: SchedulableBatch): string {
    const band = bandOf(batch.priority, this.bounds);
    return band === 1 ? 'normal' : `${band}:${batch.priority}`;
  }

  private orderLevel<B extends SchedulableBatch>(key: string, batches: B[]): B[] {
    const byUser = new Map<string, B[]>();
    for (const batch of batches) {
      const own = byUser.get(batch.user_id);
      if (own) own.push(batch);
      else byUser.set(batch.user_id, [batch]);
    }
    const users = rotateAfter([...byUser.keys()].sort(), (user) => user, this.lastUser.get(key));
    const ordered: B[] = [];
    for (const user of users) {
      const own = byUser.get(user)!;
      const priorities = [...new Set(own.map((batch) => batch.priority))].sort((a, b) => b - a);
      for (const priority of priorities) {
        const same = own.filter((batch) => batch.priority === priority).sort((a, b) => (a.id < b.id ? -1 : 1));
        ordered.push(...rotateAfter(same, (batch) => batch.id, this.lastBatch.get(`${user}\u0000${priority}`)));
      }
    }
    return ordered;
  }
}

/** `sorted` (ascending by `key`), starting just after the item keyed `last` (wrapping around); as is without one. */
function rotateAfter<T>(sorted: T[], key: (item: T) => string, last: string | undefined): T[] {
  if (last === undefined) return sorted;
  const next = sorted.findIndex((item) => key(item) > last);
  return next <= 0 ? sorted : [...sorted.slice(next), ...sorted.slice(0, next)];
}

// Turns remembered at once; past it the oldest go (they restart from the first user or batch).
const MAX_REMEMBERED = 10_000;

function remember(map: Map<string, string>, key: string, value: string): void {
  map.delete(key);
  if (map.size >= MAX_REMEMBERED) map.delete(map.keys().next().value as string);
  map.set(key, value);
}
