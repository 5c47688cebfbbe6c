// A batch's result lines, streamed from where they are kept while it runs and
// until finalization has copied them into its files: committed segments (each
// a blob of output lines, then error lines, already in their final wire shape,
// runner/wire-lines.ts), and, for lines in no segment (a cancel or expiry
// closed their chunk first), batch_cancelled / batch_expired error lines built
// here from the input's custom_ids. Nothing is parsed or re-serialized but the
// custom_id of such a line; memory is one page of segment rows and one chunk's
// bitmap, whatever the size of the batch.
import type { Kysely } from 'kysely';
import { errorLineText } from '../runner/wire-lines.ts';
import { BlobNotFoundError, type BlobStore } from '../store/blobs/types.ts';
import { LineBitmap } from '../store/line-bitmap.ts';
import { pageBatchChunks } from '../store/sql/chunks.ts';
import { findFile } from '../store/sql/files.ts';
import { chunkSegments, pageBatchSegments } from '../store/sql/segments.ts';
import type { BatchRow, ChunkRow, Database, SegmentRow } from '../store/sql/schema.ts';
import { pickChunkLines, unseen, type PickedLine, type WantedChunk } from './chunk-input.ts';

export { requestLineId } from '../runner/wire-lines.ts';

// Segment rows per page when streaming results out.
const SEGMENT_PAGE = 200;
// Chunk rows per page when looking for lines in no segment.
const CHUNK_PAGE = 100;
// Filled error lines are handed on in pieces of about this many bytes.
const FLUSH_BYTES = 64 * 1024;

export type ResultPart = 'output' | 'errors';

export interface SegmentPartOptions {
  /** Runs before each page of segment rows (finalization checks its lease there). */
  beforePage?: () => void;
  /**
   * A segment row without a blob (finalization has copied it and deleted it): skipped when true; when false (the
   * finalizer, which needs every one) it is an error.
   */
  skipCleared: boolean;
  /**
   * Reading a segment's blob failed: return true to end the stream quietly there (the batch was finalized
   * meanwhile and deleted it), false to throw the error.
   */
  onReadError?: (err: unknown) => Promise<boolean>;
}

/** Byte range of a segment's blob holding its output lines or its error lines. */
export function partRange(segment: Pick<SegmentRow, 'output_bytes' | 'error_bytes'>, which: ResultPart): { start: number; end: number } {
  const outputBytes = Number(segment.output_bytes);
  return which === 'output' ? { start: 0, end: outputBytes } : { start: outputBytes, end: outputBytes + Number(segment.error_bytes) };
}

/** The output (or error) parts of the batch's committed segments, in (chunk, seq) order: its results in line order per chunk. */
export async function* segmentParts(
  db: Kysely<Database>,
  blobs: Pick<BlobStore, 'read'>,
  batchId: string,
  which: ResultPart,
  options: SegmentPartOptions,
): AsyncGenerator<Uint8Array> {
  let after: { chunk: number; seq: number } | undefined;
  for (;;) {
    options.beforePage?.();
    const page = await pageBatchSegments(db, batchId, after, SEGMENT_PAGE);
    if (page.length === 0) return;
    for (const segment of page) {
      const range = partRange(segment, which);
      if (range.end <= range.start) continue;
      if (segment.blob_key === null) {
        if (options.skipCleared) continue;
        throw new Error(`segment ${segment.chunk}/${segment.seq} of batch ${batchId} has no blob left to read`);
      }
      try {
        for await (const piece of await blobs.read(segment.blob_key, range)) yield piece as Uint8Array;
      } catch (err) {
        if (options.onReadError && (await options.onReadError(err))) return;
        throw err;
      }
    }
    const last = page[page.length - 1];
    after = { chunk: last.chunk, seq: last.seq };
  }
}

/** Whether an error from reading a blob says it is not there (deleted between listing and reading). */
export function isMissingBlob(err: unknown): boolean {
  if (err instanceof BlobNotFoundError) return true;
  const code = (err as { code?: unknown; name?: unknown } | null)?.code;
  const name = (err as { name?: unknown } | null)?.name;
  return code === 'ENOENT' || name === 'NoSuchKey' || name === 'NotFound';
}

