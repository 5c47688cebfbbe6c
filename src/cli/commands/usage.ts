// `spool usage`: tokens, requests and cost by day and model for the key's
// user (GET /usage), as a table with a total line, or --json. Admin keys may
// ask for another user (--user NAME), everyone (--user '*'), and --by-user.
import type { Command } from 'commander';
import { CliError, ExitCode } from '../exit-codes.ts';
import { printJson, printTable } from '../output.ts';
import { action, clientFrom, remoteCommand, type RemoteFlags } from './common.ts';

interface UsageFlags extends RemoteFlags {
  since?: string;
  until?: string;
  user?: string;
  byUser?: boolean;
}

export function registerUsageCommand(program: Command): void {
  remoteCommand(
    program
      .command('usage')
      .description("tokens, requests and cost by day and model (the key's own; admins: --user NAME or '*', --by-user)")
      .option('--since <date>', 'first day, YYYY-MM-DD (UTC; default 29 days before --until)')
      .option('--until <date>', 'last day, YYYY-MM-DD (UTC; default today)')
      .option('--user <name>', "admin keys: this user's usage, or '*' for every user")
      .option('--by-user', 'admin keys: a row per user, day and model'),
  ).action(
    action(async (flags: UsageFlags) => {
      for (const [flag, value] of [['--since', flags.since], ['--until', flags.until]] as const) {
        if (value !== undefined && !/^\d{4}-\d{2}-\d{2}$/.test(value)) throw new CliError(`${flag} takes a date as YYYY-MM-DD (got "${value}")`, ExitCode.usage);
      }
      const usage = await clientFrom(flags).usage({
        start_date: flags.since,
        end_date: flags.until,
        user_id: flags.user,
        group_by: flags.byUser ? 'user' : undefined,
      });
      if (flags.json) return printJson(usage);
      const rows = usage.data.map((row) => [
        row.date,
        ...(flags.byUser ? [row.user_id] : []),
        row.model,
        row.requests,
        row.input_tokens,
        row.output_tokens,
        formatCost(row.cost.amount, row.cost.currency),
      ]);
      if (rows.length > 0) {
        const currencies = [...new Set(usage.data.map((row) => row.cost.currency))];
        const sum = (pick: (row: (typeof usage.data)[number]) => number) => usage.data.reduce((total, row) => total + pick(row), 0);
        rows.push([
          'total',
          ...(flags.byUser ? [''] : []),
          '',
          sum((row) => row.requests),
          sum((row) => row.input_tokens),
          sum((row) => row.output_tokens),
          // Summed in billionths, as the server counts, so the total is not off by a float's last digit.
          currencies
            .map((currency) => {
              const nanos = usage.data.filter((row) => row.cost.currency === currency).reduce((t, row) => t + Math.round(row.cost.amount * 1e9), 0);
              return formatCost(nanos / 1e9, currency);
            })
            .join(' + '),
        ]);
      }
      const head = ['date', ...(flags.byUser ? ['user'] : []), 'model', 'requests', 'input tokens', 'output tokens', 'cost'];
      printTable(head, rows, `no usage recorded from ${usage.start_date} to ${usage.end_date}`);
    }),
  );
}

/** Enough digits for small costs (a cent is often thousands of lines), no more. */
function formatCost(amount: number, currency: string): string {
  const digits = amount !== 0 && Math.abs(amount) < 1 ? 6 : 2;
  return `${amount.toFixed(digits)} ${currency}`;
}
