// 5. rss: finalization of a 50,000-line batch of ~2 KB responses (data plane
// v2): a Spool process holding the batch's results as committed segments (as
// the runner leaves them) concatenates them into its output file; time and
// peak RSS of that process over the finalization alone.
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { bigInput } from './inputs.ts';
import { spawnChild } from './lib/child.ts';
import { RssSampler } from './lib/proc.ts';
import { fmt, mib, MiB, type BenchContext, type Row } from './lib/report.ts';

const RSS_TARGET = 300 * MiB;
const FINALIZE_TARGET_MS = 3_000;

export async function benchRss(ctx: BenchContext): Promise<Row[]> {
  const { lines } = bigInput(ctx.quick);
  const dataDir = mkdtempSync(join(ctx.tmpDir, 'rss-'));
  const child = await spawnChild<{ pid: number }>('rss', join('bench', 'finalize-child.ts'), { env: { SPOOL_BENCH_DATA_DIR: dataDir } });
  try {
    const built = await child.call<{ batchId: string; segmentBytes: number }>('build', { lines, responseBytes: 2_048 }, 600_000);
    const sampler = new RssSampler(child.pid).start();
    const done = await child.call<{ ms: number; status: string; completed: number }>('finalize', undefined, 600_000);
    const memory = sampler.stop();
    ctx.log(
      `rss: ${done.completed}/${lines} lines, ${mib(built.segmentBytes)} of segments; finalize ${fmt(done.ms)} ms; ` +
        `peak RSS ${mib(memory.peakBytes)} (${memory.samples} samples, VmHWM ${memory.usedHwm ? 'used' : 'unavailable'}); CPU ${fmt(memory.cpuSeconds ?? NaN, 2)} s`,
    );
    return [
      {
        metric: `rss: Spool peak RSS finalizing a ${fmt(lines)}-line batch, ~2 KB responses`,
        spool: mib(memory.peakBytes),
        reference: '',
        ratio: '',
        target: `< ${mib(RSS_TARGET)}`,
        pass: memory.peakBytes < RSS_TARGET && done.completed === lines,
      },
      {
        metric: `rss: finalize time (${fmt(lines)} lines, ${mib(built.segmentBytes)} of segments)`,
        spool: `${fmt(done.ms)} ms`,
        reference: '',
        ratio: '',
        target: `< ${fmt(FINALIZE_TARGET_MS)} ms`,
        pass: done.ms < FINALIZE_TARGET_MS,
      },
    ];
  } finally {
    await child.stop();
    if (!ctx.keepDataDirs) rmSync(dataDir, { recursive: true, force: true });
  }
}
