// Assembles the HTTP server: one Fastify instance, the API routes mounted
// under /v1 and /openai/v1 (same handlers, dialect chosen per request), the
// key-less signed-upload route, the operational endpoints (health,
// readiness, metrics) and the OpenAPI document of all of them.
import formbody from '@fastify/formbody';
import multipart from '@fastify/multipart';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { KeyVerifier } from '../auth/keys.ts';
import type { BatchService } from '../batches/service.ts';
import type { FileService } from '../files/service.ts';
import type { Store } from '../store/index.ts';
import { decorateRequests, requireApiKey } from './auth.ts';
import { clientErrorHandler, frameworkErrors, installErrorHandling, MAX_PARAM_LENGTH } from './envelope.ts';
import { badRequest } from '../errors.ts';
import { isUtf8 } from 'node:buffer';
import { batchesRoutes } from './routes/batches.ts';
import { filesRoutes } from './routes/files.ts';
import { inferenceRoutes, type InferenceRoutesOptions } from './routes/inference.ts';
import { uploadRoutes } from './routes/uploads.ts';
import { usageRoutes } from './routes/usage.ts';
import { webhooksRoutes } from './routes/webhooks.ts';
import { opsRoutes, type OpsRoutesOptions } from './routes/ops.ts';
import { registerOpenApi } from './openapi/plugin.ts';
import { adminRoutes, type AdminRoutesOptions } from './routes/admin.ts';
import { dashboardRoutes } from '../web/dashboard.ts';
import { anthropicRoutes } from './anthropic/routes.ts';

export interface ServerDeps {
  store: Store;
  files: FileService;
  batches: BatchService;
  verifier: KeyVerifier;
  publicUrl?: string;
  defaultCompletionWindow: string;
  /** limits.priority: the priorities keys that are not admin keys may set. */
  priorityBounds: { min: number; max: number };
  logger: FastifyServerOptions['logger'];
  /** Real-time /chat/completions, /completions and /embeddings; left out, those routes are not mounted. */
  inference?: InferenceRoutesOptions;
  /** Anthropic's Message Batches and Messages at /v1/messages (they route through `inference`'s gateway); left out, not mounted. */
  messageBatches?: { maxRequests: number; maxBytes: number };
  /** GET /v1/admin/status (admin keys only); left out, the route is not mounted. */
  admin?: Omit<AdminRoutesOptions, 'db' | 'storage'>;
  /** GET /metrics; left out (metrics.enabled false), the route is not mounted. */
  metrics?: OpsRoutesOptions['metrics'];
  /** This process's runner, read per request (it starts after the server listens): readiness reports a runner that cannot record results. */
  runnerStats?: OpsRoutesOptions['runnerStats'];
}

export const API_PREFIXES = ['/v1', '/openai/v1'] as const;

export async function buildServer(deps: ServerDeps): Promise<FastifyInstance> {
  const app = Fastify({
    logger: deps.logger,
    // Uploads of up to maxFileBytes stream for a while on slow links.
    requestTimeout: 0,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    frameworkErrors,
    clientErrorHandler,
  });
  decorateRequests(app);
  installErrorHandling(app, deps.files.maxFileBytes);
  // First: it documents the routes registered after it.
  await registerOpenApi(app, { prefixes: { '/v1': 'together', '/openai/v1': 'openai' } });

  await app.register(opsRoutes, { store: deps.store, verifier: deps.verifier, metrics: deps.metrics, runnerStats: deps.runnerStats });

  await app.register(uploadRoutes, { files: deps.files });

  for (const prefix of API_PREFIXES) {
    await app.register(
      async (api) => {
        acceptEmptyJson(api);
        await api.register(formbody);
        await api.register(multipart);
        requireApiKey(api, deps.verifier);
        await api.register(filesRoutes, { files: deps.files, publicUrl: deps.publicUrl });
        await api.register(webhooksRoutes, { db: deps.store.sql.db });
        await api.register(usageRoutes, { db: deps.store.sql.db });
        await api.register(batchesRoutes, { batches: deps.batches, defaultCompletionWindow: deps.defaultCompletionWindow, priority: deps.priorityBounds });
        if (deps.inference) await api.register(inferenceRoutes, deps.inference);
      },
      { prefix },
    );
  }

  // The third dialect, in a scope of its own: its keys, envelope and body parsing differ (api/anthropic).
  if (deps.inference && deps.messageBatches) {
    await app.register(anthropicRoutes, {
      prefix: '/v1/messages',
      store: deps.store,
      batches: deps.batches,
      files: deps.files,
      verifier: deps.verifier,
      gateway: deps.inference.gateway,
      limits: deps.messageBatches,
      completionWindow: deps.defaultCompletionWindow,
      timeoutMs: deps.inference.timeoutMs,
      publicUrl: deps.publicUrl,
    });
  }

  // A scope of its own under /v1 only: the status is Spool's, not part of either dialect's API.
  if (deps.admin) {
    const admin = deps.admin;
    await app.register(
      async (scope) => {
        requireApiKey(scope, deps.verifier);
        await scope.register(adminRoutes, { db: deps.store.sql.db, storage: () => deps.store.health.all(), ...admin });
      },
      { prefix: '/v1/admin' },
    );
  }
  // The dashboard at / (src/web); it adds only / and /dashboard/<asset>, so other paths keep the 404 envelope.
  await app.register(dashboardRoutes);
  return app;
}

/**
 * Python v2 posts preprocess and cancel as Content-Type: application/json with an empty body. Bytes that are
 * not UTF-8 are refused rather than decoded with replacement characters: an id or a name sent that way would
 * otherwise be stored as something other than what the client sent.
 */
function acceptEmptyJson(api: FastifyInstance): void {
  api.removeContentTypeParser('application/json');
  api.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, body, done) => {
    const bytes = typeof body === 'string' ? Buffer.from(body) : body;
    if (!isUtf8(bytes)) return done(badRequest('The request body is not valid UTF-8: send JSON text encoded as UTF-8.', null, 'invalid_utf8'), undefined);
    const text = bytes.toString('utf8');
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch (err) {
      done(err as Error, undefined);
    }
  });
}
