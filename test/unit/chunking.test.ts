import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CHUNK_MAX_BYTES, CHUNK_MAX_LINES, CHUNK_MIN_LINES, ChunkBuilder, linesPerChunk, type ChunkLine } from '../../src/batches/chunking.ts';
import { validateInput } from '../../src/batches/input-validator.ts';
import type { NewChunk } from '../../src/store/sql/schema.ts';

/** Lines of the given lengths, each followed by "\n", numbered from `firstLine` and laid out from byte `offset`. */
function layout(lengths: number[], firstLine = 1, offset = 0, model = 'm'): ChunkLine[] {
  return lengths.map((length, i) => {
    const line = { line: firstLine + i, offset, length, model, estimatedTokens: 10 };
    offset += length + 1;
    return line;
  });
}

function build(lines: ChunkLine[], maxLines: number, maxBytes?: number): NewChunk[] {
  const builder = new ChunkBuilder('batch-x', maxLines, maxBytes);
  const chunks: NewChunk[] = [];
  for (const line of lines) {
    const closed = builder.add(line);
    if (closed) chunks.push(closed);
  }
  const last = builder.finish();
  if (last) chunks.push(last);
  assert.equal(builder.finish(), undefined, 'finish empties the builder');
  return chunks;
}

const shape = (chunks: NewChunk[]) => chunks.map((c) => [c.chunk, c.line_start, c.line_count, c.byte_start, c.byte_end]);

describe('linesPerChunk', () => {
  it('aims at 16 chunks a file, between 16 and 256 lines a chunk', () => {
    assert.equal(linesPerChunk(0), CHUNK_MIN_LINES);
    assert.equal(linesPerChunk(1), 16);
    assert.equal(linesPerChunk(40), 16);
    assert.equal(linesPerChunk(256), 16);
    assert.equal(linesPerChunk(257), 17);
    assert.equal(linesPerChunk(1000), 63);
    assert.equal(linesPerChunk(4096), 256);
    assert.equal(linesPerChunk(50_000), CHUNK_MAX_LINES);
  });
});

describe('ChunkBuilder', () => {
  it('cuts by lines: full chunks, then the rest', () => {
    const lines = layout(Array.from({ length: 40 }, () => 9));
    const chunks = build(lines, 16);
    assert.deepEqual(shape(chunks), [
      [0, 1, 16, 0, 16 * 10 - 1],
      [1, 17, 16, 160, 32 * 10 - 1],
      [2, 33, 8, 320, 40 * 10 - 1],
    ]);
    assert.ok(chunks.every((c) => c.batch_id === 'batch-x' && c.state === 'pending' && c.claims === 0 && c.segments === 0 && c.lease_owner === null));
  });

  it('sums models and estimated tokens per chunk', () => {
    const lines = [...layout([5, 5], 1, 0, 'a'), ...layout([5], 3, 12, 'b')];
    const [chunk] = build(lines, 16);
    assert.deepEqual(JSON.parse(chunk.models), { a: [2, 20], b: [1, 10] });
    assert.equal(chunk.estimated_tokens, 30);
    assert.equal(chunk.line_count, 3);
    assert.equal(chunk.byte_end, 17);
  });

  it('cuts by bytes: a chunk spans at most maxBytes of input', () => {
    // 10-byte lines at 11 bytes a line: 3 lines span 32 bytes, 4 span 43.
    const chunks = build(layout([10, 10, 10, 10, 10, 10, 10]), 100, 40);
    assert.deepEqual(shape(chunks), [
      [0, 1, 3, 0, 32],
      [1, 4, 3, 33, 65],
      [2, 7, 1, 66, 76],
    ]);
    assert.ok(chunks.every((c) => Number(c.byte_end) - Number(c.byte_start) <= 40));
  });

  it('the default byte bound is CHUNK_MAX_BYTES', () => {
    const half = CHUNK_MAX_BYTES / 2 - 1;
    const chunks = build(layout([half, half, half]), 256);
    assert.deepEqual(
      chunks.map((c) => c.line_count),
      [2, 1],
    );
    assert.equal(Number(chunks[0].byte_end) - Number(chunks[0].byte_start), 2 * half + 1);
  });

  it('a line longer than the byte bound is a chunk of its own', () => {
    const chunks = build(layout([5, 100, 5, 5]), 16, 40);
    assert.deepEqual(shape(chunks), [
      [0, 1, 1, 0, 5],
      [1, 2, 1, 6, 106],
      [2, 3, 2, 107, 118],
    ]);
  });

  it('a gap in line numbers (skipped blank lines) starts a new chunk', () => {
    // Lines 1-3, two blank lines (4 and 5, one byte each), then lines 6-7.
    const lines = [...layout([8, 8, 8]), ...layout([8, 8], 6, 27 + 2)];
    const chunks = build(lines, 16);
    assert.deepEqual(shape(chunks), [
      [0, 1, 3, 0, 26],
      [1, 6, 2, 29, 46],
    ]);
  });

  it('a blank first line: the chunk starts at the first request line', () => {
    const chunks = build(layout([8, 8], 2, 1), 16);
    assert.deepEqual(shape(chunks), [[0, 2, 2, 1, 18]]);
  });

  it('no lines, no chunks', () => {
    assert.deepEqual(build([], 16), []);
  });

  it('a model named __proto__ is counted like any other', () => {
    const [chunk] = build(layout([5, 5], 1, 0, '__proto__'), 16);
    assert.deepEqual(Object.entries(JSON.parse(chunk.models)), [['__proto__', [2, 20]]]);
  });
});

