// What each route does, in OpenAPI terms, keyed by method and path as the
// route is registered: dialect routes without their /v1 or /openai/v1 prefix
// (one entry documents both mounts), every other route by its full path.
// The document is generated from the routes Fastify actually has; this table
// only adds words and shapes, per dialect where the two differ. It stays out
// of the route options on purpose: a Fastify `schema.body` or
// `schema.response` would start validating and re-serializing, and change the
// answers CONTRACT.md fixes.
import type { Dialect } from '../dialect.ts';
import { schemaRef, type ComponentName } from './schemas.ts';
import { ANTHROPIC_OPERATIONS } from './anthropic-operations.ts';

type Schema = Record<string, unknown>;
type Responses = Record<string, Schema>;

export interface OperationDoc {
  summary: string;
  description?: string;
  /** Grouping in the document; API routes also get their dialect's tag. */
  tag: 'files' | 'batches' | 'inference' | 'webhooks' | 'usage' | 'operations' | 'anthropic';
  /** Unique per dialect; API routes get "together_" or "openai_" in front. */
  operationId: string;
  querystring?: Schema;
  headers?: Schema;
  /** Request body media types and their schemas. */
  body?: Record<string, Schema>;
  /** Keyed by HTTP status; a function when the dialects answer differently. */
  responses: Responses | ((dialect: Dialect) => Responses);
  /** No bearer key: the operational endpoints and the signed-URL upload. */
  public?: boolean;
}

const json = (description: string, name: ComponentName): Schema => ({ description, content: { 'application/json': { schema: schemaRef(name) } } });
const error = (description: string): Schema => json(description, 'ErrorEnvelope');
const fileOf = (dialect: Dialect): ComponentName => (dialect === 'openai' ? 'OpenAIFile' : 'TogetherFile');
const batchOf = (dialect: Dialect): ComponentName => (dialect === 'openai' ? 'OpenAIBatch' : 'TogetherBatchJob');

const NOT_FOUND = error('No such object for this API key.');
const BAD_REQUEST = error('A field is missing or invalid; `error.param` names it.');

/** Query of GET /files and GET /batches on the OpenAI side. */
const paging = (maxLimit: number, fallback: number): Schema => ({
  type: 'object',
  properties: {
    limit: { type: 'integer', minimum: 1, maximum: maxLimit, default: fallback },
    after: { type: 'string', description: 'The last id of the previous page.' },
  },
});

