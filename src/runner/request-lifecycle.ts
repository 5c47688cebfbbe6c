// The life of one request line, and the only place that decides its next
// state. The runner calls these transitions; each returns the record the
// result writer commits (conditionally on this worker still holding the
// claim, so a transition that lost its lease is a no-op).
//
//                 claim (attempts += 1)
//     pending ─────────────────────────────► running
//       ▲  ▲                                  │ │ │
//       │  └──── retryLater (not_before) ─────┘ │ ├── succeed ──► succeeded
//       └─────── release (shutdown; the attempt  │ └── fail ─────► failed
//                is handed back, not counted) ──┘
//
//     running, lease lapsed (worker died) ── reclaim by any worker ──► running
//     pending/running ── batch cancelled / expired (lifecycle sweeps) ──► failed
//
// `fail` covers: a non-retryable upstream answer, attempts exhausted, no
// upstream for the model, an unreadable audio source, and the batch being
// cancelled or expiring while the request was in flight. `failUnstorable`
// covers a result the database refused to store.
import type { RequestOutcomeRecord } from '../store/sql/request-claims.ts';
import type { Pricing } from '../usage/pricing.ts';
import type { AttemptOutcome, Decision } from './retry-policy.ts';

export interface ClaimedRequest {
  batchId: string;
  line: number;
  attempts: number;
  /** The batch's owner and the line's model: whose usage a success is, and at which price. */
  userId: string;
  model: string;
}

export function succeed(request: ClaimedRequest, outcome: Extract<AttemptOutcome, { kind: 'response' }>, pricing?: Pricing): RequestOutcomeRecord {
  const usage = usageOf(outcome.body);
  return {
    kind: 'succeeded',
    batchId: request.batchId,
    line: request.line,
    status: outcome.status,
    body: JSON.stringify(outcome.body ?? null),
    requestId: outcome.requestId,
    inputTokens: usage.input,
    outputTokens: usage.output,
    userId: request.userId,
    model: request.model,
    costNanos: pricing ? pricing.costNanos(request.model, usage.input, usage.output) : 0,
  };
}

export function fail(
  request: ClaimedRequest,
  code: string,
  message: string,
  response?: { status: number | null; body: unknown; requestId?: string | null },
): RequestOutcomeRecord {
  return {
    kind: 'failed',
    batchId: request.batchId,
    line: request.line,
    code,
    message,
    status: response?.status ?? null,
    body: response && response.status !== null ? JSON.stringify(response.body ?? null) : null,
    requestId: response?.requestId ?? null,
  };
}

/**
 * The database refused to store `record` (a value it cannot hold): the line fails with no upstream content,
 * only the reason, which names the refusal and nothing taken from the input.
 */
export function failUnstorable(record: RequestOutcomeRecord, reason: string): RequestOutcomeRecord {
  return {
    kind: 'failed',
    batchId: record.batchId,
    line: record.line,
    code: 'result_not_stored',
    message: `This request's result could not be stored (${reason}); it is reported without its content.`,
    status: null,
    body: null,
    requestId: null,
  };
}

export function retryLater(request: ClaimedRequest, delayMs: number, reason: string, now: number): RequestOutcomeRecord {
  return { kind: 'retry', batchId: request.batchId, line: request.line, notBefore: now + delayMs, message: `attempt ${request.attempts}: ${reason}` };
}

export function release(request: ClaimedRequest): RequestOutcomeRecord {
  return { kind: 'released', batchId: request.batchId, line: request.line };
}

/** Maps the retry policy's decision on an attempt to the transition it implies. */
export function settle(request: ClaimedRequest, outcome: AttemptOutcome, decision: Decision, now: number, pricing?: Pricing): RequestOutcomeRecord {
  switch (decision.action) {
    case 'succeed':
      return succeed(request, outcome as Extract<AttemptOutcome, { kind: 'response' }>, pricing);
    case 'retry':
      return retryLater(request, decision.delayMs, decision.reason, now);
    case 'fail': {
      const requestId = outcome.kind === 'response' ? outcome.requestId : null;
      return fail(request, decision.code, decision.message, { status: decision.status, body: decision.body, requestId });
    }
  }
}

const MAX_REPORTED_TOKENS = 2_147_483_647;

/** Token usage from an OpenAI-style body: chat/completions (prompt/completion), embeddings (prompt only), audio (input/output). */
export function usageOf(body: unknown): { input: number; output: number } {
  const usage = typeof body === 'object' && body !== null ? (body as { usage?: Record<string, unknown> }).usage : undefined;
  if (!usage || typeof usage !== 'object') return { input: 0, output: 0 };
  // An upstream's count is taken at its word only within what a request can hold: a number past it (1e30 in a
  // broken or hostile answer) would not fit the bigint columns it is summed into, and would be refused there.
  const num = (value: unknown) => (typeof value === 'number' && Number.isFinite(value) && value >= 0 ? Math.min(Math.round(value), MAX_REPORTED_TOKENS) : 0);
  return {
    input: num(usage.prompt_tokens ?? usage.input_tokens),
    output: num(usage.completion_tokens ?? usage.output_tokens),
  };
}
