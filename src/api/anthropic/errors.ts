// Anthropic's error envelope, {"type": "error", "error": {"type", "message"}},
// for every answer under the Messages routes, framework-made ones included.
// Its error types follow from the status, as in Anthropic's API; the message
// is the one every other dialect gets.
import type { FastifyInstance } from 'fastify';
import { ApiError } from '../../errors.ts';
import { drainRequestBody, toApiError } from '../envelope.ts';

const TYPE_BY_STATUS: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  402: 'billing_error',
  403: 'permission_error',
  404: 'not_found_error',
  409: 'invalid_request_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  500: 'api_error',
  504: 'timeout_error',
  529: 'overloaded_error',
};

export function anthropicErrorType(status: number): string {
  return TYPE_BY_STATUS[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error');
}

export function anthropicEnvelope(status: number, message: string) {
  return { type: 'error', error: { type: anthropicErrorType(status), message } };
}

/** A refusal in Anthropic's words: the status decides the type. */
export const anthropicError = (status: number, message: string, headers: Record<string, string> = {}): ApiError => new ApiError(status, message, { headers });

/** Answers errors and unknown routes in this scope with Anthropic's envelope. */
export function installAnthropicErrors(scope: FastifyInstance, maxBodyBytes: number): void {
  scope.setErrorHandler(async (err, request, reply) => {
    const apiError = toApiError(err, maxBodyBytes);
    if (apiError.status >= 500) request.log.error({ err }, 'request failed');
    else await drainRequestBody(request.raw);
    for (const [name, value] of Object.entries(apiError.headers)) reply.header(name, value);
    return reply.status(apiError.status).type('application/json').send(anthropicEnvelope(apiError.status, apiError.message));
  });
  scope.setNotFoundHandler((request, reply) =>
    reply
      .status(404)
      .type('application/json')
      .send(anthropicEnvelope(404, `No route for ${request.method} ${request.url.split('?')[0]}.`)),
  );
}
