import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  BATCH_ENDPOINTS,
  MAX_CUSTOM_ID_LENGTH,
  validateInput,
  type LineError,
  type ValidRequestLine,
  type ValidationOutcome,
  type ValidationRules,
} from '../../src/batches/input-validator.ts';

const CHAT = '/v1/chat/completions';
const COMPLETIONS = '/v1/completions';
const EMBEDDINGS = '/v1/embeddings';
const TRANSCRIPTIONS = '/v1/audio/transcriptions';
const TRANSLATIONS = '/v1/audio/translations';
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);
const DEFAULT_MAX_TOKENS = 100;

function rules(overrides: Partial<ValidationRules> = {}): ValidationRules {
  return { endpoint: CHAT, modelId: null, maxLines: 1000, maxErrors: 100, defaultMaxTokensEstimate: DEFAULT_MAX_TOKENS, ...overrides };
}

async function* fromChunks(chunks: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const chunk of chunks) yield chunk;
}

function splitEvery(data: Buffer, size: number): Buffer[] {
  const chunks: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) chunks.push(data.subarray(i, i + size));
  return chunks;
}

interface Run {
  outcome: ValidationOutcome;
  /** Copies of the rows of each onRequests call, in call order. */
  calls: ValidRequestLine[][];
  rows: ValidRequestLine[];
  data: Buffer;
}

async function run(input: string | Buffer, overrides: Partial<ValidationRules> = {}, chunkBytes?: number): Promise<Run> {
  const data = typeof input === 'string' ? Buffer.from(input, 'utf8') : input;
  const chunks = chunkBytes === undefined ? [data] : splitEvery(data, chunkBytes);
  const calls: ValidRequestLine[][] = [];
  const outcome = await validateInput(fromChunks(chunks), rules(overrides), async (rows) => {
    calls.push(rows.map((row) => ({ ...row })));
  });
  assertWellFormedErrors(outcome.errors);
  return { outcome, calls, rows: calls.flat(), data };
}

/** Every error names its line (except a whole-file problem) and says what to do. */
function assertWellFormedErrors(errors: LineError[]): void {
  for (const error of errors) {
    assert.equal(typeof error.code, 'string');
    assert.ok(error.code.length > 0);
    assert.equal(typeof error.message, 'string');
    if (error.code === 'empty_file') {
      assert.equal(error.line, null);
      continue;
    }
    assert.equal(typeof error.line, 'number', `${error.code} must carry a line number`);
    assert.ok(Number.isInteger(error.line) && (error.line as number) >= 1);
    assert.match(error.message, new RegExp(`^line ${error.line} `), `${error.code} message must start with its line number`);
    // The message must tell the user what to do, not only what is wrong.
    assert.match(
      error.message,
      /\b(needs|must|use|set|give|remove|shorten|split|save|make|drop|add)\b/,
      `${error.code} message must say how to fix the line: ${error.message}`,
    );
  }
}

function jsonl(...lines: unknown[]): string {
  return lines.map((line) => (typeof line === 'string' ? line : JSON.stringify(line))).join('\n') + '\n';
}

function chatLine(customId: string, extraBody: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  return {
    custom_id: customId,
    method: 'POST',
    url: CHAT,
    body: { model: 'm-chat', messages: [{ role: 'user', content: `hello ${customId}` }], ...extraBody },
    ...extra,
  };
}

function audioLine(customId: string, url: string, extraBody: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  return { custom_id: customId, method: 'FILE', url, body: { model: 'whisper-1', file: 'file-abc123', ...extraBody }, ...extra };
}

function tokensOf(value: unknown): number {
  return Math.ceil(Buffer.byteLength(JSON.stringify(value), 'utf8') / 4);
}

function codes(outcome: ValidationOutcome): string[] {
  return outcome.errors.map((error) => error.code);
}

/** A single error on the given line with the given code. */
async function expectSingleError(input: string | Buffer, code: string, line: number, overrides: Partial<ValidationRules> = {}): Promise<LineError> {
  const { outcome, calls } = await run(input, overrides);
  assert.equal(outcome.ok, false);
  assert.deepEqual(codes(outcome), [code], JSON.stringify(outcome.errors));
  assert.equal(outcome.errors[0].line, line);
  assert.deepEqual(calls, [], 'onRequests must not receive rows of a failed file when the error is on the first line');
  return outcome.errors[0];
}

