// Reads input lines (of claimed requests, or of a retry's failed lines) straight from a batch's input
// blob by byte range (validation recorded where each line sits). Claims come
// in line order, so neighbouring lines are fetched with one ranged read; a gap
// wider than MAX_GAP starts a new read, so a handful of scattered retries
// never pulls in the megabytes between them.
import type { BlobStore } from './types.ts';

export interface LineLocation {
  line: number;
  byte_offset: number;
  byte_length: number;
}

const MAX_GAP = 64 * 1024;

export async function readLines(blobs: BlobStore, blobKey: string, rows: LineLocation[]): Promise<Map<number, Buffer>> {
  const sorted = [...rows].sort((a, b) => a.byte_offset - b.byte_offset);
  const out = new Map<number, Buffer>();
  let start = 0;
  while (start < sorted.length) {
    let end = start;
    while (end + 1 < sorted.length && sorted[end + 1].byte_offset - (sorted[end].byte_offset + sorted[end].byte_length) <= MAX_GAP) end++;
    const from = sorted[start].byte_offset;
    const to = sorted[end].byte_offset + sorted[end].byte_length;
    const span = await readRange(blobs, blobKey, from, to);
    for (let i = start; i <= end; i++) {
      const row = sorted[i];
      out.set(row.line, span.subarray(row.byte_offset - from, row.byte_offset - from + row.byte_length));
    }
    start = end + 1;
  }
  return out;
}

async function readRange(blobs: BlobStore, key: string, start: number, end: number): Promise<Buffer> {
  const stream = await blobs.read(key, { start, end });
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  const bytes = Buffer.concat(chunks);
  if (bytes.length !== end - start) throw new Error(`input blob ${key} is shorter than recorded (wanted bytes ${start}-${end})`);
  return bytes;
}

/**
 * The lines of a chunk of the input, bytes [start, end): one ranged read, split on LF (a CR before it dropped).
 * Validation starts a new chunk at any blank line, so the k-th line here is the chunk's k-th input line.
 */
export async function readChunkLines(blobs: BlobStore, blobKey: string, start: number, end: number): Promise<Buffer[]> {
  const span = await readRange(blobs, blobKey, start, end);
  const lines: Buffer[] = [];
  let from = 0;
  for (;;) {
    const lf = span.indexOf(0x0a, from);
    const stop = lf < 0 ? span.length : lf;
    lines.push(span.subarray(from, stop > from && span[stop - 1] === 0x0d ? stop - 1 : stop));
    if (lf < 0) break;
    from = lf + 1;
  }
  return lines;
}
