// 7. engine: the embedded llama.cpp engine through Spool vs node-llama-cpp
// used directly (engine-direct.ts), on ../shared/models/stories260K.gguf, for
// 1, 2 and 4 parallel sequences with the same context size and threads on
// both sides. Two workloads each, greedy so both sides generate the same
// tokens:
//   prefill: long prompts, max_tokens 1  -> prompt tokens/s
//   decode:  short prompts, max_tokens 64 -> generated tokens/s
// Spool runs each workload as one /v1/completions batch; its time is the
// batch's in_progress_at -> last result recorded (its own timestamps), so the
// claim loop, line reads, HTTP-free dispatch to the engine and result writes
// all count. The direct side times its own loop. Each side's best of ROUNDS
// rounds is reported. Peak RSS is each process's over all rounds, the model
// already loaded.
import { existsSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { request } from 'undici';
import type { DirectOptions, DirectResult, DirectRun } from './engine-direct.ts';
import { REPO_ROOT, spawnChild } from './lib/child.ts';
import { RssSampler } from './lib/proc.ts';
import { fmt, mib, ratio, type BenchContext, type Row } from './lib/report.ts';
import { BENCH_API_KEY, SpoolChild, type BatchTimes } from './lib/spool.ts';

const MODEL_PATH = resolve(REPO_ROOT, '../shared/models/stories260K.gguf');
const MODEL_NAME = 'stories';
const SEQUENCES = [1, 2, 4];
const RATIO_TARGET = 0.95;
// Per sequence: a prefill prompt (~150 tokens) or a decode prompt plus 64 tokens fits with room to spare.
const CONTEXT_SIZE = 512;
const DECODE_MAX_TOKENS = 64;
// Per workload. A batch's start (validation, first claim, reading the lines) costs Spool ~30 ms once;
// at 32 prompts that alone was 5% of a one-sequence decode run, at 128 it is about 1%. Real batches are
// thousands of lines; a few dozen would measure start-up more than throughput.
const PROMPTS = 128;
// Best of this many rounds per side: other processes on a small machine make single runs noisy.
const ROUNDS = 3;
// Every core but one, as Spool's engine does by default: llama.cpp's threads spin-wait, so one more than the free cores is ruinous.
const THREADS = Math.max(1, availableParallelism() - 1);

interface Workload {
  name: 'prefill' | 'decode';
  prompts: string[];
  maxTokens: number;
}

interface Measured {
  promptTokens: number;
  completionTokens: number;
  ms: number;
}

interface SideResult {
  prefill: Measured;
  decode: Measured;
  peakRss: number;
}

interface UsageBatch {
  id: string;
  status: string;
  usage?: { input_tokens: number; output_tokens: number };
}

export async function benchEngine(ctx: BenchContext): Promise<Row[]> {
  if (!existsSync(MODEL_PATH)) {
    ctx.log(`engine: skipped, ${MODEL_PATH} is absent`);
    return [{ metric: 'engine: skipped (no ../shared/models/stories260K.gguf)', spool: '', reference: '', ratio: '', target: '', pass: null }];
  }
  const promptCount = ctx.quick ? 8 : PROMPTS;
  const workloads: Workload[] = [
    { name: 'prefill', prompts: Array.from({ length: promptCount }, (_, i) => story(i, 10)), maxTokens: 1 },
    { name: 'decode', prompts: Array.from({ length: promptCount }, (_, i) => story(i + promptCount, 2)), maxTokens: DECODE_MAX_TOKENS },
  ];
  const inputs = workloads.map((workload) => writeInput(ctx, workload));

  const rows: Row[] = [];
  for (const sequences of SEQUENCES) {
    const { spool, direct } = await compare(ctx, sequences, workloads, inputs);
    for (const name of ['prefill', 'decode'] as const) {
      const [a, b] = [spool[name], direct[name]];
      const what = name === 'prefill' ? 'promptTokens' : 'completionTokens';
      if (a[what] !== b[what]) ctx.log(`engine ${sequences} seq ${name}: Spool counted ${a[what]} tokens, direct ${b[what]}`);
    }
    const prefill = [rate(spool.prefill.promptTokens, spool.prefill.ms), rate(direct.prefill.promptTokens, direct.prefill.ms)];
    const decode = [rate(spool.decode.completionTokens, spool.decode.ms), rate(direct.decode.completionTokens, direct.decode.ms)];
    const label = `engine ${sequences} seq`;
    rows.push(
      {
        metric: `${label}: prompt tokens/s (${promptCount} x ~${Math.round(spool.prefill.promptTokens / promptCount)}-token prompts, max_tokens 1)`,
        spool: `${fmt(prefill[0])} tok/s`,
        reference: `${fmt(prefill[1])} tok/s direct`,
        ratio: ratio(prefill[0], prefill[1]),
        target: `>= ${RATIO_TARGET}`,
        pass: prefill[0] / prefill[1] >= RATIO_TARGET,
      },
      {
        metric: `${label}: generated tokens/s (${promptCount} prompts x ${DECODE_MAX_TOKENS} max tokens)`,
        spool: `${fmt(decode[0])} tok/s`,
        reference: `${fmt(decode[1])} tok/s direct`,
        ratio: ratio(decode[0], decode[1]),
        target: `>= ${RATIO_TARGET}`,
        pass: decode[0] / decode[1] >= RATIO_TARGET,
      },
      {
        metric: `${label}: peak RSS`,
        spool: mib(spool.peakRss),
        reference: `${mib(direct.peakRss)} direct`,
        ratio: ratio(spool.peakRss, direct.peakRss),
        target: '',
        pass: null,
      },
    );
  }
  return rows;
}

/**
 * A Spool child and a direct child with the same settings, both warmed up,
 * then ROUNDS rounds of both workloads, alternating sides so that whatever
 * else the machine does meanwhile falls on both; each side keeps its best
 * round per workload.
 */
async function compare(ctx: BenchContext, sequences: number, workloads: Workload[], inputs: string[]): Promise<{ spool: SideResult; direct: SideResult }> {
  const spool = await SpoolChild.start(ctx, {
    label: `engine-${sequences}`,
    config: { engine: { gpu: false, models: [{ path: MODEL_PATH, name: MODEL_NAME, sequences, contextSize: CONTEXT_SIZE, threads: THREADS }] } },
  });
  const batchIds: string[] = [];
  const usage = new Map<string, UsageBatch['usage']>();
  let times = new Map<string, BatchTimes>();
  const directRounds: DirectResult[][] = [];
  const peakRss = { spool: NaN, direct: NaN };
  try {
    const files: string[] = [];
    for (const path of inputs) files.push((await spool.upload(path)).fileId);
    const options: DirectOptions = { path: MODEL_PATH, sequences, contextSize: CONTEXT_SIZE, threads: THREADS };
    const script = ctx.bundledServer ? join(dirname(ctx.bundledServer), 'engine-direct.mjs') : 'bench/engine-direct.ts';
    const direct = await spawnChild(`engine-direct(${sequences})`, script, { env: { SPOOL_ENGINE_DIRECT: JSON.stringify(options) }, readyTimeoutMs: 60_000 });
    try {
      // The first evaluation allocates llama.cpp's buffers: one small request on each side first (a real-time one for Spool).
      await warmUp(spool.url);
      await direct.call<DirectResult>('run', { prompts: [workloads[1].prompts[0]], maxTokens: 4 } satisfies DirectRun);
      const samplers = { spool: new RssSampler(spool.pid).start(), direct: new RssSampler(direct.pid).start() };
      for (let round = 0; round < ROUNDS; round++) {
        for (const [index, fileId] of files.entries()) {
          const id = (await spool.createBatch(fileId, '/v1/completions')).id;
          batchIds.push(id);
          // The timing comes from the batch's own timestamps; polling only has to notice the end, and slower polls disturb less.
          usage.set(id, ((await spool.waitFor(id, ['completed'], 120_000, 100)) as UsageBatch).usage);
          const workload = workloads[index];
          (directRounds[index] ??= []).push(await direct.call<DirectResult>('run', { prompts: workload.prompts, maxTokens: workload.maxTokens } satisfies DirectRun, 120_000));
        }
      }
      peakRss.spool = samplers.spool.stop().peakBytes;
      peakRss.direct = samplers.direct.stop().peakBytes;
    } finally {
      await direct.stop();
    }
  } finally {
    times = await spool.stop(batchIds);
  }
  const spoolRounds = batchIds.map((id, i): Measured => {
    const row = times.get(id);
    const name = workloads[i % workloads.length].name;
    if (!row?.in_progress_at || !row.last_finished_at) throw new Error(`engine ${name} batch has no timestamps`);
    if (row.request_failed > 0) throw new Error(`engine ${name} batch: ${row.request_failed} lines failed`);
    return { promptTokens: usage.get(id)?.input_tokens ?? NaN, completionTokens: usage.get(id)?.output_tokens ?? NaN, ms: row.last_finished_at - row.in_progress_at };
  });
  const best = (rounds: Measured[]) => rounds.reduce((a, b) => (b.ms < a.ms ? b : a));
  const spoolOf = (index: number) => best(spoolRounds.filter((_, i) => i % workloads.length === index));
  ctx.log(
    `engine ${sequences} seq, ms per round: Spool prefill ${spoolRounds.filter((_, i) => i % 2 === 0).map((r) => fmt(r.ms)).join('/')}, ` +
      `decode ${spoolRounds.filter((_, i) => i % 2 === 1).map((r) => fmt(r.ms)).join('/')}; ` +
      `direct prefill ${directRounds[0].map((r) => fmt(r.ms)).join('/')}, decode ${directRounds[1].map((r) => fmt(r.ms)).join('/')}`,
  );
  return {
    spool: { prefill: spoolOf(0), decode: spoolOf(1), peakRss: peakRss.spool },
    direct: { prefill: best(directRounds[0]), decode: best(directRounds[1]), peakRss: peakRss.direct },
  };
}

async function warmUp(url: string): Promise<void> {
  const response = await request(`${url}/v1/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${BENCH_API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 4, temperature: 0 }),
  });
  const text = await response.body.text();
  if (response.statusCode !== 200) throw new Error(`engine warm-up: HTTP ${response.statusCode}: ${text.slice(0, 300)}`);
}

function writeInput(ctx: BenchContext, workload: Workload): string {
  const path = join(ctx.tmpDir, `engine-${workload.name}-${workload.prompts.length}.jsonl`);
  const lines = workload.prompts.map((prompt, index) =>
    JSON.stringify({
      custom_id: `${workload.name}-${index}`,
      method: 'POST',
      url: '/v1/completions',
      body: { model: MODEL_NAME, prompt, max_tokens: workload.maxTokens, temperature: 0 },
    }),
  );
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

const NAMES = ['Lily', 'Tom', 'Max', 'Sue', 'Ben', 'Amy', 'Tim', 'Sam', 'Mia', 'Jack', 'Lucy'];
const THINGS = ['ball', 'tree', 'dog', 'cat', 'boat', 'flower', 'bird', 'cake', 'toy'];
const PLACES = ['park', 'garden', 'forest', 'house', 'beach', 'school', 'river'];

/** A TinyStories-like opening of `sentences` sentences; prompt `i` differs from its neighbours from the first words on. */
function story(i: number, sentences: number): string {
  const name = NAMES[i % NAMES.length];
  const parts = [`${name} had a ${THINGS[i % THINGS.length]}.`];
  for (let s = 1; s < sentences; s++) {
    const k = i * 7 + s * 3;
    parts.push(
      s % 2 === 1
        ? `One day, ${name} went to the ${PLACES[k % PLACES.length]} with a ${THINGS[k % THINGS.length]}.`
        : `${name} saw a big ${THINGS[(k + 1) % THINGS.length]} and was very happy.`,
    );
  }
  return parts.join(' ');
}

function rate(tokens: number, ms: number): number {
  return ms > 0 ? tokens / (ms / 1000) : NaN;
}
