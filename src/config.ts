// One schema for every knob Spool has. Values come from, lowest to highest
// precedence: the defaults below, a config file (JSON or YAML), environment
// variables, then command-line flags. Every error names the key at fault.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { allowEntryError } from './net/address-policy.ts';

const MB = 1024 * 1024;

// Upstream and replica names label metrics and key shared ceilings: kept to characters safe everywhere.
const upstreamName = () => z.string().min(1).regex(/^[A-Za-z0-9._-]+$/, 'letters, digits, ".", "_" or "-" only');

const replicaSchema = z
  .object({
    name: upstreamName()
      .optional()
      .describe('Names the replica in metrics and the admin status; default the entry\'s name and its position ("vllm-2"). Unique.'),
    baseUrl: z.string().url().describe('OpenAI-compatible base URL of this replica.'),
    apiKey: z.string().optional().describe('This replica\'s key; default the entry\'s apiKey.'),
    weight: z.number().positive().optional().describe('This replica\'s share among replicas with equal spare capacity; default the entry\'s weight.'),
    maxConcurrency: z.number().int().positive().optional().describe('This replica\'s ceiling; default the entry\'s maxConcurrency.'),
    initialConcurrency: z.number().int().positive().optional().describe('Where this replica\'s adaptive limit starts; default the entry\'s.'),
  })
  .strict();

const upstreamSchema = z
  .object({
    name: upstreamName().describe('Names the upstream in metrics, logs, the admin status and its global ceiling; unique.'),
    baseUrl: z
      .string()
      .url()
      .optional()
      .describe('OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1. Give this or replicas, not both.'),
    replicas: z
      .array(replicaSchema)
      .min(1)
      .optional()
      .describe(
        'Several servers of the same models, as one pool: each line goes to the replica with the most spare ' +
        'capacity (or by prefix affinity), a replica that fails is taken out and its lines go to the others. ' +
        'Each replica has its own adaptive limit and ceiling; unset fields come from this entry.',
      ),
    weight: z.number().positive().default(1).describe('Share of the pool\'s traffic among replicas with equal spare capacity; also the replica\'s share of the affinity ring.'),
    affinity: z
      .enum(['prefix', 'none'])
      .optional()
      .describe(
        '"prefix": lines whose requests share a prefix (system prompt and leading messages, or the leading text ' +
        'of a prompt) go to the same replica while it has room, so its KV cache is reused. Default: "prefix" for ' +
        'a pool of more than one replica.',
      ),
    healthPath: z
      .string()
      .regex(/^\/[^\s]*$/, 'a path starting with "/"')
      .default('/models')
      .describe('What a probe of a replica taken out GETs, relative to its base URL; any answer below 500 puts it back.'),
    sendPriority: z
      .boolean()
      .default(false)
      .describe(
        'Send each batch line\'s priority to the engine as the request\'s "priority" field, negated (vLLM ' +
        'started with --scheduling-policy priority serves lower values first), so batch work can yield to ' +
        'interactive traffic on a shared server.',
      ),
    apiKey: z.string().optional().describe('Sent as "Authorization: Bearer" on every request to this upstream.'),
    models: z
      .union([z.literal('auto'), z.array(z.string().min(1)).min(1)])
      .default(['*'])
      .describe(
        'Exact model names or globs ("*", "llama-*"). Every entry that names a model exactly serves it, as one pool; a glob serves a model no entry names, the first matching glob in order. "auto": the models each replica lists at /v1/models, asked at start and every modelsRefreshSeconds.',
      ),
    modelsRefreshSeconds: z
      .number()
      .positive()
      .optional()
      .describe(
        'With models "auto": how often to ask the server which models it serves; default 300. Also asked at once (at most every 5 s) when a line names a model nobody serves.',
      ),
    maxConcurrency: z.number().int().positive().default(64).describe('Hard ceiling on concurrent requests; adaptive concurrency never exceeds it.'),
    initialConcurrency: z.number().int().positive().optional().describe(
      'Where adaptive concurrency starts. Unset: the engine\'s own slots where it reports them (llama.cpp ' +
      '/props), else 4; from there it moves on throughput and latency (docs/configuration.md, "Adaptive concurrency").',
    ),
    requestsPerMinute: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('A quota: requests per minute to this upstream, as a token bucket that may burst up to a minute\'s worth.'),
    tokensPerMinute: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('A quota: tokens (prompt estimate + max_tokens) per minute to this upstream, as a token bucket.'),
    messagesApi: z.boolean().optional().describe(
      'The server answers Anthropic Messages requests at its own /v1/messages (vLLM, llama.cpp server): Messages ' +
      'lines and real-time Messages requests go there as they are. Unset or false: they are translated to chat completions and back.',
    ),
  })
  .strict()
  .refine((upstream) => (upstream.baseUrl === undefined) !== (upstream.replicas === undefined), 'give baseUrl (one server) or replicas (a pool), not both and not neither');

