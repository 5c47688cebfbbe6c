// One schema for every knob Spool has. Values come from, lowest to highest
// precedence: the defaults below, a config file (JSON or YAML), environment
// variables, then command-line flags. Every error names the key at fault.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { allowEntryError } from './net/address-policy.ts';

const MB = 1024 * 1024;

const upstreamSchema = z
  .object({
    name: z.string().min(1).regex(/^[A-Za-z0-9._-]+$/, 'letters, digits, ".", "_" or "-" only'),
    /** OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 */
    baseUrl: z.string().url(),
    apiKey: z.string().optional(),
    /** Exact model names or globs ("*", "llama-*"). First matching upstream wins. */
    models: z.array(z.string().min(1)).min(1).default(['*']),
    /** Hard ceiling on concurrent requests; adaptive concurrency never exceeds it. */
    maxConcurrency: z.number().int().positive().default(64),
    /**
     * Where adaptive concurrency starts. Unset: the engine's own slots where it reports them (llama.cpp /props),
     * else 4; from there it moves on throughput and latency (README "Adaptive concurrency").
     */
    initialConcurrency: z.number().int().positive().optional(),
    requestsPerMinute: z.number().int().positive().optional(),
    tokensPerMinute: z.number().int().positive().optional(),
  })
  .strict();

export type UpstreamConfig = z.infer<typeof upstreamSchema>;

const engineModelSchema = z
  .object({
    /** A .gguf file the user has; nothing is ever downloaded. */
    path: z.string().min(1),
    /** The model name batch lines use; default the file name without its extension. */
    name: z.string().min(1).optional(),
    /** Tokens of context per sequence; default the model's training context, at most 4096. */
    contextSize: z.number().int().positive().optional(),
    /** Requests evaluated together in one context (continuous batching); default 4. */
    sequences: z.number().int().positive().max(64).optional(),
    /** CPU threads; default every core but one. */
    threads: z.number().int().nonnegative().optional(),
  })
  .strict();

/** A whisper.cpp speech-to-text model for /v1/audio/transcriptions and /translations. */
const whisperModelSchema = z
  .object({
    /** A whisper.cpp ggml model file (ggml-base.en.bin...) the user has; nothing is ever downloaded. */
    path: z.string().min(1),
    /** The model name audio lines use; default the file name without its extension. */
    name: z.string().min(1).optional(),
    /** CPU threads per transcription; default every core but one. */
    threads: z.number().int().nonnegative().optional(),
  })
  .strict();

/** Where file bytes live in the scale-out shape: any S3-compatible store. */
const s3Schema = z
  .object({
    /** Base URL of an S3-compatible store (MinIO, Ceph, R2, ...); unset means AWS S3 itself. */
    endpoint: z.string().url().optional(),
    region: z.string().min(1).default('us-east-1'),
    /** Required when blobs.kind is "s3" (checked below, so the error names this key). */
    bucket: z.string().min(1).optional(),
    /** Both unset: the AWS SDK's default credential chain (AWS_* variables, profile, instance role). */
    accessKeyId: z.string().min(1).optional(),
    secretAccessKey: z.string().min(1).optional(),
    /** Bucket in the path (http://host/bucket/key), as MinIO and most self-hosted stores need. Unset: on when an endpoint is set. */
    forcePathStyle: z.boolean().optional(),
    /** Prepended to every object key ("spool/"), so one bucket can serve several deployments. */
    prefix: z.string().default(''),
  })
  .strict();

