// Reads the Prometheus text exposition format (0.0.4) strictly enough to
// catch a malformed /metrics: every sample belongs to a family announced by
// # HELP and # TYPE, labels are well quoted, values are numbers, histogram
// buckets are cumulative and end at +Inf = _count.
import assert from 'node:assert/strict';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  samples: Sample[];
  types: Map<string, string>;
  /** The one sample named `name` whose labels include `labels`; fails unless exactly one matches. */
  value(name: string, labels?: Record<string, string>): number;
  /** Every sample named `name` whose labels include `labels`. */
  all(name: string, labels?: Record<string, string>): Sample[];
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y;

export function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const helps = new Set<string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# HELP ')) {
      helps.add(line.split(' ')[2]);
      continue;
    }
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      assert.ok(['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(type), `unknown type in: ${line}`);
      assert.ok(!types.has(name), `family ${name} announced twice`);
      types.set(name, type);
      continue;
    }
    assert.ok(!line.startsWith('#'), `unexpected comment: ${line}`);
    const match = SAMPLE.exec(line);
    assert.ok(match, `not a sample line: ${line}`);
    const [, name, labelText = '', rawValue] = match;
    const labels: Record<string, string> = {};
    LABEL.lastIndex = 0;
    while (LABEL.lastIndex < labelText.length) {
      const label = LABEL.exec(labelText);
      assert.ok(label, `bad labels in: ${line}`);
      labels[label[1]] = label[2].replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    }
    const value = rawValue === '+Inf' ? Infinity : rawValue === '-Inf' ? -Infinity : Number(rawValue);
    // Prometheus parses values with Go's ParseFloat, which takes NaN in any case (prom-client writes "Nan").
    assert.ok(!Number.isNaN(value) || /^nan$/i.test(rawValue), `bad value in: ${line}`);
    const family = familyOf(name, types);
    assert.ok(family && helps.has(family), `sample ${name} has no # HELP / # TYPE`);
    samples.push({ name, labels, value });
  }
  const all = (name: string, labels: Record<string, string> = {}) =>
    samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  checkHistograms(samples, types);
  return {
    samples,
    types,
    all,
    value(name, labels = {}) {
      const found = all(name, labels);
      assert.equal(found.length, 1, `expected one ${name}${JSON.stringify(labels)}, found ${found.length}`);
      return found[0].value;
    },
  };
}

function familyOf(name: string, types: Map<string, string>): string | undefined {
  if (types.has(name)) return name;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    const base = name.endsWith(suffix) ? name.slice(0, -suffix.length) : undefined;
    if (base && (types.get(base) === 'histogram' || types.get(base) === 'summary')) return base;
  }
  return undefined;
}

function checkHistograms(samples: Sample[], types: Map<string, string>): void {
  for (const [family, type] of types) {
    if (type !== 'histogram') continue;
    const series = new Map<string, Sample[]>();
    for (const sample of samples.filter((s) => s.name === `${family}_bucket`)) {
      const { le: _le, ...rest } = sample.labels;
      const key = JSON.stringify(Object.entries(rest).sort());
      series.set(key, [...(series.get(key) ?? []), sample]);
    }
    for (const [key, buckets] of series) {
      const bounds = buckets.map((b) => (b.labels.le === '+Inf' ? Infinity : Number(b.labels.le)));
      for (let i = 1; i < buckets.length; i++) {
        assert.ok(bounds[i] > bounds[i - 1], `${family}${key}: le ascending`);
        assert.ok(buckets[i].value >= buckets[i - 1].value, `${family}${key}: buckets cumulative`);
      }
      assert.equal(bounds.at(-1), Infinity, `${family}${key}: ends with le="+Inf"`);
      const labels = Object.fromEntries(JSON.parse(key) as [string, string][]);
      const count = samples.find((s) => s.name === `${family}_count` && sameLabels(s.labels, labels));
      assert.ok(count, `${family}${key}: has _count`);
      assert.equal(buckets.at(-1)!.value, count.value, `${family}${key}: +Inf bucket = _count`);
    }
  }
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k]);
}
