// Exit codes of the client commands (`spool run`, `spool files`, `spool batches`).
// Scripts branch on these, so they are part of the CLI's interface: docs/cli.md
// lists them and changing one is a breaking change.
export const ExitCode = {
  ok: 0,
  /** Bad arguments, an unreadable input file, or a request the server refused as invalid (400, 409, 413, ...). */
  usage: 1,
  /** The batch ended without completing: failed (e.g. its input did not validate), expired or cancelled. */
  batchNotCompleted: 2,
  /** The server could not be reached, timed out, or answered with a 5xx / something that is not Spool. */
  unreachable: 3,
  /** The API key was missing, wrong or revoked (401/403). */
  auth: 4,
  /** No such file or batch for this key (404). */
  notFound: 5,
  /** `spool batches wait --timeout` ran out before the batch ended (the `timeout` utility's code). */
  timedOut: 124,
  /** Interrupted with Ctrl-C (128 + SIGINT, as shells report it). */
  interrupted: 130,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** An error the CLI reports as one line on stderr before exiting with `exitCode`. */
export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: ExitCodeValue,
  ) {
    super(message);
  }
}
