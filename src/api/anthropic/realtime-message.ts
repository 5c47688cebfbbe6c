// Real-time POST /v1/messages (non-streaming), routed by model like every
// real-time request: an upstream that speaks the Messages API gets it as it is,
// any other backend gets it translated (upstreams/messages). Answers and errors
// are in Anthropic's shapes.
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { RealtimeGateway } from '../../upstreams/realtime.ts';
import { routeLabel } from '../../upstreams/realtime.ts';
import { MESSAGES_ENDPOINT } from '../../upstreams/messages/client.ts';
import { messagesParamsProblem } from '../../upstreams/messages/params.ts';
import { anthropicEnvelope, anthropicError } from './errors.ts';

export interface RealtimeMessageOptions {
  gateway: RealtimeGateway;
  timeoutMs: number;
}

export async function realtimeMessage(request: FastifyRequest, reply: FastifyReply, { gateway, timeoutMs }: RealtimeMessageOptions): Promise<FastifyReply> {
  const problem = messagesParamsProblem(request.body);
  if (problem) throw anthropicError(400, problem.param === 'params' ? `The request body ${problem.message}.` : `${problem.param}: ${problem.message}.`);
  const body = request.body as Record<string, unknown> & { model: string };
  const route = await gateway.route(body.model);
  if (!route) throw anthropicError(404, `model: no model named "${body.model}" is served here; route it to an upstream in the config, or use model "echo".`);

  // A client that hangs up stops the work, as for the other real-time routes.
  const hangUp = new AbortController();
  const onClose = () => {
    if (!reply.raw.writableFinished) hangUp.abort(new Error('client closed the connection'));
  };
  reply.raw.once('close', onClose);
  let outcome;
  try {
    outcome = await gateway.send(route, { endpoint: MESSAGES_ENDPOINT, body, timeoutMs, signal: hangUp.signal, interactive: true });
  } finally {
    reply.raw.off('close', onClose);
  }
  if (hangUp.signal.aborted) return reply.status(499).type('application/json').send(anthropicEnvelope(499, 'The client closed the connection.'));
  if (outcome.kind === 'timeout') {
    request.log.warn({ model: body.model, route: routeLabel(route) }, outcome.message);
    throw anthropicError(504, `The model \`${body.model}\` did not answer in time: ${outcome.message}.`);
  }
  if (outcome.kind === 'network_error') {
    if (gateway.closed) throw anthropicError(529, 'The server is shutting down; send the request again.');
    request.log.warn({ model: body.model, route: routeLabel(route) }, outcome.message);
    throw anthropicError(502, `Could not reach the server for model \`${body.model}\`: ${outcome.message}.`);
  }
  if (outcome.requestId) reply.header('request-id', outcome.requestId);
  if (outcome.retryAfterMs !== null) reply.header('retry-after', String(Math.ceil(outcome.retryAfterMs / 1000)));
  if (outcome.status >= 400) return reply.status(outcome.status).type('application/json').send(anthropicEnvelope(outcome.status, upstreamMessage(outcome.status, outcome.body)));
  return reply.status(outcome.status).type('application/json').send(outcome.body);
}

/** What an upstream's error answer says (Anthropic's, OpenAI's or vLLM's shape, or text), or its status. */
function upstreamMessage(status: number, body: unknown): string {
  if (typeof body === 'string' && body.trim() !== '') return body.trim().slice(0, 1000);
  const record = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
  const inner = typeof record.error === 'object' && record.error !== null ? (record.error as Record<string, unknown>) : record;
  if (typeof inner.message === 'string' && inner.message !== '') return inner.message;
  return `The model server answered HTTP ${status}.`;
}
