import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { scanLines } from '../../src/batches/line-scanner.ts';

interface PlainLine {
  line: number;
  offset: number;
  length: number;
  text: string;
}

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/** Deterministic PRNG so a failing random case can be replayed. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function* fromChunks(chunks: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const chunk of chunks) yield chunk;
}

function splitEvery(data: Buffer, size: number): Buffer[] {
  const chunks: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) chunks.push(data.subarray(i, i + size));
  return chunks;
}

function splitRandomly(data: Buffer, random: () => number, maxSize: number, allowEmpty = false): Buffer[] {
  const chunks: Buffer[] = [];
  let i = 0;
  while (i < data.length) {
    const size = Math.floor(random() * (maxSize + (allowEmpty ? 1 : 0))) + (allowEmpty ? 0 : 1);
    chunks.push(data.subarray(i, i + size));
    i += size;
  }
  return chunks;
}

/**
 * A source that hands out views of one buffer it overwrites on every read, as
 * some stream implementations do. Anything the scanner keeps without copying
 * gets clobbered.
 */
async function* reusingSource(data: Buffer, sizes: number[]): AsyncGenerator<Uint8Array> {
  const shared = Buffer.alloc(Math.max(1, ...sizes));
  let i = 0;
  let k = 0;
  while (i < data.length) {
    const size = Math.min(sizes[k % sizes.length], data.length - i);
    k += 1;
    shared.fill(0x58); // 'X': garbage left over from the previous read
    data.copy(shared, 0, i, i + size);
    i += size;
    yield shared.subarray(0, size);
  }
}

/** Collects lines, copying the bytes immediately (they may be views into a reused chunk). */
async function collect(source: AsyncIterable<Uint8Array>): Promise<PlainLine[]> {
  const out: PlainLine[] = [];
  for await (const scanned of scanLines(source)) {
    assert.equal(scanned.length, scanned.bytes.length, `line ${scanned.line}: length must equal bytes.length`);
    out.push({ line: scanned.line, offset: scanned.offset, length: scanned.length, text: Buffer.from(scanned.bytes).toString('latin1') });
  }
  return out;
}

async function scanWhole(data: Buffer): Promise<PlainLine[]> {
  return collect(fromChunks([data]));
}

/** Independent reference: the lines of `data` as the scanner's contract describes them. */
function expectedLines(data: Buffer): PlainLine[] {
  const start = data.subarray(0, 3).equals(BOM) ? 3 : 0;
  const lines: PlainLine[] = [];
  let lineStart = start;
  let n = 0;
  for (let i = start; i <= data.length; i++) {
    const atEnd = i === data.length;
    if (!atEnd && data[i] !== 0x0a) continue;
    if (atEnd && lineStart === data.length) break; // nothing after the last \n
    let end = i;
    if (!atEnd && end > lineStart && data[end - 1] === 0x0d) end -= 1;
    n += 1;
    lines.push({ line: n, offset: lineStart, length: end - lineStart, text: data.subarray(lineStart, end).toString('latin1') });
    lineStart = i + 1;
  }
  return lines;
}

function assertLinesPointIntoSource(data: Buffer, lines: PlainLine[]): void {
  for (const l of lines) {
    assert.equal(data.subarray(l.offset, l.offset + l.length).toString('latin1'), l.text, `line ${l.line} offset/length must address its bytes`);
  }
}

