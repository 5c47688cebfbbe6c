// Global per-upstream concurrency ceilings. An upstream's ceiling is a set of
// slot rows; a worker holds some of them under a lease, renewed like request
// leases, and never has more requests in flight to that upstream than it
// holds slots. So the ceiling holds across any number of worker processes,
// instead of being multiplied by them. A worker that dies loses its slots
// when their lease lapses, and the others take them.
//
// Slots are counted, not tied to requests: a worker asks for more when its
// adaptive limit and its queue want more, and gives back the ones it is not
// using. Acquisition skips rows other workers are locking (PostgreSQL) rather
// than waiting for them, like request claims.
import { PostgresAdapter, type Kysely } from 'kysely';
import type { Database } from './schema.ts';

/** Makes sure slot rows 0..ceiling-1 exist for the upstream (idempotent, safe to race). */
export async function ensureUpstreamSlots(db: Kysely<Database>, upstream: string, ceiling: number): Promise<void> {
  const rows = Array.from({ length: ceiling }, (_, slot) => ({ upstream, slot, owner: null, expires_at: null }));
  // Chunked: one multi-row INSERT per 500 slots keeps under every dialect's bound-parameter limit.
  for (let i = 0; i < rows.length; i += 500) {
    await db
      .insertInto('upstream_slots')
      .values(rows.slice(i, i + 500))
      .onConflict((oc) => oc.columns(['upstream', 'slot']).doNothing())
      .execute();
  }
}

/** Takes up to `count` free (or lapsed) slots below the ceiling; returns the slot numbers taken. */
export async function acquireUpstreamSlots(
  db: Kysely<Database>,
  args: { upstream: string; ceiling: number; owner: string; count: number; leaseMs: number; now: number },
): Promise<number[]> {
  if (args.count <= 0) return [];
  let free = db
    .selectFrom('upstream_slots')
    .select('slot')
    .where('upstream', '=', args.upstream)
    .where('slot', '<', args.ceiling)
    .where((eb) => eb.or([eb('owner', 'is', null), eb('expires_at', '<', args.now)]))
    .orderBy('slot')
    .limit(args.count);
  if (db.getExecutor().adapter instanceof PostgresAdapter) free = free.forUpdate().skipLocked();
  const taken = await db
    .updateTable('upstream_slots')
    .set({ owner: args.owner, expires_at: args.now + args.leaseMs })
    .where('upstream', '=', args.upstream)
    .where('slot', 'in', free)
    .returning('slot')
    .execute();
  return taken.map((row) => Number(row.slot));
}

/**
 * Renews every slot the worker holds; returns, per upstream, the slots still
 * held (a slot missing from the answer lapsed and was taken by another worker).
 */
export async function renewUpstreamSlots(db: Kysely<Database>, owner: string, leaseMs: number, now: number): Promise<Map<string, number[]>> {
  const rows = await db
    .updateTable('upstream_slots')
    .set({ expires_at: now + leaseMs })
    // A lapsed slot nobody took is still ours, and nobody used it meanwhile: renewing it is safe.
    .where('owner', '=', owner)
    .returning(['upstream', 'slot'])
    .execute();
  const held = new Map<string, number[]>();
  for (const row of rows) {
    const slots = held.get(row.upstream) ?? [];
    slots.push(Number(row.slot));
    held.set(row.upstream, slots);
  }
  return held;
}

/** Gives slots back so other workers can take them at once. */
export async function releaseUpstreamSlots(db: Kysely<Database>, args: { upstream: string; owner: string; slots: number[] }): Promise<void> {
  if (args.slots.length === 0) return;
  await db
    .updateTable('upstream_slots')
    .set({ owner: null, expires_at: null })
    .where('upstream', '=', args.upstream)
    .where('owner', '=', args.owner)
    .where('slot', 'in', args.slots)
    .execute();
}

/** Gives back everything the worker holds (a graceful stop). */
export async function releaseAllUpstreamSlots(db: Kysely<Database>, owner: string): Promise<void> {
  await db.updateTable('upstream_slots').set({ owner: null, expires_at: null }).where('owner', '=', owner).execute();
}

/** Slots held under a live lease, per upstream (for stats and tests). */
export async function heldUpstreamSlots(db: Kysely<Database>, upstream: string, now: number): Promise<number> {
  const row = await db
    .selectFrom('upstream_slots')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('upstream', '=', upstream)
    .where('owner', 'is not', null)
    .where('expires_at', '>=', now)
    .executeTakeFirst();
  return Number(row?.n ?? 0);
}