const blobsSchema = z
  .object({
    /** "local": a directory under dataDir (embedded default). "s3": shared by every process of a scale-out deployment. */
    kind: z.enum(['local', 's3']).default('local'),
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

/** Where terminal-state events of batches are POSTed, and how they are signed and retried (see README "Webhooks"). */

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
    /** Per-user webhook URL: user id -> URL; every terminal state of that user's batches is sent there, besides a batch's own webhook_url. */
    users: z.record(z.string().min(1), httpUrlSchema).default({}),
    /**
     * Deprecated: one HMAC-SHA256 key for every user's events, as before secrets were per user ("whsec_" +
     * base64 of the key bytes, or any other string as its UTF-8 bytes). Each user's events are signed with that
     * user's own secret (GET /v1/webhooks/secret); while this is set (or the database holds the one an older
     * Spool generated) and signWithSharedSecret is on, events carry a second signature with it, so receivers
     * set up before the upgrade keep verifying. See README "Webhooks: migrating to per-user secrets".
     */
    signingSecret: z
      .string()
      .min(16)
      .refine((value) => !value.startsWith('whsec_') || Buffer.from(value.slice(6), 'base64').length >= 16, 'a "whsec_" secret is base64 of at least 16 bytes')
      .optional(),
    /**
     * Also sign with the shared secret of older installs, when there is one. Turn off once every receiver
     * verifies with its user's own secret: until then, anyone holding the shared secret can sign events those
     * receivers accept.
     */
    signWithSharedSecret: z.boolean().default(true),
    /** Attempts per delivery before it is given up; with the default delays, 10 attempts span about 22 hours. */
    maxAttempts: z.number().int().positive().default(10),
    /** Delay before the 2nd attempt; each later delay is 4 times the one before (with +-20% jitter), up to retryMaxDelayMs. */
    retryBaseDelayMs: z.number().int().positive().default(10_000),
    retryMaxDelayMs: z.number().int().positive().default(6 * 3_600_000),
    /** One attempt's limit, connection to last byte of the answer's head; past it the attempt counts as failed. */
    timeoutMs: z.number().int().positive().default(15_000),
    /** As audio.allowPrivateNetworks, for webhook URLs: by default only public addresses are posted to (SSRF guard). */
    allowPrivateNetworks: z.boolean().default(false),
    /** As audio.allowedHosts, for webhook URLs: hostnames, "*.suffix" wildcards, IPs or CIDRs. */
    allowedHosts: allowedHostsSchema(),
  })
  .strict();

export type WebhooksConfig = z.infer<typeof webhooksSchema>;

