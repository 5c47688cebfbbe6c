// Row types for every table. Timestamps are integer milliseconds since the
// epoch in both dialects (bigint in PostgreSQL, parsed back to number), so no
// layer above store/ ever meets a dialect-specific date type.
import type { ColumnType, Generated, Insertable, Selectable, Updateable } from 'kysely';

export type FileStatus = 'awaiting_upload' | 'uploading' | 'processed';
/** Internal purposes; api/ maps them to each dialect's names. */
export type FilePurpose = 'batch' | 'batch_output' | 'fine-tune' | 'eval' | 'eval-output';

export type BatchStatus =
  | 'validating'
  | 'failed'
  | 'in_progress'
  | 'finalizing'
  | 'completed'
  | 'expired'
  | 'cancelling'
  | 'cancelled';

export const OPEN_BATCH_STATUSES: readonly BatchStatus[] = ['validating', 'in_progress', 'finalizing', 'cancelling'];
export const TERMINAL_BATCH_STATUSES: readonly BatchStatus[] = ['failed', 'completed', 'expired', 'cancelled'];

export type RequestState = 'pending' | 'running' | 'succeeded' | 'failed';

export interface SettingsTable {
  key: string;
  value: string;
}

export interface ApiKeysTable {
  id: string;
  user_id: string;
  /** sha256 hex of the key; keys are 192-bit random, so a fast hash is enough. */
  key_hash: string;
  /** First characters of the key, to tell keys apart in listings. */
  prefix: string;
  is_admin: number;
  created_at: number;
  revoked_at: number | null;
}

export interface FilesTable {
  id: string;
  user_id: string;
  filename: string;
  purpose: FilePurpose;
  file_type: string;
  status: FileStatus;
  bytes: number;
  line_count: number;
  sha256: string | null;
  /** sha256 a Together v2 client declared before uploading; checked on PUT. */
  declared_sha256: string | null;
  blob_key: string | null;
  /** The batch that produced this file (output and error files). */
  batch_id: string | null;
  created_at: number;
  expires_at: number | null;
}

export interface BatchValidationError {
  code: string;
  message: string;
  line: number | null;
  param: string | null;
}

export interface BatchesTable {
  id: string;
  user_id: string;
  input_file_id: string;
  endpoint: string;
  completion_window: string;
  status: BatchStatus;
  priority: number;
  model_id: string | null;
  /** JSON object or null. */
  metadata: string | null;
  file_size_bytes: number;
  created_at: number;
  deadline_at: number;
  in_progress_at: number | null;
  finalizing_at: number | null;
  completed_at: number | null;
  failed_at: number | null;
  expired_at: number | null;
  cancelling_at: number | null;
  cancelled_at: number | null;
  output_file_id: string | null;
  error_file_id: string | null;
  /** JSON array of BatchValidationError, or null. */
  errors: string | null;
  request_total: number;
  request_completed: number;
  request_failed: number;
  input_tokens: number;
  output_tokens: number;
  estimated_tokens: number;
  output_expires_after_seconds: number | null;
  /** A process holding the batch for validation or finalization. */
  lease_owner: string | null;
  lease_expires_at: number | null;
  /** The wire dialect the batch was created in; its webhook events carry the batch object in that dialect. */
  dialect: Generated<WireDialect>;
  /** Where this batch's terminal-state webhook goes (OpenAI `metadata.webhook_url`, Together `webhook_url`). */
  webhook_url: string | null;
  /** The batch whose failed lines this batch retries (POST /batches/{id}/retry). */
  retry_of: string | null;
  /** Cost so far, in billionths of cost_currency: its recorded lines' usage at the prices when each was recorded. */
  cost_nanos: Generated<number>;
  cost_currency: Generated<string>;
  /** Validation's estimate of the batch's cost (prompt bytes / 4 and max_tokens at the prices), billionths. */
  estimated_cost_nanos: Generated<number>;
}

