// Input lines of chosen chunks, read back from a batch's input file: the lines
// finalization reports as batch_cancelled / batch_expired (in no segment) and
// the lines a retry takes (not succeeded). One stream from the first chosen
// chunk's first byte, scanned with validation's own line scanner so line
// numbers are the ones validation gave (a chunk's byte_start is its first
// line's offset); a long stretch of chunks nobody wants is skipped by opening
// a new stream at the next wanted one. Memory: one line (and one chunk's
// bitmaps, held by the caller's WantedChunk).
import type { BlobStore } from '../store/blobs/types.ts';
import type { ChunkRow } from '../store/sql/schema.ts';
import { scanLines } from './line-scanner.ts';

export interface WantedChunk {
  chunk: Pick<ChunkRow, 'chunk' | 'line_start' | 'line_count' | 'byte_start' | 'byte_end'>;
  /** Whether the chunk's line `index` (0-based: input line line_start + index) is wanted. */
  wanted(index: number): boolean;
}

export interface PickedLine {
  /** 1-based input line number. */
  line: number;
  /**
   * The line without its line ending: a view valid until the next line is asked for (copy it to keep it). Null when
   * the input ended before this line (a file shorter than what validation recorded, which should not happen).
   */
  bytes: Buffer | null;
}

// Unwanted input bytes between two wanted chunks past which a new ranged read is cheaper than reading through.
const REOPEN_GAP_BYTES = 8 * 1024 * 1024;

/** The wanted lines of `chunks` (in chunk order), in line order. */
export async function* pickChunkLines(blobs: Pick<BlobStore, 'read'>, inputKey: string, chunks: AsyncIterable<WantedChunk>): AsyncGenerator<PickedLine> {
  const iterator = chunks[Symbol.asyncIterator]();
  let step = await iterator.next();
  while (!step.done) {
    let current: WantedChunk = step.value;
    // Index of the current chunk's next line not yet seen.
    let nextIndex = 0;
    const runStart = current.chunk.byte_start;
    const lineBase = current.chunk.line_start - 1;
    let reopen = false;
    const source = await blobs.read(inputKey, { start: runStart });
    try {
      scan: for await (const scanned of scanLines(source)) {
        const line = lineBase + scanned.line;
        while (line >= current.chunk.line_start + current.chunk.line_count) {
          yield* unseen(current, nextIndex);
          step = await iterator.next();
          if (step.done) break scan;
          current = step.value;
          nextIndex = 0;
          if (current.chunk.byte_start - (runStart + scanned.offset) > REOPEN_GAP_BYTES) {
            reopen = true;
            break scan;
          }
        }
        if (line < current.chunk.line_start) continue;
        const index = line - current.chunk.line_start;
        nextIndex = index + 1;
        if (current.wanted(index)) yield { line, bytes: scanned.bytes };
      }
    } finally {
      source.destroy();
    }
    if (reopen) continue;
    if (step.done) return;
    // The input ended first: what is left is reported without its bytes.
    yield* unseen(current, nextIndex);
    for (step = await iterator.next(); !step.done; step = await iterator.next()) yield* unseen(step.value, 0);
    return;
  }
}

/** The wanted lines of a chunk from `from` on, as lines whose bytes could not be read. */
export function* unseen(wanted: WantedChunk, from: number): Generator<PickedLine> {
  for (let index = from; index < wanted.chunk.line_count; index++) {
    if (wanted.wanted(index)) yield { line: wanted.chunk.line_start + index, bytes: null };
  }
}
