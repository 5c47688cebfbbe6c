// JSON Schemas of the Anthropic dialect's wire objects (api/anthropic), for
// the OpenAPI document only, like schemas.ts, which includes them.

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const nullable = (type: string) => ({ type: [type, 'null'] });
const timestamp = { type: 'string', format: 'date-time', description: 'RFC 3339.' };

export const ANTHROPIC_SCHEMAS = {
  AnthropicError: {
    type: 'object',
    description: "Every error under /v1/messages, in Anthropic's envelope; the type follows from the status.",
    required: ['type', 'error'],
    properties: {
      type: { const: 'error' },
      error: {
        type: 'object',
        required: ['type', 'message'],
        properties: {
          type: {
            enum: ['invalid_request_error', 'authentication_error', 'billing_error', 'permission_error', 'not_found_error', 'request_too_large', 'rate_limit_error', 'api_error', 'timeout_error', 'overloaded_error'],
          },
          message: { type: 'string' },
        },
      },
    },
  },
  MessageBatch: {
    type: 'object',
    required: ['id', 'type', 'processing_status', 'request_counts', 'ended_at', 'created_at', 'expires_at', 'archived_at', 'cancel_initiated_at', 'results_url'],
    properties: {
      id: { type: 'string', pattern: '^msgbatch_', description: 'The batch id of the other dialects with "msgbatch_" for "batch-"; either form is accepted everywhere.' },
      type: { const: 'message_batch' },
      processing_status: { enum: ['in_progress', 'canceling', 'ended'] },
      request_counts: {
        type: 'object',
        required: ['processing', 'succeeded', 'errored', 'canceled', 'expired'],
        properties: Object.fromEntries(['processing', 'succeeded', 'errored', 'canceled', 'expired'].map((name) => [name, { type: 'integer', minimum: 0 }])),
      },
      ended_at: { ...nullable('string'), format: 'date-time' },
      created_at: timestamp,
      expires_at: { ...timestamp, description: 'When requests not yet run expire: the completion window (limits.defaultCompletionWindow) after creation.' },
      archived_at: { type: 'null' },
      cancel_initiated_at: { ...nullable('string'), format: 'date-time' },
      results_url: { ...nullable('string'), description: 'Set once the batch has ended.' },
    },
  },
  MessageBatchList: {
    type: 'object',
    required: ['data', 'has_more', 'first_id', 'last_id'],
    properties: { data: { type: 'array', items: ref('MessageBatch') }, has_more: { type: 'boolean' }, first_id: nullable('string'), last_id: nullable('string') },
  },
  MessageBatchDeleted: {
    type: 'object',
    required: ['id', 'type'],
    properties: { id: { type: 'string' }, type: { const: 'message_batch_deleted' } },
  },
  MessageBatchCreate: {
    type: 'object',
    required: ['requests'],
    properties: {
      requests: {
        type: 'array',
        minItems: 1,
        description: 'At most messageBatches.maxRequests (100,000) requests and messageBatches.maxBytes (256 MiB) in all.',
        items: {
          type: 'object',
          required: ['custom_id', 'params'],
          properties: { custom_id: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' }, params: ref('MessagesRequest') },
        },
      },
    },
  },
  MessagesRequest: {
    type: 'object',
    description: 'A non-streaming Messages request (docs/anthropic.md says what is supported).',
    required: ['model', 'max_tokens', 'messages'],
    properties: {
      model: { type: 'string' },
      max_tokens: { type: 'integer', minimum: 1 },
      messages: { type: 'array', minItems: 1, items: { type: 'object', required: ['role', 'content'], properties: { role: { enum: ['user', 'assistant'] } } } },
      system: { type: ['string', 'array'] },
      stop_sequences: { type: 'array', items: { type: 'string' } },
      temperature: { type: 'number', minimum: 0, maximum: 1 },
      top_p: { type: 'number', minimum: 0, maximum: 1 },
      top_k: { type: 'integer', minimum: 0 },
      metadata: { type: 'object' },
      tools: { type: 'array', items: { type: 'object' } },
      tool_choice: { type: 'object' },
      stream: { const: false },
    },
  },
  Message: {
    type: 'object',
    required: ['id', 'type', 'role', 'content', 'model', 'stop_reason', 'usage'],
    properties: {
      id: { type: 'string' },
      type: { const: 'message' },
      role: { const: 'assistant' },
      model: { type: 'string' },
      content: { type: 'array', items: { type: 'object', required: ['type'] } },
      stop_reason: nullable('string'),
      stop_sequence: nullable('string'),
      usage: { type: 'object', required: ['input_tokens', 'output_tokens'], properties: { input_tokens: { type: 'integer' }, output_tokens: { type: 'integer' } } },
    },
  },
} as const;
