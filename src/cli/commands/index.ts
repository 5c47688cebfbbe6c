// The commands that talk to a Spool server over HTTP (as opposed to `serve`,
// `worker` and `keys`, which work on the data directory or database directly).
import type { Command } from 'commander';
import { registerBatchesCommands } from './batches.ts';
import { registerFilesCommands } from './files.ts';
import { registerRunCommand } from './run.ts';
import { registerUsageCommand } from './usage.ts';

export function registerClientCommands(program: Command): void {
  registerRunCommand(program);
  registerFilesCommands(program);
  registerBatchesCommands(program);
  registerUsageCommand(program);
}
