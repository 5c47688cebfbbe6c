// Operational endpoints, outside the API-key scope: /healthz (the process
// serves HTTP), /readyz (it can do its work: the database and the blob store
// answer and have space, and this process's runner can record results) and
// /metrics (Prometheus text; open or admin-only, per config).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { KeyVerifier } from '../../auth/keys.ts';
import { ApiError } from '../../errors.ts';
import type { SpoolMetrics } from '../../metrics/spool-metrics.ts';
import type { Store } from '../../store/index.ts';
import { pingDatabase } from '../../store/sql/observability.ts';
import { bearerToken } from '../auth.ts';
import type { RunnerStats } from '../../runner/runner.ts';
import type { StorePart } from '../../store/health.ts';
import { errorCode as storeErrorCode } from '../../store/errors.ts';

export interface OpsRoutesOptions {
  store: Store;
  verifier: KeyVerifier;
  /** This process's runner, when it runs one: a runner that cannot record results is not ready. */
  runnerStats?: () => RunnerStats | undefined;
  /** Unset: metrics are disabled and /metrics is not mounted. */
  metrics?: { registry: SpoolMetrics; auth: 'none' | 'admin' };
}

// A probe gets an answer within this, even from a database or bucket that hangs: a hung dependency is not ready.
const CHECK_TIMEOUT_MS = 5_000;

export async function opsRoutes(app: FastifyInstance, options: OpsRoutesOptions): Promise<void> {
  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (request) => {
    const { store } = options;
    const [database, blobStore] = await Promise.all([
      probe(async () => {
        await pingDatabase(store.sql.db);
        await probeSpace(store, 'database');
      }),
      probe(async () => {
        await store.blobs.check();
        await probeSpace(store, 'blob_store');
      }),
    ]);
    const checks: Record<string, { error?: unknown }> = { database, blob_store: blobStore };
    const stall = options.runnerStats?.()?.resultsStalled;
    if (stall) checks.results = { error: Object.assign(new Error(`results unrecorded since ${new Date(stall.since).toISOString()}: ${stall.reason}`), { code: 'RESULTS_STALLED' }) };
    const failed = Object.entries(checks).filter(([, check]) => check.error !== undefined);
    // The upstream replicas this process has sent to, and whether each is in service. Informational: while one is
    // out its lines wait or go to the other replicas, and the process is still ready for everything else.
    const reachability = Object.fromEntries(
      (options.runnerStats?.()?.lanes ?? []).filter((lane) => lane.health).map((lane) => [lane.name, lane.health!.up ? 'ok' : whyDown(lane.health!.reason)]),
    );
    const upstreams = Object.keys(reachability).length > 0 ? { upstreams: reachability } : {};
    if (failed.length === 0) return { status: 'ready', checks: Object.fromEntries(Object.keys(checks).map((name) => [name, 'ok'])), ...upstreams };
    // The full reason (paths, endpoints) goes to the log; the unauthenticated answer names the part and an error code.
    for (const [name, check] of failed) request.log.warn({ err: check.error, check: name }, 'readiness check failed');
    const summary = Object.fromEntries(Object.entries(checks).map(([name, check]) => [name, check.error === undefined ? 'ok' : errorCode(check.error)]));
    const names = failed.map(([name]) => name.replace('_', ' ')).join(' and ');
    throw new ApiError(503, `Not ready: the ${names} ${failed.length > 1 ? 'are' : 'is'} not usable (${failed.map(([name]) => `${name}: ${summary[name]}`).join(', ')}).`, {
      code: 'not_ready',
      extra: { status: 'unavailable', checks: summary, ...upstreams },
    });
  });

  const { metrics } = options;
  if (!metrics) return;
  app.get('/metrics', async (request, reply) => {
    if (metrics.auth === 'admin') await requireAdmin(request, options.verifier);
    return reply.type(metrics.registry.contentType).send(await metrics.registry.render());
  });
}

/**
 * Why a replica is out, in a word and a code fit for an unauthenticated answer (no addresses or paths; the admin
 * status has the full reason): "unreachable (ECONNREFUSED)", "failing (HTTP 503)", "failing (timeout)".
 */
function whyDown(reason: string | null): string {
  if (!reason) return 'unreachable';
  const status = /^HTTP (\d{3})$/.exec(reason);
  if (status) return `failing (HTTP ${status[1]})`;
  const code = /\b(E[A-Z]{3,}|UND_ERR_[A-Z_]+)\b/.exec(reason);
  if (code) return `unreachable (${code[1]})`;
  if (/time/i.test(reason)) return 'failing (timeout)';
  return 'unreachable';
}

/** A part that ran out of space is written to once more: it is ready again once that goes through. */
async function probeSpace(store: Store, part: StorePart): Promise<void> {
  if (store.health.problem(part)) await store.probeWrite(part);
}

async function probe(check: () => Promise<void>): Promise<{ error?: unknown }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`no answer within ${CHECK_TIMEOUT_MS} ms`), { code: 'ETIMEDOUT' })), CHECK_TIMEOUT_MS);
  });
  try {
    await Promise.race([check(), timeout]);
    return {};
  } catch (error) {
    return { error };
  } finally {
    clearTimeout(timer);
  }
}

/** A short, non-revealing name for what went wrong: a Node error code (ENOENT, ECONNREFUSED) or the error's class. */
function errorCode(err: unknown): string {
  const code = storeErrorCode(err);
  if (code !== undefined && /^[A-Z0-9_]+$/.test(code)) return code;
  const { name } = (typeof err === 'object' && err !== null ? err : {}) as { name?: unknown };
  return typeof name === 'string' && name !== '' ? name : 'Error';
}

async function requireAdmin(request: FastifyRequest, verifier: KeyVerifier): Promise<void> {
  const token = bearerToken(request);
  const principal = token ? await verifier.verify(token) : undefined;
  if (!principal) {
    throw new ApiError(401, 'Metrics need an admin API key: send it as "Authorization: Bearer <key>" (metrics.auth is "admin").', {
      type: 'authentication_error',
      code: 'invalid_api_key',
      headers: { 'www-authenticate': 'Bearer' },
    });
  }
  if (!principal.isAdmin) throw new ApiError(403, 'Metrics need an admin API key; this key belongs to an ordinary user.', { type: 'permission_error', code: 'admin_required' });
}
