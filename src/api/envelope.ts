// The error envelope from CONTRACT.md, read well by every official SDK:
// {"message": m, "error": {"message": m, "type": t, "param": p, "code": c}}.
// Every error leaving the server, framework-made ones included, goes through here.
import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { ApiError } from '../errors.ts';
import { BlobNotFoundError, BlobTooLargeError } from '../store/blobs/types.ts';

export interface ErrorEnvelope {
  message: string;
  error: { message: string; type: string; param: string | null; code: string | null };
  [extra: string]: unknown;
}

export function envelopeOf(err: ApiError): ErrorEnvelope {
  return {
    ...err.extra,
    message: err.message,
    error: { message: err.message, type: err.type, param: err.param, code: err.code },
  };
}

export function sendError(reply: FastifyReply, err: ApiError): FastifyReply {
  for (const [name, value] of Object.entries(err.headers)) reply.header(name, value);
  return reply.status(err.status).type('application/json').send(envelopeOf(err));
}

/** Maps anything thrown in a handler (ours, Fastify's, a library's) to an ApiError. */
export function toApiError(err: unknown, maxFileBytes: number): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof BlobTooLargeError || (err as FastifyError)?.code === 'FST_REQ_FILE_TOO_LARGE') {
    return new ApiError(413, `File is larger than the limit of ${maxFileBytes} bytes. Split it into smaller files.`, {
      code: 'file_too_large',
      param: 'file',
    });
  }
  if (err instanceof BlobNotFoundError) {
    return new ApiError(404, 'The content of this file is no longer available.', { code: 'not_found' });
  }
  const fastifyError = err as FastifyError;
  if (fastifyError?.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || fastifyError instanceof SyntaxError) {
    return new ApiError(400, `The request body is not valid JSON: ${fastifyError.message}`, { code: 'invalid_json' });
  }
  if (fastifyError?.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    return new ApiError(413, 'The request body is too large.', { code: 'body_too_large' });
  }
  if (fastifyError?.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    return new ApiError(415, `Unsupported Content-Type: ${fastifyError.message}`, { code: 'unsupported_media_type' });
  }
  if (fastifyError?.validation) {
    return new ApiError(400, `Invalid request: ${fastifyError.message}`, { code: 'invalid_request' });
  }
  if (typeof fastifyError?.statusCode === 'number' && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
    return new ApiError(fastifyError.statusCode, fastifyError.message, { code: fastifyError.code ?? null });
  }
  return new ApiError(500, 'Internal server error.', { code: 'internal_error' });
}

export function installErrorHandling(app: FastifyInstance, maxFileBytes: number): void {
  app.setErrorHandler((err, request, reply) => {
    const apiError = toApiError(err, maxFileBytes);
    if (apiError.status >= 500) request.log.error({ err }, 'request failed');
    return sendError(reply, apiError);
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(reply, new ApiError(404, `No route for ${request.method} ${request.url.split('?')[0]}.`, { code: 'not_found' })),
  );
}