export type UpstreamConfig = z.infer<typeof upstreamSchema>;

/**
 * The names of an entry's servers, in order: the entry's own for a single server (so a config from before pools
 * keeps its metrics and shared-ceiling rows), else each replica's name or "<entry>-<n>".
 */
export function replicaNamesOf(upstream: Pick<UpstreamConfig, 'name' | 'replicas'>): string[] {
  const replicas = upstream.replicas;
  if (!replicas || replicas.length === 0) return [upstream.name];
  if (replicas.length === 1) return [replicas[0].name ?? upstream.name];
  return replicas.map((replica, index) => replica.name ?? `${upstream.name}-${index + 1}`);
}

const engineModelSchema = z
  .object({
    path: z.string().min(1).describe('A .gguf file the user has; nothing is ever downloaded.'),
    name: z.string().min(1).optional().describe('The model name batch lines use; default the file name without its extension.'),
    contextSize: z.number().int().positive().optional().describe('Tokens of context per sequence; default the model\'s training context, at most 4096.'),
    sequences: z.number().int().positive().max(64).optional().describe('Requests evaluated together in one context (continuous batching); default 4.'),
    threads: z.number().int().nonnegative().optional().describe('CPU threads; default every core but one.'),
  })
  .strict();

/** A whisper.cpp speech-to-text model for /v1/audio/transcriptions and /translations. */
const whisperModelSchema = z
  .object({
    path: z.string().min(1).describe(
      'A whisper.cpp ggml model file (ggml-base.en.bin...) the user has; nothing is ever downloaded.',
    ),
    name: z.string().min(1).optional().describe('The model name audio lines use; default the file name without its extension.'),
    threads: z.number().int().nonnegative().optional().describe('CPU threads per transcription; default every core but one.'),
  })
  .strict();

/** Where file bytes live in the scale-out shape: any S3-compatible store. */
const s3Schema = z
  .object({
    endpoint: z.string().url().optional().describe('Base URL of an S3-compatible store (MinIO, Ceph, R2, ...); unset means AWS S3 itself.'),
    region: z.string().min(1).default('us-east-1').describe('The bucket\'s region; most self-hosted stores accept any.'),
    bucket: z.string().min(1).optional().describe('Required when blobs.kind is "s3".'),
    accessKeyId: z.string().min(1).optional().describe(
      'Both unset: the AWS SDK\'s default credential chain (AWS_* variables, profile, instance role).',
    ),
    secretAccessKey: z.string().min(1).optional().describe('Set together with accessKeyId.'),
    forcePathStyle: z.boolean().optional().describe(
      'Bucket in the path (http://host/bucket/key), as MinIO and most self-hosted stores need. Unset: on ' +
      'when an endpoint is set.',
    ),
    prefix: z.string().default('').describe('Prepended to every object key ("spool/"), so one bucket can serve several deployments.'),
  })
  .strict();

const blobsSchema = z
  .object({
    kind: z.enum(['local', 's3']).default('local').describe(
      '"local": a directory under dataDir (embedded default). "s3": shared by every process of a scale-out ' +
      'deployment.',
    ),
    s3: s3Schema.prefault({}),
  })
  .strict()
  .superRefine((blobs, ctx) => {
    if (blobs.kind !== 's3') return;
    if (!blobs.s3.bucket) ctx.addIssue({ code: 'custom', path: ['s3', 'bucket'], message: 'required when blobs.kind is "s3"' });
    if (!blobs.s3.accessKeyId !== !blobs.s3.secretAccessKey) {
      const missing = blobs.s3.accessKeyId ? 'secretAccessKey' : 'accessKeyId';
      ctx.addIssue({ code: 'custom', path: ['s3', missing], message: 'set accessKeyId and secretAccessKey together, or neither (AWS default credentials)' });
    }
  });

