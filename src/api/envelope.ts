// The error envelope from CONTRACT.md, read well by every official SDK:
// {"message": m, "error": {"message": m, "type": t, "param": p, "code": c}}.
// Every error leaving the server, framework-made ones included, goes through here.
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify';
import { ApiError } from '../errors.ts';
import { BlobNotFoundError, BlobTooLargeError } from '../store/blobs/types.ts';
import { classifyStoreError } from '../store/errors.ts';

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
  if (classifyStoreError(err) === 'full') {
    return new ApiError(507, 'The server is out of storage space, so nothing was stored: try again later, or tell its operator.', {
      code: 'insufficient_storage',
      headers: { 'retry-after': '60' },
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
    return new ApiError(413, 'The request body is too large: JSON request bodies may be at most 1 MiB. Upload files through /files.', {
      code: 'body_too_large',
    });
  }
  if (fastifyError?.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    return new ApiError(415, 'Unsupported Content-Type: send JSON (application/json), a form (application/x-www-form-urlencoded) or multipart/form-data.', {
      code: 'unsupported_media_type',
    });
  }
  if (fastifyError?.code === 'FST_ERR_CTP_INVALID_CONTENT_LENGTH') {
    return new ApiError(400, 'The request body is shorter or longer than its Content-Length header says: send the whole body.', { code: 'invalid_content_length' });
  }
  if (fastifyError?.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') {
    return new ApiError(400, 'The request body is empty but its Content-Type is application/json: send a JSON object.', { code: 'invalid_json' });
  }
  if (fastifyError?.validation) {
    return new ApiError(400, `Invalid request: ${fastifyError.message}`, { code: 'invalid_request' });
  }
  if (typeof fastifyError?.statusCode === 'number' && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
    // A framework error we have no wording for: its own message, and a code of ours rather than Fastify's FST_*.
    return new ApiError(fastifyError.statusCode, `${fastifyError.message}.`.replace(/\.\.$/, '.'), { code: 'invalid_request' });
  }
  return new ApiError(500, 'Internal server error.', { code: 'internal_error' });
}

// An error answered before the request body was read (a body too large, a missing key, an unsupported type) is
// answered once the body is in: most HTTP clients write the whole body before they read, and a server that
// answers and closes meanwhile gives them EPIPE instead of its answer. Past this much, or this long, the
// connection is closed anyway, so a client cannot keep one open by sending forever.
const DRAIN_MAX_BYTES = 128 * 1024 * 1024;
const DRAIN_MAX_MS = 30_000;

export function installErrorHandling(app: FastifyInstance, maxFileBytes: number): void {
  app.setErrorHandler(async (err, request, reply) => {
    const apiError = toApiError(err, maxFileBytes);
    if (apiError.status >= 500) request.log.error({ err }, 'request failed');
    else await drainRequestBody(request.raw);
    return sendError(reply, apiError);
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(reply, new ApiError(404, `No route for ${request.method} ${request.url.split('?')[0]}.`, { code: 'not_found' })),
  );
}

/** Reads and discards what is left of a request body, up to DRAIN_MAX_BYTES and DRAIN_MAX_MS; true when it all arrived. */
export function drainRequestBody(raw: IncomingMessage): Promise<boolean> {
  if (raw.complete || raw.readableEnded || raw.destroyed) return Promise.resolve(true);
  return new Promise((resolve) => {
    let seen = 0;
    const finish = (whole: boolean) => {
      clearTimeout(timer);
      raw.off('data', onData);
      raw.off('end', onEnd);
      raw.off('error', onGone);
      raw.off('close', onGone);
      resolve(whole);
    };
    const onData = (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > DRAIN_MAX_BYTES) finish(false);
    };
    const onEnd = () => finish(true);
    const onGone = () => finish(raw.complete);
    const timer = setTimeout(() => finish(false), DRAIN_MAX_MS);
    raw.on('data', onData);
    raw.once('end', onEnd);
    raw.once('error', onGone);
    raw.once('close', onGone);
    raw.resume();
  });
}

/**
 * Errors the router raises before any route or hook runs (Fastify's `frameworkErrors`): a malformed
 * percent-encoding in the path, or a path segment over the router's length limit. Same envelope as the rest.
 */
export const frameworkErrors: NonNullable<FastifyServerOptions['frameworkErrors']> = (err, _request: FastifyRequest, reply: FastifyReply) => {
  const code = (err as FastifyError).code;
  if (code === 'FST_ERR_BAD_URL') {
    return sendError(reply, new ApiError(400, 'The URL path has a malformed percent-encoding (such as "%E0%A4%A" or a lone "%"): encode each byte as % followed by two hex digits.', { code: 'invalid_url' }));
  }
  if (code === 'FST_ERR_MAX_PARAM_LENGTH') {
    return sendError(reply, new ApiError(414, `A path segment of the URL is longer than ${MAX_PARAM_LENGTH} characters: no id is that long; check the URL.`, { code: 'uri_too_long' }));
  }
  return sendError(reply, new ApiError(400, 'The request could not be routed: check the URL.', { code: 'invalid_request' }));
};

/** The router's limit on one path parameter (Fastify's default); every id Spool makes is far shorter. */
export const MAX_PARAM_LENGTH = 100;

/**
 * Requests Node's HTTP parser refuses before Fastify sees them (headers too large, malformed HTTP, a request
 * that took too long to arrive): the envelope on the raw socket, as Fastify's own handler does with its shape.
 */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  let status = 400;
  let message = 'The request is not valid HTTP/1.1: check the request line and headers.';
  let code = 'invalid_http';
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    status = 408;
    message = 'The request did not arrive in time: send the whole request without pausing.';
    code = 'request_timeout';
  } else if (err.code === 'HPE_HEADER_OVERFLOW') {
    status = 431;
    message = 'The request headers are too large (more than 16 KiB in all): send fewer or shorter headers.';
    code = 'headers_too_large';
  }
  if (socket.writable) {
    const body = JSON.stringify(envelopeOf(new ApiError(status, message, { code })));
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}
