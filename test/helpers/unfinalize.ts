// Puts a finished batch back where a finalizer that died before its terminal
// commit leaves it: status FINALIZING, no files, and its lines in committed
// segments (one per chunk, rebuilt from the files it had), so tests can race
// finalizers over the same batch. The segments of a finished batch are gone
// (finalization deletes them once its files are committed), hence the rebuild.
import type { Store } from '../../src/store/index.ts';
import { LineBitmap } from '../../src/store/line-bitmap.ts';

const lineOf = (text: string): number => Number(/_(\d+)$/.exec((JSON.parse(text) as { id: string }).id)![1]);

export async function unfinalize(store: Store, batchId: string, outputText: string, errorText: string): Promise<void> {
  const db = store.sql.db;
  await db.deleteFrom('files').where('batch_id', '=', batchId).execute();
  await db
    .updateTable('batches')
    .set({ status: 'finalizing', completed_at: null, output_file_id: null, error_file_id: null, lease_owner: null, lease_expires_at: null })
    .where('id', '=', batchId)
    .execute();
  const chunks = await db.selectFrom('chunks').selectAll().where('batch_id', '=', batchId).orderBy('chunk').execute();
  await db.deleteFrom('segments').where('batch_id', '=', batchId).execute();
  const outputLines = outputText.split('\n').filter(Boolean);
  const errorLines = errorText.split('\n').filter(Boolean);
  for (const chunk of chunks) {
    const inChunk = (text: string) => lineOf(text) >= chunk.line_start && lineOf(text) < chunk.line_start + chunk.line_count;
    const output = outputLines.filter(inChunk);
    const errors = errorLines.filter(inChunk);
    const done = new LineBitmap(chunk.line_count);
    const failed = new LineBitmap(chunk.line_count);
    for (const text of output) done.set(lineOf(text) - chunk.line_start);
    for (const text of errors) {
      done.set(lineOf(text) - chunk.line_start);
      failed.set(lineOf(text) - chunk.line_start);
    }
    const outputPart = output.map((text) => `${text}\n`).join('');
    const errorPart = errors.map((text) => `${text}\n`).join('');
    const key = `batches/${batchId}/segments/${chunk.chunk}/unfinalized`;
    await store.blobs.write(
      key,
      (async function* () {
        yield Buffer.from(outputPart + errorPart);
      })(),
    );
    await db
      .insertInto('segments')
      .values({
        batch_id: batchId,
        chunk: chunk.chunk,
        seq: 0,
        blob_key: key,
        output_bytes: Buffer.byteLength(outputPart),
        error_bytes: Buffer.byteLength(errorPart),
        output_lines: output.length,
        error_lines: errors.length,
        done_bits: done.toHex(),
        failed_bits: failed.toHex(),
        stats: '{}',
        created_at: Date.now(),
      })
      .execute();
  }
}