export type BlobsConfig = z.infer<typeof blobsSchema>;

// Stored in its normalized (ASCII) form, whose length is bounded like a batch's webhook_url: the webhook outbox
// indexes (batch, URL), and PostgreSQL refuses an index key over ~2.7 kB, which would fail every finalization.
const httpUrlSchema = z
  .string()
  .url()
  .refine((value) => /^https?:\/\//i.test(value), 'must be an http:// or https:// URL')
  .transform((value) => new URL(value).href)
  .refine((href) => href.length <= 2048, 'must be at most 2048 characters once non-ASCII characters are percent-encoded');

/** Exceptions to an SSRF guard: exact hostnames, "*.suffix" wildcards, IP addresses or CIDRs. */
const allowedHostsSchema = () =>
  z
    .array(
      z.string().superRefine((entry, ctx) => {
        const problem = allowEntryError(entry);
        if (problem) ctx.addIssue({ code: 'custom', message: problem });
      }),
    )
    .default([]);

const webhooksSchema = z
  .object({
    users: z.record(z.string().min(1), httpUrlSchema).default({}).describe(
      'Per-user webhook URL: user id -> URL; every terminal state of that user\'s batches is sent there, ' +
      'besides a batch\'s own webhook_url.',
    ),
    signingSecret: z
      .string()
      .min(16)
      .refine((value) => !value.startsWith('whsec_') || Buffer.from(value.slice(6), 'base64').length >= 16, 'a "whsec_" secret is base64 of at least 16 bytes')
      .optional().describe(
      'Deprecated: one HMAC-SHA256 key for every user\'s events, as before secrets were per user ("whsec_" ' +
      '+ base64 of the key bytes, or any other string as its UTF-8 bytes). Each user\'s events are signed ' +
      'with that user\'s own secret (GET /v1/webhooks/secret); while this is set (or the database holds the ' +
      'one an older Spool generated) and signWithSharedSecret is on, events carry a second signature with ' +
      'it, so receivers set up before the upgrade keep verifying. See docs/operations.md, "Webhooks: migrating to ' +
      'per-user secrets".',
    ),
    signWithSharedSecret: z.boolean().default(true).describe(
      'Also sign with the shared secret of older installs, when there is one. Turn off once every receiver ' +
      'verifies with its user\'s own secret: until then, anyone holding the shared secret can sign events ' +
      'those receivers accept.',
    ),
    maxAttempts: z.number().int().positive().default(10).describe(
      'Attempts per delivery before it is given up; with the default delays, 10 attempts span about 22 ' +
      'hours.',
    ),
    retryBaseDelayMs: z.number().int().positive().default(10_000).describe(
      'Delay before the 2nd attempt; each later delay is 4 times the one before (with +-20% jitter), up to ' +
      'retryMaxDelayMs.',
    ),
    retryMaxDelayMs: z.number().int().positive().default(6 * 3_600_000).describe('The longest delay between two attempts (6 h).'),
    timeoutMs: z.number().int().positive().default(15_000).describe(
      'One attempt\'s limit, connection to last byte of the answer\'s head; past it the attempt counts as ' +
      'failed.',
    ),
    allowPrivateNetworks: z.boolean().default(false).describe(
      'As audio.allowPrivateNetworks, for webhook URLs: by default only public addresses are posted to ' +
      '(SSRF guard).',
    ),
    allowedHosts: allowedHostsSchema().describe('As audio.allowedHosts, for webhook URLs: hostnames, "*.suffix" wildcards, IPs or CIDRs.'),
  })
  .strict();

export type WebhooksConfig = z.infer<typeof webhooksSchema>;

const priceSchema = z
  .object({
    models: z.array(z.string().min(1)).min(1).describe('Exact model names or globs ("*", "llama-*"); the first price whose models match a line\'s model applies.'),
    inputPerMillion: z.number().nonnegative().describe('Price of a million prompt (input) tokens, in billing.currency.'),
    outputPerMillion: z.number().nonnegative().describe('Price of a million completion (output) tokens, in billing.currency.'),
  })
  .strict();

const billingSchema = z
  .object({
    currency: z.string().min(1).max(16).default('USD').describe('What prices and costs are in; shown beside every cost.'),
    batchDiscount: z
      .number()
      .min(0)
      .max(1)
      .default(0)
      .describe('Share taken off the prices for batch lines (0.5: half price, like Together\'s batch discount). Real-time requests are not billed.'),
    prices: z
      .array(priceSchema)
      .default([])
      .describe('Prices per million tokens by model. A line costs its recorded usage at the price of its model when it is recorded; a model no price matches costs nothing.'),
    monthlyBudget: z
      .number()
      .nonnegative()
      .optional()
      .describe(
        'Spend cap per user and calendar month (UTC), in billing.currency. A batch whose estimated cost exceeds what is left is refused (429 at create, or failed at validation); running batches are never cut off. Unset: no cap.',
      ),
    userBudgets: z
      .record(z.string().min(1), z.number().nonnegative())
      .default({})
      .describe('Monthly caps for named users (user id -> amount), over monthlyBudget.'),
  })
  .strict();

export type BillingConfig = z.infer<typeof billingSchema>;

export const configSchema = z
  .object({
    host: z.string().default('127.0.0.1').describe('Address the server listens on; 0.0.0.0 (all) in the Docker image. Loopback by default: nothing off this machine can reach it.'),
    port: z.number().int().min(0).max(65535).default(8080).describe('API port (0: any free port, printed at start-up).'),
    dataDir: z.string().default('./data').describe('SQLite database, local blobs and the first-start admin key copy live here.'),
    publicUrl: z.string().url().optional().describe(
      'Absolute base URL clients reach this server at; used for signed upload URLs. Derived from the ' +
      'request when unset.',
    ),
    databaseUrl: z.string().optional().describe('postgres://... selects PostgreSQL; unset means SQLite in the data dir.'),
    blobs: blobsSchema.prefault({}).describe('Where file bytes live: SPOOL_BLOBS__KIND=s3, SPOOL_BLOBS__S3__BUCKET=...'),
    adminKey: z.string().min(8).optional().describe(
      'A bootstrap admin key, accepted as user "default" (admin) when set (SPOOL_ADMIN_KEY). Not ' +
      'SPOOL_API_KEY: that is the key the `spool` CLI sends as a client, and a shell that exports it for ' +
      'the CLI must not start a server that takes it as its admin key.',
    ),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('Least severe log level written.'),
        format: z
          .enum(['auto', 'pretty', 'json'])
          .default('auto')
          .describe('"pretty": readable lines for people; "json": one JSON object per line, for log collectors; "auto": pretty on a terminal, JSON otherwise.'),
        pretty: z.boolean().optional().describe('Deprecated: log.format. true means "pretty", false "json".'),
      })
      .strict()
      .prefault({}),
    metrics: z
      .object({
        enabled: z.boolean().default(true).describe('false: /metrics answers 404, and nothing is collected.'),
        auth: z.enum(['auto', 'none', 'admin']).default('auto').describe(
          '"admin": an admin API key as "Authorization: Bearer" (Prometheus `authorization`). "none": anyone ' +
          'who reaches the port may scrape (model names and queue depths of every user). "auto" (default): ' +
          '"none" while the server listens on a loopback address only, "admin" otherwise (the Docker image ' +
          'binds 0.0.0.0).',
        ),
        cacheSeconds: z.number().nonnegative().default(5).describe(
          'How long the database aggregates behind spool_queue_depth, spool_requests_running and spool_batches ' +
          'are reused between scrapes: however often anyone scrapes, the database is asked at most this often.',
        ),
        workerPort: z.number().int().min(0).max(65535).optional().describe(
          '`spool worker` only (it has no API): serve /metrics, /healthz and /readyz on this port, on `host`. ' +
          'Unset: the worker listens on nothing. `spool serve` serves them on its API port.',
        ),
      })
      .strict()
      .prefault({}).describe('GET /metrics (Prometheus text).'),
    limits: z
      .object({
        maxFileBytes: z.number().int().positive().default(100 * MB).describe('Largest upload, enforced while it streams (413 beyond it); 100 MiB.'),
        maxLinesPerBatch: z.number().int().positive().default(50_000).describe('Most request lines in one batch input file; more fails validation.'),
        maxEnqueuedTokensPerModel: z.number().int().positive().default(30_000_000_000).describe(
          'Tokens (prompt estimate + max_tokens) one user may have queued per model across their open batches; ' +
          'a create over it answers 429, a validation over it fails the batch. Per user, like Together\'s limit ' +
          'per account and model: one user\'s backlog never gives the others 429s.',
        ),
        priority: z
          .object({
            min: z.number().int().min(-1_000_000).default(-10).describe('Lowest priority a key that is not an admin key may set.'),
            max: z.number().int().max(1_000_000).default(10).describe('Highest priority a key that is not an admin key may set.'),
          })
          .strict()
          .refine((bounds) => bounds.min <= bounds.max, 'min must not be above max')
          .prefault({}).describe(
          'The priorities any key may give a batch. Users take turns between them whatever their priorities; a ' +
          'user\'s priority orders that user\'s own batches. Admin keys may go beyond the bounds: above max ' +
          'runs before every user\'s work, below min after it.',
        ),
        defaultMaxTokensEstimate: z.number().int().nonnegative().default(1024).describe('Used in the enqueued-token estimate when a line sets no max_tokens.'),
        defaultCompletionWindow: z.string().default('24h').describe('completion_window of a batch created without one ("24h", "30m", "7d"); its deadline.'),
        defaultOutputExpiresAfterSeconds: z.number().int().positive().optional().describe(
          'How long output and error files live when a batch is created without OpenAI\'s output_expires_after ' +
          '(seconds after the batch\'s creation; the retention sweep then deletes them). Unset: kept until ' +
          'deleted.',
        ),
      })
      .strict()
      .prefault({}),
    messageBatches: z
      .object({
        maxRequests: z.number().int().positive().default(100_000).describe('Most requests in one Anthropic Message Batches create (POST /v1/messages/batches); more answers 413.'),
        maxBytes: z.number().int().positive().default(256 * MB).describe('Largest Anthropic Message Batches create body, enforced while it streams (413 beyond it); 256 MiB.'),
      })
      .strict()
      .prefault({}).describe('Limits of the Anthropic Message Batches dialect (docs/anthropic.md), where requests come inline rather than as an uploaded file.'),
    uploads: z
      .object({
        signedUrlTtlSeconds: z.number().int().positive().default(600).describe('Lifetime of a signed PUT URL handed out by the Together upload flow.'),
        signingSecret: z.string().min(16).optional().describe(
          'HMAC key for signed URLs. Unset: generated once and kept in the database, shared by every process.',
        ),
      })
      .strict()
      .prefault({}),
    worker: z
      .object({
        enabled: z.boolean().default(true).describe('Run the batch worker inside `spool serve`.'),
        leaseSeconds: z.number().positive().default(60).describe('How long a claimed batch or request stays owned without a heartbeat.'),
        shutdownGraceSeconds: z
          .number()
          .nonnegative()
          .default(10)
          .describe(
            'On SIGTERM, how long requests in flight may finish before they are handed back to other workers. ' +
              'Give a Kubernetes pod a terminationGracePeriodSeconds comfortably above it.',
          ),
        heartbeatMs: z.number().int().min(50).default(1000).describe('How often each process beats its liveness row and looks for processes that died.'),
        livenessTimeoutSeconds: z.number().positive().default(15).describe(
          'A process whose liveness row has not moved for this long is taken for dead: its leases and ceiling ' +
          'slots go to the others at once instead of after leaseSeconds. Most deaths are found sooner: on ' +
          'PostgreSQL when its liveness session ends (about two heartbeats), on the same host by its pid (at ' +
          'once). Keep it longer than any pause a live process may take.',
        ),
        pollIntervalMs: z.number().int().positive().default(500).describe('How often sweeps (validation, cancel, expiry, finalization) look for work.'),
        claimBatchSize: z.number().int().positive().default(64).describe('Requests claimed per round trip.'),
        maxAttempts: z.number().int().positive().default(5).describe('Attempts per request line before a retryable failure becomes an error line.'),
        requestTimeoutMs: z.number().int().positive().default(600_000).describe('One attempt\'s limit, connection to the last byte of the answer; generous for long generations.'),
        retryBaseDelayMs: z
          .number()
          .int()
          .positive()
          .default(500)
          .describe('Backoff window before the 2nd attempt, doubling per attempt (full jitter); Retry-After is a floor.'),
        retryMaxDelayMs: z.number().int().positive().default(60_000).describe('Largest backoff window between two attempts of a line.'),
        globalCeilings: z.boolean().optional().describe(
          'Make each upstream\'s maxConcurrency one ceiling for all worker processes together, held in the ' +
          'database, instead of a limit per worker. Default: on with PostgreSQL (where several workers are the ' +
          'point), off with SQLite (one process; no database round trip before the first request).',
        ),
      })
      .strict()
      .prefault({}),
    audio: z
      .object({
        allowPrivateNetworks: z.boolean().default(false).describe('Let audio URLs reach loopback, private, link-local, CGNAT and other non-public addresses.'),
        allowedHosts: allowedHostsSchema().describe(
          'Hosts audio URLs may fetch from even when they resolve to non-public addresses: exact hostnames ' +
          '("media.internal"), wildcards ("*.corp.example"), IP addresses ("10.1.2.3", "::1") or CIDRs ' +
          '("10.0.0.0/8", "fd00::/8").',
        ),
      })
      .strict()
      .prefault({}).describe(
      'Audio lines\' `body.file` URLs: Spool fetches them itself, so by default only from public addresses ' +
      '(SSRF guard).',
    ),
    webhooks: webhooksSchema.prefault({}),
    billing: billingSchema.prefault({}),
    upstreams: z
      .array(upstreamSchema)
      .default([])
      .superRefine((upstreams, ctx) => {
        // Entry and replica names key metrics, the admin status and shared ceilings: two alike would share them.
        const seen = new Set<string>();
        const entries = new Set<string>();
        upstreams.forEach((upstream, index) => {
          // Replicas belong to their entry by its name: two entries alike would mix their servers.
          if (entries.has(upstream.name)) ctx.addIssue({ code: 'custom', path: [index, 'name'], message: `the upstream name "${upstream.name}" is used twice; upstream names must be unique` });
          entries.add(upstream.name);
          const names = replicaNamesOf(upstream);
          for (const name of new Set(names)) {
            if (seen.has(name)) ctx.addIssue({ code: 'custom', path: [index, 'name'], message: `the name "${name}" is used twice; upstream and replica names must be unique` });
            seen.add(name);
          }
          if (names.length !== new Set(names).size) ctx.addIssue({ code: 'custom', path: [index, 'replicas'], message: 'two replicas have the same name' });
        });
      })
      .describe(
        'OpenAI-compatible servers. A model\'s pool is every entry that lists its exact name (or, with models ' +
        '"auto", lists it at /v1/models); when none does, the first entry whose glob matches serves it.',
      ),
    engine: z
      .object({
        gpu: z.union([z.literal('auto'), z.literal(false)]).default('auto').describe('"auto": a GPU when node-llama-cpp finds one; false: CPU only.'),
        models: z.array(engineModelSchema).default([]).describe('GGUF models served by the embedded llama.cpp engine.'),
        whisper: whisperModelSchema.optional(),
      })
      .strict()
      .prefault({}).describe(
      'The embedded engine: GGUF models (llama.cpp) and a whisper model (whisper.cpp) served in-process (no ' +
      'other server needed).',
    ),
  })
  .strict();

