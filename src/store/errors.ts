// What a failed store operation means for whoever retries it. Every retry
// loop above store/ asks this first, because the right answer differs:
//
//   refused      the database rejected these values (a data exception, a
//                constraint, a key over an index's size limit). The same
//                values fail the same way forever: set the record aside,
//                never retry it as it is.
//   full         the disk (or the database's quota) is full. Nothing is wrong
//                with the values: pause, keep them, and retry once space
//                returns.
//   unavailable  the database or blob store is down, restarting, busy or
//                unreachable, or the error is unknown: retry with backoff.

export type StoreFailure = 'refused' | 'full' | 'unavailable';

// PostgreSQL SQLSTATE classes whose errors are about the statement's values, not the server's state:
// 22 data exception (22021 a NUL byte, 22003 out of range, 22P02 bad text representation), 23 integrity
// constraint, 54 program limit exceeded (54000: index row too large).
const POSTGRES_REFUSED_CLASSES = new Set(['22', '23', '54']);
// 53100 disk_full; 53400 configuration_limit_exceeded is not about space, so only the one code.
const POSTGRES_FULL = new Set(['53100']);

const SQLITE_REFUSED = /^SQLITE_(CONSTRAINT|TOOBIG|MISMATCH|RANGE)/;
const SQLITE_FULL = /^SQLITE_FULL/;

const FILESYSTEM_FULL = new Set(['ENOSPC', 'EDQUOT']);

export function classifyStoreError(err: unknown): StoreFailure {
  const code = errorCode(err);
  if (code === undefined) return 'unavailable';
  if (FILESYSTEM_FULL.has(code) || SQLITE_FULL.test(code) || POSTGRES_FULL.has(code)) return 'full';
  if (SQLITE_REFUSED.test(code)) return 'refused';
  if (/^[0-9A-Z]{5}$/.test(code) && POSTGRES_REFUSED_CLASSES.has(code.slice(0, 2))) return 'refused';
  return 'unavailable';
}

/** The code that names an error: pg's SQLSTATE, better-sqlite3's SQLITE_*, Node's E*; also on a wrapped cause. */
export function errorCode(err: unknown): string | undefined {
  for (let current: unknown = err, depth = 0; current && depth < 4; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && code !== '') return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** A short reason fit for a user-facing message or a readiness answer: the code, never a path or an address. */
export function describeStoreFailure(err: unknown): string {
  const failure = classifyStoreError(err);
  const code = errorCode(err);
  if (failure === 'full') return `out of space${code ? ` (${code})` : ''}`;
  if (failure === 'refused') return `the database refused the values${code ? ` (${code})` : ''}`;
  return `the store is unavailable${code ? ` (${code})` : ''}`;
}
