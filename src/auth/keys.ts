// API keys: minted here, shown once, stored only as a sha256 hash.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Kysely } from 'kysely';
import { newKeyId } from '../ids.ts';
import { countActiveKeys, findActiveKeyByHash, insertApiKey } from '../store/sql/keys.ts';
import type { Database } from '../store/sql/schema.ts';

export interface Principal {
  userId: string;
  isAdmin: boolean;
}

const KEY_PREFIX = 'spool_';

export const hashKey = (key: string): string => createHash('sha256').update(key).digest('hex');

export interface MintedKey {
  id: string;
  key: string;
  userId: string;
  isAdmin: boolean;
}

export async function createApiKey(db: Kysely<Database>, userId: string, isAdmin: boolean): Promise<MintedKey> {
  if (!/^[A-Za-z0-9._@-]{1,64}$/.test(userId)) {
    throw new Error('user names are 1-64 characters of letters, digits, ".", "_", "@" or "-"');
  }
  const key = KEY_PREFIX + randomBytes(24).toString('base64url');
  const id = newKeyId();
  await insertApiKey(db, {
    id,
    user_id: userId,
    key_hash: hashKey(key),
    prefix: key.slice(0, KEY_PREFIX.length + 6),
    is_admin: isAdmin ? 1 : 0,
    created_at: Date.now(),
    revoked_at: null,
  });
  return { id, key, userId, isAdmin };
}

export const hasAnyActiveKey = async (db: Kysely<Database>): Promise<boolean> => (await countActiveKeys(db)) > 0;

/** Resolves a bearer token to its user, or undefined for an unknown or revoked key. */
export class KeyVerifier {
  private readonly envKeyHash: Buffer | undefined;

  constructor(
    private readonly db: Kysely<Database>,
    envKey: string | undefined,
  ) {
    this.envKeyHash = envKey ? Buffer.from(hashKey(envKey), 'hex') : undefined;
  }

  async verify(token: string): Promise<Principal | undefined> {
    const hash = hashKey(token);
    if (this.envKeyHash && timingSafeEqual(this.envKeyHash, Buffer.from(hash, 'hex'))) {
      return { userId: 'default', isAdmin: true };
    }
    const row = await findActiveKeyByHash(this.db, hash);
    return row ? { userId: row.user_id, isAdmin: row.is_admin === 1 } : undefined;
  }
}
