// 5. rss: peak RSS of the Spool process over a whole 50,000-line batch
// (validation, run, finalization) whose upstream returns ~2 KB responses.
import { bigInput } from './inputs.ts';
import { RssSampler } from './lib/proc.ts';
import { fmt, mib, MiB, type BenchContext, type Row } from './lib/report.ts';
import { SpoolChild, type BatchTimes } from './lib/spool.ts';
import { startSimChild } from './lib/upstream.ts';

const RSS_TARGET = 300 * MiB;

export async function benchRss(ctx: BenchContext): Promise<Row[]> {
  const input = await ctx.inputFile(bigInput(ctx.quick));
  const sim = await startSimChild('rss', { concurrency: 0, latencyMs: 0, queue: 0, responseBytes: 2_048 });
  let memory;
  let row: BatchTimes | undefined;
  const heap = { total: 0, used: 0, external: 0 };
  try {
    const spool = await SpoolChild.start(ctx, {
      label: 'rss',
      config: { upstreams: [{ name: 'sim', baseUrl: sim.baseUrl, models: ['*'], maxConcurrency: 64, initialConcurrency: 8 }] },
    });
    let batchId = '';
    let times: Map<string, BatchTimes>;
    try {
      const { fileId } = await spool.upload(input.path);
      const sampler = new RssSampler(spool.pid).start();
      // What the RSS is made of: the V8 heap (and off-heap buffers) as the child itself reports it.
      const heapWatch = setInterval(() => {
        spool
          .stats()
          .then(({ memory: m }) => {
            heap.total = Math.max(heap.total, m.heapTotal);
            heap.used = Math.max(heap.used, m.heapUsed);
            heap.external = Math.max(heap.external, m.external + m.arrayBuffers);
          })
          .catch(() => undefined);
      }, 200);
      try {
        batchId = (await spool.createBatch(fileId)).id;
        await spool.waitFor(batchId, ['completed'], 480_000, 100);
      } finally {
        clearInterval(heapWatch);
      }
      memory = sampler.stop();
    } finally {
      times = await spool.stop(batchId ? [batchId] : []);
    }
    row = times.get(batchId);
  } finally {
    await sim.stop();
  }
  if (!row?.in_progress_at || !row.completed_at) throw new Error('the rss batch has no in_progress/completed timestamps');
  const totalS = (row.completed_at - row.created_at) / 1000;
  ctx.log(
    `rss: ${row.request_completed}/${row.request_total} lines; validate ${fmt(row.in_progress_at - row.created_at)} ms, run ${fmt((row.last_finished_at ?? 0) - row.in_progress_at)} ms, ` +
      `finalize ${fmt(row.completed_at - (row.last_finished_at ?? 0))} ms; peak RSS ${mib(memory.peakBytes)} (${memory.samples} samples, VmHWM ${memory.usedHwm ? 'used' : 'unavailable'}); ` +
      `max V8 heap total ${mib(heap.total)} (used ${mib(heap.used)}), max external+arrayBuffers ${mib(heap.external)}; ` +
      `Spool CPU ${fmt(memory.cpuSeconds ?? NaN, 1)} s`,
  );
  return [
    {
      metric: `rss: Spool peak RSS over a ${fmt(row.request_total)}-line batch, ~2 KB responses`,
      spool: mib(memory.peakBytes),
      reference: '',
      ratio: '',
      target: `< ${mib(RSS_TARGET)}`,
      pass: memory.peakBytes < RSS_TARGET && row.request_failed === 0,
    },
    {
      metric: 'rss batch end to end (create -> completed)',
      spool: `${fmt(totalS, 1)} s (${fmt(row.request_completed / ((row.completed_at - row.in_progress_at) / 1000))} req/s run)`,
      reference: '',
      ratio: '',
      target: '',
      pass: null,
    },
  ];
}
