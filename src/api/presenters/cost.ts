// A batch's cost so far as the API shows it (a Spool extension field on the batch object in both dialects):
// its recorded lines' usage at the configured prices (billing.prices), in its currency.
import type { BatchRow } from '../../store/sql/schema.ts';
import { nanosToAmount } from '../../usage/pricing.ts';

export function presentCost(batch: Pick<BatchRow, 'cost_nanos' | 'cost_currency'>): { amount: number; currency: string } {
  return { amount: nanosToAmount(Number(batch.cost_nanos ?? 0)), currency: batch.cost_currency ?? 'USD' };
}
