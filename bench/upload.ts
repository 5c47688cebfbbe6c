// 1. upload: a 100 MB JSONL file through OpenAI-style multipart POST
// /openai/v1/files, streamed from disk. Reports MB/s (median of the runs) and
// the server's peak RSS. Reference: the same bytes copied file-to-file with
// an fsync in the harness (what the disk alone allows).
import { createReadStream, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { bigInput } from './inputs.ts';
import { readMemory, RssSampler } from './lib/proc.ts';
import { CONTROL_PLANE_RSS_TARGET, fmt, MB, mib, ratio, sleep, type BenchContext, type Row } from './lib/report.ts';
import { SpoolChild } from './lib/spool.ts';

const RSS_TARGET = CONTROL_PLANE_RSS_TARGET;
const MBPS_TARGET = 200;

export async function benchUpload(ctx: BenchContext): Promise<Row[]> {
  const input = await ctx.inputFile(bigInput(ctx.quick));
  const referenceMBps = await diskCopyMBps(input.path, join(ctx.tmpDir, 'disk-copy.tmp'));
  const spool = await SpoolChild.start(ctx, { label: 'upload', config: { worker: { enabled: false } } });
  const rates: number[] = [];
  let memory;
  let idle;
  try {
    // What the process holds before any work: the floor every RSS figure below stands on.
    await sleep(500);
    idle = readMemory(spool.pid);
    const sampler = new RssSampler(spool.pid).start();
    for (let run = 0; run < (ctx.quick ? 1 : 3); run++) {
      const result = await spool.upload(input.path);
      rates.push(result.bytes / MB / (result.ms / 1000));
      ctx.log(`upload run ${run + 1}: ${fmt(result.bytes / MB, 1)} MB in ${fmt(result.ms)} ms = ${fmt(rates.at(-1)!, 1)} MB/s`);
    }
    memory = sampler.stop();
  } finally {
    await spool.stop();
  }
  const median = [...rates].sort((a, b) => a - b)[Math.floor(rates.length / 2)];
  const size = `${fmt(input.bytes / MB)} MB`;
  return [
    {
      metric: `upload throughput (${size}, median of ${rates.length})`,
      spool: `${fmt(median, 1)} MB/s`,
      reference: `${fmt(referenceMBps, 1)} MB/s disk copy+fsync`,
      ratio: ratio(median, referenceMBps),
      target: `>= ${MBPS_TARGET} MB/s`,
      pass: median >= MBPS_TARGET,
    },
    {
      metric: 'Spool idle RSS (started, before any request)',
      spool: idle ? mib(idle.rss) : 'n/a',
      reference: '',
      ratio: '',
      target: '',
      pass: null,
    },
    {
      metric: 'upload server peak RSS',
      spool: mib(memory.peakBytes),
      reference: '',
      ratio: '',
      target: `< ${mib(RSS_TARGET)} (150 MB)`,
      pass: memory.peakBytes < RSS_TARGET,
    },
  ];
}

/** Copies `from` to `to` in 1 MiB chunks, fsyncs, and returns MB/s; the copy is removed. */
async function diskCopyMBps(from: string, to: string): Promise<number> {
  const started = performance.now();
  const handle = await open(to, 'w');
  let bytes = 0;
  try {
    for await (const chunk of createReadStream(from, { highWaterMark: 1024 * 1024 })) {
      const buffer = chunk as Buffer;
      await handle.write(buffer);
      bytes += buffer.length;
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
  const seconds = (performance.now() - started) / 1000;
  rmSync(to, { force: true });
  return bytes / MB / seconds;
}
