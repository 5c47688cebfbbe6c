// `spool webhooks secret`: prints the key webhook receivers verify signatures
// with. Like `spool keys`, it works on the data directory (or DATABASE_URL)
// directly: the generated secret lives in the database, never in an API answer.
import type { Command } from 'commander';
import type { Config } from '../../config.ts';
import { openStore } from '../../store/index.ts';
import { getWebhookSigningSecret } from '../../store/sql/settings.ts';

interface LocalFlags {
  config?: string;
  dataDir?: string;
}

export function registerWebhooksCommands(program: Command, configFrom: (flags: LocalFlags) => Config): void {
  const webhooks = program.command('webhooks').description('webhook settings of this Spool deployment');

  webhooks
    .command('secret')
    .description('print the webhook signing secret (webhooks.signingSecret, or the one generated and kept in the database)')
    .option('--data-dir <dir>', 'data directory (SPOOL_DATA_DIR)')
    .option('--config <file>', 'config file (SPOOL_CONFIG)')
    .action(async (flags: LocalFlags) => {
      const config = configFrom(flags);
      if (config.webhooks.signingSecret) {
        process.stdout.write(`${config.webhooks.signingSecret}\n`);
        process.stderr.write('(from the webhooks.signingSecret setting)\n');
        return;
      }
      const store = await openStore(config);
      try {
        // Created here if no server has made it yet: every process reads the same row, whoever wrote it first.
        process.stdout.write(`${await getWebhookSigningSecret(store.sql.db)}\n`);
      } finally {
        await store.close();
      }
    });
}