function assertRowsAddressTheirLines(data: Buffer, rows: ValidRequestLine[]): void {
  for (const row of rows) {
    const slice = data.subarray(row.offset, row.offset + row.length);
    const parsed = JSON.parse(slice.toString('utf8')) as { custom_id: string };
    assert.equal(parsed.custom_id, row.customId, `row for line ${row.line} must address exactly that line`);
    // Exactly the line: nothing of the line ending or the next line included.
    assert.notEqual(slice[slice.length - 1], 0x0d);
    assert.notEqual(slice[slice.length - 1], 0x0a);
    const after = data[row.offset + row.length];
    assert.ok(after === undefined || after === 0x0a || after === 0x0d, `line ${row.line} must end at a line ending`);
    const before = row.offset === 0 ? undefined : data[row.offset - 1];
    assert.ok(before === undefined || before === 0x0a || (row.offset === 3 && data.subarray(0, 3).equals(BOM)), `line ${row.line} must start a line`);
  }
}

describe('validateInput: valid files', () => {
  it('accepts a valid chat file and hands out one row per line', async () => {
    const input = jsonl(chatLine('a'), chatLine('b'), chatLine('c'));
    const { outcome, rows, data } = await run(input);
    assert.equal(outcome.ok, true);
    assert.deepEqual(outcome.errors, []);
    assert.equal(outcome.requestCount, 3);
    assert.deepEqual(
      rows.map((row) => [row.line, row.customId, row.model]),
      [
        [1, 'a', 'm-chat'],
        [2, 'b', 'm-chat'],
        [3, 'c', 'm-chat'],
      ],
    );
    assert.equal(rows[0].offset, 0);
    assertRowsAddressTheirLines(data, rows);
  });

  it('accepts lines without url and method for JSON endpoints', async () => {
    const { outcome, rows } = await run(jsonl({ custom_id: 'x', body: { model: 'm', messages: [] } }));
    assert.equal(outcome.ok, true);
    assert.equal(rows.length, 1);
  });

  it('accepts every JSON endpoint with a matching url and method POST', async () => {
    for (const endpoint of [CHAT, COMPLETIONS, EMBEDDINGS]) {
      const { outcome, rows } = await run(jsonl({ custom_id: 'x', method: 'POST', url: endpoint, body: { model: 'm', prompt: 'p', input: 'i' } }), { endpoint });
      assert.equal(outcome.ok, true, `${endpoint}: ${JSON.stringify(outcome.errors)}`);
      assert.equal(rows.length, 1);
    }
  });

  it('points offset/length of every row exactly at its line, across CRLF, BOM, blank lines and multi-byte text', async () => {
    const lines = [
      JSON.stringify(chatLine('r1')),
      '',
      '   \t ',
      JSON.stringify(chatLine('r2 \u00e9\u{1F600}', { messages: [{ role: 'user', content: 'na\u00efve \u4e2d\u6587' }] })),
      JSON.stringify(chatLine('r3')),
      '',
    ];
    const data = Buffer.concat([BOM, Buffer.from(lines.join('\r\n'), 'utf8')]);
    for (const chunkBytes of [undefined, 1, 3, 17]) {
      const { outcome, rows } = await run(data, {}, chunkBytes);
      assert.equal(outcome.ok, true, JSON.stringify(outcome.errors));
      assert.deepEqual(
        rows.map((row) => [row.line, row.customId]),
        [
          [1, 'r1'],
          [4, 'r2 \u00e9\u{1F600}'],
          [5, 'r3'],
        ],
      );
      assert.equal(rows[0].offset, 3, 'the BOM counts in offsets');
      assertRowsAddressTheirLines(data, rows);
    }
  });

  it('handles a final line without a trailing newline', async () => {
    const input = `${JSON.stringify(chatLine('a'))}\n${JSON.stringify(chatLine('b'))}`;
    const { outcome, rows, data } = await run(input);
    assert.equal(outcome.ok, true);
    assert.equal(rows.length, 2);
    assert.equal(rows[1].offset + rows[1].length, data.length);
    assertRowsAddressTheirLines(data, rows);
  });

  it('gives the same outcome for every chunking of the source', async () => {
    const input = jsonl(chatLine('a'), '', chatLine('b', { max_tokens: 7 }), '{bad', chatLine('a'), chatLine('c', { stream: true }));
    const baseline = await run(input);
    assert.deepEqual(codes(baseline.outcome), ['invalid_json_line', 'duplicate_custom_id', 'stream_not_supported']);
    for (const size of [1, 2, 5, 64]) {
      const chunked = await run(input, {}, size);
      assert.deepEqual(chunked.outcome, baseline.outcome, `chunk size ${size}`);
      assert.deepEqual(chunked.calls, baseline.calls);
    }
  });

  it('rejects an unsupported endpoint up front', async () => {
    await assert.rejects(
      validateInput(fromChunks([Buffer.from(jsonl(chatLine('a')))]), rules({ endpoint: '/v1/images/generations' }), async () => {}),
      TypeError,
    );
    assert.ok((BATCH_ENDPOINTS as readonly string[]).includes(TRANSLATIONS));
  });
});

