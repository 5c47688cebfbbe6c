// Signed upload URLs for the Together upload flow: the PUT carries no
// Authorization, so the URL itself is the credential. HMAC-SHA256 over the
// file id and expiry; single use is enforced by the file's status, not here.
import { createHmac, timingSafeEqual } from 'node:crypto';

export interface SignedUploadParams {
  expires: number;
  signature: string;
}

export function signUpload(secret: string, fileId: string, expiresAtSeconds: number): string {
  return createHmac('sha256', secret).update(`${fileId}\n${expiresAtSeconds}`).digest('hex');
}

export type SignatureCheck = 'valid' | 'invalid' | 'expired';

export function checkUploadSignature(secret: string, fileId: string, params: Partial<SignedUploadParams>, nowMs: number): SignatureCheck {
  const expires = Number(params.expires);
  if (!Number.isInteger(expires) || typeof params.signature !== 'string' || !/^[0-9a-f]{64}$/.test(params.signature)) return 'invalid';
  const expected = Buffer.from(signUpload(secret, fileId, expires), 'hex');
  if (!timingSafeEqual(expected, Buffer.from(params.signature, 'hex'))) return 'invalid';
  return expires * 1000 < nowMs ? 'expired' : 'valid';
}
