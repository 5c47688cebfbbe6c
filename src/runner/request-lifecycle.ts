// The life of one request line while its chunk is held, and the only place
// that decides its next state. The runner calls these transitions; each
// returns the record it acts on: a final outcome goes to the segment writer
// (segment-writer.ts), which commits it on the chunk only while this worker
// still holds the chunk, so a transition after the chunk was lost is a no-op.
//
//                      send (attempts += 1)
//     queued ───────────────────────────────► in flight
//       ▲  ▲                                    │ │ │
//       │  └── retryLater (timer, in memory) ───┘ │ ├── succeed ──► in a segment (output line)
//       └───── release (shutdown, cancel, expiry: │ └── fail ─────► in a segment (error line)
//              the chunk goes back, the line is ──┘
//              in no segment)
//
//     chunk lease lapsed or its worker reaped ── reclaim by any worker ──► queued (lines in no segment only)
//     chunk closed (cancel / expiry sweeps) ── finalization ──► batch_cancelled / batch_expired error line
//
// `fail` covers: a non-retryable upstream answer, attempts exhausted, no
// upstream for the model, an unreadable audio source or input.
import type { Pricing } from '../usage/pricing.ts';
import type { AttemptOutcome, Decision } from './retry-policy.ts';

export type RequestOutcomeRecord =
  | {
      kind: 'succeeded';
      batchId: string;
      line: number;
      status: number;
      /** JSON text of the response body. */
      body: string;
      requestId: string | null;
      inputTokens: number;
      outputTokens: number;
      /** Whose usage this is, of which model, and what it cost (billionths of the batch's currency). */
      userId: string;
      model: string;
      costNanos: number;
      /** The last attempt's upstream exchange, ms. */
      latencyMs?: number;
    }
  | {
      kind: 'failed';
      batchId: string;
      line: number;
      code: string;
      message: string;
      status: number | null;
      /** JSON text of the upstream's answer, or null when there was none. */
      body: string | null;
      requestId: string | null;
      latencyMs?: number;
    }
  | { kind: 'retry'; batchId: string; line: number; notBefore: number; message: string }
  /** Handed back unsent (shutdown, cancel, expiry): in no segment, so the chunk's next owner or finalization deals with it. */
  | { kind: 'released'; batchId: string; line: number };

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
    // The upstream's own bytes where they can be spliced as they are (bytes out); else the parsed body, serialised.
    body: outcome.bodyText ?? JSON.stringify(outcome.body ?? null),
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
