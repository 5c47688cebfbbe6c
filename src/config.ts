// One schema for every knob Spool has. Values come from, lowest to highest
// precedence: the defaults below, a config file (JSON or YAML), environment
// variables, then command-line flags. Every error names the key at fault.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { allowEntryError } from './upstreams/ssrf-guard.ts';

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
    /** Where adaptive concurrency starts. */
    initialConcurrency: z.number().int().positive().default(8),
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

const httpUrlSchema = z
  .string()
  .url()
  .refine((value) => /^https?:\/\//i.test(value), 'must be an http:// or https:// URL');

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
     * HMAC-SHA256 key for the webhook-signature header: "whsec_" + base64 of the key bytes (Standard Webhooks /
     * OpenAI form), or any other string, used as its UTF-8 bytes. Unset: generated once and kept in the database,
     * shared by every process (`spool webhooks secret` prints it).
     */
    signingSecret: z
      .string()
      .min(16)
      .refine((value) => !value.startsWith('whsec_') || Buffer.from(value.slice(6), 'base64').length >= 16, 'a "whsec_" secret is base64 of at least 16 bytes')
      .optional(),
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
    /** Accepted as user "default" (admin) when set. */
    apiKey: z.string().min(8).optional(),
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
         * "none": anyone who reaches the port may scrape, as Prometheus expects by default (Spool binds 127.0.0.1
         * unless told otherwise). "admin": an admin API key as "Authorization: Bearer" (Prometheus `authorization`).
         */
        auth: z.enum(['none', 'admin']).default('none'),
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
        maxEnqueuedTokensPerModel: z.number().int().positive().default(30_000_000_000),
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

/** Environment variables that map onto config keys. Nested keys use "__": SPOOL_LIMITS__MAX_FILE_BYTES. */
function configFromEnv(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, raw] of Object.entries(env)) {
    if (raw === undefined || raw === '') continue;
    let path: string[] | undefined;
    if (name === 'DATABASE_URL') path = ['databaseUrl'];
    else if (name === 'SPOOL_LOG_LEVEL') path = ['log', 'level'];
    // Not server settings: the config file's path, bin/spool.js's source switch, and the client commands' server URL.
    else if (name === 'SPOOL_CONFIG' || name === 'SPOOL_FROM_SOURCE' || name === 'SPOOL_SERVER') continue;
    else if (name.startsWith('SPOOL_')) {
      path = name
        .slice('SPOOL_'.length)
        .split('__')
        .map((part) => part.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase()));
    }
    if (!path) continue;
    setPath(out, path, coerceEnvValue(raw));
  }
  return out;
}

function coerceEnvValue(raw: string): unknown {
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  if (/^-?\d+(\.\d+)?$/.test(raw) && raw.length < 16) return Number(raw);
  if (raw.startsWith('[') || raw.startsWith('{')) {
    try {
      return JSON.parse(raw);
    } catch {
      return raw;
    }
  }
  return raw;
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

export function loadConfig(options: LoadConfigOptions = {}): Config {
  const env = options.env ?? process.env;
  const configPath = options.configPath ?? env.SPOOL_CONFIG;
  const fromFile = configPath ? readConfigFile(resolve(configPath)) : {};
  const merged = deepMerge(deepMerge(fromFile, configFromEnv(env)), options.flags ?? {});
  return parseConfig(merged);
}