export type Config = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * Environment variables: one per leaf key of the schema, named SPOOL_ + the key
 * path in UPPER_SNAKE case with "__" between levels (SPOOL_DATA_DIR,
 * SPOOL_LIMITS__MAX_FILE_BYTES), plus DATABASE_URL. Each value is converted by
 * the type its key has in the schema, so SPOOL_ADMIN_KEY=12345678 stays a
 * string; lists and maps take JSON. Other SPOOL_* variables are not settings:
 * Kubernetes sets SPOOL_PORT=tcp://..., SPOOL_SERVICE_HOST and the like in
 * every pod of a namespace with a Service named "spool", and tools set their
 * own; those are ignored with one warning, never a refusal to start.
 */
type EnvKind = 'string' | 'number' | 'boolean' | 'json' | 'boolean-or-string';

interface EnvBinding {
  path: string[];
  kind: EnvKind;
}

// Read by other parts of the `spool` command, not server settings: the config file's path, bin/spool.js's
// source switch, and the client commands' server URL and API key (the CLI's key is never the server's admin
// key: exporting it for the CLI must not make the next `spool serve` in that shell accept it).
const NOT_SETTINGS = new Set(['SPOOL_CONFIG', 'SPOOL_FROM_SOURCE', 'SPOOL_SERVER', 'SPOOL_API_KEY']);