export const configSchema = z
  .object({
    host: z.string().default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(8080),
    dataDir: z.string().default('./data'),
    /** Absolute base URL clients reach this server at; used for signed upload URLs. Derived from the request when unset. */
    publicUrl: z.string().url().optional(),
    /** postgres://... selects PostgreSQL; unset means SQLite in the data dir. */
    databaseUrl: z.string().optional(),
    /** Where file bytes live: SPOOL_BLOBS__KIND=s3, SPOOL_BLOBS__S3__BUCKET=... */
    blobs: blobsSchema.prefault({}),
    /**
     * A bootstrap admin key, accepted as user "default" (admin) when set (SPOOL_ADMIN_KEY). Not SPOOL_API_KEY:
     * that is the key the `spool` CLI sends as a client, and a shell that exports it for the CLI must not start
     * a server that takes it as its admin key.
     */
    adminKey: z.string().min(8).optional(),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        pretty: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    /** GET /metrics (Prometheus text). */
    metrics: z
      .object({
        /** false: /metrics answers 404, and nothing is collected. */
        enabled: z.boolean().default(true),
        /**
         * "admin": an admin API key as "Authorization: Bearer" (Prometheus `authorization`). "none": anyone who
         * reaches the port may scrape (model names and queue depths of every user). "auto" (default): "none"
         * while the server listens on a loopback address only, "admin" otherwise (the Docker image binds 0.0.0.0).
         */
        auth: z.enum(['auto', 'none', 'admin']).default('auto'),
        /**
         * How long the database aggregates behind spool_queue_depth, spool_requests_running and spool_batches are
         * reused between scrapes: however often anyone scrapes, the database is asked at most this often.
         */
        cacheSeconds: z.number().nonnegative().default(5),
        /**
         * `spool worker` only (it has no API): serve /metrics, /healthz and /readyz on this port, on `host`.
         * Unset: the worker listens on nothing. `spool serve` serves them on its API port.
         */
        workerPort: z.number().int().min(0).max(65535).optional(),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        maxFileBytes: z.number().int().positive().default(100 * MB),
        maxLinesPerBatch: z.number().int().positive().default(50_000),
        /**
         * Tokens (prompt estimate + max_tokens) one user may have queued per model across their open batches;
         * a create over it answers 429, a validation over it fails the batch. Per user, like Together's limit per
         * account and model: one user's backlog never gives the others 429s.
         */
        maxEnqueuedTokensPerModel: z.number().int().positive().default(30_000_000_000),
        /**
         * The priorities any key may give a batch. Users take turns between them whatever their priorities;
         * a user's priority orders that user's own batches. Admin keys may go beyond the bounds: above max runs
         * before every user's work, below min after it.
         */
        priority: z
          .object({ min: z.number().int().min(-1_000_000).default(-10), max: z.number().int().max(1_000_000).default(10) })
          .strict()
          .refine((bounds) => bounds.min <= bounds.max, 'min must not be above max')
          .prefault({}),
        /** Used in the enqueued-token estimate when a line sets no max_tokens. */
        defaultMaxTokensEstimate: z.number().int().nonnegative().default(1024),
        defaultCompletionWindow: z.string().default('24h'),
        /**
         * How long output and error files live when a batch is created without OpenAI's output_expires_after
         * (seconds after the batch's creation; the retention sweep then deletes them). Unset: kept until deleted.
         */
        defaultOutputExpiresAfterSeconds: z.number().int().positive().optional(),
      })
      .strict()
      .prefault({}),
    uploads: z
      .object({
        /** Lifetime of a signed PUT URL handed out by the Together upload flow. */
        signedUrlTtlSeconds: z.number().int().positive().default(600),
        /** HMAC key for signed URLs. Unset: generated once and kept in the database, shared by every process. */
        signingSecret: z.string().min(16).optional(),
      })
      .strict()
      .prefault({}),
    worker: z
      .object({
        /** Run the batch worker inside `spool serve`. */
        enabled: z.boolean().default(true),
        /** How long a claimed batch or request stays owned without a heartbeat. */
        leaseSeconds: z.number().positive().default(60),
        /** How often each process beats its liveness row and looks for processes that died. */
        heartbeatMs: z.number().int().min(50).default(1000),
        /**
         * A process whose liveness row has not moved for this long is taken for dead: its leases and ceiling
         * slots go to the others at once instead of after leaseSeconds. Most deaths are found sooner: on
         * PostgreSQL when its liveness session ends (about two heartbeats), on the same host by its pid (at
         * once). Keep it longer than any pause a live process may take.
         */
        livenessTimeoutSeconds: z.number().positive().default(15),
        /** How often sweeps (validation, cancel, expiry, finalization) look for work. */
        pollIntervalMs: z.number().int().positive().default(500),
        /** Requests claimed per round trip. */
        claimBatchSize: z.number().int().positive().default(64),
        maxAttempts: z.number().int().positive().default(5),
        requestTimeoutMs: z.number().int().positive().default(600_000),
        retryBaseDelayMs: z.number().int().positive().default(500),
        retryMaxDelayMs: z.number().int().positive().default(60_000),
        /**
         * Make each upstream's maxConcurrency one ceiling for all worker processes together, held in the
         * database, instead of a limit per worker. Default: on with PostgreSQL (where several workers are the
         * point), off with SQLite (one process; no database round trip before the first request).
         */
        globalCeilings: z.boolean().optional(),
      })
      .strict()
      .prefault({}),
    /** Audio lines' `body.file` URLs: Spool fetches them itself, so by default only from public addresses (SSRF guard). */
    audio: z
      .object({
        /** Let audio URLs reach loopback, private, link-local, CGNAT and other non-public addresses. */
        allowPrivateNetworks: z.boolean().default(false),
        /**
         * Hosts audio URLs may fetch from even when they resolve to non-public addresses: exact hostnames
         * ("media.internal"), wildcards ("*.corp.example"), IP addresses ("10.1.2.3", "::1") or CIDRs ("10.0.0.0/8", "fd00::/8").
         */
        allowedHosts: allowedHostsSchema(),
      })
      .strict()
      .prefault({}),
    webhooks: webhooksSchema.prefault({}),
    upstreams: z.array(upstreamSchema).default([]),
    /** The embedded engine: GGUF models (llama.cpp) and a whisper model (whisper.cpp) served in-process (no other server needed). */
    engine: z
      .object({
        gpu: z.union([z.literal('auto'), z.literal(false)]).default('auto'),
        models: z.array(engineModelSchema).default([]),
        whisper: whisperModelSchema.optional(),
      })
      .strict()
      .prefault({}),
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

const ALIASES: Record<string, string[]> = {
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
    const alias = ALIASES[name];
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
