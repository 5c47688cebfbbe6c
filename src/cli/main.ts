// The `spool` command.
import { Command, InvalidArgumentError } from 'commander';
import { pino } from 'pino';
import { startSpool, startWorker } from '../app.ts';
import { loggerOptions } from '../runtime/log-options.ts';
import { createApiKey } from '../auth/keys.ts';
import { ConfigError, loadConfig, type Config } from '../config.ts';
import { upstreamsFromUrls } from '../upstreams/replicas.ts';
import { openStore } from '../store/index.ts';
import { listApiKeys, revokeApiKey } from '../store/sql/keys.ts';
import { registerClientCommands } from './commands/index.ts';
import { registerWebhooksCommands } from './commands/webhooks.ts';
import { ExitCode } from './exit-codes.ts';
import { printJson, printTable } from './output.ts';

interface CommonFlags {
  config?: string;
  dataDir?: string;
}

function portNumber(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError('a port is an integer from 0 to 65535');
  return port;
}

/** --model PATH [--model-name NAME] pairs, in order: the n-th name names the n-th model. */
function engineModelsFrom(paths: string[], names: string[]) {
  if (names.length > paths.length) throw new InvalidArgumentError('each --model-name needs a --model before it');
  return paths.map((path, index) => (names[index] ? { path, name: names[index] } : { path }));
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

interface ServeFlags extends CommonFlags {
  model?: string[];
  modelName?: string[];
  whisperModel?: string;
  whisperModelName?: string;
  host?: string;
  port?: number;
  upstream?: string[];
  worker?: boolean;
}

function configFrom(flags: ServeFlags): Config {
  return loadConfig({
    configPath: flags.config,
    flags: {
      host: flags.host,
      port: flags.port,
      dataDir: flags.dataDir,
      // --upstream URL: the one-line setup, every model goes to that server; given again, a pool of replicas.
      upstreams: upstreamsFromUrls(flags.upstream ?? []),
      worker: flags.worker === false ? { enabled: false } : undefined,
      engine: {
        models: flags.model && flags.model.length > 0 ? engineModelsFrom(flags.model, flags.modelName ?? []) : undefined,
        // Merged over a configured engine.whisper, so --whisper-model-name alone renames the configured model.
        whisper: flags.whisperModel || flags.whisperModelName ? { path: flags.whisperModel, name: flags.whisperModelName } : undefined,
      },
    },
  });
}

const program = new Command()
  .name('spool')
  .description('Self-hosted batch inference, wire-compatible with the Together AI and OpenAI Batch APIs.')
  .showHelpAfterError();

program
  .command('serve')
  .description('run the HTTP API (and, unless worker.enabled=false, the batch worker)')
  .option('--host <host>', 'address to listen on (SPOOL_HOST; default 127.0.0.1)')
  .option('--port <port>', 'port to listen on, 0 for any free one (SPOOL_PORT; default 8080)', portNumber)
  .option('--data-dir <dir>', 'where the database and file blobs live (SPOOL_DATA_DIR; default ./data)')
  .option('--config <file>', 'a spool.config.json or .yaml file (SPOOL_CONFIG)')
  .option('--upstream <url>', 'send every model to this OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (replaces configured upstreams; repeat for a pool of replicas)', collect)
  .option('--no-worker', 'API only: do not run batch requests in this process')
  .option('--model <path>', 'serve this GGUF model with the embedded engine (repeatable)', collect)
  .option('--model-name <name>', 'the name batch lines use for the preceding --model (default: its file name)', collect)
  .option('--whisper-model <path>', 'transcribe audio lines with this whisper.cpp ggml model in the embedded engine')
  .option('--whisper-model-name <name>', 'the name audio lines use for the --whisper-model (default: its file name)')
  .action(async (flags: ServeFlags) => {
    const config = configFrom(flags);
    noteClientKeyIsNotAdminKey(config);
    const app = await startSpool(config);
    // Before anything is printed: whoever reads "listening" may send SIGTERM at once, and it must find the handler.
    onSignals(() => app.close(), (signal) => app.server.log.info({ signal }, 'shutting down'));
    if (app.initialKey) {
      const copy = app.initialKey.path
        ? `A copy is in ${app.initialKey.path} (mode 600).`
        : `No copy could be saved (${app.initialKey.saveError}): store it now.`;
      process.stdout.write(
        `\nNo API key existed, so Spool created an admin key for user "default" (shown only this once):\n\n  ${app.initialKey.key}\n\n` +
          `${copy} Create more with \`spool keys create --user NAME\`.\n\n`,
      );
    }
    process.stdout.write(`Spool listening on ${app.url} (Together API at ${app.url}/v1, OpenAI API at ${app.url}/openai/v1)\n`);
  });

/**
 * SPOOL_API_KEY is the key the CLI sends; servers before this one also took it as their admin key. Say so once
 * when it is the only key in sight, so a deployment that still sets it learns why its key no longer works.
 */
function noteClientKeyIsNotAdminKey(config: Config): void {
  if (!process.env.SPOOL_API_KEY || config.adminKey) return;
  process.stderr.write(
    'spool: warning: SPOOL_API_KEY is the key the spool CLI sends to a server, and the server does not accept it as its admin key; ' +
      'set SPOOL_ADMIN_KEY (config adminKey) for an admin key from the environment\n',
  );
}

/** SIGTERM/SIGINT stop gracefully (bounded by the runner's grace period); a second signal exits at once. */
function onSignals(close: () => Promise<void>, announce: (signal: string) => void): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) process.exit(1);
    stopping = true;
    announce(signal);
    close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