// Kubernetes service links for a Service named "spool" (docker links use the same shape).
const SERVICE_LINK = /^SPOOL_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)$/;

export const CONFIG_ENV_ALIASES: Record<string, string[]> = {
  DATABASE_URL: ['databaseUrl'],
  // Shorter than SPOOL_LOG__LEVEL, and what the test runner and older docs set.
  SPOOL_LOG_LEVEL: ['log', 'level'],
};

const envName = (path: string[]): `SPOOL_${string}` =>
  `SPOOL_${path.map((key) => key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('__')}`;

function envKindOf(schema: z.ZodType): EnvKind | 'object' {
  const def = (schema as unknown as { def: { type: string; innerType?: z.ZodType; in?: z.ZodType; options?: z.ZodType[] } }).def;
  switch (def.type) {
    case 'optional':
    case 'default':
    case 'prefault':
    case 'nullable':
      return envKindOf(def.innerType!);
    case 'pipe':
      return envKindOf(def.in!);
    case 'object':
      return 'object';
    case 'number':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'string':
    case 'enum':
    case 'literal':
      return 'string';
    case 'union':
      return def.options!.some((option) => envKindOf(option) === 'boolean' || isFalseLiteral(option)) ? 'boolean-or-string' : 'string';
    default:
      return 'json';
  }
}

