// `spool webhooks secret --user NAME [--rotate]`: prints (or replaces) the key a
// user's webhook receiver verifies signatures with. Like `spool keys`, it works
// on the data directory (or DATABASE_URL) directly; a user can also read their
// own with their key: GET /v1/webhooks/secret.
import type { Command } from 'commander';
import type { Config } from '../../config.ts';
import { openStore } from '../../store/index.ts';
import { findSharedWebhookSecret } from '../../store/sql/settings.ts';
import { rotateUserWebhookSecret, userWebhookSecret } from '../../store/sql/webhook-secrets.ts';
import { CliError, ExitCode } from '../exit-codes.ts';
import { action } from './common.ts';

interface SecretFlags {
  config?: string;
  dataDir?: string;
  user?: string;
  rotate?: boolean;
  shared?: boolean;
}

export function registerWebhooksCommands(program: Command, configFrom: (flags: SecretFlags) => Config): void {
  const webhooks = program.command('webhooks').description('webhook settings of this Spool deployment');

  webhooks
    .command('secret')
    .description("print a user's webhook signing secret (made on first use), or with --rotate replace it")
    .option('--user <name>', 'the user whose events the secret signs')
    .option('--rotate', "replace the user's secret with a new one (other users' secrets stay as they are)")
    .option('--shared', 'print the shared secret of installs from before per-user secrets, if there is one')
    .option('--data-dir <dir>', 'data directory (SPOOL_DATA_DIR)')
    .option('--config <file>', 'config file (SPOOL_CONFIG)')
    .action(
      action(async (flags: SecretFlags) => {
        if (!flags.user && !flags.shared) throw new CliError('give --user NAME (each user has a secret of their own), or --shared', ExitCode.usage);
        const config = configFrom(flags);
        const store = await openStore(config);
        try {
          if (flags.shared) {
            const shared = config.webhooks.signingSecret ?? (await findSharedWebhookSecret(store.sql.db));
            if (!shared) throw new CliError('this install has no shared webhook secret: every user has one of their own (--user NAME)', ExitCode.notFound);
            process.stdout.write(`${shared}\n`);
            if (!config.webhooks.signWithSharedSecret) process.stderr.write('(events are no longer signed with it: webhooks.signWithSharedSecret is false)\n');
            return;
          }
          const row = flags.rotate ? await rotateUserWebhookSecret(store.sql.db, flags.user!) : await userWebhookSecret(store.sql.db, flags.user!);
          process.stdout.write(`${row.secret}\n`);
          if (flags.rotate) process.stderr.write(`Rotated the webhook secret of user "${row.user_id}"; update their receiver. Other users' secrets are unchanged.\n`);
        } finally {
          await store.close();
        }
      }),
    );
}
