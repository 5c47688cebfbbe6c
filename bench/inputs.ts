// The input files the benchmarks share.
import type { JsonlSpec } from './lib/data.ts';

export const BENCH_MODEL = 'bench-model';

/** 50,000 lines of 2,000 bytes: a 100 MB (10^8 bytes) file, under the default 100 MiB upload limit. Quick: a tenth. */
export function bigInput(quick: boolean): JsonlSpec {
  return { lines: quick ? 5_000 : 50_000, lineBytes: 2_000, model: BENCH_MODEL };
}

/** Small chat lines for the throughput runs. */
export function smallInput(lines: number): JsonlSpec {
  return { lines, lineBytes: 240, model: BENCH_MODEL };
}