describe('validateInput: line syntax', () => {
  it('reports a line that is not JSON as invalid_json_line (and only that)', async () => {
    const error = await expectSingleError(jsonl('{"custom_id": "a", "body": {'), 'invalid_json_line', 1);
    assert.equal(error.param, null);
    assert.match(error.message, /not valid JSON/);
    assert.match(error.message, /one complete JSON object/);
  });

  it('reports the right line number for a bad line after good ones', async () => {
    const { outcome } = await run(jsonl(chatLine('a'), chatLine('b'), 'nope', chatLine('c')));
    assert.deepEqual(codes(outcome), ['invalid_json_line']);
    assert.equal(outcome.errors[0].line, 3);
    assert.match(outcome.errors[0].message, /^line 3 is not valid JSON/);
  });

  it('reports JSON values that are not objects as invalid_json_line', async () => {
    for (const value of ['[1,2]', '"text"', '42', 'null', 'true', '[]']) {
      const error = await expectSingleError(jsonl(value), 'invalid_json_line', 1);
      assert.match(error.message, /not an object/, value);
      assert.match(error.message, /custom_id/, value);
    }
  });

  it('reports a line holding two JSON objects as invalid JSON', async () => {
    await expectSingleError(jsonl(JSON.stringify(chatLine('a')) + JSON.stringify(chatLine('b'))), 'invalid_json_line', 1);
  });

  it('reports invalid UTF-8 on its line', async () => {
    const good = Buffer.from(JSON.stringify(chatLine('a')) + '\n');
    const bad = Buffer.concat([Buffer.from('{"custom_id":"b","body":{"model":"m","x":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}}\n')]);
    const { outcome, calls } = await run(Buffer.concat([good, bad]));
    assert.equal(outcome.ok, false);
    assert.deepEqual(codes(outcome), ['invalid_utf8']);
    assert.equal(outcome.errors[0].line, 2);
    assert.match(outcome.errors[0].message, /UTF-8/);
    assert.deepEqual(calls, []);
  });

  it('reports other invalid UTF-8 forms (truncated sequence, encoded surrogate, overlong)', async () => {
    for (const badBytes of [[0xc3], [0xed, 0xa0, 0x80], [0xc0, 0xaf], [0xe2, 0x82]]) {
      const line = Buffer.concat([Buffer.from('{"custom_id":"a","body":{"model":"m","x":"'), Buffer.from(badBytes), Buffer.from('"}}')]);
      await expectSingleError(line, 'invalid_utf8', 1);
    }
  });
});

describe('validateInput: custom_id', () => {
  it('requires a custom_id', async () => {
    const error = await expectSingleError(jsonl({ body: { model: 'm' } }), 'missing_custom_id', 1);
    assert.equal(error.param, 'custom_id');
    assert.match(error.message, /custom_id/);
  });

  it('requires custom_id to be a non-empty string', async () => {
    for (const value of [123, null, true, { id: 'a' }, ['a'], '']) {
      const error = await expectSingleError(jsonl({ custom_id: value, body: { model: 'm' } }), 'invalid_custom_id', 1);
      assert.equal(error.param, 'custom_id');
      assert.match(error.message, /non-empty string/);
    }
  });

  it(`accepts a custom_id of exactly ${MAX_CUSTOM_ID_LENGTH} characters and rejects one longer`, async () => {
    assert.equal(MAX_CUSTOM_ID_LENGTH, 64);
    const ok = await run(jsonl({ custom_id: 'x'.repeat(64), body: { model: 'm' } }));
    assert.equal(ok.outcome.ok, true);
    const error = await expectSingleError(jsonl({ custom_id: 'x'.repeat(65), body: { model: 'm' } }), 'custom_id_too_long', 1);
    assert.equal(error.param, 'custom_id');
    assert.match(error.message, /longer than 64 characters/);
  });

  it('counts custom_id length in characters (code points), not UTF-16 units or bytes', async () => {
    const emoji64 = '\u{1F600}'.repeat(64); // 128 UTF-16 units, 256 bytes
    const ok = await run(jsonl({ custom_id: emoji64, body: { model: 'm' } }));
    assert.equal(ok.outcome.ok, true, JSON.stringify(ok.outcome.errors));
    assert.equal(ok.rows[0].customId, emoji64);
    await expectSingleError(jsonl({ custom_id: '\u{1F600}'.repeat(65), body: { model: 'm' } }), 'custom_id_too_long', 1);
    await expectSingleError(jsonl({ custom_id: 'a' + '\u{1F600}'.repeat(64), body: { model: 'm' } }), 'custom_id_too_long', 1);
  });

  it('rejects a duplicate custom_id, naming the line that used it first', async () => {
    const { outcome } = await run(jsonl(chatLine('same'), chatLine('other'), '', chatLine('same')));
    assert.equal(outcome.ok, false);
    assert.deepEqual(codes(outcome), ['duplicate_custom_id']);
    const error = outcome.errors[0];
    assert.equal(error.line, 4);
    assert.equal(error.param, 'custom_id');
    assert.match(error.message, /"same"/);
    assert.match(error.message, /line 1\b/);
    assert.match(error.message, /unique/);
  });

  it('treats custom_ids as case- and whitespace-sensitive', async () => {
    const { outcome } = await run(jsonl(chatLine('a'), chatLine('A'), chatLine('a ')));
    assert.equal(outcome.ok, true);
  });
});

