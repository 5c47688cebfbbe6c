// `spool batches results BATCH_ID [--follow]`: saves a batch's results so far
// (GET /batches/{id}/results): the output lines recorded until now, or its
// output file once it has ended. With --follow it saves them again every few
// seconds until the batch ends, so the file on disk grows as lines come in and
// ends equal to the output file. Each save goes to a temporary name first and
// is renamed into place, so the file is never seen half written.
import { createWriteStream, renameSync, rmSync } from 'node:fs';
import { basename } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { Command } from 'commander';
import type { SpoolClient } from '../client.ts';
import { CliError, ExitCode } from '../exit-codes.ts';
import { note } from '../output.ts';
import { action, clientFrom, positiveNumber, remoteCommand, type RemoteFlags } from './common.ts';

interface ResultsFlags extends RemoteFlags {
  output?: string;
  errors?: boolean;
  follow?: boolean;
  interval?: number;
}

const DEFAULT_INTERVAL_S = 2;

export function registerResultsSoFarCommand(batches: Command): void {
  remoteCommand(
    batches
      .command('results')
      .description('save the results so far of a batch (the output lines recorded until now; the output file once it has ended)')
      .argument('<batch-id>'),
    { json: false },
  )
    .option('-o, --output <path>', 'where to save them, or - for stdout (default: <batch-id>.results.jsonl, or .error-results.jsonl with --errors)')
    .option('--errors', 'the error lines instead of the output lines')
    .option('--follow', 'save again every few seconds until the batch has ended')
    .option('--interval <seconds>', `with --follow, how often (default ${DEFAULT_INTERVAL_S})`, positiveNumber)
    .action(
      action(async (id: string, flags: ResultsFlags) => {
        const target = flags.output ?? `${basename(id)}.${flags.errors ? 'error-results' : 'results'}.jsonl`;
        if (target === '-' && flags.follow) throw new CliError('--follow saves to a file (it rewrites it as lines come in): give -o PATH', ExitCode.usage);
        const client = clientFrom(flags);
        const intervalMs = (flags.interval ?? DEFAULT_INTERVAL_S) * 1000;
        let lastLines = -1;
        for (;;) {
          const saved = await saveOnce(client, id, Boolean(flags.errors), target);
          if (target !== '-' && (saved.lines !== lastLines || saved.complete)) {
            note(`${saved.lines} line${saved.lines === 1 ? '' : 's'} ${saved.complete ? `in all (batch ${saved.status})` : `so far (batch ${saved.status})`} in ${target}`);
          }
          lastLines = saved.lines;
          if (saved.complete || !flags.follow) {
            process.exitCode = saved.status === 'failed' ? ExitCode.batchNotCompleted : ExitCode.ok;
            return;
          }
          await new Promise((resolve) => setTimeout(resolve, intervalMs));
        }
      }),
    );
}

async function saveOnce(client: SpoolClient, id: string, errors: boolean, target: string): Promise<{ lines: number; complete: boolean; status: string }> {
  const results = await client.openResults(id, errors);
  let lines = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      for (const byte of chunk) if (byte === 0x0a) lines++;
      done(null, chunk);
    },
  });
  const source = Readable.fromWeb(results.body as WebReadableStream<Uint8Array>);
  if (target === '-') {
    await pipeline(source, counter, process.stdout, { end: false });
    return { lines, complete: results.complete, status: results.status };
  }
  const partial = `${target}.partial-${process.pid}`;
  try {
    await pipeline(source, counter, createWriteStream(partial));
    renameSync(partial, target);
  } catch (err) {
    rmSync(partial, { force: true });
    throw err;
  }
  return { lines, complete: results.complete, status: results.status };
}