export const OPERATIONS: Record<string, OperationDoc> = {
  // ---------------------------------------------------------------- files
  'POST /files': {
    tag: 'files',
    operationId: 'uploadFile',
    summary: 'Upload a file',
    description: [
      'Four body shapes (CONTRACT.md). Multipart with a `file` part stores the bytes and answers the file object.',
      'Together clients that send only the fields (form-urlencoded, in the body and/or the query string, or multipart without a file part) get a',
      '`302` to a signed upload URL (`PUT` the bytes there, no API key) and the new id in `X-Together-File-Id`.',
      'The OpenAI dialect never answers 302: a multipart `file` part is required.',
    ].join(' '),
    querystring: { type: 'object', properties: { purpose: { type: 'string' }, file_name: { type: 'string' }, file_type: { type: 'string' } } },
    body: {
      'multipart/form-data': schemaRef('MultipartUpload'),
      'application/x-www-form-urlencoded': schemaRef('SignedUploadFields'),
    },
    responses: (dialect) => ({
      200: json('The stored file.', fileOf(dialect)),
      ...(dialect === 'together'
        ? {
            302: {
              description: 'Fields only (Together): PUT the bytes to the signed Location URL, which expires and works once.',
              headers: {
                Location: { type: 'string', format: 'uri', description: 'The signed upload URL (PUT /uploads/{id}).' },
                'X-Together-File-Id': { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' },
              },
              content: { 'application/json': { schema: schemaRef('TogetherFile') } },
            },
            409: error('Python v2 `checksum` matched an earlier upload: top-level `file_id` names it (sent with x-should-retry: false).'),
          }
        : {}),
      400: BAD_REQUEST,
      413: error('The file is larger than limits.maxFileBytes.'),
    }),
  },
  'POST /files/upload': {
    tag: 'files',
    operationId: 'uploadFileMultipart',
    summary: 'Upload a file (multipart, Together published spec)',
    body: { 'multipart/form-data': schemaRef('MultipartUpload') },
    responses: (dialect) => ({ 200: json('The stored file.', fileOf(dialect)), 400: BAD_REQUEST, 413: error('The file is larger than limits.maxFileBytes.') }),
  },
  'GET /files': {
    tag: 'files',
    operationId: 'listFiles',
    summary: "List the key's files",
    querystring: {
      type: 'object',
      properties: {
        ...(paging(10_000, 10_000).properties as Schema),
        order: { enum: ['asc', 'desc'], default: 'desc' },
        purpose: { type: 'string', description: 'Only files of this purpose.' },
      },
    },
    responses: (dialect) => ({ 200: json('Newest first unless `order=asc`.', dialect === 'openai' ? 'OpenAIFileList' : 'TogetherFileList'), 400: BAD_REQUEST }),
  },
  'GET /files/:id': {
    tag: 'files',
    operationId: 'getFile',
    summary: 'Retrieve a file',
    responses: (dialect) => ({ 200: json('The file object.', fileOf(dialect)), 404: NOT_FOUND }),
  },
  'DELETE /files/:id': {
    tag: 'files',
    operationId: 'deleteFile',
    summary: 'Delete a file and its bytes',
    responses: {
      200: json('Deleted (an object, not 204).', 'FileDeleted'),
      404: NOT_FOUND,
      409: error('The file is the input of a batch that is still running.'),
    },
  },
  'POST /files/:id/preprocess': {
    tag: 'files',
    operationId: 'preprocessFile',
    summary: 'Mark an uploaded file ready (Together Python SDKs)',
    description: 'Called after the signed-URL PUT with an empty body (an empty application/json body is accepted). Safe to call more than once.',
    responses: (dialect) => ({ 200: json('The file object.', fileOf(dialect)), 400: error('The bytes have not been uploaded yet.'), 404: NOT_FOUND }),
  },
  'GET /files/:id/content': {
    tag: 'files',
    operationId: 'getFileContent',
    summary: "Download a file's bytes",
    description: 'Always raw bytes, whatever the Accept header says. `Range: bytes=N-` and `bytes=N-M` are honoured (Python v2 resumes downloads).',
    headers: { type: 'object', properties: { range: { type: 'string', examples: ['bytes=1024-'] } } },
    responses: {
      200: {
        description: 'The whole file, with Content-Length.',
        content: { 'application/octet-stream': { schema: { type: 'string', contentMediaType: 'application/octet-stream' } } },
      },
      206: {
        description: 'The requested range, with Content-Range.',
        headers: { 'Content-Range': { type: 'string', examples: ['bytes 1024-2047/4096'] } },
        content: { 'application/octet-stream': { schema: { type: 'string', contentMediaType: 'application/octet-stream' } } },
      },
      404: NOT_FOUND,
      416: error('The range starts at or past the end of the file.'),
    },
  },

  // ---------------------------------------------------------------- batches
  'POST /batches': {
    tag: 'batches',
    operationId: 'createBatch',
    summary: 'Create a batch',
    description: 'Validation runs in the background: the batch starts VALIDATING and fails with line-numbered errors if the file is not valid batch input.',
    body: { 'application/json': schemaRef('CreateBatchRequest') },
    responses: (dialect) => ({
      ...(dialect === 'openai' ? { 200: json('The new batch.', 'OpenAIBatch') } : { 201: json('The new batch job and a warning (always null).', 'TogetherBatchCreated') }),
      400: BAD_REQUEST,
      404: error('No such input file for this API key.'),
      429: error("The user's enqueued-token limit for the model is reached; retry once the user's running batches finish."),
    }),
  },
  'GET /batches': {
    tag: 'batches',
    operationId: 'listBatches',
    summary: "List the key's batches",
    description:
      'Together: a bare array of the newest 1000. OpenAI: pages of `limit` (default 20), continued with `after`. Admin keys may add `user_id` (one user\'s batches, or `*` for everyone\'s).',
    querystring: {
      type: 'object',
      properties: {
        ...(paging(100, 20).properties as Schema),
        user_id: { type: 'string', description: 'Admin keys only: list this user\'s batches, or everyone\'s with "*".' },
      },
    },
    responses: (dialect) => ({
      200: dialect === 'openai' ? json('One page, newest first.', 'OpenAIBatchList') : json('Newest first.', 'TogetherBatchList'),
      400: BAD_REQUEST,
      403: error('`user_id` was given with a key that is not an admin key.'),
    }),
  },
  'GET /batches/:id': {
    tag: 'batches',
    operationId: 'getBatch',
    summary: 'Retrieve a batch',
    responses: (dialect) => ({ 200: json('The batch.', batchOf(dialect)), 404: NOT_FOUND }),
  },
  'POST /batches/:id/cancel': {
    tag: 'batches',
    operationId: 'cancelBatch',
    summary: 'Cancel a batch',
    description: 'Empty body. The batch goes CANCELING / cancelling, then CANCELLED / cancelled with the partial results and a batch_cancelled error line per unfinished line.',
    responses: (dialect) => ({ 200: json('The batch.', batchOf(dialect)), 404: NOT_FOUND, 409: error('The batch is already in a final state.') }),
  },
  'POST /batches/:id/retry': {
    tag: 'batches',
    operationId: 'retryBatch',
    summary: "Retry a finished batch's failed lines",
    description:
      "Empty body. A new batch made of the failed lines only (batch_cancelled and batch_expired lines included), with the original's endpoint, window, priority, model, metadata and webhook, linked back to it. Answered like a create.",
    responses: (dialect) => ({
      ...(dialect === 'openai' ? { 200: json('The new batch.', 'OpenAIBatch') } : { 201: json('The new batch job and a warning (always null).', 'TogetherBatchCreated') }),
      404: NOT_FOUND,
      409: error('The batch has not finished, has no failed lines, or its input file is gone.'),
    }),
  },

  // ---------------------------------------------------------------- webhooks
  'GET /webhooks/secret': {
    tag: 'webhooks',
    operationId: 'getWebhookSecret',
    summary: "The key's user's webhook signing secret",
    description: "Verify that user's events with it (Standard Webhooks). Made on first read. Admin keys may name another user with `user_id`.",
    querystring: webhookSecretQuery(),
    responses: { 200: json('The secret.', 'WebhookSecret'), 403: error('`user_id` names another user and the key is not an admin key.') },
  },
  'POST /webhooks/secret/rotate': {
    tag: 'webhooks',
    operationId: 'rotateWebhookSecret',
    summary: "Replace the user's webhook signing secret",
    description: "Events sent from now on are signed with the new secret; other users' secrets are untouched. Admin keys may name another user with `user_id`.",
    querystring: webhookSecretQuery(),
    responses: { 200: json('The new secret.', 'WebhookSecret'), 403: error('`user_id` names another user and the key is not an admin key.') },
  },

  'GET /batches/:id/results': {
    tag: 'batches',
    operationId: 'getBatchResults',
    summary: 'The output (or error) lines so far',
    description:
      'A Spool extension. While the batch runs: the output lines recorded until now, in line order (`errors=true`: the error lines), each once; once it has ended: its output (error) file, byte for byte. `x-spool-results-complete` says which; `x-spool-batch-status` is the batch status when the stream began.',
    querystring: { type: 'object', properties: { errors: { type: 'boolean', default: false, description: 'The error lines instead of the output lines.' } } },
    responses: {
      200: {
        description: 'JSONL, in the output (error) file format.',
        headers: {
          'x-spool-results-complete': { schema: { enum: ['true', 'false'] }, description: 'true: the batch has ended and this is its whole file.' },
          'x-spool-batch-status': { schema: { type: 'string' }, description: 'Internal status: validating, in_progress, finalizing, cancelling, completed, failed, expired, cancelled.' },
        },
        content: { 'application/jsonl': { schema: { type: 'string' } } },
      },
      404: NOT_FOUND,
      410: error("The batch has ended and its output and error files expired or were deleted (code results_expired)."),
    },
  },
  'GET /batches/:id/stats': {
    tag: 'batches',
    operationId: 'getBatchStats',
    summary: "A batch's progress over time, latency distribution and errors by code",
    description: 'A Spool extension, drawn by the dashboard. Empty once the batch\'s output and error files are gone.',
    responses: { 200: json('The statistics.', 'BatchStats'), 404: NOT_FOUND },
  },

  // ---------------------------------------------------------------- usage
  'GET /usage': {
    tag: 'usage',
    operationId: 'getUsage',
    summary: 'Tokens, requests and cost by day and model',
    description:
      "The key's user's recorded batch usage per UTC day and model, with its cost at the configured prices (billing.prices). Admin keys may name another user (`user_id`), every user (`user_id=*`) and group by user.",
    querystring: {
      type: 'object',
      properties: {
        start_date: { type: 'string', format: 'date', description: 'First day (UTC), YYYY-MM-DD; default 29 days before end_date.' },
        end_date: { type: 'string', format: 'date', description: 'Last day (UTC), YYYY-MM-DD; default today. At most 400 days in all.' },
        user_id: { type: 'string', description: 'Admin keys only: whose usage, or "*" for every user.' },
        group_by: { enum: ['user'], description: 'Admin keys only: one row per user, day and model.' },
      },
    },
    responses: {
      200: json('Usage rows, oldest day first.', 'UsageList'),
      400: error('A date is not YYYY-MM-DD, the range is reversed or too long, or group_by is not "user".'),
      403: error('`user_id` or `group_by` asks for other users and the key is not an admin key.'),
    },
  },

  // ---------------------------------------------------------------- real-time inference
  'POST /chat/completions': inference('createChatCompletion', 'Chat completion, answered now', 'ChatCompletionRequest'),
  'POST /completions': inference('createCompletion', 'Text completion, answered now', 'CompletionRequest'),
  'POST /embeddings': inference('createEmbedding', 'Embeddings, answered now', 'EmbeddingRequest'),

  // ---------------------------------------------------------------- outside the dialects
  'GET /v1/admin/status': {
    tag: 'operations',
    operationId: 'adminStatus',
    summary: 'Work in flight, per upstream and model (admin keys)',
    description:
      "What the dashboard's operations panel shows: this process's adaptive concurrency per upstream, the queue in the database, and how recent requests ended. Admin keys only.",
    responses: {
      200: json('The status.', 'AdminStatus'),
      401: error('No API key, or an unknown or revoked one.'),
      403: error('The key is not an admin key.'),
    },
  },
  'PUT /uploads/:id': {
    tag: 'files',
    operationId: 'putSignedUpload',
    summary: 'Upload the bytes of a signed upload (Together)',
    description: 'The Location of a 302 from POST /files. The URL carries its own credential; no API key. Any Content-Type; the body is the raw file.',
    public: true,
    querystring: {
      type: 'object',
      required: ['expires', 'signature'],
      properties: { expires: { type: 'string', description: 'Unix seconds.' }, signature: { type: 'string', description: 'HMAC-SHA256 of the file id and expiry.' } },
    },
    body: { 'application/octet-stream': { type: 'string', contentMediaType: 'application/octet-stream' } },
    responses: {
      200: json('Stored (the SDKs require exactly 200).', 'UploadReceived'),
      403: error('The signature is invalid or the URL has expired.'),
      409: error('The URL has already been used.'),
      413: error('The file is larger than limits.maxFileBytes.'),
    },
  },
  'GET /healthz': {
    tag: 'operations',
    operationId: 'healthz',
    summary: 'Liveness: the process serves HTTP',
    public: true,
    responses: { 200: json('Always, while serving.', 'Health') },
  },
  'GET /readyz': {
    tag: 'operations',
    operationId: 'readyz',
    summary: 'Readiness: the database and the blob store answer and have space; this process can record results',
    description:
      'Each check has 5 s. A part that ran out of space is written to again before it counts as ready. A failing check is logged with its full reason; the answer names it and a short error code.',
    public: true,
    responses: { 200: json('Ready.', 'Ready'), 503: json('Not ready, or shutting down.', 'NotReady') },
  },
  'GET /metrics': {
    tag: 'operations',
    operationId: 'metrics',
    summary: 'Prometheus metrics',
    description: 'Prometheus text format (0.0.4). Open by default; with `metrics.auth: admin` it needs an admin API key as a bearer token.',
    public: true,
    responses: {
      200: { description: 'The metrics.', content: { 'text/plain': { schema: { type: 'string' } } } },
      401: error('metrics.auth is "admin" and no valid key was sent.'),
      403: error('metrics.auth is "admin" and the key is not an admin key.'),
    },
  },
  'GET /openapi.json': {
    tag: 'operations',
    operationId: 'openapi',
    summary: 'This OpenAPI 3.1 document',
    public: true,
    responses: { 200: { description: 'The document.', content: { 'application/json': { schema: { type: 'object' } } } } },
  },
  ...ANTHROPIC_OPERATIONS,
};

function webhookSecretQuery(): Schema {
  return { type: 'object', properties: { user_id: { type: 'string', description: 'Admin keys only: whose secret.' } } };
}

function inference(operationId: string, summary: string, request: ComponentName): OperationDoc {
  return {
    tag: 'inference',
    operationId,
    summary,
    description:
      'Real-time, not batched: routed by `model` like batch lines. Upstream errors come back with their status in the error envelope; `stream: true` is refused.',
    body: { 'application/json': schemaRef(request) },
    responses: {
      200: json("The model server's answer.", 'InferenceResponse'),
      400: BAD_REQUEST,
      404: error('No upstream, engine model or emulator serves this model.'),
      502: error('The model server could not be reached.'),
      504: error('The model server did not answer in time.'),
    },
  };
}
