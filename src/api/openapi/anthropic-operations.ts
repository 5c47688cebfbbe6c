// The Anthropic dialect's routes (api/anthropic) for the OpenAPI document, by
// their full paths: they are mounted once, at /v1/messages, outside the two
// prefixed dialects. operations.ts includes them.
import type { OperationDoc } from './operations.ts';

type Schema = Record<string, unknown>;

const json = (description: string, name: string): Schema => ({ description, content: { 'application/json': { schema: { $ref: `#/components/schemas/${name}` } } } });
const error = (description: string): Schema => json(description, 'AnthropicError');

const AUTH = 'Keys as for the other dialects, sent as `x-api-key` (as the Anthropic SDKs do) or `Authorization: Bearer`; `anthropic-version` is accepted whatever it says.';
const UNAUTHORIZED = error('No API key, or an unknown or revoked one (authentication_error).');
const NOT_FOUND = error('No Message Batch with this id for this key; batches of the other dialects are not Message Batches (not_found_error).');

export const ANTHROPIC_OPERATIONS: Record<string, OperationDoc> = {
  'POST /v1/messages/batches': {
    tag: 'anthropic',
    operationId: 'anthropic_createMessageBatch',
    summary: 'Create a Message Batch from inline requests',
    description: `${AUTH} The body is streamed and each request checked as it arrives; the first bad one refuses the whole create with a message naming requests.N, and nothing is stored.`,
    body: { 'application/json': { $ref: '#/components/schemas/MessageBatchCreate' } },
    responses: {
      200: json('The new batch, in_progress.', 'MessageBatch'),
      400: error('A request is invalid (bad or duplicate custom_id, invalid or unsupported params, a model nobody serves); the message names its index.'),
      401: UNAUTHORIZED,
      413: error('More requests or bytes than messageBatches allows (request_too_large).'),
      429: error("The user's token or monthly budget is exhausted (rate_limit_error)."),
    },
  },
  'GET /v1/messages/batches': {
    tag: 'anthropic',
    operationId: 'anthropic_listMessageBatches',
    summary: 'List Message Batches, newest first',
    description: `${AUTH} Only batches created at this endpoint. after_id: the page of older batches after that one; before_id: the page of newer ones before it.`,
    querystring: {
      type: 'object',
      properties: { limit: { type: 'integer', minimum: 1, maximum: 1000, default: 20 }, after_id: { type: 'string' }, before_id: { type: 'string' } },
    },
    responses: { 200: json('One page.', 'MessageBatchList'), 400: error('A bad limit, or both after_id and before_id.'), 401: UNAUTHORIZED },
  },
  'GET /v1/messages/batches/:id': {
    tag: 'anthropic',
    operationId: 'anthropic_retrieveMessageBatch',
    summary: 'Retrieve a Message Batch',
    responses: { 200: json('The batch.', 'MessageBatch'), 401: UNAUTHORIZED, 404: NOT_FOUND },
  },
  'POST /v1/messages/batches/:id/cancel': {
    tag: 'anthropic',
    operationId: 'anthropic_cancelMessageBatch',
    summary: 'Cancel a Message Batch',
    description: 'Requests not yet run end canceled; the batch is canceling, then ended. An ended batch is answered as it is.',
    responses: { 200: json('The batch.', 'MessageBatch'), 401: UNAUTHORIZED, 404: NOT_FOUND },
  },
  'DELETE /v1/messages/batches/:id': {
    tag: 'anthropic',
    operationId: 'anthropic_deleteMessageBatch',
    summary: 'Delete an ended Message Batch, its results and its input',
    responses: {
      200: json('Deleted.', 'MessageBatchDeleted'),
      400: error('The batch has not ended: cancel it first.'),
      401: UNAUTHORIZED,
      404: NOT_FOUND,
    },
  },
  'GET /v1/messages/batches/:id/results': {
    tag: 'anthropic',
    operationId: 'anthropic_messageBatchResults',
    summary: "A Message Batch's results, one JSON line per request",
    description: 'Each custom_id exactly once, in no particular order: {"custom_id", "result": {"type": "succeeded", "message"} | {"type": "errored", "error"} | {"type": "canceled"} | {"type": "expired"}}.',
    responses: {
      200: { description: 'JSONL.', content: { 'application/binary': { schema: { type: 'string' } } } },
      400: error('The batch has not ended yet.'),
      401: UNAUTHORIZED,
      404: NOT_FOUND,
    },
  },
  'POST /v1/messages': {
    tag: 'anthropic',
    operationId: 'anthropic_createMessage',
    summary: 'Create a message (real time, non-streaming)',
    description: `${AUTH} Routed by model like every real-time request: passed through to an upstream with messagesApi, translated to chat completions otherwise.`,
    body: { 'application/json': { $ref: '#/components/schemas/MessagesRequest' } },
    responses: {
      200: json('The message.', 'Message'),
      400: error('Invalid or unsupported params (stream, thinking, ...); the message names the field.'),
      401: UNAUTHORIZED,
      404: error('No model of this name is served here.'),
      502: error('The model server could not be reached.'),
      504: error('The model server did not answer in time.'),
    },
  },
};
