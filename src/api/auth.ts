// Bearer-key authentication for the API routes. Installed inside the API
// scope only (the signed-URL PUT and health checks carry no key); every
// handler in that scope can rely on request.principal for tenancy.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { KeyVerifier, Principal } from '../auth/keys.ts';
import { ApiError } from '../errors.ts';
import { detectDialect, type Dialect } from './dialect.ts';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal;
    dialect: Dialect;
  }
}

const unauthorized = (message: string) =>
  new ApiError(401, message, { type: 'authentication_error', code: 'invalid_api_key', headers: { 'www-authenticate': 'Bearer' } });

export function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (!header) return undefined;
  const match = /^Bearer\s+(.+)$/i.exec(header.trim());
  return match ? match[1].trim() : undefined;
}

/** Root-level request decorations; call once on the root instance. */
export function decorateRequests(app: FastifyInstance): void {
  app.decorateRequest('principal', null as unknown as Principal);
  app.decorateRequest('dialect', 'together');
}

/** Adds the key check to the (encapsulated) scope it is called in. */
export function requireApiKey(scope: FastifyInstance, verifier: KeyVerifier): void {
  scope.addHook('onRequest', async (request) => {
    request.dialect = detectDialect(request.url, request.headers['user-agent']);
    const token = bearerToken(request);
    if (!token) {
      throw unauthorized('Missing API key: send it as "Authorization: Bearer <key>". Create one with `spool keys create --user NAME`.');
    }
    const principal = await verifier.verify(token);
    if (!principal) throw unauthorized('The API key is not valid or has been revoked.');
    request.principal = principal;
  });
}
