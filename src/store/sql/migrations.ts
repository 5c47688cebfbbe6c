// One migration set for both dialects, written with Kysely's schema builder in
// portable types only (text, integer, bigint). Adding a migration: append to
// the record below with the next sortable name; never edit a shipped one.
import { PostgresAdapter, sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';

const initial: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('settings')
      .addColumn('key', 'text', (c) => c.primaryKey())
      .addColumn('value', 'text', (c) => c.notNull())
      .execute();

    await db.schema
      .createTable('api_keys')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('user_id', 'text', (c) => c.notNull())
      .addColumn('key_hash', 'text', (c) => c.notNull().unique())
      .addColumn('prefix', 'text', (c) => c.notNull())
      .addColumn('is_admin', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('revoked_at', 'bigint')
      .execute();

    await db.schema
      .createTable('files')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('user_id', 'text', (c) => c.notNull())
      .addColumn('filename', 'text', (c) => c.notNull())
      .addColumn('purpose', 'text', (c) => c.notNull())
      .addColumn('file_type', 'text', (c) => c.notNull())
      .addColumn('status', 'text', (c) => c.notNull())
      .addColumn('bytes', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('line_count', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('sha256', 'text')
      .addColumn('declared_sha256', 'text')
      .addColumn('blob_key', 'text')
      .addColumn('batch_id', 'text')
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('expires_at', 'bigint')
      .execute();
    await db.schema.createIndex('files_user_id').on('files').columns(['user_id', 'id']).execute();
    await db.schema.createIndex('files_user_sha256').on('files').columns(['user_id', 'sha256']).execute();

    await db.schema
      .createTable('batches')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('user_id', 'text', (c) => c.notNull())
      .addColumn('input_file_id', 'text', (c) => c.notNull())
      .addColumn('endpoint', 'text', (c) => c.notNull())
      .addColumn('completion_window', 'text', (c) => c.notNull())
      .addColumn('status', 'text', (c) => c.notNull())
      .addColumn('priority', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('model_id', 'text')
      .addColumn('metadata', 'text')
      .addColumn('file_size_bytes', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('deadline_at', 'bigint', (c) => c.notNull())
      .addColumn('in_progress_at', 'bigint')
      .addColumn('finalizing_at', 'bigint')
      .addColumn('completed_at', 'bigint')
      .addColumn('failed_at', 'bigint')
      .addColumn('expired_at', 'bigint')
      .addColumn('cancelling_at', 'bigint')
      .addColumn('cancelled_at', 'bigint')
      .addColumn('output_file_id', 'text')
      .addColumn('error_file_id', 'text')
      .addColumn('errors', 'text')
      .addColumn('request_total', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('request_completed', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('request_failed', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('input_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('output_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('estimated_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('output_expires_after_seconds', 'bigint')
      .addColumn('lease_owner', 'text')
      .addColumn('lease_expires_at', 'bigint')
      .execute();
    await db.schema.createIndex('batches_user_id').on('batches').columns(['user_id', 'id']).execute();
    await db.schema.createIndex('batches_status').on('batches').columns(['status', 'priority', 'id']).execute();
    await db.schema.createIndex('batches_input_file').on('batches').columns(['input_file_id', 'status']).execute();

    await db.schema
      .createTable('requests')
      .addColumn('batch_id', 'text', (c) => c.notNull())
      .addColumn('line', 'integer', (c) => c.notNull())
      .addColumn('custom_id', 'text', (c) => c.notNull())
      .addColumn('model', 'text', (c) => c.notNull())
      .addColumn('byte_offset', 'bigint', (c) => c.notNull())
      .addColumn('byte_length', 'integer', (c) => c.notNull())
      .addColumn('estimated_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('state', 'text', (c) => c.notNull())
      .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('not_before', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('lease_owner', 'text')
      .addColumn('lease_expires_at', 'bigint')
      .addColumn('response_status', 'integer')
      .addColumn('response_body', 'text')
      .addColumn('error_code', 'text')
      .addColumn('error_message', 'text')
      .addColumn('request_id', 'text')
      .addColumn('input_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('output_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('finished_at', 'bigint')
      .addPrimaryKeyConstraint('requests_pk', ['batch_id', 'line'])
      .execute();
    // No index on custom_id: validation proves uniqueness in one pass, nothing looks a line up by it, and every
    // index is paid on each of a batch's 50,000 inserts (bench: validation is bound by those inserts).
    await db.schema.createIndex('requests_batch_state').on('requests').columns(['batch_id', 'state', 'line']).execute();
    await db.schema.createIndex('requests_model_state').on('requests').columns(['model', 'state']).execute();
  },
  async down(db: Kysely<any>) {
    for (const table of ['requests', 'batches', 'files', 'api_keys', 'settings']) await db.schema.dropTable(table).execute();
  },
};

// The runner's heartbeat renews every lease a worker holds with one UPDATE by
// lease_owner; without this index that statement scans the whole requests
// table, every few seconds, growing with all history.
const sweepIndexes: Migration = {
  async up(db: Kysely<any>) {
    // Partial: only running rows carry a lease, so inserting a batch's pending rows never touches this index.
    await db.schema
      .createIndex('requests_lease_owner')
      .on('requests')
      .column('lease_owner')
      .where(sql.ref('state'), '=', 'running')
      .execute();
    // The retention sweep looks for expired files on every pass.
    await db.schema.createIndex('files_expires_at').on('files').column('expires_at').execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropIndex('files_expires_at').execute();
    await db.schema.dropIndex('requests_lease_owner').execute();
  },
};

// Per-upstream concurrency ceilings shared by every worker process (see
// store/sql/upstream-slots.ts). Slot rows are made on first use, per upstream.
const upstreamSlots: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('upstream_slots')
      .addColumn('upstream', 'text', (c) => c.notNull())
      .addColumn('slot', 'integer', (c) => c.notNull())
      .addColumn('owner', 'text')
      .addColumn('expires_at', 'bigint')
      .addPrimaryKeyConstraint('upstream_slots_pk', ['upstream', 'slot'])
      .execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropTable('upstream_slots').execute();
  },
};

// Webhooks (the outbox of terminal-state events, and what a batch needs to
// fill it: its webhook URL and the dialect its events are written in) and
// retries of failed lines (retry_of links a retry to its original).
const webhooksAndRetries: Migration = {
  async up(db: Kysely<any>) {
    // One column per statement: SQLite's ALTER TABLE adds one column at a time.
    // Batches made before this migration have no recorded dialect; /v1 speaks Together unless told otherwise.
    await db.schema.alterTable('batches').addColumn('dialect', 'text', (c) => c.notNull().defaultTo('together')).execute();
    await db.schema.alterTable('batches').addColumn('webhook_url', 'text').execute();
    await db.schema.alterTable('batches').addColumn('retry_of', 'text').execute();

    await db.schema
      .createTable('webhook_deliveries')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('event_id', 'text', (c) => c.notNull())
      .addColumn('event_type', 'text', (c) => c.notNull())
      .addColumn('batch_id', 'text', (c) => c.notNull())
      .addColumn('user_id', 'text', (c) => c.notNull())
      .addColumn('url', 'text', (c) => c.notNull())
      .addColumn('payload', 'text', (c) => c.notNull())
      .addColumn('state', 'text', (c) => c.notNull())
      .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('next_attempt_at', 'bigint', (c) => c.notNull())
      .addColumn('lease_owner', 'text')
      .addColumn('lease_expires_at', 'bigint')
      .addColumn('last_status', 'integer')
      .addColumn('last_error', 'text')
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('delivered_at', 'bigint')
      .execute();
    // A batch turns terminal once, so one delivery per URL: a second enqueue (a replayed step) is a no-op.
    await db.schema.createIndex('webhook_deliveries_batch_url').on('webhook_deliveries').columns(['batch_id', 'url']).unique().execute();
    // The delivery sweep's scan: due pending rows. Partial, so delivered history never weighs on it.
    await db.schema
      .createIndex('webhook_deliveries_due')
      .on('webhook_deliveries')
      .column('next_attempt_at')
      .where(sql.ref('state'), '=', 'pending')
      .execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropTable('webhook_deliveries').execute();
    for (const column of ['retry_of', 'webhook_url', 'dialect']) await db.schema.alterTable('batches').dropColumn(column).execute();
  },
};

// The claim's scan for due lines, on PostgreSQL. Its planner answers
// "state = 'pending' ORDER BY line LIMIT 64" with a walk of the primary key
// filtering on state, because right after validation the statistics say every
// row is pending; lines are claimed in order, so each claim then steps over
// every line claimed before it (bench --only scale: 5 ms a claim halfway
// through 20,000 lines). A partial index holding only pending lines is the
// plan it picks instead, and its scan starts at the first due line. SQLite's
// planner already uses requests_batch_state for this, and every index costs
// validation an insert per line there, so SQLite does without.
const pendingClaimIndex: Migration = {
  async up(db: Kysely<any>) {
    if (!(db.getExecutor().adapter instanceof PostgresAdapter)) return;
    await db.schema
      .createIndex('requests_pending')
      .on('requests')
      .columns(['batch_id', 'line'])
      .where(sql.ref('state'), '=', 'pending')
      .execute();
  },
  async down(db: Kysely<any>) {
    if (!(db.getExecutor().adapter instanceof PostgresAdapter)) return;
    await db.schema.dropIndex('requests_pending').execute();
  },
};

// One webhook signing secret per user, so that a user who holds the secret to
// verify their own events cannot sign events that another user's receiver
// would accept. Made on first use (a delivery, or the user reading it).
const webhookSecrets: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('webhook_secrets')
      .addColumn('user_id', 'text', (c) => c.primaryKey())
      .addColumn('secret', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropTable('webhook_secrets').execute();
  },
};

// One row per live Spool process (serve or worker), beaten every second, so a
// process that dies is noticed in seconds and its leases and ceiling slots go
// to the others, instead of after a whole lease (runtime/liveness.ts).
const workers: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('workers')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('host', 'text', (c) => c.notNull())
      .addColumn('pid', 'integer', (c) => c.notNull())
      .addColumn('role', 'text', (c) => c.notNull())
      .addColumn('started_at', 'bigint', (c) => c.notNull())
      .addColumn('heartbeat_at', 'bigint', (c) => c.notNull())
      .addColumn('lock_key', 'integer')
      .execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropTable('workers').execute();
  },
};

// Cost and usage: each batch's cost so far (in billionths of its currency, summed from its recorded lines'
// usage in the transactions that record them), and usage per user, day and model, kept apart from request rows
// so it outlives their retention. One counter row per writing process (shard), so workers never queue on one row.
const usage: Migration = {
  async up(db: Kysely<any>) {
    await db.schema.alterTable('batches').addColumn('cost_nanos', 'bigint', (c) => c.notNull().defaultTo(0)).execute();
    await db.schema.alterTable('batches').addColumn('cost_currency', 'text', (c) => c.notNull().defaultTo('USD')).execute();
    await db.schema
      .createTable('usage_counters')
      .addColumn('user_id', 'text', (c) => c.notNull())
      .addColumn('day', 'text', (c) => c.notNull())
      .addColumn('model', 'text', (c) => c.notNull())
      .addColumn('shard', 'text', (c) => c.notNull())
      .addColumn('currency', 'text', (c) => c.notNull())
      .addColumn('requests', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('input_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('output_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('cost_nanos', 'bigint', (c) => c.notNull().defaultTo(0))
      .addPrimaryKeyConstraint('usage_counters_pk', ['user_id', 'day', 'model', 'shard', 'currency'])
      .execute();
    await db.schema.createIndex('usage_counters_day').on('usage_counters').columns(['day', 'user_id']).execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropTable('usage_counters').execute();
    await db.schema.alterTable('batches').dropColumn('cost_currency').execute();
    await db.schema.alterTable('batches').dropColumn('cost_nanos').execute();
  },
};

// A batch's estimated cost (from validation's per-line estimate), so monthly budgets can count what running
// batches have yet to spend.
const estimatedCost: Migration = {
  async up(db: Kysely<any>) {
    await db.schema.alterTable('batches').addColumn('estimated_cost_nanos', 'bigint', (c) => c.notNull().defaultTo(0)).execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.alterTable('batches').dropColumn('estimated_cost_nanos').execute();
  },
};

// How long each line's last attempt took upstream (ms), for the dashboard's latency distribution.
const requestLatency: Migration = {
  async up(db: Kysely<any>) {
    await db.schema.alterTable('requests').addColumn('latency_ms', 'integer').execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.alterTable('requests').dropColumn('latency_ms').execute();
  },
};

// Anthropic's Message Batches list shows only the batches created in that dialect: a user's newest ones of a
// dialect are found by index, however many batches of the other dialects they have.
const batchesByDialect: Migration = {
  async up(db: Kysely<any>) {
    await db.schema.createIndex('batches_user_dialect').on('batches').columns(['user_id', 'dialect', 'id']).execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropIndex('batches_user_dialect').execute();
  },
};

// Data plane v2: chunks of lines are claimed instead of lines, and results are blob segments recorded on their
// chunk (schema.ts ChunksTable, SegmentsTable). The requests table stays for batches of the per-line design until
// batches/upgrade-v1.ts has moved them over (at start-up).
const chunksAndSegments: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('chunks')
      .addColumn('batch_id', 'text', (c) => c.notNull())
      .addColumn('chunk', 'integer', (c) => c.notNull())
      .addColumn('line_start', 'integer', (c) => c.notNull())
      .addColumn('line_count', 'integer', (c) => c.notNull())
      .addColumn('byte_start', 'bigint', (c) => c.notNull())
      .addColumn('byte_end', 'bigint', (c) => c.notNull())
      .addColumn('models', 'text', (c) => c.notNull())
      .addColumn('estimated_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('state', 'text', (c) => c.notNull())
      .addColumn('claims', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('lease_owner', 'text')
      .addColumn('lease_expires_at', 'bigint')
      .addColumn('segments', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('succeeded', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('failed', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('input_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('output_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('cost_nanos', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('finished_at', 'bigint')
      .addPrimaryKeyConstraint('chunks_pk', ['batch_id', 'chunk'])
      .execute();
    // Claims walk a batch's chunks in one state in order; the heartbeat and the reaper find a worker's by owner.
    await db.schema.createIndex('chunks_batch_state').on('chunks').columns(['batch_id', 'state', 'chunk']).execute();
    await db.schema.createIndex('chunks_lease_owner').on('chunks').column('lease_owner').where(sql.ref('state'), '=', 'running').execute();
    await db.schema
      .createTable('segments')
      .addColumn('batch_id', 'text', (c) => c.notNull())
      .addColumn('chunk', 'integer', (c) => c.notNull())
      .addColumn('seq', 'integer', (c) => c.notNull())
      .addColumn('blob_key', 'text')
      .addColumn('output_bytes', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('error_bytes', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('output_lines', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('error_lines', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('done_bits', 'text', (c) => c.notNull())
      .addColumn('failed_bits', 'text', (c) => c.notNull())
      .addColumn('stats', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('segments_pk', ['batch_id', 'chunk', 'seq'])
      .execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropTable('segments').execute();
    await db.schema.dropTable('chunks').execute();
  },
};

export const migrations: Record<string, Migration> = {
  '0001_initial': initial,
  '0002_sweep_indexes': sweepIndexes,
  '0003_upstream_slots': upstreamSlots,
  '0004_webhooks_and_retries': webhooksAndRetries,
  '0005_pending_claim_index': pendingClaimIndex,
  '0006_webhook_secrets': webhookSecrets,
  '0007_workers': workers,
  '0008_usage': usage,
  '0009_estimated_cost': estimatedCost,
  '0010_request_latency': requestLatency,
  '0011_batches_by_dialect': batchesByDialect,
  '0012_chunks_and_segments': chunksAndSegments,
};

export const migrationProvider: MigrationProvider = {
  getMigrations: async () => migrations,
};
