// Assembles the HTTP server: one Fastify instance, the API routes mounted
// under /v1 and /openai/v1 (same handlers, dialect chosen per request), the
// key-less signed-upload route, and health checks.
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
import { uploadRoutes } from './routes/uploads.ts';

export interface ServerDeps {
  store: Store;
  files: FileService;
  batches: BatchService;
  verifier: KeyVerifier;
  publicUrl?: string;
  defaultCompletionWindow: string;
  logger: FastifyServerOptions['logger'];
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

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async () => {
    await deps.store.sql.db.selectFrom('settings').select('key').limit(1).execute();
    await deps.store.blobs.check();
    return { status: 'ready' };
  });

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
      },
      { prefix },
    );
  }
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