describe('scanLines: basics', () => {
  it('splits LF-terminated lines with 1-based numbers, offsets and lengths', async () => {
    const lines = await scanWhole(Buffer.from('abc\nde\n\nfghij\n'));
    assert.deepEqual(lines, [
      { line: 1, offset: 0, length: 3, text: 'abc' },
      { line: 2, offset: 4, length: 2, text: 'de' },
      { line: 3, offset: 7, length: 0, text: '' },
      { line: 4, offset: 8, length: 5, text: 'fghij' },
    ]);
  });

  it('yields nothing for an empty source', async () => {
    assert.deepEqual(await collect(fromChunks([])), []);
    assert.deepEqual(await collect(fromChunks([Buffer.alloc(0), Buffer.alloc(0)])), []);
  });

  it('yields a final line that has no trailing newline', async () => {
    assert.deepEqual(await scanWhole(Buffer.from('one\ntwo')), [
      { line: 1, offset: 0, length: 3, text: 'one' },
      { line: 2, offset: 4, length: 3, text: 'two' },
    ]);
    assert.deepEqual(await scanWhole(Buffer.from('solo')), [{ line: 1, offset: 0, length: 4, text: 'solo' }]);
  });

  it('does not yield an extra empty line after a trailing newline', async () => {
    const lines = await scanWhole(Buffer.from('a\nb\n'));
    assert.equal(lines.length, 2);
    assert.deepEqual(
      lines.map((l) => l.text),
      ['a', 'b'],
    );
  });

  it('yields one empty line for a lone newline, and keeps blank lines numbered', async () => {
    assert.deepEqual(await scanWhole(Buffer.from('\n')), [{ line: 1, offset: 0, length: 0, text: '' }]);
    assert.deepEqual(await scanWhole(Buffer.from('\n\nx\n\n')), [
      { line: 1, offset: 0, length: 0, text: '' },
      { line: 2, offset: 1, length: 0, text: '' },
      { line: 3, offset: 2, length: 1, text: 'x' },
      { line: 4, offset: 4, length: 0, text: '' },
    ]);
  });

  it('accepts plain Uint8Array chunks (not Buffers), including views with a byteOffset', async () => {
    const backing = new Uint8Array(Buffer.from('JUNKhello\nworld\nJUNK'));
    const view = new Uint8Array(backing.buffer, 4, 12); // "hello\nworld\n"
    const lines = await collect(fromChunks([view]));
    assert.deepEqual(lines, [
      { line: 1, offset: 0, length: 5, text: 'hello' },
      { line: 2, offset: 6, length: 5, text: 'world' },
    ]);
  });

  it('returns bytes as a Buffer holding exactly the line content', async () => {
    for await (const scanned of scanLines(fromChunks([Buffer.from('{"a":1}\r\n')]))) {
      assert.ok(Buffer.isBuffer(scanned.bytes));
      assert.deepEqual(JSON.parse(scanned.bytes.toString('utf8')), { a: 1 });
    }
  });
});

describe('scanLines: CRLF and stray CR', () => {
  it('strips the \\r of a CRLF ending from bytes and length but counts it in offsets', async () => {
    assert.deepEqual(await scanWhole(Buffer.from('ab\r\ncd\r\n\r\nef')), [
      { line: 1, offset: 0, length: 2, text: 'ab' },
      { line: 2, offset: 4, length: 2, text: 'cd' },
      { line: 3, offset: 8, length: 0, text: '' },
      { line: 4, offset: 10, length: 2, text: 'ef' },
    ]);
  });

  it('keeps a \\r that is not directly before \\n', async () => {
    assert.deepEqual(await scanWhole(Buffer.from('a\rb\nc\r\r\n')), [
      { line: 1, offset: 0, length: 3, text: 'a\rb' },
      { line: 2, offset: 4, length: 2, text: 'c\r' },
    ]);
  });

  it('keeps a trailing \\r on a final line that has no \\n', async () => {
    assert.deepEqual(await scanWhole(Buffer.from('a\nb\r')), [
      { line: 1, offset: 0, length: 1, text: 'a' },
      { line: 2, offset: 2, length: 2, text: 'b\r' },
    ]);
  });

  it('handles a CRLF split between chunks (\\r at the end of one, \\n at the start of the next)', async () => {
    const lines = await collect(fromChunks([Buffer.from('abc\r'), Buffer.from('\ndef\r'), Buffer.from('\n')]));
    assert.deepEqual(lines, [
      { line: 1, offset: 0, length: 3, text: 'abc' },
      { line: 2, offset: 5, length: 3, text: 'def' },
    ]);
  });

  it('handles a line that is only \\r with the \\n in the next chunk', async () => {
    const lines = await collect(fromChunks([Buffer.from('x\n\r'), Buffer.from('\ny')]));
    assert.deepEqual(lines, [
      { line: 1, offset: 0, length: 1, text: 'x' },
      { line: 2, offset: 2, length: 0, text: '' },
      { line: 3, offset: 4, length: 1, text: 'y' },
    ]);
  });
});

