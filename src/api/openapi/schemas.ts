// JSON Schemas (2020-12, as OpenAPI 3.1 uses) of the wire objects, for the
// OpenAPI document only: no route validates or serializes with them, so the
// responses stay exactly what the presenters build (CONTRACT.md). Objects
// allow extra properties, as the SDKs do: a field added later is not a lie.
// test/e2e/openapi.test.ts checks real responses against these.

import { ANTHROPIC_SCHEMAS } from './anthropic-schemas.ts';

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const nullable = (type: string) => ({ type: [type, 'null'] });

const errorEnvelope = {
  type: 'object',
  description: 'Every error, in both dialects. Together SDKs print `message`, OpenAI SDKs `error.message`.',
  required: ['message', 'error'],
  properties: {
    message: { type: 'string' },
    error: {
      type: 'object',
      required: ['message', 'type', 'param', 'code'],
      properties: {
        message: { type: 'string' },
        type: { type: 'string', examples: ['invalid_request_error', 'authentication_error', 'not_found_error', 'server_error'] },
        param: nullable('string'),
        code: { ...nullable('string'), description: 'A string or null, never a number.' },
      },
    },
  },
};

const togetherFile = {
  type: 'object',
  required: ['id', 'object', 'created_at', 'filename', 'bytes', 'purpose', 'type', 'FileType', 'LineCount', 'Processed'],
  properties: {
    id: { type: 'string' },
    object: { const: 'file' },
    created_at: { type: 'integer', description: 'Unix seconds.' },
    filename: { type: 'string' },
    bytes: { type: 'integer' },
    purpose: { enum: ['batch-api', 'fine-tune', 'eval', 'eval-output'], description: 'Batch inputs and outputs are both "batch-api" (Python v1 accepts no other).' },
    type: { type: 'string', examples: ['jsonl'] },
    FileType: { type: 'string', examples: ['jsonl'] },
    LineCount: { type: 'integer' },
    Processed: { type: 'boolean', description: 'False until the bytes of a signed upload have arrived.' },
  },
};

const openaiFile = {
  type: 'object',
  required: ['id', 'object', 'bytes', 'created_at', 'filename', 'purpose', 'status'],
  properties: {
    id: { type: 'string' },
    object: { const: 'file' },
    bytes: { type: 'integer' },
    created_at: { type: 'integer', description: 'Unix seconds.' },
    filename: { type: 'string' },
    purpose: { enum: ['batch', 'batch_output', 'fine-tune', 'evals'] },
    status: { enum: ['uploaded', 'processed'] },
    expires_at: { type: 'integer', description: 'Unix seconds; only on files that expire (batch outputs with output_expires_after, and signed uploads not yet completed).' },
    status_details: { type: 'null' },
  },
};

const validationError = {
  type: 'object',
  required: ['code', 'message', 'param', 'line'],
  properties: { code: { type: 'string' }, message: { type: 'string' }, param: nullable('string'), line: nullable('integer') },
};

