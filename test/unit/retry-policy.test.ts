import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  decide,
  extractErrorMessage,
  MAX_ERROR_MESSAGE_CHARS,
  MAX_RETRY_AFTER_MS,
  retryDelay,
  type AttemptOutcome,
  type Decision,
  type RetryPolicyOptions,
} from '../../src/runner/retry-policy.ts';

const options: RetryPolicyOptions = { maxAttempts: 5, baseDelayMs: 500, maxDelayMs: 60_000, random: () => 0.5 };

function response(status: number, body: unknown = null, retryAfterMs: number | null = null): AttemptOutcome {
  return { kind: 'response', status, body, requestId: 'req-1', retryAfterMs };
}
const timeout: AttemptOutcome = { kind: 'timeout', message: 'no response within 600000 ms' };
const networkError: AttemptOutcome = { kind: 'network_error', message: 'connect ECONNREFUSED 127.0.0.1:8000' };

function expectRetry(decision: Decision): Extract<Decision, { action: 'retry' }> {
  assert.equal(decision.action, 'retry', JSON.stringify(decision));
  return decision as Extract<Decision, { action: 'retry' }>;
}

function expectFail(decision: Decision): Extract<Decision, { action: 'fail' }> {
  assert.equal(decision.action, 'fail', JSON.stringify(decision));
  return decision as Extract<Decision, { action: 'fail' }>;
}

describe('decide: success', () => {
  it('succeeds on every 2xx, whatever the body', () => {
    for (const status of [200, 201, 202, 204, 299]) {
      for (const body of [{ id: 'x' }, 'plain text', null, 42, [1, 2], undefined]) {
        assert.deepEqual(decide(response(status, body), 1, options), { action: 'succeed' });
      }
    }
  });

  it('succeeds even on the last attempt', () => {
    assert.deepEqual(decide(response(200, {}), 5, options), { action: 'succeed' });
  });
});

describe('decide: retryable outcomes', () => {
  const retryable = [408, 409, 425, 429, 500, 501, 502, 503, 504, 505, 520, 529, 599];
  for (const status of retryable) {
    it(`retries HTTP ${status} while attempts remain`, () => {
      const decision = expectRetry(decide(response(status, { error: { message: 'try later' } }), 1, options));
      assert.match(decision.reason, new RegExp(`HTTP ${status}`));
      assert.match(decision.reason, /try later/);
    });
  }

  it('retries timeouts and network errors', () => {
    assert.match(expectRetry(decide(timeout, 1, options)).reason, /timed out: no response within 600000 ms/);
    assert.match(expectRetry(decide(networkError, 1, options)).reason, /ECONNREFUSED/);
  });

  it('flags overload for 429, 503, 529 and timeouts only', () => {
    for (const status of [429, 503, 529]) assert.equal(expectRetry(decide(response(status), 1, options)).overload, true, String(status));
    assert.equal(expectRetry(decide(timeout, 1, options)).overload, true);
    for (const status of [408, 409, 425, 500, 502, 504]) assert.equal(expectRetry(decide(response(status), 1, options)).overload, false, String(status));
    assert.equal(expectRetry(decide(networkError, 1, options)).overload, false);
  });

  it('keeps retrying up to attempt maxAttempts - 1', () => {
    for (let attempt = 1; attempt < options.maxAttempts; attempt++) expectRetry(decide(response(503), attempt, options));
    expectFail(decide(response(503), options.maxAttempts, options));
  });

  it('maxAttempts 1 means no retries at all', () => {
    const fail = expectFail(decide(response(500), 1, { ...options, maxAttempts: 1 }));
    assert.match(fail.message, /after 1 attempt;/);
  });
});