/** Stored on batches so that background work can answer in the dialect a batch was created in. */
export type WireDialect = 'together' | 'openai' | 'anthropic';

export type WebhookEventType = 'batch.completed' | 'batch.failed' | 'batch.expired' | 'batch.cancelled';
/** pending: to be (re)sent at next_attempt_at; delivered: a 2xx came back; failed: given up. */
export type WebhookDeliveryState = 'pending' | 'delivered' | 'failed';

/**
 * The webhook outbox: one row per (batch, URL), written in the transaction
 * that makes the batch terminal, so an event can never be lost between the
 * state change and its delivery. The payload is fixed at that moment, so every
 * retry sends the same bytes under the same webhook-id.
 */
export interface WebhookDeliveriesTable {
  id: string;
  /** The event id: the `id` of the payload and the webhook-id header; shared by the deliveries of one event. */
  event_id: string;
  event_type: WebhookEventType;
  batch_id: string;
  user_id: string;
  url: string;
  /** The JSON body sent, byte for byte, on every attempt. */
  payload: string;
  state: WebhookDeliveryState;
  /** Attempts started (counted when claimed, like request attempts). */
  attempts: number;
  next_attempt_at: number;
  lease_owner: string | null;
  lease_expires_at: number | null;
  /** HTTP status of the last attempt, null when it got no answer. */
  last_status: number | null;
  /** Why the last attempt failed (network error, timeout, refused address, HTTP status). */
  last_error: string | null;
  created_at: number;
  delivered_at: number | null;
}

/** A user's webhook signing secret ("whsec_" + base64 of 32 random bytes). */
export interface WebhookSecretsTable {
  user_id: string;
  secret: string;
  created_at: number;
}

/**
 * A live Spool process. Its id is the owner written on every lease it takes
 * (requests, batches, webhook deliveries, upstream slots), so when it is found
 * dead every one of them can be handed back at once.
 */
export interface WorkersTable {
  id: string;
  /** The host name and PID namespace the pid belongs to: another process there can tell whether it still runs. */
  host: string;
  pid: number;
  /** 'serve' or 'worker'. */
  role: string;
  started_at: number;
  /** Written by the process on its own clock; other processes only watch it change, so clock skew does not matter. */
  heartbeat_at: number;
  /** PostgreSQL: the advisory lock its liveness session holds (released by the server the moment that session dies). */
  lock_key: number | null;
}

export interface RequestsTable {
  batch_id: string;
  /** 1-based line number in the input file. */
  line: number;
  custom_id: string;
  model: string;
  byte_offset: number;
  byte_length: number;
  estimated_tokens: number;
  state: RequestState;
  attempts: number;
  /** Earliest time the request may be (re)tried, ms. */
  not_before: number;
  lease_owner: string | null;
  lease_expires_at: number | null;
  response_status: number | null;
  /** How long the last attempt's exchange with the upstream took, ms; null for lines that never reached one. */
  latency_ms: Generated<number | null>;
  /** JSON text of the upstream response body (success) or error body. */
  response_body: string | null;
  error_code: string | null;
  error_message: string | null;
  request_id: string | null;
  input_tokens: number;
  output_tokens: number;
  finished_at: number | null;
}

export type ChunkState = 'pending' | 'running' | 'done' | 'closed';

/**
 * A run of consecutive input lines: the unit a worker claims (data plane v2).
 * Validation writes one per CHUNK_MAX_LINES lines (or CHUNK_MAX_BYTES of
 * input); the runner takes it under a lease, runs its lines and commits their
 * results as segments. Its counters are this chunk's share of the batch's
 * progress, summed on read, so no row is updated by every worker.
 *
 *   pending ──claim──► running ──last segment commit──► done
 *      ▲                 │ │
 *      └──release/lapse──┘ └──cancel or expiry (sweeps)──► closed
 */