const togetherBatchJob = {
  type: 'object',
  required: ['id', 'user_id', 'input_file_id', 'file_size_bytes', 'status', 'job_deadline', 'created_at', 'endpoint'],
  properties: {
    id: { type: 'string' },
    user_id: { type: 'string' },
    input_file_id: { type: 'string' },
    file_size_bytes: { type: 'integer' },
    status: { enum: ['VALIDATING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'EXPIRED', 'CANCELLED', 'CANCELING'], description: 'Finalizing shows as IN_PROGRESS.' },
    job_deadline: { type: 'string', format: 'date-time' },
    created_at: { type: 'string', format: 'date-time' },
    endpoint: { type: 'string' },
    progress: { type: 'number', minimum: 0, maximum: 100 },
    model_id: nullable('string'),
    output_file_id: nullable('string'),
    error_file_id: nullable('string'),
    error: { ...nullable('string'), description: 'Why validation failed, naming the first lines at fault.' },
    completed_at: { anyOf: [{ type: 'string', format: 'date-time' }, { type: 'null' }] },
    webhook_url: { ...nullable('string'), description: 'Receives a signed POST when the batch reaches a final state.' },
    retry_of: { ...nullable('string'), description: 'The batch whose failed lines this one retries.' },
    cost: { $ref: '#/components/schemas/BatchCost' },
  },
};

const batchCost = {
  type: 'object',
  required: ['amount', 'currency'],
  description: "Spool extension: the cost so far, from the recorded lines' usage at the configured prices (billing.prices), less billing.batchDiscount.",
  properties: { amount: { type: 'number', minimum: 0 }, currency: { type: 'string', examples: ['USD'] } },
};

const upstreamReachability = {
  type: 'object',
  additionalProperties: { enum: ['ok', 'unreachable'] },
  description:
    'The upstreams this process has sent to: "unreachable" after a few connection failures in a row, until a probe gets an answer. Informational: their lines wait, and readiness does not depend on them.',
};

const timestampOrNull = { ...nullable('integer'), description: 'Unix seconds.' };

const openaiBatch = {
  type: 'object',
  required: ['id', 'object', 'endpoint', 'input_file_id', 'completion_window', 'status', 'created_at'],
  properties: {
    id: { type: 'string' },
    object: { const: 'batch' },
    endpoint: { type: 'string' },
    errors: { anyOf: [{ type: 'object', required: ['object', 'data'], properties: { object: { const: 'list' }, data: { type: 'array', items: validationError } } }, { type: 'null' }] },
    input_file_id: { type: 'string' },
    completion_window: { type: 'string', examples: ['24h'] },
    status: { enum: ['validating', 'failed', 'in_progress', 'finalizing', 'completed', 'expired', 'cancelling', 'cancelled'] },
    output_file_id: nullable('string'),
    error_file_id: nullable('string'),
    created_at: { type: 'integer', description: 'Unix seconds.' },
    in_progress_at: timestampOrNull,
    expires_at: { type: 'integer', description: 'Unix seconds: the end of the completion window.' },
    finalizing_at: timestampOrNull,
    completed_at: timestampOrNull,
    failed_at: timestampOrNull,
    expired_at: timestampOrNull,
    cancelling_at: timestampOrNull,
    cancelled_at: timestampOrNull,
    request_counts: {
      type: 'object',
      required: ['total', 'completed', 'failed'],
      properties: { total: { type: 'integer' }, completed: { type: 'integer' }, failed: { type: 'integer' } },
    },
    usage: {
      type: 'object',
      required: ['input_tokens', 'output_tokens', 'total_tokens'],
      properties: { input_tokens: { type: 'integer' }, output_tokens: { type: 'integer' }, total_tokens: { type: 'integer' } },
    },
    metadata: { anyOf: [{ type: 'object', additionalProperties: { type: 'string' } }, { type: 'null' }] },
    model: nullable('string'),
    webhook_url: { ...nullable('string'), description: 'Receives a signed POST when the batch reaches a final state (from `metadata.webhook_url`).' },
    retry_of: { ...nullable('string'), description: 'The batch whose failed lines this one retries.' },
    cost: { $ref: '#/components/schemas/BatchCost' },
  },
};

const pagedList = (item: string) => ({
  type: 'object',
  required: ['object', 'data', 'first_id', 'last_id', 'has_more'],
  properties: {
    object: { const: 'list' },
    data: { type: 'array', items: ref(item) },
    first_id: nullable('string'),
    last_id: nullable('string'),
    has_more: { type: 'boolean' },
  },
});

const createBatchRequest = {
  type: 'object',
  required: ['input_file_id', 'endpoint'],
  properties: {
    input_file_id: { type: 'string', description: 'An uploaded JSONL file of request lines.' },
    endpoint: { enum: ['/v1/chat/completions', '/v1/completions', '/v1/embeddings', '/v1/audio/transcriptions', '/v1/audio/translations'] },
    completion_window: { type: 'string', default: '24h', description: 'Whole minutes, hours or days ("90m", "24h", "7d"), between 1m and 30d.' },
    priority: { type: 'integer', default: 0, description: 'Higher runs first (Together).' },
    model_id: { type: 'string', description: 'Model for lines whose body names none (Together).' },
    metadata: { type: 'object', maxProperties: 16, additionalProperties: { type: 'string', maxLength: 512 }, description: 'OpenAI; `metadata.webhook_url` sets the webhook.' },
    output_expires_after: {
      type: 'object',
      required: ['anchor', 'seconds'],
      properties: { anchor: { const: 'created_at' }, seconds: { type: 'integer', minimum: 3600, maximum: 2592000 } },
      description: 'OpenAI: when the output and error files expire.',
    },
    webhook_url: { type: 'string', format: 'uri', description: 'A URL that receives a signed POST when the batch reaches a final state.' },
  },
};

const signedUploadFields = {
  type: 'object',
  required: ['purpose', 'file_name'],
  properties: {
    purpose: { type: 'string', examples: ['batch-api'] },
    file_name: { type: 'string' },
    file_type: { type: 'string', examples: ['jsonl'] },
    checksum: { type: 'string', pattern: '^[0-9a-fA-F]{64}$', description: 'sha256 of the bytes (Python v2); an identical earlier upload answers 409 with its file_id.' },
  },
};

const multipartUpload = {
  type: 'object',
  required: ['purpose', 'file'],
  properties: {
    purpose: { type: 'string', examples: ['batch', 'batch-api'] },
    file: { type: 'string', contentMediaType: 'application/octet-stream', description: 'The JSONL bytes.' },
    file_name: { type: 'string' },
    file_type: { type: 'string', examples: ['jsonl'] },
  },
};

/** Real-time requests: OpenAI's request bodies; Spool reads `model` and refuses `stream: true`, the rest goes to the model's server. */
const inferenceRequest = (required: string[], description: string) => ({
  type: 'object',
  required: ['model', ...required],
  description,
  properties: {
    model: { type: 'string', description: 'Routed to a configured upstream, the embedded engine, or the "echo" emulator.' },
    stream: { const: false, description: 'Streaming is not supported.' },
  },
});

const inferenceResponse = {
  type: 'object',
  description: "The model server's answer, passed through (OpenAI's chat.completion, text_completion or list of embeddings).",
  properties: { id: { type: 'string' }, object: { type: 'string' }, model: { type: 'string' }, usage: { type: 'object' } },
};

const outcomeCounts = {
  type: 'object',
  required: ['succeeded', 'failed', 'retries', 'error_rate'],
  properties: { succeeded: { type: 'integer' }, failed: { type: 'integer' }, retries: { type: 'integer' }, error_rate: nullable('number') },
};

const storageState = {
  anyOf: [
    { const: 'ok' },
    { type: 'object', required: ['problem', 'since'], properties: { problem: { type: 'string' }, since: { type: 'integer', description: 'Unix ms.' } } },
  ],
};

const adminStatus = {
  type: 'object',
  required: ['object', 'generated_at', 'window_seconds', 'worker', 'upstreams', 'models'],
  properties: {
    object: { const: 'admin.status' },
    generated_at: { type: 'integer', description: 'Unix seconds.' },
    window_seconds: { type: 'integer', description: 'How far back `recent` reaches.' },
    worker: {
      description: "This process's worker; null in an API-only process.",
      anyOf: [
        {
          type: 'object',
          properties: {
            claimed: { type: 'integer' },
            succeeded: { type: 'integer' },
            failed: { type: 'integer' },
            retried: { type: 'integer' },
            in_flight: { type: 'integer' },
            queued: { type: 'integer' },
            results_stalled: {
              description: 'Set while results cannot be recorded (the database down or full); the worker claims nothing new meanwhile.',
              anyOf: [
                { type: 'object', required: ['since', 'reason'], properties: { since: { type: 'integer', description: 'Unix ms.' }, reason: { type: 'string' } } },
                { type: 'null' },
              ],
            },
          },
        },
        { type: 'null' },
      ],
    },
    storage: {
      type: 'object',
      description: 'Per part of the store: "ok", or the reason writes to it fail for lack of space and since when.',
      properties: { database: storageState, blob_store: storageState },
    },
    upstreams: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'kind'],
        properties: {
          name: { type: 'string', description: "The replica's name (a single-server entry's replica has the entry's name)." },
          kind: { enum: ['upstream', 'echo', 'engine'] },
          pool: { ...nullable('string'), description: 'The configured upstream entry this replica belongs to; null for the built-in lanes.' },
          affinity: {
            anyOf: [
              {
                type: 'object',
                required: ['home', 'spilled', 'hit_rate'],
                properties: { home: { type: 'integer' }, spilled: { type: 'integer' }, hit_rate: nullable('number') },
              },
              { type: 'null' },
            ],
            description: 'Requests this process placed here by prefix affinity: on their home replica, or spilled from a full one; null when none.',
          },
          max_concurrency: nullable('integer'),
          concurrency_limit: nullable('integer'),
          in_flight: { type: 'integer' },
          queued: { type: 'integer' },
          paused_until: nullable('integer'),
          limit_reason: nullable('string'),
          limit_changed_at: nullable('integer'),
          health: {
            anyOf: [
              {
                type: 'object',
                required: ['up', 'down_since', 'reason', 'ejections'],
                properties: { up: { type: 'boolean' }, down_since: nullable('integer'), reason: nullable('string'), ejections: { type: 'integer' } },
              },
              { type: 'null' },
            ],
            description:
              'Reachability: down (ejected) after a few connection failures in a row, or for a replica of a pool 5xx answers or timeouts too (its lines go to the other replicas, or wait); up again once a probe gets an answer below 500.',
          },
          engine: {
            anyOf: [
              {
                type: 'object',
                properties: {
                  kind: { type: 'string' },
                  slots: nullable('integer'),
                  running: nullable('number'),
                  waiting: nullable('number'),
                  kv_cache_usage: nullable('number'),
                },
              },
              { type: 'null' },
            ],
          },
          pending: { type: 'integer' },
          running: { type: 'integer' },
          recent: outcomeCounts,
        },
      },
    },
    models: {
      type: 'array',
      items: {
        type: 'object',
        required: ['model', 'upstream'],
        properties: {
          model: { type: 'string' },
          upstream: nullable('string'),
          replicas: { type: 'array', items: { type: 'string' }, description: 'The replicas that serve the model; empty when nobody does.' },
          pending: { type: 'integer' }, running: { type: 'integer' },
          recent: outcomeCounts,
        },
      },
    },
  },
};

