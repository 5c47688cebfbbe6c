// Monthly spend caps per user (billing.monthlyBudget, billing.userBudgets):
// what a user has spent this calendar month (UTC), what their running batches
// may still spend (estimated less spent), and so what is left for a new batch.
// Checked when a batch is created and when it is validated; a batch that has
// started is never cut off, so a month's spend can end a little above the cap
// by what estimates missed.
import type { Kysely } from 'kysely';
import type { BillingConfig } from '../config.ts';
import type { Database } from '../store/sql/schema.ts';
import { committedCost, costSince } from '../store/sql/usage.ts';
import { nanosToAmount } from './pricing.ts';

export interface BudgetStanding {
  currency: string;
  budgetNanos: number;
  spentNanos: number;
  committedNanos: number;
  leftNanos: number;
  /** The first instant of next month, UTC. */
  resetsAt: Date;
}

/** The user's standing this month, or undefined when no cap applies to them. */
export async function budgetStanding(
  db: Kysely<Database>,
  billing: BillingConfig,
  userId: string,
  now: number,
  exceptBatchId?: string,
): Promise<BudgetStanding | undefined> {
  const budget = billing.userBudgets[userId] ?? billing.monthlyBudget;
  if (budget === undefined) return undefined;
  const today = new Date(now);
  const monthStart = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), 1));
  const resetsAt = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth() + 1, 1));
  const spentNanos = (await costSince(db, userId, monthStart.toISOString().slice(0, 10))).get(billing.currency) ?? 0;
  const committedNanos = await committedCost(db, userId, billing.currency, exceptBatchId);
  const budgetNanos = Math.round(budget * 1e9);
  return { currency: billing.currency, budgetNanos, spentNanos, committedNanos, leftNanos: Math.max(0, budgetNanos - spentNanos - committedNanos), resetsAt };
}

/** Says how much is left and when it resets, and what the batch would have cost when that is known. */
export function budgetMessage(userId: string, standing: BudgetStanding, estimateNanos?: number): string {
  const money = (nanos: number) => `${nanosToAmount(nanos).toFixed(2)} ${standing.currency}`;
  const reset = standing.resetsAt.toISOString().slice(0, 10);
  const asked = estimateNanos === undefined ? '' : `this batch would cost about ${money(estimateNanos)}, `;
  return (
    `Monthly budget of user ${userId} reached: ${asked}and ${money(standing.leftNanos)} of ${money(standing.budgetNanos)} is left ` +
    `(${money(standing.spentNanos)} spent this month, ${money(standing.committedNanos)} more estimated for running batches). ` +
    `The budget resets on ${reset} (UTC).`
  );
}
