// Fetching a finished batch's output and error files, shared by `spool run`
// and `spool batches download`, and the summary told on stderr afterwards.
import { existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isTerminal, validationErrorLines } from '../batch-view.ts';
import type { SpoolClient, WireBatch } from '../client.ts';
import { downloadFile, STDOUT } from '../download.ts';
import { CliError, ExitCode } from '../exit-codes.ts';
import { formatBytes } from '../output.ts';

export interface ResultTargets {
  /** Path for the output file, or "-" for stdout. */
  output: string;
  errors: string;
}

export interface SavedResults {
  output?: { path: string; bytes: number };
  errors?: { path: string; bytes: number };
}

/** Fails early (before any upload or wait) when a target's directory does not exist. */
export function checkTargets(targets: ResultTargets): void {
  if (targets.output === STDOUT && targets.errors === STDOUT) throw new CliError('only one of the output and errors files can go to stdout ("-")', ExitCode.usage);
  for (const target of [targets.output, targets.errors]) {
    if (target === STDOUT) continue;
    const dir = dirname(resolve(target));
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new CliError(`cannot write ${target}: directory ${dir} does not exist`, ExitCode.usage);
  }
}

export async function saveResults(client: SpoolClient, batch: WireBatch, targets: ResultTargets, signal?: AbortSignal): Promise<SavedResults> {
  if (!isTerminal(batch)) {
    throw new CliError(`batch ${batch.id} is still ${batch.status} and has no results yet: run \`spool batches wait ${batch.id}\` first`, ExitCode.usage);
  }
  const saved: SavedResults = {};
  if (batch.output_file_id) saved.output = { path: targets.output, bytes: await downloadFile(client, batch.output_file_id, targets.output, signal) };
  if (batch.error_file_id) saved.errors = { path: targets.errors, bytes: await downloadFile(client, batch.error_file_id, targets.errors, signal) };
  return saved;
}

/** The lines told on stderr once a batch is over: its outcome, where the results went, and why it failed if it did. */
export function summaryLines(batch: WireBatch, saved: SavedResults, elapsedSeconds?: number): string[] {
  const { total, completed, failed } = batch.request_counts;
  const took = elapsedSeconds === undefined ? '' : ` in ${elapsedSeconds.toFixed(1)}s`;
  // A batch that failed validation ran nothing, so its counts say nothing.
  const counts = batch.status === 'failed' && total === 0 ? '' : `: ${completed} of ${total} requests succeeded, ${failed} failed`;
  const lines = [`batch ${batch.id} ${batch.status}${took}${counts}`];
  const where = (file: { path: string; bytes: number }) => (file.path === STDOUT ? `stdout (${formatBytes(file.bytes)})` : `${file.path} (${formatBytes(file.bytes)})`);
  if (saved.output) lines.push(`  output: ${where(saved.output)}`);
  if (saved.errors) lines.push(`  errors: ${where(saved.errors)}`);
  const problems = validationErrorLines(batch);
  const shown = problems.slice(0, 10);
  if (shown.length > 0) lines.push('  the input file was rejected:', ...shown.map((line) => `    ${line}`));
  if (problems.length > shown.length) lines.push(`    … and ${problems.length - shown.length} more (\`spool batches get ${batch.id} --json\`)`);
  return lines;
}

/** 0 only for a completed batch; per-line failures inside a completed batch are in its error file, not the exit code. */
export function exitCodeFor(batch: WireBatch): number {
  return batch.status === 'completed' ? ExitCode.ok : ExitCode.batchNotCompleted;
}
