// Which answers mean "too much for me right now": 429, 503 and 529, and no
// answer in time. Concurrency comes down for these, but not for a plain 500,
// which is more often a bug than a load problem. The batch runner's retry
// policy and the real-time gateway ask the same question here.
import type { UpstreamOutcome } from '../http-client.ts';

const OVERLOAD_STATUSES = new Set([429, 503, 529]);

export function isOverload(outcome: Pick<UpstreamOutcome, 'kind'> & { status?: number }): boolean {
  if (outcome.kind === 'timeout') return true;
  return outcome.kind === 'response' && outcome.status !== undefined && OVERLOAD_STATUSES.has(outcome.status);
}
