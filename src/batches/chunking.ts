// The chunk rule: how a batch's request lines are grouped into chunk rows
// (data plane v2, DESIGN.md "Data flow"). Used by validation, which writes the
// chunks of a new batch, and by the start-up upgrade of batches stored one row
// per line (upgrade-v1.ts), so both cut the same way.
//
// A chunk is the unit a worker claims, so its size trades rows against
// parallelism: every chunk costs a row, a claim, and at least one segment
// commit, which favours big chunks; but a chunk runs on one worker, so a
// batch of 40 lines in one chunk would run on one worker while the others
// idle. Hence about 16 chunks per file (enough to spread a small batch over
// several workers), never fewer than 16 lines per chunk (a tiny batch is not
// worth more rows than lines) nor more than 256 (a 50,000-line batch costs
// ~200 rows, not 50,000, and one chunk's bitmap stays 64 hex characters).
import type { NewChunk } from '../store/sql/schema.ts';
import { newChunk } from '../store/sql/chunks.ts';

/** Chunks a file is cut into, roughly, between the line bounds below. */
export const CHUNKS_PER_FILE = 16;
export const CHUNK_MIN_LINES = 16;
export const CHUNK_MAX_LINES = 256;
/** Input bytes a chunk spans at most (a worker reads its range in one piece); a longer single line is a chunk of its own. */
export const CHUNK_MAX_BYTES = 2 * 1024 * 1024;

/** Lines per chunk for an input file of `fileLineCount` lines (the files row's line_count). */
export function linesPerChunk(fileLineCount: number): number {
  const wanted = Math.ceil(Math.max(0, fileLineCount) / CHUNKS_PER_FILE);
  return Math.min(CHUNK_MAX_LINES, Math.max(CHUNK_MIN_LINES, wanted));
}

/** What the rule needs of one request line. */
export interface ChunkLine {
  /** 1-based line number in the input file. */
  line: number;
  /** Byte offset of the line's first byte in the input. */
  offset: number;
  /** Bytes in the line, without its line ending. */
  length: number;
  model: string;
  estimatedTokens: number;
}

/**
 * Accumulates request lines, given in input order, into chunk rows. A chunk
 * holds at most `maxLines` lines and spans at most `maxBytes` bytes, and its
 * lines are consecutive input lines: a gap in line numbers (blank lines,
 * which validation skips) starts a new chunk, so the runner, splitting the
 * chunk's byte range on LF, finds exactly line_count lines in it, the k-th
 * being line line_start + k.
 */
export class ChunkBuilder {
  private next = 0;
  private current: OpenChunk | undefined;

  constructor(
    private readonly batchId: string,
    private readonly maxLines: number,
    private readonly maxBytes = CHUNK_MAX_BYTES,
  ) {
    if (!(maxLines >= 1)) throw new RangeError(`ChunkBuilder: maxLines must be at least 1, not ${maxLines}`);
  }

  /** Adds the next line; returns the chunk this line closed (the line then starts the next one), if any. */
  add(line: ChunkLine): NewChunk | undefined {
    const open = this.current;
    let closed: NewChunk | undefined;
    if (open) {
      const fits = open.lines < this.maxLines && line.line === open.lastLine + 1 && line.offset + line.length - open.byteStart <= this.maxBytes;
      if (fits) {
        open.lines += 1;
        open.lastLine = line.line;
        open.byteEnd = line.offset + line.length;
        open.estimatedTokens += line.estimatedTokens;
        addModel(open.models, line);
        return undefined;
      }
      closed = this.close(open);
    }
    // No prototype: a model named "__proto__" is a key like any other.
    const models: Record<string, [number, number]> = Object.create(null);
    addModel(models, line);
    this.current = {
      lineStart: line.line,
      lastLine: line.line,
      lines: 1,
      byteStart: line.offset,
      byteEnd: line.offset + line.length,
      models,
      estimatedTokens: line.estimatedTokens,
    };
    return closed;
  }

  /** The last, unfinished chunk, if any line is held; the builder is then empty. */
  finish(): NewChunk | undefined {
    const open = this.current;
    return open ? this.close(open) : undefined;
  }

  /** Chunks closed so far (the next chunk's index). */
  get chunks(): number {
    return this.next;
  }

  private close(open: OpenChunk): NewChunk {
    this.current = undefined;
    return newChunk({
      batch_id: this.batchId,
      chunk: this.next++,
      line_start: open.lineStart,
      line_count: open.lines,
      byte_start: open.byteStart,
      byte_end: open.byteEnd,
      models: JSON.stringify(open.models),
      estimated_tokens: open.estimatedTokens,
    });
  }
}

interface OpenChunk {
  lineStart: number;
  lastLine: number;
  lines: number;
  byteStart: number;
  byteEnd: number;
  models: Record<string, [number, number]>;
  estimatedTokens: number;
}

function addModel(models: Record<string, [number, number]>, line: ChunkLine): void {
  const entry = models[line.model];
  if (entry) {
    entry[0] += 1;
    entry[1] += line.estimatedTokens;
  } else models[line.model] = [1, line.estimatedTokens];
}
