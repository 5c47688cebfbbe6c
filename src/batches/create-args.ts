// Checks the arguments of POST /batches, in either dialect, into one
// dialect-free shape. Every failure is a 400 that names the field.
import { badRequest } from '../errors.ts';
import { BATCH_ENDPOINTS, MAX_MODEL_LENGTH, unprintableIn } from './input-validator.ts';

export interface CreateBatchArgs {
  inputFileId: string;
  endpoint: string;
  completionWindow: string;
  windowMs: number;
  priority: number;
  modelId: string | null;
  metadata: Record<string, string> | null;
  outputExpiresAfterSeconds: number | null;
  /** Where the batch's terminal-state webhook goes: Together `webhook_url`, OpenAI `metadata.webhook_url` (either field in either dialect). */
  webhookUrl: string | null;
}

const MAX_METADATA_KEYS = 16;
const MAX_METADATA_KEY_LENGTH = 64;
const MAX_METADATA_VALUE_LENGTH = 512;
const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
const MIN_WINDOW_MS = 60_000;
const MAX_WINDOW_MS = 30 * 86_400_000;
// OpenAI's bounds for output_expires_after.seconds: one hour to thirty days.
const MIN_OUTPUT_TTL_S = 3_600;
const MAX_OUTPUT_TTL_S = 2_592_000;
const MAX_WEBHOOK_URL_LENGTH = 2048;

/** Who asks, for the arguments whose bounds depend on it. */
export interface CreateArgsPolicy {
  defaultWindow: string;
  /** The priorities a key that is not an admin's may set (limits.priority). */
  priority: { min: number; max: number };
  isAdmin: boolean;
}

export function parseCreateBatchArgs(body: unknown, policy: CreateArgsPolicy): CreateBatchArgs {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw badRequest('The request body must be a JSON object with "input_file_id" and "endpoint".');
  }
  const fields = body as Record<string, unknown>;
  const inputFileId = fields.input_file_id;
  if (typeof inputFileId !== 'string' || inputFileId === '') {
    throw badRequest("'input_file_id' is required: the id of an uploaded batch input file.", 'input_file_id');
  }
  const endpoint = parseEndpoint(fields.endpoint);
  const completionWindow = fields.completion_window ?? policy.defaultWindow;
  if (typeof completionWindow !== 'string') throw badRequest(`'completion_window' must be a string such as "24h".`, 'completion_window');
  const metadata = parseMetadata(fields.metadata);
  return {
    inputFileId,
    endpoint,
    completionWindow,
    windowMs: parseWindow(completionWindow),
    priority: parsePriority(fields.priority, policy),
    modelId: parseModelId(fields.model_id),
    metadata,
    outputExpiresAfterSeconds: parseOutputExpiresAfter(fields.output_expires_after),
    webhookUrl: parseWebhookUrl(fields.webhook_url, metadata?.webhook_url),
  };
}

function parseEndpoint(value: unknown): string {
  const endpoints = BATCH_ENDPOINTS.join(', ');
  if (typeof value !== 'string' || value === '') throw badRequest(`'endpoint' is required: one of ${endpoints}.`, 'endpoint');
  if (!(BATCH_ENDPOINTS as readonly string[]).includes(value)) {
    throw badRequest(`'endpoint' "${value}" is not supported: use one of ${endpoints}.`, 'endpoint');
  }
  return value;
}

/** "24h", "90m", "7d" (a space before the unit is tolerated). */
export function parseWindow(value: string): number {
  const match = /^\s*(\d+)\s*([mhd])\s*$/.exec(value);
  const hint = `'completion_window' "${value}" is not valid: use a whole number of minutes, hours or days such as "90m", "24h" or "7d"`;
  if (!match) throw badRequest(`${hint}.`, 'completion_window');
  const ms = Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
  if (ms < MIN_WINDOW_MS || ms > MAX_WINDOW_MS) throw badRequest(`${hint}, between 1m and 30d.`, 'completion_window');
  return ms;
}

// What any priority must fit: the column is a 32-bit integer.
const MAX_ADMIN_PRIORITY = 1_000_000;

