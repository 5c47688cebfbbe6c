// What a recorded line costs: its usage at the price of its model (config
// billing.prices, first match wins, globs as in upstream model lists), less
// the batch discount. In billionths of the currency unit, rounded per line,
// so sums are exact integers and a price of $0.02 per million tokens still
// counts for a 10-token line.
import type { BillingConfig } from '../config.ts';
import { compilePattern } from '../upstreams/router.ts';

export class Pricing {
  private readonly prices: Array<{ matches: (model: string) => boolean; input: number; output: number }>;
  private readonly byModel = new Map<string, { input: number; output: number } | null>();
  private readonly factor: number;

  constructor(readonly billing: BillingConfig) {
    this.prices = billing.prices.map((price) => {
      const matchers = price.models.map(compilePattern);
      return { matches: (model: string) => matchers.some((m) => m(model)), input: price.inputPerMillion, output: price.outputPerMillion };
    });
    this.factor = 1 - billing.batchDiscount;
  }

  get currency(): string {
    return this.billing.currency;
  }

  /** Cost of `input` prompt and `output` completion tokens of `model`, in billionths of the currency. */
  costNanos(model: string, input: number, output: number): number {
    const price = this.priceOf(model);
    if (!price) return 0;
    // Per million tokens, in billionths: tokens x price x 1000.
    return Math.round((input * price.input + output * price.output) * 1000 * this.factor);
  }

  private priceOf(model: string): { input: number; output: number } | null {
    let price = this.byModel.get(model);
    if (price === undefined) {
      const found = this.prices.find((p) => p.matches(model));
      price = found ? { input: found.input, output: found.output } : null;
      // Bounded like the router's cache: model names come from user input.
      if (this.byModel.size >= 10_000) this.byModel.clear();
      this.byModel.set(model, price);
    }
    return price;
  }
}

/** A cost in billionths as an amount of its currency (what the API shows). */
export const nanosToAmount = (nanos: number): number => Math.round(nanos) / 1e9;
