// The Messages routes take the same API keys as the other dialects, sent as
// Anthropic's SDKs send them (x-api-key) or as a bearer token. anthropic-version
// is accepted whatever it says: Spool serves one version of these routes.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { KeyVerifier } from '../../auth/keys.ts';
import { ApiError } from '../../errors.ts';
import { bearerToken } from '../auth.ts';

function apiKeyOf(request: FastifyRequest): string | undefined {
  const header = request.headers['x-api-key'];
  const key = Array.isArray(header) ? header[0] : header;
  return key?.trim() || bearerToken(request);
}

export function requireAnthropicKey(scope: FastifyInstance, verifier: KeyVerifier): void {
  scope.addHook('onRequest', async (request) => {
    const key = apiKeyOf(request);
    if (!key) throw new ApiError(401, 'Missing API key: send it as "x-api-key: <key>" (or "Authorization: Bearer <key>"). Create one with `spool keys create --user NAME`.');
    const principal = await verifier.verify(key);
    if (!principal) throw new ApiError(401, 'The API key is not valid or has been revoked.');
    request.principal = principal;
  });
}