function parsePriority(value: unknown, policy: CreateArgsPolicy): number {
  if (value === undefined || value === null) return 0;
  const { min, max } = policy.isAdmin ? { min: -MAX_ADMIN_PRIORITY, max: MAX_ADMIN_PRIORITY } : policy.priority;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    const who = policy.isAdmin ? '' : ' for this key (limits.priority; only admin keys may go beyond it)';
    throw badRequest(`'priority' must be an integer from ${min} to ${max}${who}; higher runs first, default 0.`, 'priority');
  }
  return value;
}

function parseModelId(value: unknown): string | null {
  if (value === undefined || value === null || value === '') return null;
  if (typeof value !== 'string' || value.length > MAX_MODEL_LENGTH) {
    throw badRequest(`'model_id' must be a model name (a string of at most ${MAX_MODEL_LENGTH} characters).`, 'model_id');
  }
  const unprintable = unprintableIn(value);
  if (unprintable) throw badRequest(`'model_id' has ${unprintable}: give the model name as printable text.`, 'model_id');
  return value;
}

function parseMetadata(value: unknown): Record<string, string> | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value)) throw badRequest("'metadata' must be an object of string values.", 'metadata');
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length > MAX_METADATA_KEYS) throw badRequest(`'metadata' may hold at most ${MAX_METADATA_KEYS} keys.`, 'metadata');
  for (const [key, entry] of entries) {
    if (key.length > MAX_METADATA_KEY_LENGTH) {
      throw badRequest(`'metadata' key "${key.slice(0, 80)}" is longer than ${MAX_METADATA_KEY_LENGTH} characters.`, 'metadata');
    }
    if (typeof entry !== 'string') throw badRequest(`'metadata.${key}' must be a string.`, 'metadata');
    if (entry.length > MAX_METADATA_VALUE_LENGTH) {
      throw badRequest(`'metadata.${key}' is longer than ${MAX_METADATA_VALUE_LENGTH} characters.`, 'metadata');
    }
  }
  return value as Record<string, string>;
}

/** The batch's webhook URL from `webhook_url` (Together) or `metadata.webhook_url` (OpenAI); both given, they must agree. */
function parseWebhookUrl(field: unknown, fromMetadata: string | undefined): string | null {
  const direct = field === undefined || field === null || field === '' ? null : checkWebhookUrl(field, 'webhook_url');
  const meta = fromMetadata === undefined || fromMetadata === '' ? null : checkWebhookUrl(fromMetadata, 'metadata.webhook_url');
  if (direct !== null && meta !== null && direct !== meta) {
    throw badRequest("'webhook_url' and 'metadata.webhook_url' name different URLs: give one of them.", 'webhook_url');
  }
  return direct ?? meta;
}

/**
 * The URL in its normalized (WHATWG) form, which is ASCII: non-ASCII and control characters percent-encoded,
 * the host punycoded. That form is what is stored and posted to, and what the length bound applies to, so the
 * outbox's (batch, URL) index never meets a key over PostgreSQL's limit.
 */
function checkWebhookUrl(value: unknown, param: string): string {
  const hint = `'${param}' must be an absolute http:// or https:// URL of at most ${MAX_WEBHOOK_URL_LENGTH} characters`;
  if (typeof value !== 'string' || value.length > MAX_WEBHOOK_URL_LENGTH) throw badRequest(`${hint}.`, param);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw badRequest(`${hint}; "${value.slice(0, 100)}" is not a URL.`, param);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw badRequest(`${hint}, not ${url.protocol.slice(0, -1)}.`, param);
  if (url.href.length > MAX_WEBHOOK_URL_LENGTH) throw badRequest(`${hint} once its non-ASCII characters are percent-encoded.`, param);
  return url.href;
}

function parseOutputExpiresAfter(value: unknown): number | null {
  if (value === undefined || value === null) return null;
  const hint = `'output_expires_after' must be {"anchor": "created_at", "seconds": N} with N between ${MIN_OUTPUT_TTL_S} and ${MAX_OUTPUT_TTL_S}.`;
  if (typeof value !== 'object' || Array.isArray(value)) throw badRequest(hint, 'output_expires_after');
  const { anchor, seconds } = value as Record<string, unknown>;
  if (anchor !== 'created_at' || typeof seconds !== 'number' || !Number.isInteger(seconds)) throw badRequest(hint, 'output_expires_after');
  if (seconds < MIN_OUTPUT_TTL_S || seconds > MAX_OUTPUT_TTL_S) throw badRequest(hint, 'output_expires_after');
  return seconds;
}
