// GET /v1/admin/status: what the dashboard's operations panel shows. Admin
// keys only; any other valid key gets a 403 envelope (the route's existence
// is no secret: docs/api.md documents it, and a 404 would only make a key
// without the right look like a wrong URL).
import type { FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';
import { ApiError } from '../../errors.ts';
import type { RunnerStats } from '../../runner/runner.ts';
import { queueDepthByModel, recentOutcomesByModel } from '../../store/sql/queue-stats.ts';
import type { Database } from '../../store/sql/schema.ts';
import type { AdminStatusBuilder } from '../admin-status.ts';
import type { StorePart, WriteProblem } from '../../store/health.ts';

export interface AdminRoutesOptions {
  db: Kysely<Database>;
  /** Write failures for lack of space, per part of the store. */
  storage: () => Partial<Record<StorePart, WriteProblem>>;
  status: AdminStatusBuilder;
  /** This process's runner, when it runs one; read per request because it starts after the server is built. */
  runnerStats: () => RunnerStats | undefined;
}

/** How far back "recent" outcomes reach. */
export const RECENT_WINDOW_MS = 5 * 60_000;

export async function adminRoutes(app: FastifyInstance, options: AdminRoutesOptions): Promise<void> {
  app.addHook('preHandler', async (request) => {
    if (!request.principal.isAdmin) {
      throw new ApiError(403, 'This endpoint needs an admin API key: create one with `spool keys create --user NAME --admin`.', {
        type: 'permission_error',
        code: 'admin_required',
      });
    }
  });

  app.get('/status', async () => {
    const now = Date.now();
    const [queue, outcomes] = await Promise.all([queueDepthByModel(options.db), recentOutcomesByModel(options.db, now - RECENT_WINDOW_MS)]);
    return options.status.build({ now, windowMs: RECENT_WINDOW_MS, runner: options.runnerStats(), queue, outcomes, storage: options.storage() });
  });
}