function isFalseLiteral(schema: z.ZodType): boolean {
  const def = (schema as unknown as { def: { type: string; values?: unknown[] } }).def;
  return def.type === 'literal' && (def.values ?? []).includes(false);
}

function unwrapObject(schema: z.ZodType): z.ZodObject | undefined {
  const def = (schema as unknown as { def: { type: string; innerType?: z.ZodType; in?: z.ZodType } }).def;
  if (def.type === 'object') return schema as z.ZodObject;
  if (def.innerType) return unwrapObject(def.innerType);
  if (def.in) return unwrapObject(def.in);
  return undefined;
}

/** Every leaf key of the schema, by its environment variable name. */
function envBindings(schema: z.ZodObject, path: string[] = [], out = new Map<string, EnvBinding>()): Map<string, EnvBinding> {
  for (const [key, child] of Object.entries(schema.shape as Record<string, z.ZodType>)) {
    const childPath = [...path, key];
    const object = envKindOf(child) === 'object' ? unwrapObject(child) : undefined;
    if (object) envBindings(object, childPath, out);
    else out.set(envName(childPath), { path: childPath, kind: envKindOf(child) as EnvKind });
  }
  return out;
}

let bindingsCache: Map<string, EnvBinding> | undefined;

/** The environment variable of each setting, for docs and checks of deployment manifests. */
export function configEnvBindings(): ReadonlyMap<string, EnvBinding> {
  bindingsCache ??= envBindings(configSchema);
  return bindingsCache;
}

