// A Prometheus histogram whose buckets are counted elsewhere and only read at
// scrape time. The runner counts upstream latency into preallocated arrays
// (upstream-tally.ts) because prom-client's own Histogram builds a label hash
// and a few objects on every observe(), which the hot path cannot afford.
// prom-client has no collector interface for pre-aggregated data, but its
// registry renders any metric whose get() returns named values; this is
// that, in prom-client's own value shape, so escaping and formatting stay its.
import type { Metric, Registry } from 'prom-client';

export interface BucketedSeries {
  labels: Record<string, string>;
  /** Upper bounds in seconds, ascending; +Inf is implied. */
  bounds: readonly number[];
  /** Per bucket, not cumulative, one more than `bounds` (the last is above every bound). */
  counts: readonly number[];
  sum: number;
  count: number;
}

interface Value {
  value: number;
  labels: Record<string, string | number>;
  metricName: string;
}

export class BucketedHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly read: () => BucketedSeries[],
  ) {}

  register(registry: Registry): void {
    // Rendering (metrics(), getMetricsAsJSON()) only calls get(); resetMetrics(), which Spool never calls, would not apply.
    registry.registerMetric(this as unknown as Metric);
  }

  async get(): Promise<{ name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: Value[] }> {
    const values: Value[] = [];
    for (const series of this.read()) {
      let cumulative = 0;
      series.bounds.forEach((bound, i) => {
        cumulative += series.counts[i];
        values.push({ metricName: `${this.name}_bucket`, labels: { ...series.labels, le: bound }, value: cumulative });
      });
      values.push({ metricName: `${this.name}_bucket`, labels: { ...series.labels, le: '+Inf' }, value: series.count });
      values.push({ metricName: `${this.name}_sum`, labels: series.labels, value: series.sum });
      values.push({ metricName: `${this.name}_count`, labels: series.labels, value: series.count });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}