describe('decide: backoff', () => {
  it('is full jitter over base * 2^(attempt-1)', () => {
    const random = () => 0.5;
    const o = { ...options, random };
    assert.equal(expectRetry(decide(response(500), 1, o)).delayMs, 250);
    assert.equal(expectRetry(decide(response(500), 2, o)).delayMs, 500);
    assert.equal(expectRetry(decide(response(500), 3, o)).delayMs, 1000);
    assert.equal(expectRetry(decide(response(500), 4, o)).delayMs, 2000);
  });

  it('spans [0, window): random 0 gives 0, random just under 1 gives just under the window', () => {
    assert.equal(expectRetry(decide(response(500), 3, { ...options, random: () => 0 })).delayMs, 0);
    assert.equal(expectRetry(decide(response(500), 3, { ...options, random: () => 0.999999 })).delayMs, 1999);
  });

  it('caps the window at maxDelayMs, even for huge attempt numbers', () => {
    const o = { ...options, maxAttempts: 10_000, random: () => 0.999999 };
    assert.equal(expectRetry(decide(response(500), 20, o)).delayMs, 59_999);
    assert.equal(expectRetry(decide(response(500), 5000, o)).delayMs, 59_999);
  });

  it('clamps a misbehaving random source into the window', () => {
    assert.equal(expectRetry(decide(response(500), 1, { ...options, random: () => 7 })).delayMs, 500);
    assert.equal(expectRetry(decide(response(500), 1, { ...options, random: () => -3 })).delayMs, 0);
  });

  it('uses Math.random when no random source is given', () => {
    const { random: _ignored, ...plain } = options;
    for (let i = 0; i < 50; i++) {
      const { delayMs } = expectRetry(decide(response(500), 2, plain));
      assert.ok(delayMs >= 0 && delayMs < 1000 && Number.isInteger(delayMs), String(delayMs));
    }
  });

  it('never waits less than Retry-After', () => {
    const decision = expectRetry(decide(response(429, null, 7000), 1, options));
    assert.equal(decision.delayMs, 7000);
    assert.equal(decision.overload, true);
  });

  it('Retry-After may exceed maxDelayMs, but is capped at MAX_RETRY_AFTER_MS', () => {
    assert.equal(MAX_RETRY_AFTER_MS, 600_000);
    assert.equal(expectRetry(decide(response(503, null, 120_000), 1, options)).delayMs, 120_000);
    assert.equal(expectRetry(decide(response(503, null, 86_400_000), 1, options)).delayMs, 600_000);
  });

  it('a Retry-After shorter than the jittered delay does not shorten it', () => {
    assert.equal(expectRetry(decide(response(503, null, 10), 4, options)).delayMs, 2000);
  });

  it('ignores zero, negative and non-finite Retry-After values, and rounds fractional ones up', () => {
    for (const value of [0, -100, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.equal(expectRetry(decide(response(503, null, value), 1, options)).delayMs, 250, String(value));
    }
    assert.equal(expectRetry(decide(response(503, null, 1500.2), 1, options)).delayMs, 1501);
  });

  it('retryDelay is exported for callers that schedule their own retries', () => {
    assert.equal(retryDelay(2, null, options), 500);
    assert.equal(retryDelay(2, 3000, options), 3000);
  });
});

describe('decide: attempts exhausted', () => {
  it('a timeout fails as request_timeout', () => {
    const fail = expectFail(decide(timeout, 5, options));
    assert.equal(fail.code, 'request_timeout');
    assert.equal(fail.status, null);
    assert.equal(fail.body, null);
    assert.match(fail.message, /^Gave up after 5 attempts; last error: Request timed out: no response within 600000 ms$/);
  });

  it('a 429 fails as rate_limited, keeping status and body', () => {
    const body = { error: { message: 'Rate limit reached for requests', type: 'requests', code: 'rate_limit_exceeded' } };
    const fail = expectFail(decide(response(429, body, 1000), 5, options));
    assert.equal(fail.code, 'rate_limited');
    assert.equal(fail.status, 429);
    assert.equal(fail.body, body);
    assert.equal(fail.message, 'Gave up after 5 attempts; last error: Upstream returned HTTP 429 (Too Many Requests): Rate limit reached for requests');
  });

  it('5xx fail as upstream_error', () => {
    for (const status of [500, 502, 503, 504, 529]) {
      const fail = expectFail(decide(response(status, 'bad gateway'), 5, options));
      assert.equal(fail.code, 'upstream_error', String(status));
      assert.equal(fail.status, status);
      assert.match(fail.message, new RegExp(`^Gave up after 5 attempts; last error: Upstream returned HTTP ${status}`));
      assert.match(fail.message, /bad gateway$/);
    }
  });

  it('a network error fails as upstream_error', () => {
    const fail = expectFail(decide(networkError, 5, options));
    assert.equal(fail.code, 'upstream_error');
    assert.equal(fail.status, null);
    assert.equal(fail.message, 'Gave up after 5 attempts; last error: Could not reach the upstream: connect ECONNREFUSED 127.0.0.1:8000');
  });

  it('408 fails as request_timeout; 409 and 425 as upstream_error', () => {
    assert.equal(expectFail(decide(response(408), 5, options)).code, 'request_timeout');
    assert.equal(expectFail(decide(response(409), 5, options)).code, 'upstream_error');
    assert.equal(expectFail(decide(response(425), 5, options)).code, 'upstream_error');
  });

  it('an attempt past maxAttempts (config lowered mid-flight) also fails', () => {
    assert.equal(expectFail(decide(response(503), 9, options)).code, 'upstream_error');
  });

  it('a status without a standard phrase is still described', () => {
    const fail = expectFail(decide(response(529, null), 5, options));
    assert.match(fail.message, /HTTP 529$/);
  });
});

describe('decide: non-retryable 4xx fail at once', () => {
  it('404 naming the model is invalid_model (vLLM shape)', () => {
    const body = { object: 'error', message: 'The model `llama-9` does not exist.', type: 'NotFoundError', param: null, code: 404 };
    const fail = expectFail(decide(response(404, body), 1, options));
    assert.equal(fail.code, 'invalid_model');
    assert.equal(fail.status, 404);
    assert.equal(fail.body, body);
    assert.equal(fail.message, 'Upstream does not serve this model (HTTP 404 (Not Found): The model `llama-9` does not exist.)');
  });

  it('404 with code model_not_found is invalid_model (OpenAI shape)', () => {
    const body = { error: { message: 'That does not exist.', type: 'invalid_request_error', param: null, code: 'model_not_found' } };
    assert.equal(expectFail(decide(response(404, body), 1, options)).code, 'invalid_model');
  });

  it('code model_not_found wins over other 4xx statuses too', () => {
    const body = { error: { message: 'nope', code: 'model_not_found' } };
    assert.equal(expectFail(decide(response(400, body), 1, options)).code, 'invalid_model');
    assert.equal(expectFail(decide(response(403, { code: 'model_not_found' }), 1, options)).code, 'invalid_model');
  });

  it('404 mentioning a model in a plain-string body is invalid_model, case-insensitively', () => {
    assert.equal(expectFail(decide(response(404, 'Model not found'), 1, options)).code, 'invalid_model');
  });

  it('404 that does not mention a model is upstream_error pointing at baseUrl', () => {
    const fail = expectFail(decide(response(404, { detail: 'Not Found' }), 1, options));
    assert.equal(fail.code, 'upstream_error');
    assert.match(fail.message, /HTTP 404 \(Not Found\): Not Found; check the upstream's baseUrl/);
    assert.equal(expectFail(decide(response(404, null), 1, options)).code, 'upstream_error');
  });

  it('400 and 422 are invalid_request with the upstream message', () => {
    const openai = { error: { message: "'messages' is a required property", type: 'invalid_request_error' } };
    const fail = expectFail(decide(response(400, openai), 1, options));
    assert.equal(fail.code, 'invalid_request');
    assert.equal(fail.message, "Upstream rejected the request as invalid (HTTP 400 (Bad Request): 'messages' is a required property)");
    const fastapi = { detail: [{ loc: ['body', 'messages'], msg: 'field required', type: 'value_error.missing' }, { msg: 'bad temperature' }] };
    const fail422 = expectFail(decide(response(422, fastapi), 1, options));
    assert.equal(fail422.code, 'invalid_request');
    assert.match(fail422.message, /field required; bad temperature/);
  });

  it('401 and 403 are upstream_auth_error telling the operator to check apiKey', () => {
    for (const status of [401, 403]) {
      const fail = expectFail(decide(response(status, { error: { message: 'Invalid API key' } }), 1, options));
      assert.equal(fail.code, 'upstream_auth_error');
      assert.equal(fail.status, status);
      assert.match(fail.message, /Invalid API key/);
      assert.match(fail.message, /check the apiKey configured for this upstream/);
    }
  });

  it('other 4xx are upstream_error', () => {
    for (const status of [402, 405, 406, 410, 411, 413, 415, 418, 451]) {
      const fail = expectFail(decide(response(status, 'x'), 1, options));
      assert.equal(fail.code, 'upstream_error', String(status));
      assert.match(fail.message, new RegExp(`^Upstream returned HTTP ${status}`));
    }
  });

  it('non-2xx outside 4xx/5xx (1xx, 3xx) fail as upstream_error rather than loop', () => {
    assert.equal(expectFail(decide(response(302, null), 1, options)).code, 'upstream_error');
    assert.equal(expectFail(decide(response(304, null), 1, options)).code, 'upstream_error');
    assert.equal(expectFail(decide(response(101, null), 1, options)).code, 'upstream_error');
  });

  it('do not wait for attempts to run out', () => {
    for (const status of [400, 401, 403, 404, 422]) assert.equal(decide(response(status), 1, options).action, 'fail');
  });
});

describe('extractErrorMessage', () => {
  it('reads the common body shapes', () => {
    assert.equal(extractErrorMessage({ error: { message: 'openai style' } }), 'openai style');
    assert.equal(extractErrorMessage({ error: 'bare error string' }), 'bare error string');
    assert.equal(extractErrorMessage({ object: 'error', message: 'vllm style' }), 'vllm style');
    assert.equal(extractErrorMessage({ detail: 'fastapi style' }), 'fastapi style');
    assert.equal(extractErrorMessage({ detail: [{ msg: 'a' }, 'junk', { msg: 'b' }] }), 'a; b');
    assert.equal(extractErrorMessage('just text'), 'just text');
  });

  it('prefers error.message over message', () => {
    assert.equal(extractErrorMessage({ error: { message: 'inner' }, message: 'outer' }), 'inner');
    assert.equal(extractErrorMessage({ error: { message: '  ' }, message: 'outer' }), 'outer');
  });

  it('falls back to JSON for other shapes, and null for nothing to show', () => {
    assert.equal(extractErrorMessage({ weird: 1 }), '{"weird":1}');
    assert.equal(extractErrorMessage([1, 2]), '[1,2]');
    assert.equal(extractErrorMessage(503), '503');
    assert.equal(extractErrorMessage({}), null);
    assert.equal(extractErrorMessage(null), null);
    assert.equal(extractErrorMessage(undefined), null);
    assert.equal(extractErrorMessage('   \n '), null);
    assert.equal(extractErrorMessage(10n), null, 'unserialisable');
  });

  it('collapses whitespace (HTML error pages)', () => {
    assert.equal(extractErrorMessage('<html>\n  <body>\n\t502 Bad Gateway\n</body>\n</html>\n'), '<html> <body> 502 Bad Gateway </body> </html>');
  });

  it('truncates to MAX_ERROR_MESSAGE_CHARS, with an ellipsis', () => {
    assert.equal(MAX_ERROR_MESSAGE_CHARS, 500);
    const long = extractErrorMessage({ error: { message: 'x'.repeat(10_000) } });
    assert.equal(long?.length, 500);
    assert.ok(long?.endsWith('x…'));
    assert.equal(extractErrorMessage('y'.repeat(500)), 'y'.repeat(500), 'exactly 500 is kept whole');
  });

  it('does not split a surrogate pair when truncating', () => {
    const text = 'a'.repeat(498) + '😀' + 'tail';
    const clipped = extractErrorMessage(text);
    assert.equal(clipped, 'a'.repeat(498) + '…');
  });

  it('clipped messages reach fail decisions', () => {
    const fail = expectFail(decide(response(400, { error: { message: 'z'.repeat(2000) } }), 1, options));
    assert.ok(fail.message.length < 600);
    assert.ok(fail.message.includes('z'.repeat(499) + '…'));
  });
});

describe('decide: argument checks', () => {
  it('rejects a bad attempt number or options', () => {
    assert.throws(() => decide(timeout, 0, options), RangeError);
    assert.throws(() => decide(timeout, 1.5, options), RangeError);
    assert.throws(() => decide(timeout, 1, { ...options, maxAttempts: 0 }), RangeError);
    assert.throws(() => decide(timeout, 1, { ...options, baseDelayMs: -1 }), RangeError);
    assert.throws(() => decide(timeout, 1, { ...options, maxDelayMs: Number.NaN }), RangeError);
  });
});