export interface ChunksTable {
  batch_id: string;
  /** 0-based position in the input. */
  chunk: number;
  /** 1-based input line number of its first line. */
  line_start: number;
  line_count: number;
  /** Byte range [byte_start, byte_end) of the input file. */
  byte_start: number;
  byte_end: number;
  /** JSON object: model -> [lines, estimated tokens]. */
  models: string;
  estimated_tokens: number;
  state: ChunkState;
  /** How many times it has been claimed: a chunk whose workers keep dying gives up after worker.maxAttempts claims. */
  claims: number;
  lease_owner: string | null;
  lease_expires_at: number | null;
  /** Committed segments so far (the next one's seq). */
  segments: number;
  succeeded: number;
  failed: number;
  input_tokens: number;
  output_tokens: number;
  cost_nanos: number;
  finished_at: number | null;
}

/**
 * A committed result segment: lines of one chunk, already in their final wire
 * shape, in a blob (output lines, then error lines). The bitmaps say which of
 * the chunk's lines it holds, so a reclaimed chunk skips them, and which of
 * those failed, so a retry takes them. No request or response content here.
 */
export interface SegmentsTable {
  batch_id: string;
  chunk: number;
  seq: number;
  /** Null once finalization has copied it into the batch's files and deleted it. */
  blob_key: string | null;
  output_bytes: number;
  error_bytes: number;
  output_lines: number;
  error_lines: number;
  /** Hex bitmaps over the chunk's lines (bit i: line line_start + i). */
  done_bits: string;
  failed_bits: string;
  /** JSON: {latency: counts per LATENCY_BOUNDS_MS bucket, errors: {code: n}, models: {model: [ok, failed, retries]}}. */
  stats: string;
  created_at: number;
}

/**
 * The global concurrency ceiling of an upstream, as one row per slot: a
 * worker may have as many requests in flight to the upstream as it holds
 * slots, so all workers together never exceed the ceiling.
 */
export interface UpstreamSlotsTable {
  upstream: string;
  /** 0-based; slots at or above an upstream's configured ceiling are never handed out. */
  slot: number;
  owner: string | null;
  expires_at: number | null;
}

export interface Database {
  settings: SettingsTable;
  upstream_slots: UpstreamSlotsTable;
  api_keys: ApiKeysTable;
  files: FilesTable;
  batches: BatchesTable;
  requests: RequestsTable;
  chunks: ChunksTable;
  segments: SegmentsTable;
  webhook_deliveries: WebhookDeliveriesTable;
  webhook_secrets: WebhookSecretsTable;
  workers: WorkersTable;
  usage_counters: UsageCountersTable;
}

/** Recorded usage per user, UTC day ("2026-12-04") and model; one row per writing process (shard), summed when read. */
export interface UsageCountersTable {
  user_id: string;
  day: string;
  model: string;
  shard: string;
  currency: string;
  requests: number;
  input_tokens: number;
  output_tokens: number;
  cost_nanos: number;
}

export type ApiKeyRow = Selectable<ApiKeysTable>;
export type FileRow = Selectable<FilesTable>;
export type NewFile = Insertable<FilesTable>;
export type FileUpdate = Updateable<FilesTable>;
export type BatchRow = Selectable<BatchesTable>;
export type NewBatch = Insertable<BatchesTable>;
export type BatchUpdate = Updateable<BatchesTable>;
export type RequestRow = Selectable<RequestsTable>;
export type ChunkRow = Selectable<ChunksTable>;
export type NewChunk = Insertable<ChunksTable>;
export type SegmentRow = Selectable<SegmentsTable>;
export type NewRequest = Insertable<RequestsTable>;
export type WebhookDeliveryRow = Selectable<WebhookDeliveriesTable>;
export type NewWebhookDelivery = Insertable<WebhookDeliveriesTable>;

// Kysely wants these imported even when only used in generics above.
export type { ColumnType, Generated };
