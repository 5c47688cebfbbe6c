// Queue depth and recent outcomes by model, for the operators' status view
// (GET /v1/admin/status). Queue depth reads the open chunks' model counts;
// recent outcomes read the per-model counts of segments committed since. Both
// select the batches that can still have (or just had) work first, as a
// subquery, so their cost follows the open work, not the whole history.
import type { Kysely } from 'kysely';
import { parseChunkModels } from './chunks.ts';
import type { BatchStatus, Database } from './schema.ts';

/** Batches whose chunks may be pending or running (validation inserts pending chunks before in_progress). */
const OPEN_WORK_STATUSES: readonly BatchStatus[] = ['validating', 'in_progress', 'finalizing', 'cancelling'];

export interface ModelQueueDepth {
  model: string;
  pending: number;
  running: number;
}

/**
 * Lines waiting for a worker (pending chunks) and held by one (running chunks), per model. A running chunk's lines
 * of a model are scaled by the share of the chunk not finished yet, rounded: its segments count lines, not models.
 */
export async function queueDepthByModel(db: Kysely<Database>): Promise<ModelQueueDepth[]> {
  const rows = await db
    .selectFrom('chunks')
    .select(['models', 'state', 'line_count', 'succeeded', 'failed'])
    .where('batch_id', 'in', db.selectFrom('batches').select('id').where('status', 'in', [...OPEN_WORK_STATUSES]))
    .where('state', 'in', ['pending', 'running'])
    .execute();
  const byModel = new Map<string, { model: string; pending: number; running: number }>();
  for (const row of rows) {
    const left = row.state === 'running' ? Math.max(0, 1 - (Number(row.succeeded) + Number(row.failed)) / Math.max(1, Number(row.line_count))) : 1;
    for (const [model, [lines]] of Object.entries(parseChunkModels(row.models))) {
      const entry = byModel.get(model) ?? { model, pending: 0, running: 0 };
      if (row.state === 'pending') entry.pending += Number(lines);
      else entry.running += Number(lines) * left;
      byModel.set(model, entry);
    }
  }
  return [...byModel.values()]
    .map((entry) => ({ model: entry.model, pending: entry.pending, running: Math.round(entry.running) }))
    .sort((a, b) => a.model.localeCompare(b.model));
}

export interface ModelOutcomes {
  model: string;
  succeeded: number;
  failed: number;
  /** Attempts beyond the first over those requests: retried upstream errors and re-claimed leases. */
  retries: number;
}

/** A segment's `stats` JSON: per-model [ok, failed, retries], latency bucket counts, errors by code. */
export interface SegmentStats {
  latency: number[];
  errors: Record<string, number>;
  models: Record<string, [number, number, number]>;
}

export function parseSegmentStats(text: string): SegmentStats {
  try {
    const parsed = JSON.parse(text) as Partial<SegmentStats> | null;
    return {
      latency: Array.isArray(parsed?.latency) ? parsed.latency : [],
      errors: typeof parsed?.errors === 'object' && parsed.errors !== null ? parsed.errors : {},
      models: typeof parsed?.models === 'object' && parsed.models !== null ? parsed.models : {},
    };
  } catch {
    return { latency: [], errors: {}, models: {} };
  }
}

// Segment rows read per page.
const PAGE = 1000;

/**
 * Lines that reached a final outcome at or after `since` (ms), per model: the model counts of segments committed
 * since. Only batches still open or that ended at or after `since` can hold such segments, so older batches are
 * never read. (Lines finalization reports as batch_cancelled / batch_expired are not outcomes of a model.)
 */
export async function recentOutcomesByModel(db: Kysely<Database>, since: number): Promise<ModelOutcomes[]> {
  const batches = db
    .selectFrom('batches')
    .select('id')
    .where((eb) =>
      eb.or([
        eb('status', 'in', [...OPEN_WORK_STATUSES]),
        eb('completed_at', '>=', since),
        eb('cancelled_at', '>=', since),
        eb('expired_at', '>=', since),
      ]),
    );
  const byModel = new Map<string, ModelOutcomes>();
  let after: { batchId: string; chunk: number; seq: number } | undefined;
  for (;;) {
    let query = db
      .selectFrom('segments')
      .select(['batch_id', 'chunk', 'seq', 'stats'])
      .where('batch_id', 'in', batches)
      .where('created_at', '>=', since);
    if (after) {
      const at = after;
      query = query.where((eb) =>
        eb.or([
          eb('batch_id', '>', at.batchId),
          eb.and([eb('batch_id', '=', at.batchId), eb.or([eb('chunk', '>', at.chunk), eb.and([eb('chunk', '=', at.chunk), eb('seq', '>', at.seq)])])]),
        ]),
      );
    }
    const rows = await query.orderBy('batch_id').orderBy('chunk').orderBy('seq').limit(PAGE).execute();
    for (const row of rows) {
      for (const [model, counts] of Object.entries(parseSegmentStats(row.stats).models)) {
        const entry = byModel.get(model) ?? { model, succeeded: 0, failed: 0, retries: 0 };
        entry.succeeded += Number(counts?.[0] ?? 0);
        entry.failed += Number(counts?.[1] ?? 0);
        entry.retries += Number(counts?.[2] ?? 0);
        byModel.set(model, entry);
      }
    }
    if (rows.length < PAGE) break;
    const last = rows[rows.length - 1];
    after = { batchId: last.batch_id, chunk: last.chunk, seq: last.seq };
  }
  return [...byModel.values()].sort((a, b) => a.model.localeCompare(b.model));
}