function configFromEnv(env: NodeJS.ProcessEnv, warn: (message: string) => void): Record<string, unknown> {
  const bindings = configEnvBindings();
  const out: Record<string, unknown> = {};
  const unknown: string[] = [];
  const serviceLinks: string[] = [];
  for (const [name, raw] of Object.entries(env)) {
    if (raw === undefined || raw === '') continue;
    const alias = CONFIG_ENV_ALIASES[name];
    if (alias) {
      setPath(out, alias, raw);
      continue;
    }
    if (!name.startsWith('SPOOL_') || NOT_SETTINGS.has(name)) continue;
    if (SERVICE_LINK.test(name) || (name === 'SPOOL_PORT' && /^(tcp|udp|sctp):\/\//i.test(raw))) {
      serviceLinks.push(name);
      continue;
    }
    const binding = bindings.get(name);
    if (!binding) {
      unknown.push(name);
      continue;
    }
    setPath(out, binding.path, convertEnvValue(raw, binding.kind));
  }
  if (serviceLinks.length > 0) {
    warn(
      `ignoring ${serviceLinks.sort().join(', ')}: Kubernetes service links of a Service named "spool", not settings ` +
        '(set enableServiceLinks: false in the pod spec to drop them; SPOOL_PORT must be a port number)',
    );
  }
  if (unknown.length > 0) {
    warn(`ignoring ${unknown.sort().join(', ')}: not a Spool setting (settings are SPOOL_ + a config key, e.g. SPOOL_DATA_DIR, SPOOL_LIMITS__MAX_FILE_BYTES)`);
  }
  return out;
}

/** Converts by the key's schema type; a value that does not convert is passed on as text, so the schema's error names the variable's key. */
function convertEnvValue(raw: string, kind: EnvKind): unknown {
  const text = raw.trim();
  switch (kind) {
    case 'string':
      return raw;
    case 'number':
      return /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(text) ? Number(text) : raw;
    case 'boolean':
      return parseBooleanText(text) ?? raw;
    case 'boolean-or-string':
      return parseBooleanText(text) ?? raw;
    case 'json':
      if (text.startsWith('[') || text.startsWith('{')) {
        try {
          return JSON.parse(text);
        } catch {
          return raw;
        }
      }
      // A list of plain strings (allowedHosts) may be given comma-separated.
      return text.split(',').map((item) => item.trim()).filter((item) => item !== '');
  }
}

function parseBooleanText(text: string): boolean | undefined {
  if (/^(true|1|yes|on)$/i.test(text)) return true;
  if (/^(false|0|no|off)$/i.test(text)) return false;
  return undefined;
}

function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]] = value;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    if (value === undefined) continue;
    out[key] = isPlainObject(value) && isPlainObject(out[key]) ? deepMerge(out[key] as Record<string, unknown>, value) : value;
  }
  return out;
}