describe('scanLines: UTF-8 BOM', () => {
  it('skips a leading BOM but counts its 3 bytes in offsets', async () => {
    const data = Buffer.concat([BOM, Buffer.from('ab\ncd')]);
    assert.deepEqual(await scanWhole(data), [
      { line: 1, offset: 3, length: 2, text: 'ab' },
      { line: 2, offset: 6, length: 2, text: 'cd' },
    ]);
  });

  it('skips a BOM delivered one byte per chunk', async () => {
    const data = Buffer.concat([BOM, Buffer.from('ab\ncd\n')]);
    const lines = await collect(fromChunks(splitEvery(data, 1)));
    assert.deepEqual(lines, [
      { line: 1, offset: 3, length: 2, text: 'ab' },
      { line: 2, offset: 6, length: 2, text: 'cd' },
    ]);
  });

  it('skips a BOM split 2+1 and 1+2 across chunks, with empty chunks in between', async () => {
    const rest = Buffer.from('x\ny');
    for (const chunks of [
      [BOM.subarray(0, 2), BOM.subarray(2), rest],
      [BOM.subarray(0, 1), Buffer.alloc(0), Buffer.concat([BOM.subarray(1), rest])],
      [Buffer.alloc(0), BOM, Buffer.alloc(0), rest],
    ]) {
      assert.deepEqual(await collect(fromChunks(chunks)), [
        { line: 1, offset: 3, length: 1, text: 'x' },
        { line: 2, offset: 5, length: 1, text: 'y' },
      ]);
    }
  });

  it('a file that is only a BOM yields nothing; BOM + newline yields one empty line at offset 3', async () => {
    assert.deepEqual(await scanWhole(Buffer.from(BOM)), []);
    assert.deepEqual(await collect(fromChunks(splitEvery(Buffer.from(BOM), 1))), []);
    assert.deepEqual(await scanWhole(Buffer.concat([BOM, Buffer.from('\n')])), [{ line: 1, offset: 3, length: 0, text: '' }]);
  });

  it('keeps bytes that merely look like the start of a BOM', async () => {
    // EF BB followed by something other than BF, and a short source that is a BOM prefix.
    const partial = Buffer.from([0xef, 0xbb, 0x41, 0x0a, 0x42]);
    const expected = [
      { line: 1, offset: 0, length: 3, text: partial.subarray(0, 3).toString('latin1') },
      { line: 2, offset: 4, length: 1, text: 'B' },
    ];
    assert.deepEqual(await scanWhole(partial), expected);
    assert.deepEqual(await collect(fromChunks(splitEvery(partial, 1))), expected);

    const prefixOnly = Buffer.from([0xef, 0xbb]);
    assert.deepEqual(await collect(fromChunks(splitEvery(prefixOnly, 1))), [
      { line: 1, offset: 0, length: 2, text: prefixOnly.toString('latin1') },
    ]);
  });

  it('only skips a BOM at the very start, not one on a later line', async () => {
    const data = Buffer.concat([Buffer.from('a\n'), BOM, Buffer.from('b\n')]);
    assert.deepEqual(await scanWhole(data), [
      { line: 1, offset: 0, length: 1, text: 'a' },
      { line: 2, offset: 2, length: 4, text: Buffer.concat([BOM, Buffer.from('b')]).toString('latin1') },
    ]);
  });

  it('skips only one BOM when two are at the start', async () => {
    const data = Buffer.concat([BOM, BOM, Buffer.from('z')]);
    assert.deepEqual(await scanWhole(data), [{ line: 1, offset: 3, length: 4, text: Buffer.concat([BOM, Buffer.from('z')]).toString('latin1') }]);
  });
});

