// Timing helpers, the benchmark context, and the results table.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeJsonl, type JsonlSpec } from './data.ts';

export interface Row {
  metric: string;
  spool: string;
  reference: string;
  ratio: string;
  target: string;
  /** null: informational, no target. */
  pass: boolean | null;
}

export interface BenchContext {
  quick: boolean;
  /** Scratch directory for this harness run (input files). */
  tmpDir: string;
  outDir: string;
  cpuProfDir?: string;
  /** Time every SQLite statement in the Spool children and print the heaviest. */
  sqlProfile: boolean;
  /** Merged over every Spool child's config (--spool-config), for experiments. */
  spoolConfig: Record<string, unknown>;
  keepDataDirs: boolean;
  /** Set by --bundled: the Spool child runs from this esbuild bundle on plain node instead of through tsx. */
  bundledServer?: string;
  log(message: string): void;
  /** A generated input file, made once per run and shared by the benchmarks that ask for the same spec. */
  inputFile(spec: JsonlSpec): Promise<{ path: string; bytes: number; lines: number }>;
}

export function createContext(options: { quick: boolean; tmpDir: string; outDir: string; cpuProfDir?: string; sqlProfile: boolean; spoolConfig: Record<string, unknown>; keepDataDirs: boolean; bundledServer?: string }): BenchContext {
  const files = new Map<string, Promise<{ path: string; bytes: number; lines: number }>>();
  return {
    ...options,
    log: (message) => process.stderr.write(`[bench] ${message}\n`),
    inputFile(spec) {
      const key = `${spec.model}-${spec.lines}x${spec.lineBytes}${spec.systemPrompts ? `-sys${spec.systemPrompts.count}x${spec.systemPrompts.bytes}` : ''}`;
      let made = files.get(key);
      if (!made) {
        const path = join(options.tmpDir, `${key}.jsonl`);
        mkdirSync(options.tmpDir, { recursive: true });
        made = writeJsonl(path, spec).then((bytes) => ({ path, bytes, lines: spec.lines }));
        files.set(key, made);
      }
      return made;
    },
  };
}

export const MB = 1_000_000;
export const MiB = 1024 * 1024;
/** Issue #2: peak RSS under 150 MB (10^6 bytes, 143 MiB) for a 100 MB upload and its validation. */
export const CONTROL_PLANE_RSS_TARGET = 150 * MB;

export function fmt(value: number, digits = 0): string {
  if (!Number.isFinite(value)) return 'n/a';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function mib(bytes: number): string {
  return `${fmt(bytes / MiB, 1)} MiB`;
}

export function ratio(value: number, reference: number): string {
  return reference > 0 && Number.isFinite(value) ? fmt(value / reference, 2) : 'n/a';
}

/** A row that says a benchmark could not produce its numbers. */
export function errorRow(name: string, err: unknown): Row {
  const message = (err instanceof Error ? err.message : String(err)).replace(/\|/g, '/').replace(/\s+/g, ' ').slice(0, 160);
  return { metric: `${name}: ERROR`, spool: message, reference: '', ratio: '', target: '', pass: false };
}

export function renderTable(rows: Row[]): string {
  const header = ['metric', 'Spool', 'reference', 'ratio', 'target', 'pass?'];
  const cells = rows.map((row) => [row.metric, row.spool, row.reference, row.ratio, row.target, row.pass === null ? '—' : row.pass ? 'yes' : 'NO']);
  const widths = header.map((title, i) => Math.max(title.length, ...cells.map((line) => line[i].length)));
  const line = (values: string[]) => `| ${values.map((value, i) => value.padEnd(widths[i])).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...cells.map(line)].join('\n');
}

/** Throws if `promise` takes longer than `ms`; the benchmarks are bounded in time whatever happens. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
