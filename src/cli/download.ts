// Streams a file's content from the server to disk (or stdout). Bytes go to a
// temporary name beside the target and are renamed into place only when the
// whole file arrived, so an interrupted download never leaves a truncated
// results file that looks complete.
import { createWriteStream, renameSync, rmSync } from 'node:fs';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { SpoolClient } from './client.ts';
import { CliError, ExitCode } from './exit-codes.ts';

export const STDOUT = '-';

/** Writes file `fileId` to `target` (a path, or "-" for stdout); returns the byte count. */
export async function downloadFile(client: SpoolClient, fileId: string, target: string, signal?: AbortSignal): Promise<number> {
  const { body, length } = await client.openContent(fileId, signal);
  let received = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      received += chunk.length;
      done(null, chunk);
    },
  });
  const source = Readable.fromWeb(body as WebReadableStream<Uint8Array>);
  if (target === STDOUT) {
    await copy(source, counter, stdoutWithoutEnd(), signal, fileId);
    checkLength(fileId, received, length);
    return received;
  }
  const partial = `${target}.partial-${process.pid}`;
  try {
    await copy(source, counter, createWriteStream(partial), signal, fileId);
    checkLength(fileId, received, length);
    renameSync(partial, target);
  } catch (err) {
    rmSync(partial, { force: true });
    throw err;
  }
  return received;
}

async function copy(source: Readable, counter: Transform, sink: Writable, signal: AbortSignal | undefined, fileId: string): Promise<void> {
  try {
    await pipeline(source, counter, sink, { signal });
  } catch (err) {
    if ((err as Error).name === 'AbortError') throw err;
    const code = (err as NodeJS.ErrnoException).code;
    // A local write failure (disk full, no permission) is the user's to fix; anything else is the connection dropping.
    if (code && /^E[A-Z]+$/.test(code) && (err as NodeJS.ErrnoException).syscall) {
      throw new CliError(`cannot write file ${fileId}: ${(err as Error).message}`, ExitCode.usage);
    }
    throw new CliError(`download of file ${fileId} broke off: ${(err as Error).message}`, ExitCode.unreachable);
  }
}

function checkLength(fileId: string, received: number, expected: number | undefined): void {
  if (expected !== undefined && received !== expected) {
    throw new CliError(`download of file ${fileId} ended after ${received} of ${expected} bytes`, ExitCode.unreachable);
  }
}

/** process.stdout must never be ended by a pipeline: later output (and Node itself) still write to it. */
function stdoutWithoutEnd(): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      if (process.stdout.write(chunk)) done();
      else process.stdout.once('drain', () => done());
    },
  });
}
