// Splits a byte stream into physical lines without ever holding more than the
// line being assembled: validation reads input files of up to 100 MB and
// memory must not depend on file size.

export interface ScannedLine {
  /** 1-based physical line number. */
  line: number;
  /** Byte offset of the line's first byte in the source (a leading BOM counts). */
  offset: number;
  /** Bytes in the line, excluding the trailing \n and a \r before it. */
  length: number;
  /**
   * The line content without its line ending. Usually a view into the
   * source's chunk rather than a copy, so it is only valid while the source
   * leaves that chunk untouched; copy it to keep it.
   */
  bytes: Buffer;
}

const LF = 0x0a;
const CR = 0x0d;
const UTF8_BOM = Buffer.from([0xef, 0xbb, 0xbf]);

export async function* scanLines(source: AsyncIterable<Uint8Array>): AsyncGenerator<ScannedLine> {
  const assembler = new LineAssembler();
  for await (const chunk of withoutLeadingBom(source, (skipped) => assembler.skip(skipped))) {
    yield* assembler.push(chunk);
  }
  const last = assembler.finish();
  if (last) yield last;
}

/**
 * Yields the source's bytes minus a UTF-8 BOM at the very start. The BOM may
 * arrive split over several tiny chunks, so up to three leading bytes are
 * held back until it is clear whether they form one.
 */
async function* withoutLeadingBom(
  source: AsyncIterable<Uint8Array>,
  onSkipped: (byteCount: number) => void,
): AsyncGenerator<Buffer> {
  let head: Buffer | null = Buffer.alloc(0);
  for await (const raw of source) {
    const chunk = asBuffer(raw);
    if (head === null) {
      if (chunk.length > 0) yield chunk;
      continue;
    }
    head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
    if (head.length < UTF8_BOM.length && UTF8_BOM.subarray(0, head.length).equals(head)) {
      // Held across the next read, so copied: some sources reuse their chunk buffers.
      if (head === chunk) head = Buffer.from(chunk);
      continue;
    }
    const rest = startsWithBom(head) ? skipBom(head, onSkipped) : head;
    head = null;
    if (rest.length > 0) yield rest;
  }
  // A source shorter than a BOM that merely looked like the start of one.
  if (head !== null && head.length > 0) yield head;
}

function startsWithBom(bytes: Buffer): boolean {
  return bytes.length >= UTF8_BOM.length && bytes.subarray(0, UTF8_BOM.length).equals(UTF8_BOM);
}

function skipBom(bytes: Buffer, onSkipped: (byteCount: number) => void): Buffer {
  onSkipped(UTF8_BOM.length);
  return bytes.subarray(UTF8_BOM.length);
}

function asBuffer(chunk: Uint8Array): Buffer {
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

/**
 * Turns chunks into complete lines. Only the unfinished tail of the previous
 * chunk(s) is carried over, as a list of pieces joined once the line ends,
 * so a long line spread over many chunks is joined once, not once per chunk.
 */
class LineAssembler {
  private lineNumber = 0;
  /** Absolute offset of the next byte this assembler will see. */
  private position = 0;
  private pendingPieces: Buffer[] = [];
  private pendingLength = 0;
  private pendingOffset = 0;

  skip(byteCount: number): void {
    this.position += byteCount;
  }

  *push(chunk: Buffer): Generator<ScannedLine> {
    const chunkStart = this.position;
    this.position += chunk.length;
    let lineStart = 0;
    let newline = chunk.indexOf(LF);
    if (newline !== -1 && this.pendingLength > 0) {
      this.keepPending(chunk.subarray(0, newline), chunkStart);
      yield this.makeLine(this.pendingOffset, this.takePending(), true);
      lineStart = newline + 1;
      newline = chunk.indexOf(LF, lineStart);
    }
    while (newline !== -1) {
      yield this.makeLine(chunkStart + lineStart, chunk.subarray(lineStart, newline), true);
      lineStart = newline + 1;
      newline = chunk.indexOf(LF, lineStart);
    }
    // Copied because some sources reuse their chunk buffers once asked for the next one.
    if (lineStart < chunk.length) this.keepPending(Buffer.from(chunk.subarray(lineStart)), chunkStart + lineStart);
  }

  /** The final line when the source does not end with a newline. */
  finish(): ScannedLine | null {
    if (this.pendingLength === 0) return null;
    return this.makeLine(this.pendingOffset, this.takePending(), false);
  }

  private keepPending(piece: Buffer, pieceOffset: number): void {
    if (this.pendingLength === 0) this.pendingOffset = pieceOffset;
    this.pendingPieces.push(piece);
    this.pendingLength += piece.length;
  }

  private takePending(): Buffer {
    const joined = this.pendingPieces.length === 1 ? this.pendingPieces[0] : Buffer.concat(this.pendingPieces, this.pendingLength);
    this.pendingPieces = [];
    this.pendingLength = 0;
    return joined;
  }

  private makeLine(offset: number, content: Buffer, endedByNewline: boolean): ScannedLine {
    // Only a \r directly before the \n is part of a CRLF line ending.
    const bytes = endedByNewline && content.length > 0 && content[content.length - 1] === CR ? content.subarray(0, -1) : content;
    this.lineNumber += 1;
    return { line: this.lineNumber, offset, length: bytes.length, bytes };
  }
}