describe('chunks of a validated file', () => {
  it('split on LF, each chunk range holds exactly its lines (blank lines, CRLF and whitespace lines between them)', async () => {
    const line = (id: string) => JSON.stringify({ custom_id: id, body: { model: id.startsWith('a') ? 'ma' : 'mb', messages: [] } });
    // Physical lines: 1 a1, 2 a2, 3 blank, 4 a4 (CRLF), 5 "  \t", 6 b6, 7 b7 (CRLF), 8 b8, 9 b9, then a trailing blank line.
    const text = `${line('a1')}\n${line('a2')}\n\n${line('a4')}\r\n  \t\n${line('b6')}\n${line('b7')}\r\n${line('b8')}\n${line('b9')}\n\n`;
    const bytes = Buffer.from(text);
    const builder = new ChunkBuilder('batch-v', 3);
    const chunks: NewChunk[] = [];
    const outcome = await validateInput(
      (async function* () {
        yield bytes;
      })(),
      { endpoint: '/v1/chat/completions', modelId: null, maxLines: 100, maxErrors: 10, defaultMaxTokensEstimate: 5, chunkSize: 2 },
      async (rows) => {
        for (const row of rows) {
          const closed = builder.add(row);
          if (closed) chunks.push(closed);
        }
      },
    );
    assert.equal(outcome.ok, true, JSON.stringify(outcome.errors));
    const last = builder.finish();
    if (last) chunks.push(last);
    assert.deepEqual(
      chunks.map((c) => [c.line_start, c.line_count]),
      [
        [1, 2],
        [4, 1],
        [6, 3],
        [9, 1],
      ],
    );
    const physical = text.split('\n');
    for (const chunk of chunks) {
      const span = bytes.subarray(Number(chunk.byte_start), Number(chunk.byte_end)).toString();
      const split = span.split('\n').map((l) => l.replace(/\r$/, ''));
      assert.equal(split.length, chunk.line_count);
      split.forEach((got, k) => assert.equal(got, physical[chunk.line_start - 1 + k].replace(/\r$/, '')));
    }
    assert.deepEqual(JSON.parse(chunks[2].models), { mb: [3, 3 * (5 + 1)] }, 'max_tokens 5 and a prompt of 1 a line');
  });
});
