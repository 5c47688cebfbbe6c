// `spool files list|get|upload|download|delete`.
import { existsSync, statSync } from 'node:fs';
import type { Command } from 'commander';
import { fileFields, fileRow, FILE_TABLE_HEAD } from '../batch-view.ts';
import { downloadFile, STDOUT } from '../download.ts';
import { CliError, ExitCode } from '../exit-codes.ts';
import { formatBytes, note, printFields, printJson, printTable } from '../output.ts';
import { action, clientFrom, positiveInteger, remoteCommand, type RemoteFlags } from './common.ts';

export function registerFilesCommands(program: Command): void {
  const files = program.command('files').description('list, upload, download and delete files on a Spool server');

  remoteCommand(files.command('list').description('list your files, newest first'))
    .option('--purpose <purpose>', 'only files of this purpose (batch, batch_output)')
    .option('--limit <n>', 'at most this many', positiveInteger)
    .action(
      action(async (flags: RemoteFlags & { purpose?: string; limit?: number }) => {
        const list = await clientFrom(flags).listFiles({ purpose: flags.purpose, limit: flags.limit });
        if (flags.json) printJson(list);
        else printTable(FILE_TABLE_HEAD, list.map(fileRow), 'no files');
      }),
    );

  remoteCommand(files.command('get').description("show one file's details").argument('<file-id>')).action(
    action(async (id: string, flags: RemoteFlags) => {
      const file = await clientFrom(flags).getFile(id);
      if (flags.json) printJson(file);
      else printFields(fileFields(file));
    }),
  );

  remoteCommand(files.command('upload').description('upload a local file (streamed) and print its id').argument('<path>'))
    .option('--purpose <purpose>', 'file purpose', 'batch')
    .action(
      action(async (path: string, flags: RemoteFlags & { purpose: string }) => {
        requireReadableFile(path);
        const file = await clientFrom(flags).uploadFile(path, flags.purpose);
        if (flags.json) printJson(file);
        else {
          process.stdout.write(`${file.id}\n`);
          note(`uploaded ${path} (${formatBytes(file.bytes)}) as ${file.id}`);
        }
      }),
    );

  remoteCommand(files.command('download').description("write a file's content to stdout or to -o PATH (streamed)").argument('<file-id>'), { json: false })
    .option('-o, --output <path>', 'write here instead of stdout', STDOUT)
    .action(
      action(async (id: string, flags: RemoteFlags & { output: string }) => {
        const bytes = await downloadFile(clientFrom(flags), id, flags.output);
        if (flags.output !== STDOUT) note(`wrote ${flags.output} (${formatBytes(bytes)})`);
      }),
    );

  remoteCommand(files.command('delete').description('delete a file and its content').argument('<file-id>')).action(
    action(async (id: string, flags: RemoteFlags) => {
      const deleted = await clientFrom(flags).deleteFile(id);
      if (flags.json) printJson(deleted);
      else process.stdout.write(`deleted ${deleted.id}\n`);
    }),
  );
}

/** A missing or unreadable input is the caller's mistake (exit 1), found before anything is sent. */
export function requireReadableFile(path: string): void {
  if (!existsSync(path)) throw new CliError(`no such file: ${path}`, ExitCode.usage);
  if (!statSync(path).isFile()) throw new CliError(`not a regular file: ${path}`, ExitCode.usage);
}
