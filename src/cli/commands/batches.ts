// `spool batches list|get|create|cancel|retry|wait|download|results`.
import { basename } from 'node:path';
import type { Command } from 'commander';
import { batchFields, batchRow, BATCH_TABLE_HEAD } from '../batch-view.ts';
import { ExitCode } from '../exit-codes.ts';
import { note, printFields, printJson, printTable } from '../output.ts';
import { action, clientFrom, positiveInteger, positiveNumber, remoteCommand, type RemoteFlags } from './common.ts';
import { checkTargets, exitCodeFor, saveResults, summaryLines } from './results.ts';
import { registerResultsSoFarCommand } from './results-so-far.ts';
import { onInterrupt, watchBatch } from './watch.ts';

const DEFAULT_LIST_LIMIT = 20;

export function registerBatchesCommands(program: Command): void {
  const batches = program.command('batches').description('list, inspect, follow, cancel and download batches on a Spool server');

  remoteCommand(batches.command('list').description('list your batches, newest first'))
    .option('--limit <n>', `at most this many (default ${DEFAULT_LIST_LIMIT})`, positiveInteger)
    .option('--all', 'every batch, however many')
    .action(
      action(async (flags: RemoteFlags & { limit?: number; all?: boolean }) => {
        const list = await clientFrom(flags).listBatches(flags.all ? Infinity : (flags.limit ?? DEFAULT_LIST_LIMIT));
        if (flags.json) printJson(list);
        else printTable(BATCH_TABLE_HEAD, list.map(batchRow), 'no batches');
      }),
    );

  remoteCommand(batches.command('get').description("show one batch's status, counts, files and validation errors").argument('<batch-id>')).action(
    action(async (id: string, flags: RemoteFlags) => {
      const batch = await clientFrom(flags).getBatch(id);
      if (flags.json) printJson(batch);
      else printFields(batchFields(batch));
    }),
  );

  remoteCommand(batches.command('create').description('create a batch from an uploaded input file and print its id').argument('<input-file-id>'))
    .option('--endpoint <path>', 'the endpoint every line is sent to', '/v1/chat/completions')
    .option('--completion-window <window>', 'how long the batch may run, e.g. 24h, 90m, 2d', '24h')
    .action(
      action(async (inputFileId: string, flags: RemoteFlags & { endpoint: string; completionWindow: string }) => {
        const batch = await clientFrom(flags).createBatch({ inputFileId, endpoint: flags.endpoint, completionWindow: flags.completionWindow });
        if (flags.json) printJson(batch);
        else {
          process.stdout.write(`${batch.id}\n`);
          note(`created batch ${batch.id} (${batch.status}); follow it with \`spool batches wait ${batch.id}\``);
        }
      }),
    );

  remoteCommand(batches.command('cancel').description('cancel a batch; finished lines are kept in its output file').argument('<batch-id>')).action(
    action(async (id: string, flags: RemoteFlags) => {
      const batch = await clientFrom(flags).cancelBatch(id);
      if (flags.json) printJson(batch);
      else process.stdout.write(`${batch.id} ${batch.status}\n`);
    }),
  );

  remoteCommand(
    batches.command('retry').description('create a new batch of the failed lines of a finished batch and print its id').argument('<batch-id>'),
  ).action(
    action(async (id: string, flags: RemoteFlags) => {
      const batch = await clientFrom(flags).retryBatch(id);
      if (flags.json) printJson(batch);
      else {
        process.stdout.write(`${batch.id}\n`);
        note(`created batch ${batch.id} (${batch.status}) retrying the failed lines of ${id}; follow it with \`spool batches wait ${batch.id}\``);
      }
    }),
  );

  remoteCommand(batches.command('wait').description('follow a batch with a progress bar until it ends; exit 0 only if it completed').argument('<batch-id>'))
    .option('--timeout <seconds>', 'give up after this long (exit 124); the batch keeps running', positiveNumber)
    .option('--interval <seconds>', 'seconds between status checks', positiveNumber, 1)
    .option('-q, --quiet', 'no progress display')
    .action(
      action(async (id: string, flags: RemoteFlags & { timeout?: number; interval: number; quiet?: boolean }) => {
        const watch = watchBatch(clientFrom(flags), id, { quiet: flags.quiet === true, intervalMs: flags.interval * 1000, timeoutMs: flags.timeout && flags.timeout * 1000 });
        // Waiting is only watching: Ctrl-C stops the watch and leaves the batch running.
        const dispose = onInterrupt(() => {
          watch.progress.stop();
          note(`spool: stopped waiting; batch ${id} goes on running (\`spool batches cancel ${id}\` stops it)`);
          process.exit(ExitCode.interrupted);
        });
        try {
          const batch = await watch.done;
          for (const line of summaryLines(batch, {})) note(line);
          if (flags.json) printJson(batch);
          process.exitCode = exitCodeFor(batch);
        } finally {
          dispose();
        }
      }),
    );

  remoteCommand(batches.command('download').description("save a finished batch's output and error files (streamed)").argument('<batch-id>'), { json: false })
    .option('-o, --output <path>', 'output file, or - for stdout (default: <batch-id>.output.jsonl)')
    .option('--errors <path>', 'error file (default: <batch-id>.errors.jsonl)')
    .action(
      action(async (id: string, flags: RemoteFlags & { output?: string; errors?: string }) => {
        const safeId = basename(id);
        const targets = { output: flags.output ?? `${safeId}.output.jsonl`, errors: flags.errors ?? `${safeId}.errors.jsonl` };
        checkTargets(targets);
        const client = clientFrom(flags);
        const batch = await client.getBatch(id);
        const saved = await saveResults(client, batch, targets);
        for (const line of summaryLines(batch, saved)) note(line);
        // Saving what there is succeeded, partial results of an expired or cancelled batch included;
        // only a batch that failed validation has nothing to save.
        process.exitCode = batch.status === 'failed' ? ExitCode.batchNotCompleted : ExitCode.ok;
      }),
    );

  registerResultsSoFarCommand(batches);
}
