// Identifiers are UUIDv7-shaped: 48 bits of millisecond time, then randomness,
// so sorting by id is sorting by creation time. Pagination (`after=<id>`) and
// "newest first" listings rely on that, with no separate timestamp index.
import { randomBytes } from 'node:crypto';

let lastMs = 0;
let sequence = 0;

function uuidv7(): string {
  let now = Date.now();
  if (now <= lastMs) {
    // Same millisecond (or a clock step back): bump a 12-bit counter so ids stay ordered.
    sequence += 1;
    if (sequence > 0xfff) {
      lastMs += 1;
      sequence = 0;
    }
    now = lastMs;
  } else {
    lastMs = now;
    sequence = 0;
  }
  const bytes = randomBytes(16);
  bytes.writeUIntBE(now, 0, 6);
  bytes[6] = 0x70 | (sequence >> 8);
  bytes[7] = sequence & 0xff;
  bytes[8] = 0x80 | (bytes[8] & 0x3f);
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export const newFileId = (): string => `file-${uuidv7()}`;
export const newBatchId = (): string => `batch-${uuidv7()}`;
export const newKeyId = (): string => `key-${uuidv7()}`;
export const newRequestId = (): string => `req-${uuidv7()}`;
export const newWorkerId = (): string => `worker-${uuidv7()}`;
/** A webhook event: the payload's `id` and the webhook-id header, the same on every retry. */
export const newWebhookEventId = (): string => `evt-${uuidv7()}`;
export const newWebhookDeliveryId = (): string => `whd-${uuidv7()}`;