program
  .command('worker')
  .description('run batch requests and lifecycle sweeps only, no HTTP API (share a PostgreSQL database with `spool serve --no-worker`)')
  .option('--data-dir <dir>', 'data directory (SPOOL_DATA_DIR)')
  .option('--config <file>', 'config file (SPOOL_CONFIG)')
  .option('--upstream <url>', 'send every model to this OpenAI-compatible server (repeat for a pool of replicas)', collect)
  .option('--model <path>', 'serve this GGUF model with the embedded engine (repeatable)', collect)
  .option('--model-name <name>', 'the name batch lines use for the preceding --model (default: its file name)', collect)
  .option('--whisper-model <path>', 'transcribe audio lines with this whisper.cpp ggml model in the embedded engine')
  .option('--whisper-model-name <name>', 'the name audio lines use for the --whisper-model (default: its file name)')
  .action(async (flags: ServeFlags) => {
    const config = configFrom(flags);
    noteClientKeyIsNotAdminKey(config);
    const options = loggerOptions(config);
    const log = options ? pino(options) : pino({ level: 'silent' });
    const worker = await startWorker(config, log);
    onSignals(() => worker.close(), (signal) => log.info({ signal }, 'shutting down'));
    log.info('spool worker started');
    process.stdout.write(`Spool worker running${worker.opsUrl ? ` (health and metrics at ${worker.opsUrl})` : ''}\n`);
  });

const keys = program.command('keys').description('manage API keys');

async function withStore<T>(flags: CommonFlags, run: (store: Awaited<ReturnType<typeof openStore>>) => Promise<T>): Promise<T> {
  const store = await openStore(configFrom(flags));
  try {
    return await run(store);
  } finally {
    await store.close();
  }
}

keys
  .command('create')
  .description('create a key for a user and print it (only this once)')
  .requiredOption('--user <name>', 'the user the key acts as')
  .option('--admin', 'may administer the service', false)
  .option('--data-dir <dir>', 'data directory (SPOOL_DATA_DIR)')
  .option('--config <file>', 'config file (SPOOL_CONFIG)')
  .option('--json', 'print {id, key, user_id, is_admin} as JSON')
  .action(async (flags: CommonFlags & { user: string; admin: boolean; json?: boolean }) => {
    const minted = await withStore(flags, (store) => createApiKey(store.sql.db, flags.user, flags.admin));
    if (flags.json) printJson({ id: minted.id, key: minted.key, user_id: minted.userId, is_admin: minted.isAdmin });
    else process.stdout.write(`${minted.key}\n`);
    process.stderr.write(`Created key ${minted.id} for user "${minted.userId}"${minted.isAdmin ? ' (admin)' : ''}. Store it now: it is not shown again.\n`);
  });

keys
  .command('list')
  .description('list keys (never the secrets)')
  .option('--data-dir <dir>', 'data directory (SPOOL_DATA_DIR)')
  .option('--config <file>', 'config file (SPOOL_CONFIG)')
  .option('--json', 'print the keys as a JSON array')
  .action(async (flags: CommonFlags & { json?: boolean }) => {
    const rows = await withStore(flags, (store) => listApiKeys(store.sql.db));
    const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
    // Never the hash: a listing is for telling keys apart, and it ends up in terminals and logs.
    const keys = rows.map((row) => ({ id: row.id, prefix: row.prefix, user_id: row.user_id, is_admin: Boolean(row.is_admin), created_at: iso(row.created_at), revoked_at: iso(row.revoked_at) }));
    if (flags.json) printJson(keys);
    else {
      const rowsOut = keys.map((key) => [key.id, `${key.prefix}…`, key.user_id, key.is_admin ? 'yes' : 'no', key.created_at, key.revoked_at ? `revoked ${key.revoked_at}` : 'active']);
      printTable(['ID', 'PREFIX', 'USER', 'ADMIN', 'CREATED', 'STATE'], rowsOut, 'no keys');
    }
  });

keys
  .command('revoke')
  .description('revoke a key by its id or its printed prefix')
  .argument('<id-or-prefix>')
  .option('--data-dir <dir>', 'data directory (SPOOL_DATA_DIR)')
  .option('--config <file>', 'config file (SPOOL_CONFIG)')
  .action(async (idOrPrefix: string, flags: CommonFlags) => {
    const revoked = await withStore(flags, (store) => revokeApiKey(store.sql.db, idOrPrefix, Date.now()));
    if (revoked === 0) {
      process.stderr.write(`spool: no active key matches "${idOrPrefix}"\n`);
      process.exitCode = ExitCode.notFound;
    } else process.stdout.write(`revoked ${revoked} key(s)\n`);
  });

// run, files, batches: HTTP clients of a (possibly embedded) Spool server.
registerClientCommands(program);
registerWebhooksCommands(program, configFrom);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`spool: ${err instanceof ConfigError ? err.message : err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
