// Webhook signatures as Standard Webhooks (and OpenAI's webhooks) define them,
// so receivers can verify with those libraries (OpenAI's `webhooks.unwrap()`,
// `standardwebhooks`) or a few lines of their own:
//   webhook-signature: "v1," + base64(HMAC-SHA256(key, `${id}.${timestamp}.${body}`))
// The key is the base64 part of a "whsec_" secret, or any other secret's UTF-8 bytes.
import { createHmac } from 'node:crypto';

export interface WebhookHeaders {
  'webhook-id': string;
  /** Unix seconds, as text. */
  'webhook-timestamp': string;
  'webhook-signature': string;
}

export function signingKey(secret: string): Buffer {
  return secret.startsWith('whsec_') ? Buffer.from(secret.slice('whsec_'.length), 'base64') : Buffer.from(secret, 'utf8');
}

export function webhookSignature(secret: string, id: string, timestamp: number, body: string): string {
  const mac = createHmac('sha256', signingKey(secret)).update(`${id}.${timestamp}.${body}`).digest('base64');
  return `v1,${mac}`;
}

/**
 * The headers of one attempt. With several secrets (a user's own, and during a migration the shared secret of
 * older installs) the signature header holds one signature per secret, space-separated, as Standard Webhooks
 * allows: a receiver verifying with any one of them accepts the event.
 */
export function signedHeaders(secrets: readonly string[], id: string, timestamp: number, body: string): WebhookHeaders {
  const signatures = secrets.map((secret) => webhookSignature(secret, id, timestamp, body)).join(' ');
  return { 'webhook-id': id, 'webhook-timestamp': String(timestamp), 'webhook-signature': signatures };
}

