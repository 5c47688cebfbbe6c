// What every client command shares: the --server/--api-key/--json options,
// building the HTTP client, and turning any failure into one line on stderr
// plus the documented exit code.
import { type Command, InvalidArgumentError, Option } from 'commander';
import { ConfigError } from '../../config.ts';
import { DEFAULT_SERVER, SpoolClient } from '../client.ts';
import { CliError, ExitCode } from '../exit-codes.ts';

export interface RemoteFlags {
  server?: string;
  apiKey?: string;
  json?: boolean;
}

export function serverOption(withDefault: boolean): Option {
  const option = new Option('--server <url>', `Spool server to talk to${withDefault ? '' : ' (default: run an embedded one in this process)'}`).env('SPOOL_SERVER');
  return withDefault ? option.default(DEFAULT_SERVER) : option;
}

export function apiKeyOption(): Option {
  return new Option('--api-key <key>', 'API key for --server').env('SPOOL_API_KEY');
}

/** Adds --server and --api-key, the options of every command that talks to a server, and --json to those that print objects. */
export function remoteCommand(command: Command, { json = true } = {}): Command {
  command.addOption(serverOption(true)).addOption(apiKeyOption());
  return json ? command.option('--json', 'print the server objects as JSON (for scripts)', false) : command;
}

export function clientFrom(flags: RemoteFlags): SpoolClient {
  const server = flags.server ?? DEFAULT_SERVER;
  if (!flags.apiKey) throw new CliError(`no API key for ${server}: pass --api-key KEY or set SPOOL_API_KEY`, ExitCode.usage);
  return new SpoolClient(server, flags.apiKey);
}

/**
 * Wraps a command action: a CliError becomes "spool: message" on stderr and
 * its exit code. The exit code is set rather than exiting at once, so stdout
 * that is still being flushed to a pipe is not cut short.
 */
export function action<Args extends unknown[]>(run: (...args: Args) => Promise<void>): (...args: Args) => Promise<void> {
  return async (...args: Args) => {
    process.stdout.on('error', onStdoutError);
    try {
      await run(...args);
    } catch (err) {
      const { message, exitCode } = describe(err);
      process.stderr.write(`spool: ${message}\n`);
      process.exitCode = exitCode;
    }
  };
}

/**
 * `spool files download ID | head` closes stdout early: the reader has what it
 * wanted, so that is a quiet end, not a crash with a stack trace.
 */
function onStdoutError(err: NodeJS.ErrnoException): void {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? ExitCode.ok);
  process.stderr.write(`spool: cannot write to stdout: ${err.message}\n`);
  process.exit(ExitCode.usage);
}

function describe(err: unknown): { message: string; exitCode: number } {
  if (err instanceof CliError) return { message: err.message, exitCode: err.exitCode };
  if (err instanceof ConfigError) return { message: err.message, exitCode: ExitCode.usage };
  if ((err as Error)?.name === 'AbortError') return { message: 'interrupted', exitCode: ExitCode.interrupted };
  return { message: err instanceof Error ? err.message : String(err), exitCode: ExitCode.usage };
}

export function positiveInteger(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed <= 0) throw new InvalidArgumentError('expected a whole number above 0');
  return parsed;
}

export function positiveNumber(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed <= 0) throw new InvalidArgumentError('expected a number above 0');
  return parsed;
}
