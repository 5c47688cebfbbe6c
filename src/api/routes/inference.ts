// Real-time inference: POST /chat/completions, /completions and /embeddings
// (under /v1 and /openai/v1), answered by whoever serves the body's `model`:
// a configured upstream (the request is proxied with the upstream's key, its
// status and body passed back), the embedded engine, or the echo emulator.
// Mounted inside the API scope, so the same bearer keys apply.
//
// `stream: true` is refused with a 400 for every model: the engine and the
// emulator produce whole answers, and a proxy that streamed for some models
// and not others would surprise more than it helps.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError, badRequest } from '../../errors.ts';
import type { UpstreamOutcome } from '../../upstreams/http-client.ts';
import { routeLabel, type RealtimeGateway } from '../../upstreams/realtime.ts';
import { envelopeOf } from '../envelope.ts';

export interface InferenceRoutesOptions {
  gateway: RealtimeGateway;
  /** Longest a request may take, queueing for a free engine sequence included. */
  timeoutMs: number;
}

const ENDPOINTS = ['/chat/completions', '/completions', '/embeddings'] as const;
// Long chat histories and embedding inputs (up to 2048 of them) outgrow Fastify's 1 MiB default.
const BODY_LIMIT = 16 * 1024 * 1024;
// An upstream's non-JSON error page is cut to this in the message we pass on.
const MAX_ERROR_TEXT = 1000;

export async function inferenceRoutes(api: FastifyInstance, options: InferenceRoutesOptions): Promise<void> {
  for (const path of ENDPOINTS) {
    api.post(path, { bodyLimit: BODY_LIMIT }, (request, reply) => infer(`/v1${path}`, request, reply, options));
  }
}

async function infer(endpoint: string, request: FastifyRequest, reply: FastifyReply, { gateway, timeoutMs }: InferenceRoutesOptions): Promise<FastifyReply> {
  const body = request.body;
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw badRequest('The request body must be a JSON object, e.g. {"model": "echo", ...}.');
  }
  const fields = body as Record<string, unknown>;
  const model = fields.model;
  if (typeof model !== 'string' || model.trim() === '') throw badRequest('model is required: the name of a model this server serves.', 'model');
  const route = await gateway.route(model);
  if (!route) {
    throw new ApiError(404, `The model \`${model}\` does not exist on this server. Serve it with --model, route it to an upstream in the config, or use model "echo".`, {
      type: 'invalid_request_error',
      param: 'model',
      code: 'model_not_found',
    });
  }
  if (fields.stream === true) {
    throw badRequest('stream is not supported by Spool: send the request without "stream" (or with "stream": false) and read the whole answer.', 'stream', 'stream_not_supported');
  }

  // A client that hangs up stops the work: an engine sequence or an upstream slot is freed at once.
  const hangUp = new AbortController();
  const onClose = () => {
    if (!reply.raw.writableFinished) hangUp.abort(new Error('client closed the connection'));
  };
  reply.raw.once('close', onClose);
  let outcome: UpstreamOutcome;
  try {
    outcome = await gateway.send(route, { endpoint, body: fields, timeoutMs, signal: hangUp.signal, interactive: true });
  } finally {
    reply.raw.off('close', onClose);
  }
  // Nobody reads this answer; it still completes the request's lifecycle (logs, hooks) as nginx's 499 would.
  if (hangUp.signal.aborted) return reply.status(499).type('application/json').send(envelopeOf(new ApiError(499, 'The client closed the connection.', { code: 'client_closed_request' })));

  if (outcome.kind === 'timeout') {
    request.log.warn({ model, route: routeLabel(route) }, outcome.message);
    throw new ApiError(504, `The model \`${model}\` did not answer in time: ${outcome.message}.`, { code: 'upstream_timeout' });
  }
  if (outcome.kind === 'network_error' && gateway.closed) {
    throw new ApiError(503, 'The server is shutting down; send the request again.', { code: 'server_shutting_down' });
  }
  if (outcome.kind === 'network_error') {
    request.log.warn({ model, route: routeLabel(route) }, outcome.message);
    throw new ApiError(502, `Could not reach the server for model \`${model}\`: ${outcome.message}.`, { code: 'upstream_error' });
  }

  if (outcome.requestId) reply.header('x-request-id', outcome.requestId);
  if (outcome.retryAfterMs !== null) {
    // The SDKs wait this long before their own retry of a 429 or 503.
    reply.header('retry-after-ms', String(outcome.retryAfterMs));
    reply.header('retry-after', String(Math.ceil(outcome.retryAfterMs / 1000)));
  }
  reply.status(outcome.status);
  if (outcome.status >= 400) return reply.type('application/json').send(errorEnvelope(outcome.status, outcome.body));
  if (typeof outcome.body === 'string') return reply.type('text/plain; charset=utf-8').send(outcome.body);
  return reply.type('application/json').send(outcome.body);
}

/**
 * An error answer in the envelope every SDK reads (CONTRACT.md), keeping the
 * upstream's message, type, param and code. OpenAI-shaped bodies only gain
 * the top-level `message`; vLLM's flat {object:"error", message, code: 400}
 * and plain-text error pages are reshaped, and a numeric code becomes a string.
 */
export function errorEnvelope(status: number, body: unknown): Record<string, unknown> {
  const record = isRecord(body) ? body : {};
  const inner = isRecord(record.error) ? record.error : record;
  const message =
    text(inner.message) ?? text(record.error) ?? (typeof body === 'string' && body.trim() !== '' ? body.trim().slice(0, MAX_ERROR_TEXT) : `The model server answered HTTP ${status}.`);
  const { error: _error, message: _message, ...extra } = isRecord(record.error) ? record : {};
  const code = inner.code;
  return envelopeOf(
    new ApiError(status, message, {
      type: text(inner.type),
      param: text(inner.param) ?? null,
      code: typeof code === 'string' ? code : typeof code === 'number' ? String(code) : null,
      extra,
    }),
  );
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function text(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}