describe('scanLines: chunk boundaries', () => {
  const sample = Buffer.concat([
    BOM,
    Buffer.from('{"custom_id":"a","body":{"x":"h\u00e9llo \u{1F600}"}}\r\n'),
    Buffer.from('\n'),
    Buffer.from('   \n'),
    Buffer.from('second line\rwith a stray CR\n'),
    Buffer.from('x'.repeat(300) + '\r\n'),
    Buffer.from('\r\n'),
    Buffer.from('last line without newline'),
  ]);

  it('sample reference is sane', () => {
    const lines = expectedLines(sample);
    assert.equal(lines.length, 7);
    assert.equal(lines[0].offset, 3);
    assert.equal(lines[6].text, 'last line without newline');
  });

  it('gives identical results for the whole buffer and for 1-byte chunks', async () => {
    const expected = expectedLines(sample);
    const whole = await scanWhole(sample);
    const bytewise = await collect(fromChunks(splitEvery(sample, 1)));
    assert.deepEqual(whole, expected);
    assert.deepEqual(bytewise, expected);
    assertLinesPointIntoSource(sample, bytewise);
  });

  it('gives identical results for every fixed chunk size from 1 to 40', async () => {
    const expected = expectedLines(sample);
    for (let size = 1; size <= 40; size++) {
      assert.deepEqual(await collect(fromChunks(splitEvery(sample, size))), expected, `chunk size ${size}`);
    }
  });

  it('gives identical results for many random chunkings (with empty chunks mixed in)', async () => {
    const random = mulberry32(0xc0ffee);
    const expected = expectedLines(sample);
    for (let round = 0; round < 200; round++) {
      const maxSize = 1 + Math.floor(random() * 64);
      const chunks = splitRandomly(sample, random, maxSize, round % 2 === 0);
      assert.deepEqual(await collect(fromChunks(chunks)), expected, `round ${round}, max chunk ${maxSize}`);
    }
  });

  it('handles random files (random bytes among \\n, \\r, BOM bytes and text) under random chunkings', async () => {
    const random = mulberry32(12345);
    const alphabet = [0x0a, 0x0d, 0x0a, 0x0d, 0xef, 0xbb, 0xbf, 0x61, 0x62, 0x20, 0x7b, 0x7d];
    for (let round = 0; round < 150; round++) {
      const len = Math.floor(random() * 80);
      const bytes = Buffer.alloc(len);
      for (let i = 0; i < len; i++) bytes[i] = alphabet[Math.floor(random() * alphabet.length)];
      const data = round % 3 === 0 ? Buffer.concat([BOM, bytes]) : bytes;
      const expected = expectedLines(data);
      const got = await collect(fromChunks(splitRandomly(data, random, 1 + Math.floor(random() * 10), true)));
      assert.deepEqual(got, expected, `round ${round}: ${data.toString('hex')}`);
      assertLinesPointIntoSource(data, got);
    }
  });

  it('joins a long line spread over many chunks and reports its start offset', async () => {
    const long = 'L'.repeat(10_000);
    const data = Buffer.from(`short\n${long}\nend`);
    const lines = await collect(fromChunks(splitEvery(data, 7)));
    assert.equal(lines.length, 3);
    assert.deepEqual(lines[1], { line: 2, offset: 6, length: 10_000, text: long });
    assert.deepEqual(lines[2], { line: 3, offset: 6 + 10_000 + 1, length: 3, text: 'end' });
  });

  it('handles a newline exactly at a chunk boundary on either side', async () => {
    const expected = [
      { line: 1, offset: 0, length: 3, text: 'abc' },
      { line: 2, offset: 4, length: 3, text: 'def' },
    ];
    assert.deepEqual(await collect(fromChunks([Buffer.from('abc'), Buffer.from('\ndef')])), expected);
    assert.deepEqual(await collect(fromChunks([Buffer.from('abc\n'), Buffer.from('def')])), expected);
    assert.deepEqual(await collect(fromChunks([Buffer.from('abc'), Buffer.from('\n'), Buffer.from('def')])), expected);
  });

  it('keeps multi-byte UTF-8 characters intact when split across chunks', async () => {
    const data = Buffer.from('h\u00e9llo \u{1F600} w\u00f6rld\nn\u00e4chste\n', 'utf8');
    const expectedText = ['h\u00e9llo \u{1F600} w\u00f6rld', 'n\u00e4chste'];
    const texts: string[] = [];
    for await (const scanned of scanLines(fromChunks(splitEvery(data, 1)))) texts.push(scanned.bytes.toString('utf8'));
    assert.deepEqual(texts, expectedText);
  });
});

