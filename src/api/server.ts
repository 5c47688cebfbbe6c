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
import { installErrorHandling } from './envelope.ts';
import { batchesRoutes } from './routes/batches.ts';
import { filesRoutes } from './routes/files.ts';
import { inferenceRoutes, type InferenceRoutesOptions } from './routes/inference.ts';
import { uploadRoutes } from './routes/uploads.ts';
import { opsRoutes, type OpsRoutesOptions } from './routes/ops.ts';
import { registerOpenApi } from './openapi/plugin.ts';
import { adminRoutes, type AdminRoutesOptions } from './routes/admin.ts';
import { dashboardRoutes } from '../web/dashboard.ts';

export interface ServerDeps {
  store: Store;
  files: FileService;
  batches: BatchService;
  verifier: KeyVerifier;
  publicUrl?: string;
  defaultCompletionWindow: string;
  logger: FastifyServerOptions['logger'];
  /** Real-time /chat/completions, /completions and /embeddings; left out, those routes are not mounted. */
  inference?: InferenceRoutesOptions;
  /** GET /v1/admin/status (admin keys only); left out, the route is not mounted. */
  admin?: Omit<AdminRoutesOptions, 'db'>;
  /** GET /metrics; left out (metrics.enabled false), the route is not mounted. */
  metrics?: OpsRoutesOptions['metrics'];
}

export const API_PREFIXES = ['/v1', '/openai/v1'] as const;

export async function buildServer(deps: ServerDeps): Promise<FastifyInstance> {
  const app = Fastify({
    logger: deps.logger,
    // Uploads of up to maxFileBytes stream for a while on slow links.
    requestTimeout: 0,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  });
  decorateRequests(app);
  installErrorHandling(app, deps.files.maxFileBytes);
  // First: it documents the routes registered after it.
  await registerOpenApi(app, { prefixes: { '/v1': 'together', '/openai/v1': 'openai' } });

  await app.register(opsRoutes, { store: deps.store, verifier: deps.verifier, metrics: deps.metrics });

  await app.register(uploadRoutes, { files: deps.files });

  for (const prefix of API_PREFIXES) {
    await app.register(
      async (api) => {
        acceptEmptyJson(api);
        await api.register(formbody);
        await api.register(multipart);
        requireApiKey(api, deps.verifier);
        await api.register(filesRoutes, { files: deps.files, publicUrl: deps.publicUrl });
        await api.register(batchesRoutes, { batches: deps.batches, defaultCompletionWindow: deps.defaultCompletionWindow });
        if (deps.inference) await api.register(inferenceRoutes, deps.inference);
      },
      { prefix },
    );
  }

  // A scope of its own under /v1 only: the status is Spool's, not part of either dialect's API.
  if (deps.admin) {
    const admin = deps.admin;
    await app.register(
      async (scope) => {
        requireApiKey(scope, deps.verifier);
        await scope.register(adminRoutes, { db: deps.store.sql.db, ...admin });
      },
      { prefix: '/v1/admin' },
    );
  }
  // The dashboard at / (src/web); it adds only / and /dashboard/<asset>, so other paths keep the 404 envelope.
  await app.register(dashboardRoutes);
  return app;
}

/** Python v2 posts preprocess and cancel as Content-Type: application/json with an empty body. */
function acceptEmptyJson(api: FastifyInstance): void {
  api.removeContentTypeParser('application/json');
  api.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch (err) {
      done(err as Error, undefined);
    }
  });
}