describe('validateInput: body, url and method', () => {
  it('requires body to be a JSON object', async () => {
    for (const body of [undefined, null, 'text', 42, [{ model: 'm' }]]) {
      const line = body === undefined ? { custom_id: 'a' } : { custom_id: 'a', body };
      const error = await expectSingleError(jsonl(line), 'invalid_body', 1);
      assert.equal(error.param, 'body');
      assert.match(error.message, /JSON object/);
    }
  });

  it('rejects a url that differs from the batch endpoint', async () => {
    for (const url of [COMPLETIONS, '/v1/chat/completions/', 'https://api.openai.com/v1/chat/completions', 42]) {
      const error = await expectSingleError(jsonl(chatLine('a', {}, { url })), 'mismatched_url', 1);
      assert.equal(error.param, 'url');
      assert.match(error.message, new RegExp(CHAT.replace(/\//g, '\\/')));
      assert.match(error.message, /make them match/);
    }
  });

  it('rejects a JSON line whose method is not POST', async () => {
    for (const method of ['GET', 'post', 'FILE', 1, null]) {
      const error = await expectSingleError(jsonl(chatLine('a', {}, { method })), 'invalid_method', 1);
      assert.equal(error.param, 'method');
      assert.match(error.message, /"method": "POST"/);
    }
  });

  it('rejects stream: true but accepts stream: false', async () => {
    const error = await expectSingleError(jsonl(chatLine('a', { stream: true })), 'stream_not_supported', 1);
    assert.equal(error.param, 'body.stream');
    assert.match(error.message, /stream/);
    const ok = await run(jsonl(chatLine('a', { stream: false })));
    assert.equal(ok.outcome.ok, true);
  });

  it('reports every problem of one line together, all on that line', async () => {
    const line = { url: COMPLETIONS, method: 'GET', body: { stream: true } };
    const { outcome } = await run(jsonl(line));
    assert.deepEqual(codes(outcome), ['missing_custom_id', 'mismatched_url', 'invalid_method', 'stream_not_supported', 'missing_model']);
    assert.ok(outcome.errors.every((error) => error.line === 1));
  });
});

describe('validateInput: model', () => {
  it('requires a model when the batch sets no model_id', async () => {
    const error = await expectSingleError(jsonl({ custom_id: 'a', body: { messages: [] } }), 'missing_model', 1);
    assert.equal(error.param, 'body.model');
    assert.match(error.message, /body\.model/);
    assert.match(error.message, /model_id/);
  });

  it('treats an empty model string as missing', async () => {
    await expectSingleError(jsonl({ custom_id: 'a', body: { model: '' } }), 'missing_model', 1);
  });

  it('falls back to rules.modelId when a line has no model', async () => {
    const { outcome, rows } = await run(jsonl({ custom_id: 'a', body: {} }, { custom_id: 'b', body: { model: '' } }, { custom_id: 'c', body: { model: 'own' } }), {
      modelId: 'batch-model',
    });
    assert.equal(outcome.ok, true);
    assert.deepEqual(
      rows.map((row) => row.model),
      ['batch-model', 'batch-model', 'own'],
    );
    assert.deepEqual([...outcome.tokensByModel.keys()].sort(), ['batch-model', 'own']);
  });

  it('rejects a model that is not a string, even with a model_id fallback', async () => {
    for (const model of [42, null, ['m'], { name: 'm' }]) {
      const error = await expectSingleError(jsonl({ custom_id: 'a', body: { model } }), 'invalid_model', 1, { modelId: 'fallback' });
      assert.equal(error.param, 'body.model');
    }
  });
});

describe('validateInput: audio endpoints', () => {
  for (const endpoint of [TRANSCRIPTIONS, TRANSLATIONS]) {
    describe(endpoint, () => {
      it('accepts method FILE with a body.file', async () => {
        const { outcome, rows, data } = await run(jsonl(audioLine('a', endpoint), audioLine('b', endpoint, { file: 'https://example.com/a.wav' })), { endpoint });
        assert.equal(outcome.ok, true, JSON.stringify(outcome.errors));
        assert.equal(rows.length, 2);
        assert.equal(rows[0].model, 'whisper-1');
        assertRowsAddressTheirLines(data, rows);
      });

      it('requires method FILE (absent or POST is an error)', async () => {
        const line = audioLine('a', endpoint);
        const { method: _omitted, ...withoutMethod } = line;
        for (const input of [withoutMethod, { ...line, method: 'POST' }, { ...line, method: 'file' }]) {
          const error = await expectSingleError(jsonl(input), 'invalid_method', 1, { endpoint });
          assert.equal(error.param, 'method');
          assert.match(error.message, /"method": "FILE"/);
        }
      });

      it('requires a non-empty string body.file', async () => {
        for (const file of [undefined, '', 42, null]) {
          const line = audioLine('a', endpoint, { file });
          const error = await expectSingleError(jsonl(line), 'missing_file', 1, { endpoint });
          assert.equal(error.param, 'body.file');
          assert.match(error.message, /body\.file/);
        }
      });

      it('rejects the other audio endpoint as url', async () => {
        const other = endpoint === TRANSCRIPTIONS ? TRANSLATIONS : TRANSCRIPTIONS;
        await expectSingleError(jsonl(audioLine('a', other)), 'mismatched_url', 1, { endpoint });
      });

      it('uses model_id for an audio line without a model', async () => {
        const { outcome, rows } = await run(jsonl({ custom_id: 'a', method: 'FILE', body: { file: 'file-1' } }), { endpoint, modelId: 'whisper-large' });
        assert.equal(outcome.ok, true);
        assert.equal(rows[0].model, 'whisper-large');
      });
    });
  }

  it('does not accept method FILE on a JSON endpoint', async () => {
    await expectSingleError(jsonl(chatLine('a', {}, { method: 'FILE' })), 'invalid_method', 1);
  });
});

describe('validateInput: blank lines, empty files, CRLF, BOM', () => {
  it('skips blank and whitespace-only lines, including trailing ones, without counting them', async () => {
    const input = ['', ' ', JSON.stringify(chatLine('a')), '\t', '', JSON.stringify(chatLine('b')), '', '  ', '', ''].join('\n');
    const { outcome, rows } = await run(input, { maxLines: 2 });
    assert.equal(outcome.ok, true, JSON.stringify(outcome.errors));
    assert.equal(outcome.requestCount, 2);
    assert.deepEqual(
      rows.map((row) => row.line),
      [3, 6],
    );
  });

  it('accepts a line with whitespace around the JSON object', async () => {
    const { outcome, rows, data } = await run(`  ${JSON.stringify(chatLine('a'))}\t\n`);
    assert.equal(outcome.ok, true);
    assert.equal(rows[0].offset, 0);
    assert.equal(rows[0].length, data.length - 1);
  });

  it('does not treat a line of non-JSON whitespace (\\v, \\f) as blank', async () => {
    for (const ch of ['\v', '\f']) {
      const { outcome } = await run(`${JSON.stringify(chatLine('a'))}\n${ch}\n`);
      assert.equal(outcome.ok, false, JSON.stringify(ch));
      assert.deepEqual(codes(outcome), ['invalid_json_line']);
      assert.equal(outcome.errors[0].line, 2);
    }
  });

  it('reports an empty file', async () => {
    for (const input of ['', '\n', '\n\n  \n', '\r\n\r\n', BOM, Buffer.concat([BOM, Buffer.from('\r\n')])]) {
      const { outcome, calls } = await run(input);
      assert.equal(outcome.ok, false);
      assert.deepEqual(codes(outcome), ['empty_file']);
      assert.equal(outcome.requestCount, 0);
      assert.match(outcome.errors[0].message, /no requests/);
      assert.match(outcome.errors[0].message, /add one JSON request per line/);
      assert.deepEqual(calls, []);
    }
  });

  it('accepts CRLF line endings; row length excludes the \\r', async () => {
    const input = [chatLine('a'), chatLine('b')].map((line) => JSON.stringify(line)).join('\r\n') + '\r\n';
    const { outcome, rows, data } = await run(input);
    assert.equal(outcome.ok, true);
    assert.equal(rows[0].length, JSON.stringify(chatLine('a')).length);
    assert.equal(rows[1].offset, rows[0].length + 2);
    assertRowsAddressTheirLines(data, rows);
  });

  it('accepts a file that starts with a UTF-8 BOM', async () => {
    const data = Buffer.concat([BOM, Buffer.from(jsonl(chatLine('a'), chatLine('b')))]);
    const { outcome, rows } = await run(data);
    assert.equal(outcome.ok, true, JSON.stringify(outcome.errors));
    assert.equal(rows[0].offset, 3);
    assertRowsAddressTheirLines(data, rows);
  });
});

describe('validateInput: limits', () => {
  it('accepts exactly maxLines requests', async () => {
    const { outcome, rows } = await run(jsonl(chatLine('a'), chatLine('b'), chatLine('c')), { maxLines: 3 });
    assert.equal(outcome.ok, true);
    assert.equal(rows.length, 3);
  });

  it('fails at the first line over maxLines and stops reading there', async () => {
    const input = jsonl(chatLine('a'), '', chatLine('b'), '', chatLine('c'), 'not json', chatLine('a'));
    const { outcome, calls } = await run(input, { maxLines: 2 });
    assert.equal(outcome.ok, false);
    assert.deepEqual(codes(outcome), ['too_many_requests'], 'nothing after the line over the limit is read');
    const error = outcome.errors[0];
    assert.equal(error.line, 5);
    assert.equal(error.param, null);
    assert.match(error.message, /limit of 2 requests/);
    assert.match(error.message, /split the file/);
    assert.equal(outcome.requestCount, 2);
    assert.deepEqual(calls, []);
  });

  it('does not pull more of the source after the line over maxLines', async () => {
    let pulls = 0;
    async function* source(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < 100; i++) {
        pulls += 1;
        yield Buffer.from(JSON.stringify(chatLine(`id-${i}`)) + '\n');
      }
    }
    const outcome = await validateInput(source(), rules({ maxLines: 3 }), async () => {});
    assert.deepEqual(codes(outcome), ['too_many_requests']);
    assert.equal(outcome.errors[0].line, 4);
    assert.equal(pulls, 4);
  });

  it('keeps only the first maxErrors errors and stops reading', async () => {
    const input = jsonl(...Array.from({ length: 10 }, (_, i) => (i === 4 ? chatLine('ok') : `bad ${i}`)));
    const { outcome } = await run(input, { maxErrors: 3 });
    assert.equal(outcome.ok, false);
    assert.equal(outcome.errors.length, 3);
    assert.deepEqual(
      outcome.errors.map((error) => error.line),
      [1, 2, 3],
    );
    assert.equal(outcome.requestCount, 3, 'reading stopped at the third bad line');
  });

  it('caps errors from a single line with several problems at maxErrors', async () => {
    const { outcome } = await run(jsonl({ url: '/x', method: 'GET', body: { stream: true } }, 'bad'), { maxErrors: 2 });
    assert.deepEqual(codes(outcome), ['missing_custom_id', 'mismatched_url']);
    assert.equal(outcome.requestCount, 1);
  });

  it('treats maxErrors below 1 as 1', async () => {
    const { outcome } = await run(jsonl('bad', 'worse'), { maxErrors: 0 });
    assert.deepEqual(codes(outcome), ['invalid_json_line']);
    assert.equal(outcome.errors[0].line, 1);
  });

  it('collects errors from many lines when maxErrors allows', async () => {
    const { outcome } = await run(jsonl('bad', chatLine('a'), '[1]', chatLine('a'), chatLine('b', { stream: true })));
    assert.deepEqual(codes(outcome), ['invalid_json_line', 'invalid_json_line', 'duplicate_custom_id', 'stream_not_supported']);
    assert.deepEqual(
      outcome.errors.map((error) => error.line),
      [1, 3, 4, 5],
    );
    assert.equal(outcome.requestCount, 5);
  });

  it('the too_many_requests error respects maxErrors too', async () => {
    const { outcome } = await run(jsonl('bad', 'bad', 'bad'), { maxErrors: 2, maxLines: 2 });
    assert.deepEqual(codes(outcome), ['invalid_json_line', 'invalid_json_line']);
    const more = await run(jsonl('bad', chatLine('a'), chatLine('b')), { maxErrors: 5, maxLines: 2 });
    assert.deepEqual(codes(more.outcome), ['invalid_json_line', 'too_many_requests']);
    assert.equal(more.outcome.errors[1].line, 3);
  });
});

describe('validateInput: onRequests', () => {
  const lines = (n: number) => jsonl(...Array.from({ length: n }, (_, i) => chatLine(`id-${i + 1}`)));

  it('hands rows out in chunks of chunkSize, the remainder last', async () => {
    const { outcome, calls } = await run(lines(7), { chunkSize: 3 });
    assert.equal(outcome.ok, true);
    assert.deepEqual(
      calls.map((call) => call.map((row) => row.line)),
      [
        [1, 2, 3],
        [4, 5, 6],
        [7],
      ],
    );
  });

  it('makes no empty call when the row count is a multiple of chunkSize', async () => {
    const { calls } = await run(lines(6), { chunkSize: 3 });
    assert.deepEqual(
      calls.map((call) => call.length),
      [3, 3],
    );
  });

  it('defaults to chunks of 1000', async () => {
    const { outcome, calls } = await run(lines(1001), { maxLines: 5000 });
    assert.equal(outcome.ok, true);
    assert.deepEqual(
      calls.map((call) => call.length),
      [1000, 1],
    );
    const small = await run(lines(5));
    assert.deepEqual(
      small.calls.map((call) => call.length),
      [5],
    );
  });

  it('treats chunkSize below 1 as 1', async () => {
    const { calls } = await run(lines(3), { chunkSize: 0 });
    assert.deepEqual(
      calls.map((call) => call.length),
      [1, 1, 1],
    );
  });

  it('is never called again after the first error', async () => {
    const input = jsonl(...Array.from({ length: 10 }, (_, i) => (i === 4 ? 'broken' : chatLine(`id-${i + 1}`))));
    const { outcome, calls } = await run(input, { chunkSize: 2 });
    assert.equal(outcome.ok, false);
    assert.deepEqual(codes(outcome), ['invalid_json_line']);
    assert.equal(outcome.errors[0].line, 5);
    assert.equal(outcome.requestCount, 10, 'the rest of the file is still checked');
    assert.deepEqual(
      calls.map((call) => call.map((row) => row.line)),
      [
        [1, 2],
        [3, 4],
      ],
    );
  });

  it('does not flush a partial chunk held when an error comes', async () => {
    const { calls } = await run(jsonl(chatLine('a'), chatLine('b'), chatLine('c'), '{'), { chunkSize: 2 });
    assert.deepEqual(
      calls.map((call) => call.map((row) => row.customId)),
      [['a', 'b']],
    );
  });

  it('is not called at all when the first line is bad', async () => {
    const { calls } = await run(jsonl('{', ...Array.from({ length: 5 }, (_, i) => chatLine(`id-${i}`))), { chunkSize: 1 });
    assert.deepEqual(calls, []);
  });

  it('waits for each onRequests call before reading on', async () => {
    const events: string[] = [];
    async function* source(): AsyncGenerator<Uint8Array> {
      for (let i = 1; i <= 4; i++) {
        events.push(`read ${i}`);
        yield Buffer.from(JSON.stringify(chatLine(`id-${i}`)) + '\n');
      }
    }
    const outcome = await validateInput(source(), rules({ chunkSize: 2 }), async (rows) => {
      events.push(`store start ${rows.map((row) => row.line).join(',')}`);
      await new Promise<void>((resolve) => setImmediate(resolve));
      await new Promise<void>((resolve) => setImmediate(resolve));
      events.push('store end');
    });
    assert.equal(outcome.ok, true);
    assert.deepEqual(events, ['read 1', 'read 2', 'store start 1,2', 'store end', 'read 3', 'read 4', 'store start 3,4', 'store end']);
  });

  it('propagates a rejection from onRequests', async () => {
    await assert.rejects(
      validateInput(fromChunks([Buffer.from(lines(3))]), rules({ chunkSize: 2 }), async () => {
        throw new Error('store unavailable');
      }),
      /store unavailable/,
    );
  });
});

describe('validateInput: token estimates', () => {
  it('estimates chat lines as prompt bytes / 4 plus max_tokens or the default', async () => {
    const messages = [{ role: 'user', content: 'hi' }];
    // JSON.stringify(messages) is 32 bytes -> 8 prompt tokens.
    assert.equal(tokensOf(messages), 8);
    const { outcome, rows } = await run(
      jsonl(
        { custom_id: 'a', body: { model: 'm', messages, max_tokens: 10 } },
        { custom_id: 'b', body: { model: 'm', messages } },
        { custom_id: 'c', body: { model: 'm', messages, max_completion_tokens: 25 } },
        { custom_id: 'd', body: { model: 'm', messages, max_tokens: 2.5 } },
      ),
    );
    assert.equal(outcome.ok, true);
    assert.deepEqual(
      rows.map((row) => row.estimatedTokens),
      [18, 8 + DEFAULT_MAX_TOKENS, 33, 11],
    );
  });

  it('uses the default completion budget for a negative or non-numeric max_tokens', async () => {
    const messages = [{ role: 'user', content: 'hi' }];
    const { rows } = await run(jsonl({ custom_id: 'a', body: { model: 'm', messages, max_tokens: -5 } }, { custom_id: 'b', body: { model: 'm', messages, max_tokens: '10' } }));
    assert.deepEqual(
      rows.map((row) => row.estimatedTokens),
      [8 + DEFAULT_MAX_TOKENS, 8 + DEFAULT_MAX_TOKENS],
    );
  });

  it('counts prompt bytes, not characters, for multi-byte text', async () => {
    const messages = [{ role: 'user', content: '\u4e2d\u6587\u4e2d\u6587' }]; // 12 UTF-8 bytes of content
    const { rows } = await run(jsonl({ custom_id: 'a', body: { model: 'm', messages, max_tokens: 1 } }));
    assert.equal(rows[0].estimatedTokens, tokensOf(messages) + 1);
    assert.equal(tokensOf(messages), Math.ceil((JSON.stringify(messages).length + 8) / 4));
  });

  it('estimates completions from prompt and embeddings from input (no completion budget)', async () => {
    const completions = await run(jsonl({ custom_id: 'a', body: { model: 'm', prompt: 'Once upon a time', max_tokens: 5 } }), { endpoint: COMPLETIONS });
    assert.equal(completions.rows[0].estimatedTokens, tokensOf('Once upon a time') + 5);
    const embeddings = await run(
      jsonl({ custom_id: 'a', body: { model: 'e', input: ['one', 'two', 'three'], max_tokens: 500 } }, { custom_id: 'b', body: { model: 'e', input: 'x'.repeat(400) } }),
      { endpoint: EMBEDDINGS },
    );
    assert.deepEqual(
      embeddings.rows.map((row) => row.estimatedTokens),
      [tokensOf(['one', 'two', 'three']), 101],
    );
  });

  it('gives every valid line a positive estimate, audio included', async () => {
    const cases: Array<[string, unknown[]]> = [
      [CHAT, [{ custom_id: 'a', body: { model: 'm', messages: [], max_tokens: 0 } }, { custom_id: 'b', body: { model: 'm' } }]],
      [COMPLETIONS, [{ custom_id: 'a', body: { model: 'm', prompt: '' } }]],
      [EMBEDDINGS, [{ custom_id: 'a', body: { model: 'm', input: '' } }, { custom_id: 'b', body: { model: 'm' } }]],
      [TRANSCRIPTIONS, [audioLine('a', TRANSCRIPTIONS)]],
      [TRANSLATIONS, [audioLine('a', TRANSLATIONS)]],
    ];
    for (const [endpoint, input] of cases) {
      const { outcome, rows } = await run(jsonl(...input), { endpoint, defaultMaxTokensEstimate: 0 });
      assert.equal(outcome.ok, true, `${endpoint}: ${JSON.stringify(outcome.errors)}`);
      for (const row of rows) {
        assert.ok(Number.isInteger(row.estimatedTokens) && row.estimatedTokens >= 1, `${endpoint} line ${row.line}: ${row.estimatedTokens}`);
      }
      assert.equal(outcome.estimatedTokens, rows.reduce((sum, row) => sum + row.estimatedTokens, 0));
    }
  });

  it('sums estimates into estimatedTokens and tokensByModel', async () => {
    const input = jsonl(
      chatLine('a', { model: 'alpha', max_tokens: 10 }),
      chatLine('b', { model: 'beta' }),
      chatLine('c', { model: 'alpha', max_tokens: 3 }),
      { custom_id: 'd', body: { messages: [{ role: 'user', content: 'long '.repeat(50) }] } },
    );
    const { outcome, rows } = await run(input, { modelId: 'fallback', chunkSize: 2 });
    assert.equal(outcome.ok, true);
    assert.equal(rows.length, 4);
    for (const row of rows) assert.ok(row.estimatedTokens > 0);
    const total = rows.reduce((sum, row) => sum + row.estimatedTokens, 0);
    assert.equal(outcome.estimatedTokens, total);
    const byModel = new Map<string, number>();
    for (const row of rows) byModel.set(row.model, (byModel.get(row.model) ?? 0) + row.estimatedTokens);
    assert.deepEqual(outcome.tokensByModel, byModel);
    assert.deepEqual([...outcome.tokensByModel.keys()].sort(), ['alpha', 'beta', 'fallback']);
    assert.equal([...outcome.tokensByModel.values()].reduce((a, b) => a + b, 0), outcome.estimatedTokens);
    const a = rows.find((row) => row.customId === 'a');
    assert.equal(a?.estimatedTokens, tokensOf([{ role: 'user', content: 'hello a' }]) + 10);
  });

  it('reports zero tokens and an empty model map for an empty file', async () => {
    const { outcome } = await run('');
    assert.equal(outcome.estimatedTokens, 0);
    assert.equal(outcome.tokensByModel.size, 0);
  });
});