export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = /\.ya?ml$/i.test(path) ? parseYaml(text) : JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`config file ${path} is not valid ${/\.ya?ml$/i.test(path) ? 'YAML' : 'JSON'}: ${(err as Error).message}`);
  }
  if (parsed == null) return {};
  if (!isPlainObject(parsed)) throw new ConfigError(`config file ${path} must hold an object at the top level`);
  return parsed;
}

export interface LoadConfigOptions {
  /** Values from command-line flags (already in config shape). */
  flags?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
  configPath?: string;
  /** Where warnings about ignored variables and renamed keys go; default: one "spool: warning:" line on stderr each. */
  warn?: (message: string) => void;
}

export function parseConfig(input: unknown): Config {
  const result = configSchema.safeParse(input);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => {
      const key = issue.path.length > 0 ? issue.path.join('.') : '(top level)';
      const message =
        issue.code === 'unrecognized_keys' ? `unknown key(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}` : issue.message;
      return `${key}: ${message}`;
    });
    throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  }
  return result.data;
}

const warnOnStderr = (message: string): void => {
  process.stderr.write(`spool: warning: ${message}\n`);
};

export function loadConfig(options: LoadConfigOptions = {}): Config {
  const env = options.env ?? process.env;
  const warn = options.warn ?? warnOnStderr;
  const configPath = options.configPath ?? env.SPOOL_CONFIG;
  const fromFile = configPath ? renamedKeys(readConfigFile(resolve(configPath)), warn) : {};
  const merged = deepMerge(deepMerge(fromFile, configFromEnv(env, warn)), options.flags ?? {});
  return parseConfig(merged);
}

/** Config files written for an older Spool keep working: `apiKey` is now `adminKey`. */
function renamedKeys(fromFile: Record<string, unknown>, warn: (message: string) => void): Record<string, unknown> {
  if (!('apiKey' in fromFile)) return fromFile;
  const { apiKey, ...rest } = fromFile;
  warn('config key "apiKey" is now "adminKey" (the server\'s bootstrap admin key); rename it in your config file');
  return 'adminKey' in rest ? rest : { ...rest, adminKey: apiKey };
}

/** Whether `host` (a listen address) is reachable only from this machine. */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) || /^::ffff:127\./.test(h);
}

/** metrics.auth with "auto" resolved for the address the server listens on. */
export function metricsAuthFor(config: Pick<Config, 'host' | 'metrics'>): 'none' | 'admin' {
  if (config.metrics.auth !== 'auto') return config.metrics.auth;
  return isLoopbackHost(config.host) ? 'none' : 'admin';
}

/**
 * How logs are written: readable lines on a terminal, JSON lines for a collector (stdout not a TTY: a pod, a
 * pipe, systemd), unless log.format (or the older log.pretty) says which.
 */
export function logFormat(log: Config['log'], stdoutIsTty: boolean): 'pretty' | 'json' {
  if (log.format !== 'auto') return log.format;
  if (log.pretty !== undefined) return log.pretty ? 'pretty' : 'json';
  return stdoutIsTty ? 'pretty' : 'json';
}