/** Lines of each of a chunk's segments as one bitmap: `bits` is done_bits or failed_bits. */
export function unionOf(chunk: Pick<ChunkRow, 'line_count'>, segments: Pick<SegmentRow, 'done_bits' | 'failed_bits'>[], bits: 'done_bits' | 'failed_bits'): LineBitmap {
  const union = new LineBitmap(chunk.line_count);
  for (const segment of segments) union.addAll(LineBitmap.fromHex(segment[bits], chunk.line_count));
  return union;
}

/** The batch's chunks that are not done (closed by a cancel or an expiry), each with the lines in none of its segments. */
async function* chunksWithUnfinishedLines(db: Kysely<Database>, batchId: string, first: ChunkRow[]): AsyncGenerator<WantedChunk> {
  let page = first;
  while (page.length > 0) {
    for (const chunk of page) {
      const done = unionOf(chunk, await chunkSegments(db, batchId, chunk.chunk), 'done_bits');
      if (done.count() >= chunk.line_count) continue;
      yield { chunk, wanted: (index) => !done.has(index) };
    }
    page = await pageBatchChunks(db, batchId, page[page.length - 1].chunk, CHUNK_PAGE, { notDone: true });
  }
}

export interface UnfinishedLineCount {
  /** Lines written so far. */
  lines: number;
}

/**
 * One error line with `code` for every input line of the batch in no segment, in line order. The input is read
 * only when some chunk is not done (a cancel or an expiry closed it): a batch that ran to the end needs no pass.
 * `count.lines` says how many were written.
 */
export async function* unfinishedLines(
  db: Kysely<Database>,
  blobs: Pick<BlobStore, 'read' | 'size'>,
  batch: Pick<BatchRow, 'id' | 'input_file_id'>,
  code: string,
  message: string,
  count: UnfinishedLineCount,
): AsyncGenerator<Uint8Array> {
  const first = await pageBatchChunks(db, batch.id, -1, CHUNK_PAGE, { notDone: true });
  if (first.length === 0) return;
  const wanted = chunksWithUnfinishedLines(db, batch.id, first);
  const inputKey = (await findFile(db, batch.input_file_id))?.blob_key ?? null;
  let lines: AsyncIterable<PickedLine>;
  if (inputKey === null) lines = withoutInput(wanted);
  // Its bytes gone from the blob store behind Spool's back: the lines are still reported, without custom_ids.
  else lines = (await blobs.size(inputKey)) === undefined ? withoutInput(wanted) : pickChunkLines(blobs, inputKey, wanted);
  let pending: string[] = [];
  let pendingBytes = 0;
  for await (const picked of lines) {
    const text = fillLine(batch.id, picked, code, message);
    pending.push(text);
    pendingBytes += text.length;
    count.lines += 1;
    if (pendingBytes >= FLUSH_BYTES) {
      yield Buffer.from(pending.join(''));
      pending = [];
      pendingBytes = 0;
    }
  }
  if (pending.length > 0) yield Buffer.from(pending.join(''));
}

/** Without the input (its file is gone), the lines are still reported, without their custom_id. */
async function* withoutInput(wanted: AsyncIterable<WantedChunk>): AsyncGenerator<PickedLine> {
  for await (const chunk of wanted) yield* unseen(chunk, 0);
}

function fillLine(batchId: string, picked: PickedLine, code: string, message: string): string {
  const customId = customIdOf(picked.bytes);
  const text = errorLineText(batchId, picked.line, customId ?? '', code, message, null);
  return customId === null ? text.replace('"custom_id":""', '"custom_id":null') : text;
}

function customIdOf(bytes: Buffer | null): string | null {
  if (bytes === null) return null;
  try {
    const parsed = JSON.parse(bytes.toString('utf8')) as { custom_id?: unknown } | null;
    return typeof parsed?.custom_id === 'string' ? parsed.custom_id : null;
  } catch {
    return null;
  }
}

/** The message of a filled line, by why the batch ended. */
export function unfinishedLineReason(batch: Pick<BatchRow, 'completion_window'>, cancelled: boolean): { code: string; message: string } {
  return cancelled
    ? { code: 'batch_cancelled', message: 'The batch was cancelled before this request finished.' }
    : { code: 'batch_expired', message: `The batch's completion window (${batch.completion_window}) ended before this request finished.` };
}
