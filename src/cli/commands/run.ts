// `spool run INPUT.jsonl`: upload, create, follow with a progress bar, save
// the output and error files. Against --server, or an embedded Spool started
// in this process when there is none.
import { closeSync, openSync, readSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { Option, type Command } from 'commander';
import { SpoolClient, type WireBatch } from '../client.ts';
import { STDOUT } from '../download.ts';
import { startEmbeddedSpool, type EmbeddedSpool } from '../embedded.ts';
import { CliError, ExitCode } from '../exit-codes.ts';
import { formatBytes, note, printJson } from '../output.ts';
import type { BatchProgress } from '../progress.ts';
import { action, apiKeyOption, clientFrom, positiveNumber, serverOption, type RemoteFlags } from './common.ts';
import { requireReadableFile } from './files.ts';
import { checkTargets, exitCodeFor, saveResults, summaryLines } from './results.ts';
import { onInterrupt, watchBatch } from './watch.ts';

interface RunFlags extends RemoteFlags {
  output?: string;
  errors?: string;
  endpoint?: string;
  completionWindow: string;
  dataDir?: string;
  config?: string;
  upstream?: string[];
  model?: string[];
  modelName?: string[];
  interval?: number;
  quiet?: boolean;
}

const DEFAULT_ENDPOINT = '/v1/chat/completions';
// The embedded server is in this process and polling it costs next to nothing, so results show up sooner.
const EMBEDDED_INTERVAL_S = 0.25;
const REMOTE_INTERVAL_S = 1;

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

export function registerRunCommand(program: Command): void {
  program
    .command('run')
    .description('turn a JSONL file of requests into results: upload, create a batch, follow it, save its output and error files')
    .argument('<input>', 'batch input file, one {"custom_id", "body"} request per line')
    .option('-o, --output <path>', 'output file, or - for stdout (default: INPUT.output.jsonl beside the input)')
    .option('--errors <path>', 'error file (default: INPUT.errors.jsonl beside the input)')
    .option('--endpoint <path>', `endpoint every line is sent to (default: the first line's "url", else ${DEFAULT_ENDPOINT})`)
    .option('--completion-window <window>', 'how long the batch may run, e.g. 24h, 90m', '24h')
    .addOption(serverOption(false))
    .addOption(apiKeyOption())
    .option('--data-dir <dir>', 'embedded only: keep the database and files here (default: a temporary directory, removed afterwards)')
    .option('--config <file>', 'embedded only: a spool.config.json or .yaml (upstreams, limits)')
    .option('--upstream <url>', 'embedded only: send every model to this OpenAI-compatible server, repeat for a pool of replicas (default: the built-in echo model answers "echo")', collect)
    .option('--model <path>', 'embedded only: serve this GGUF model with the embedded engine (repeatable)', collect)
    .option('--model-name <name>', 'embedded only: the name lines use for the preceding --model', collect)
    .addOption(new Option('--interval <seconds>', 'seconds between status checks (default: 0.25 embedded, 1 with --server)').argParser(positiveNumber))
    .option('-q, --quiet', 'no progress display or notes, only errors')
    .option('--json', 'print the final batch object as JSON on stdout')
    .action(action(run));
}

type Phase = 'transfer' | 'follow';

async function run(input: string, flags: RunFlags): Promise<void> {
  requireReadableFile(input);
  const embeddedOnly = (['dataDir', 'config', 'upstream', 'model'] as const).filter((name) => flags[name] !== undefined);
  if (flags.server && embeddedOnly.length > 0) {
    const option = `--${embeddedOnly[0].replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    throw new CliError(`${option} configures the embedded server, but ${flags.server} was given (--server or SPOOL_SERVER): leave one out`, ExitCode.usage);
  }
  const targets = { output: flags.output ?? sibling(input, 'output'), errors: flags.errors ?? sibling(input, 'errors') };
  checkTargets(targets);
  if (flags.json && targets.output === STDOUT) throw new CliError('--json and -o - would both write to stdout: pick one', ExitCode.usage);
  const endpoint = flags.endpoint ?? endpointOfFirstLine(input) ?? DEFAULT_ENDPOINT;
  // Ctrl-C: while bytes are moving it aborts them; while the batch runs it cancels the batch and
  // keeps following so the partial results are still saved; a second Ctrl-C quits at once.
  const transfers = new AbortController();
  let phase: Phase = 'transfer';
  let batchId: string | undefined;
  let progress: BatchProgress | undefined;
  let embedded: EmbeddedSpool | undefined;
  let client: SpoolClient | undefined;
  let interrupted = false;
  const say = (message: string) => {
    if (flags.quiet) return;
    if (progress) progress.log(message);
    else note(message);
  };
  const dispose = onInterrupt((count) => {
    interrupted = true;
    if (count === 1 && phase === 'follow' && client && batchId) {
      say(`cancelling batch ${batchId}; its finished lines are still saved (Ctrl-C again to quit now)`);
      client.cancelBatch(batchId).catch((err: Error) => say(`spool: could not cancel batch ${batchId}: ${err.message}`));
      return;
    }
    if (count === 1) {
      transfers.abort();
      return;
    }
    progress?.stop();
    embedded?.discardSync();
    note(batchId && !embedded ? `spool: quit; batch ${batchId} may still be running on the server` : 'spool: quit');
    process.exit(ExitCode.interrupted);
  });

  try {
    if (flags.server) client = clientFrom(flags);
    else {
      embedded = await startEmbeddedSpool(flags);
      client = new SpoolClient(embedded.url, embedded.apiKey);
      say(`started an embedded Spool (data in ${embedded.dataDir})`);
    }
    const file = await client.uploadFile(input, 'batch', transfers.signal);
    say(`uploaded ${input} (${formatBytes(file.bytes)}) as ${file.id}`);
    const created = await client.createBatch({ inputFileId: file.id, endpoint, completionWindow: flags.completionWindow }, transfers.signal);
    batchId = created.id;
    say(`created batch ${batchId} (${endpoint})`);

    const startedAt = Date.now();
    phase = 'follow';
    const intervalS = flags.interval ?? (embedded ? EMBEDDED_INTERVAL_S : REMOTE_INTERVAL_S);
    const watch = watchBatch(client, batchId, { quiet: flags.quiet === true, intervalMs: intervalS * 1000 });
    progress = watch.progress;
    const batch: WireBatch = await watch.done;
    progress = undefined;
    phase = 'transfer';

    const saved = await saveResults(client, batch, targets, transfers.signal);
    if (!flags.quiet || batch.status !== 'completed') for (const line of summaryLines(batch, saved, (Date.now() - startedAt) / 1000)) note(line);
    if (flags.json) printJson(batch);
    process.exitCode = interrupted ? ExitCode.interrupted : exitCodeFor(batch);
  } finally {
    dispose();
    await embedded?.close();
  }
}

/** "data/in.jsonl" -> "data/in.output.jsonl": results land beside their input. */
function sibling(input: string, kind: 'output' | 'errors'): string {
  const name = basename(input);
  const stem = extname(name) ? name.slice(0, -extname(name).length) : name;
  return join(dirname(input), `${stem}.${kind}.jsonl`);
}

/**
 * Lines in the OpenAI form carry their endpoint ("url"); using the first
 * line's saves repeating it on the command line. Only the first 64 KiB are
 * read; anything unreadable is left to the server's validation to report.
 */
function endpointOfFirstLine(input: string): string | undefined {
  const fd = openSync(input, 'r');
  try {
    const buffer = Buffer.alloc(64 * 1024);
    const length = readSync(fd, buffer, 0, buffer.length, 0);
    const text = buffer.subarray(0, length).toString('utf8');
    const newline = text.indexOf('\n');
    const first = JSON.parse(newline === -1 ? text : text.slice(0, newline)) as { url?: unknown };
    return typeof first?.url === 'string' && first.url.startsWith('/') ? first.url : undefined;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}
