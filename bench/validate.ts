// 2. validate: create a batch on the 50,000-line, 100 MB file and time it
// from create to in_progress (the server's own created_at / in_progress_at,
// read from its database afterwards). The worker is off, so nothing runs.
// Reference: the harness streaming the same file and JSON.parse-ing every
// line, the floor any line-by-line JSON check has to pay.
import { createReadStream } from 'node:fs';
import { bigInput } from './inputs.ts';
import { RssSampler } from './lib/proc.ts';
import { CONTROL_PLANE_RSS_TARGET, fmt, MB, mib, ratio, type BenchContext, type Row } from './lib/report.ts';
import { SpoolChild } from './lib/spool.ts';

const MBPS_TARGET = 100;

export async function benchValidate(ctx: BenchContext): Promise<Row[]> {
  const input = await ctx.inputFile(bigInput(ctx.quick));
  const reference = await parseEveryLine(input.path);
  const spool = await SpoolChild.start(ctx, { label: 'validate', config: { worker: { enabled: false } } });
  let batchId = '';
  let memory;
  let times;
  try {
    const { fileId } = await spool.upload(input.path);
    const sampler = new RssSampler(spool.pid).start();
    const batch = await spool.createBatch(fileId);
    batchId = batch.id;
    await spool.waitFor(batchId, ['in_progress'], 120_000, 20);
    memory = sampler.stop();
  } finally {
    times = await spool.stop(batchId ? [batchId] : []);
  }
  const row = times.get(batchId);
  if (!row?.in_progress_at) throw new Error(`batch ${batchId} has no in_progress_at`);
  const ms = row.in_progress_at - row.created_at;
  const mbps = input.bytes / MB / (ms / 1000);
  const linesPerS = row.request_total / (ms / 1000);
  ctx.log(`validate: ${row.request_total} lines, ${fmt(input.bytes / MB, 1)} MB in ${ms} ms; child CPU ${fmt(memory.cpuSeconds ?? NaN, 2)} s`);
  return [
    {
      metric: `validate throughput (${fmt(row.request_total)} lines, create -> in_progress)`,
      spool: `${fmt(mbps, 1)} MB/s`,
      reference: `${fmt(reference.mbps, 1)} MB/s JSON.parse per line`,
      ratio: ratio(mbps, reference.mbps),
      target: `>= ${MBPS_TARGET} MB/s`,
      pass: mbps >= MBPS_TARGET,
    },
    {
      metric: 'validate lines/s',
      spool: `${fmt(linesPerS)} lines/s`,
      reference: `${fmt(reference.linesPerS)} lines/s`,
      ratio: ratio(linesPerS, reference.linesPerS),
      target: '',
      pass: null,
    },
    {
      metric: 'validate server peak RSS',
      spool: mib(memory.peakBytes),
      reference: '',
      ratio: '',
      target: `< ${mib(CONTROL_PLANE_RSS_TARGET)} (150 MB)`,
      pass: memory.peakBytes < CONTROL_PLANE_RSS_TARGET,
    },
  ];
}

async function parseEveryLine(path: string): Promise<{ mbps: number; linesPerS: number }> {
  const started = performance.now();
  let bytes = 0;
  let lines = 0;
  let rest = '';
  for await (const chunk of createReadStream(path, { highWaterMark: 256 * 1024, encoding: 'utf8' })) {
    const text = rest + (chunk as string);
    let from = 0;
    for (let at = text.indexOf('\n'); at !== -1; at = text.indexOf('\n', from)) {
      if (at > from) {
        JSON.parse(text.slice(from, at));
        lines += 1;
      }
      from = at + 1;
    }
    rest = text.slice(from);
    bytes += Buffer.byteLength(chunk as string);
  }
  const seconds = (performance.now() - started) / 1000;
  return { mbps: bytes / MB / seconds, linesPerS: lines / seconds };
}