describe('scanLines: sources that reuse their chunk buffer', () => {
  it('copies the unfinished tail so a reused buffer does not corrupt split lines', async () => {
    const data = Buffer.from('first line\nsecond line is longer\r\nthird\n\nfourth without newline');
    const expected = expectedLines(data);
    for (const sizes of [[1], [3], [5, 2, 7], [16]]) {
      assert.deepEqual(await collect(reusingSource(data, sizes)), expected, `sizes ${sizes.join(',')}`);
    }
  });

  it('copies held-back BOM bytes so a reused buffer does not corrupt the BOM check', async () => {
    const data = Buffer.concat([BOM, Buffer.from('ab\ncd\n')]);
    const expected = [
      { line: 1, offset: 3, length: 2, text: 'ab' },
      { line: 2, offset: 6, length: 2, text: 'cd' },
    ];
    for (const sizes of [[1], [2], [1, 3]]) {
      assert.deepEqual(await collect(reusingSource(data, sizes)), expected, `sizes ${sizes.join(',')}`);
    }
    // A BOM look-alike prefix held back must also survive the reuse.
    const lookalike = Buffer.from([0xef, 0xbb, 0x41, 0x0a]);
    assert.deepEqual(await collect(reusingSource(lookalike, [1])), [{ line: 1, offset: 0, length: 3, text: lookalike.subarray(0, 3).toString('latin1') }]);
  });

  it('random files under a reusing source match the reference', async () => {
    const random = mulberry32(777);
    const alphabet = [0x0a, 0x0d, 0xef, 0xbb, 0xbf, 0x71, 0x72];
    for (let round = 0; round < 100; round++) {
      const len = Math.floor(random() * 60);
      const bytes = Buffer.alloc(len);
      for (let i = 0; i < len; i++) bytes[i] = alphabet[Math.floor(random() * alphabet.length)];
      const data = round % 2 === 0 ? Buffer.concat([BOM, bytes]) : bytes;
      const sizes = [1 + Math.floor(random() * 5), 1 + Math.floor(random() * 5)];
      assert.deepEqual(await collect(reusingSource(data, sizes)), expectedLines(data), `round ${round}: ${data.toString('hex')}`);
    }
  });
});

describe('scanLines: streaming', () => {
  it('yields a complete line before the source has produced the rest of the file', async () => {
    let pulled = 0;
    async function* slowSource(): AsyncGenerator<Uint8Array> {
      pulled = 1;
      yield Buffer.from('line one\nline t');
      pulled = 2;
      yield Buffer.from('wo\n');
      pulled = 3;
    }
    const iterator = scanLines(slowSource());
    const first = await iterator.next();
    assert.equal(first.done, false);
    assert.equal(first.value?.bytes.toString(), 'line one');
    assert.equal(pulled, 1, 'the first line must come out after reading only the first chunk');
    const second = await iterator.next();
    assert.equal(second.value?.bytes.toString(), 'line two');
    assert.equal(second.value?.offset, 9);
    assert.equal((await iterator.next()).done, true);
    assert.equal(pulled, 3);
  });

  it('propagates an error thrown by the source', async () => {
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield Buffer.from('ok\npart');
      throw new Error('disk on fire');
    }
    const seen: string[] = [];
    await assert.rejects(async () => {
      for await (const scanned of scanLines(failing())) seen.push(scanned.bytes.toString());
    }, /disk on fire/);
    assert.deepEqual(seen, ['ok']);
  });
});