export const COMPONENT_SCHEMAS = {
  ErrorEnvelope: errorEnvelope,
  ...ANTHROPIC_SCHEMAS,
  TogetherFile: togetherFile,
  OpenAIFile: openaiFile,
  TogetherFileList: { type: 'object', required: ['object', 'data'], properties: { object: { const: 'list' }, data: { type: 'array', items: ref('TogetherFile') } } },
  OpenAIFileList: pagedList('OpenAIFile'),
  FileDeleted: {
    type: 'object',
    required: ['id', 'object', 'deleted'],
    properties: { id: { type: 'string' }, object: { const: 'file' }, deleted: { const: true } },
  },
  UploadReceived: {
    type: 'object',
    required: ['id', 'object', 'bytes', 'status'],
    properties: { id: { type: 'string' }, object: { const: 'file' }, bytes: { type: 'integer' }, status: { const: 'processed' } },
  },
  TogetherBatchJob: togetherBatchJob,
  BatchCost: batchCost,
  TogetherBatchCreated: {
    type: 'object',
    required: ['job', 'warning'],
    properties: { job: ref('TogetherBatchJob'), warning: nullable('string') },
  },
  TogetherBatchList: { type: 'array', items: ref('TogetherBatchJob'), description: 'A bare array, newest first (Python v1 cannot read an object here).' },
  OpenAIBatch: openaiBatch,
  OpenAIBatchList: pagedList('OpenAIBatch'),
  CreateBatchRequest: createBatchRequest,
  SignedUploadFields: signedUploadFields,
  MultipartUpload: multipartUpload,
  ChatCompletionRequest: inferenceRequest(['messages'], 'OpenAI chat completion request.'),
  CompletionRequest: inferenceRequest(['prompt'], 'OpenAI (legacy) completion request.'),
  EmbeddingRequest: inferenceRequest(['input'], 'OpenAI embeddings request.'),
  InferenceResponse: inferenceResponse,
  AdminStatus: adminStatus,
  BatchStats: {
    type: 'object',
    required: ['object', 'id', 'started_at', 'bucket_seconds', 'finished', 'latency_ms', 'errors'],
    properties: {
      object: { const: 'batch.stats' },
      id: { type: 'string' },
      started_at: { type: 'integer', description: 'Unix seconds: when the batch started running (or was created).' },
      bucket_seconds: { type: 'number', description: 'Width of each time bucket.' },
      finished: {
        type: 'array',
        description: 'Lines finished per time bucket since started_at (buckets with none are left out).',
        items: {
          type: 'object',
          required: ['offset_seconds', 'succeeded', 'failed'],
          properties: { offset_seconds: { type: 'number' }, succeeded: { type: 'integer' }, failed: { type: 'integer' } },
        },
      },
      latency_ms: {
        type: 'object',
        required: ['bounds', 'counts'],
        description: 'Histogram of the last attempt of each line: counts[i] lines took at most bounds[i] ms (and more than bounds[i-1]); the last count is above every bound.',
        properties: { bounds: { type: 'array', items: { type: 'integer' } }, counts: { type: 'array', items: { type: 'integer' } } },
      },
      errors: { type: 'array', items: { type: 'object', required: ['code', 'count'], properties: { code: { type: 'string' }, count: { type: 'integer' } } } },
    },
  },
  UsageList: {
    type: 'object',
    required: ['object', 'start_date', 'end_date', 'user_id', 'data'],
    properties: {
      object: { const: 'list' },
      start_date: { type: 'string', format: 'date' },
      end_date: { type: 'string', format: 'date' },
      user_id: { type: 'string', description: 'Whose usage: the key\'s user, the user named, or "*" for every user.' },
      data: {
        type: 'array',
        items: {
          type: 'object',
          required: ['object', 'date', 'model', 'requests', 'input_tokens', 'output_tokens', 'total_tokens', 'cost'],
          properties: {
            object: { const: 'usage' },
            date: { type: 'string', format: 'date', description: 'UTC day the lines were recorded.' },
            model: { type: 'string' },
            user_id: { type: 'string', description: 'With group_by=user only.' },
            requests: { type: 'integer', description: 'Batch lines that succeeded.' },
            input_tokens: { type: 'integer' },
            output_tokens: { type: 'integer' },
            total_tokens: { type: 'integer' },
            cost: { $ref: '#/components/schemas/BatchCost' },
          },
        },
      },
    },
  },
  WebhookSecret: {
    type: 'object',
    required: ['object', 'user_id', 'secret', 'created_at'],
    properties: {
      object: { const: 'webhook_secret' },
      user_id: { type: 'string' },
      secret: { type: 'string', description: 'Standard Webhooks form: "whsec_" + base64 of 32 bytes.' },
      created_at: { type: 'integer', description: 'Unix seconds.' },
    },
  },
  Health: { type: 'object', required: ['status'], properties: { status: { const: 'ok' } } },
  Ready: {
    type: 'object',
    required: ['status', 'checks'],
    properties: {
      status: { const: 'ready' },
      checks: { type: 'object', properties: { database: { const: 'ok' }, blob_store: { const: 'ok' }, results: { const: 'ok' } } },
      upstreams: upstreamReachability,
    },
  },
  NotReady: {
    allOf: [ref('ErrorEnvelope')],
    type: 'object',
    required: ['status', 'checks'],
    properties: {
      status: { const: 'unavailable' },
      checks: {
        type: 'object',
        description:
          'Per dependency: "ok", or a short error code (ENOENT, ECONNREFUSED, ETIMEDOUT, ENOSPC, SQLITE_FULL...); the full reason is logged. ' +
          '`results` (processes that run batches): RESULTS_STALLED while results cannot be recorded.',
        properties: { database: { type: 'string' }, blob_store: { type: 'string' }, results: { type: 'string' } },
      },
      upstreams: upstreamReachability,
    },
  },
} as const;

export type ComponentName = keyof typeof COMPONENT_SCHEMAS;

export const schemaRef = (name: ComponentName) => ref(name);
