// The HTTP listener of `spool worker`, which has no API: only /healthz,
// /readyz and /metrics (routes/ops.ts), so a scale-out worker, where the
// upstream requests actually run, can be probed and scraped like `spool serve`.
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { KeyVerifier } from '../auth/keys.ts';
import type { Store } from '../store/index.ts';
import { clientErrorHandler, frameworkErrors, installErrorHandling, MAX_PARAM_LENGTH } from './envelope.ts';
import { opsRoutes, type OpsRoutesOptions } from './routes/ops.ts';

export interface OpsServerOptions {
  store: Store;
  verifier: KeyVerifier;
  metrics: OpsRoutesOptions['metrics'];
  runnerStats?: OpsRoutesOptions['runnerStats'];
  host: string;
  port: number;
  logger: FastifyServerOptions['logger'];
}

export async function startOpsServer(options: OpsServerOptions): Promise<{ server: FastifyInstance; url: string }> {
  const server = Fastify({
    logger: options.logger,
    return503OnClosing: true,
    forceCloseConnections: true,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    frameworkErrors,
    clientErrorHandler,
  });
  // The limit only words the 413 of an upload, and this server takes none.
  installErrorHandling(server, 0);
  await server.register(opsRoutes, { store: options.store, verifier: options.verifier, metrics: options.metrics, runnerStats: options.runnerStats });
  await server.listen({ host: options.host, port: options.port });
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  return { server, url: `http://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${port}` };
}
