// whisper.cpp in the embedded engine, through its UpstreamClient, on tiny
// random-weight whisper models the test writes itself (test/helpers/tiny-whisper.ts):
// model file checks, WAV decoding and resampling, every response format, the
// 400s, the ffmpeg path (with a stand-in ffmpeg), and cancelling a transcription.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { UpstreamOutcome } from '../../src/upstreams/http-client.ts';
import { createEngine, EngineLoadError, type Engine } from '../../src/upstreams/engine/index.ts';
import { prepareAudio } from '../../src/upstreams/engine/whisper/audio.ts';
import { checkWhisperFile } from '../../src/upstreams/engine/whisper/model-file.ts';
import { writeTinyGguf } from '../helpers/tiny-gguf.ts';
import { tinyWhisperModel, writeTinyWhisper } from '../helpers/tiny-whisper.ts';
import { tone, wavFile } from '../helpers/wav.ts';

// test files run two at a time on a 2-core machine.
const THREADS = 1;
const TRANSCRIPTIONS = '/v1/audio/transcriptions';
const TRANSLATIONS = '/v1/audio/translations';

type Json = Record<string, any>;

let dir: string;
let engine: Engine;
let multilingual: Engine;
const speech = wavFile([tone(440, 3)]);

async function send(endpoint: string, body: Json, audio: Buffer | null = speech, options: { timeoutMs?: number; signal?: AbortSignal; on?: Engine } = {}): Promise<UpstreamOutcome> {
  return (options.on ?? engine).client.send({
    endpoint,
    body,
    audio: audio ? { bytes: audio, fileName: 'speech.wav' } : undefined,
    timeoutMs: options.timeoutMs ?? 60_000,
    signal: options.signal,
  });
}

async function ok(endpoint: string, body: Json, audio: Buffer | null = speech, on?: Engine): Promise<any> {
  const outcome = await send(endpoint, body, audio, { on });
  assert.equal(outcome.kind, 'response', JSON.stringify(outcome));
  if (outcome.kind !== 'response') throw new Error('unreachable');
  assert.equal(outcome.status, 200, JSON.stringify(outcome.body));
  return outcome.body;
}

async function refused(endpoint: string, body: Json, audio: Buffer | null = speech, options: { status?: number; on?: Engine } = {}): Promise<Json> {
  const outcome = await send(endpoint, body, audio, { on: options.on });
  assert.equal(outcome.kind, 'response', JSON.stringify(outcome));
  if (outcome.kind !== 'response') throw new Error('unreachable');
  assert.equal(outcome.status, options.status ?? 400, JSON.stringify(outcome.body));
  const error = (outcome.body as Json).error;
  assert.deepEqual(Object.keys(error).sort(), ['code', 'message', 'param', 'type']);
  return error;
}

/** `decode` of prepareAudio, as the engine calls it. */
async function decode(bytes: Buffer): Promise<{ samples: Float32Array; seconds: number }> {
  return prepareAudio({ bytes, fileName: 'a.wav' }).decode(new AbortController().signal);
}

/** Frequency of a tone from its zero crossings, in Hz at 16 kHz. */
function frequency(samples: Float32Array, from = 1000, to = samples.length - 1000): number {
  let crossings = 0;
  for (let i = from + 1; i < to; i += 1) if (samples[i - 1] < 0 !== samples[i] < 0) crossings += 1;
  return (crossings / 2) * (16_000 / (to - from));
}

function peak(samples: Float32Array, from = 1000, to = samples.length - 1000): number {
  let max = 0;
  for (let i = from; i < to; i += 1) max = Math.max(max, Math.abs(samples[i]));
  return max;
}

/** Runs `body` with PATH holding only `pathDir` (so "ffmpeg" means our stand-in, or nothing). */
async function withPath<T>(pathDir: string, body: () => Promise<T>): Promise<T> {
  const saved = process.env.PATH;
  process.env.PATH = pathDir;
  try {
    return await body();
  } finally {
    process.env.PATH = saved;
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'spool-whisper-'));
  await writeTinyWhisper(join(dir, 'tiny-whisper.bin'), { seed: 3 });
  await writeTinyWhisper(join(dir, 'tiny-whisper-multi.bin'), { seed: 4, multilingual: true });
  await writeTinyGguf(join(dir, 'tiny.gguf'), { seed: 7 });
  engine = await createEngine({
    gpu: false,
    models: [{ path: join(dir, 'tiny.gguf'), contextSize: 128, sequences: 1, threads: THREADS }],
    whisper: { path: join(dir, 'tiny-whisper.bin'), threads: THREADS },
  });
  multilingual = await createEngine({ gpu: false, models: [], whisper: { path: join(dir, 'tiny-whisper-multi.bin'), name: 'whisper-1', threads: THREADS } });
});

after(async () => {
  await engine?.close();
  await multilingual?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('whisper model files', () => {
  async function loadError(path: string): Promise<EngineLoadError> {
    const error = await createEngine({ gpu: false, models: [], whisper: { path, threads: THREADS } }).then(
      (loaded) => {
        void loaded.close();
        assert.fail('the model loaded');
      },
      (caught: unknown) => caught,
    );
    assert.ok(error instanceof EngineLoadError, String(error));
    assert.doesNotMatch(error.message, /\n/, 'one line');
    return error;
  }

  it('reads the structure of a good file', async () => {
    const info = await checkWhisperFile(join(dir, 'tiny-whisper.bin'));
    assert.equal(info.multilingual, false);
    assert.equal(info.vocabularySize, 51864);
    assert.equal(info.tensors, 11 + 15 + 24);
    assert.equal((await checkWhisperFile(join(dir, 'tiny-whisper-multi.bin'))).multilingual, true);
  });

  it('refuses a missing file, a directory, an empty file, garbage and a GGUF with a one-line reason', async () => {
    assert.match((await loadError(join(dir, 'nope.bin'))).message, /not found/);
    assert.equal((await loadError(dir)).code, 'NOT_A_FILE');
    await writeFile(join(dir, 'empty.bin'), '');
    assert.match((await loadError(join(dir, 'empty.bin'))).message, /empty/);
    await writeFile(join(dir, 'garbage.bin'), 'this is not a model at all');
    assert.match((await loadError(join(dir, 'garbage.bin'))).message, /not a whisper model file .*"this"/);
    assert.match((await loadError(join(dir, 'tiny.gguf'))).message, /GGUF/);
  });

  it('refuses a truncated file and one whose tensors do not match its hyperparameters', async () => {
    const model = tinyWhisperModel({ seed: 3 });
    await writeFile(join(dir, 'cut.bin'), model.subarray(0, Math.floor(model.length / 2)));
    assert.match((await loadError(join(dir, 'cut.bin'))).message, /truncated: it ends inside the data of tensor decoder\.token_embedding\.weight/);
    const twoLayers = Buffer.from(model);
    twoLayers.writeInt32LE(2, 4 + 8 * 4); // n_text_layer
    await writeFile(join(dir, 'layers.bin'), twoLayers);
    assert.match((await loadError(join(dir, 'layers.bin'))).message, /holds 50 tensors where its hyperparameters call for 74/);
  });

  it("passes on whisper.cpp's own refusal when the file looks right but is not", async () => {
    const model = tinyWhisperModel({ seed: 3 });
    model.writeInt32LE(40, 4 + 9 * 4); // n_mels: the conv1 weights no longer fit
    await writeFile(join(dir, 'mels.bin'), model);
    assert.match((await loadError(join(dir, 'mels.bin'))).message, /cannot load whisper model .*whisper\.cpp could not load the model/);
  });

  it('refuses two models with one name', async () => {
    await assert.rejects(
      createEngine({ gpu: false, models: [{ path: join(dir, 'tiny.gguf'), name: 'same' }], whisper: { path: join(dir, 'tiny-whisper.bin'), name: 'same' } }),
      /two models are named same/,
    );
  });
});

describe('audio decoding', () => {
  it('keeps 16 kHz mono 16-bit PCM as it is, and pads audio under a second with silence', async () => {
    const input = tone(440, 2);
    const { samples, seconds } = await decode(wavFile([input]));
    assert.equal(seconds, 2);
    assert.equal(samples.length, input.length);
    for (let i = 0; i < input.length; i += 997) assert.ok(Math.abs(samples[i] - input[i]) < 1e-4);
    const short = await decode(wavFile([tone(440, 0.25)]));
    assert.equal(short.seconds, 0.25);
    assert.ok(short.samples.length >= 16_000);
    assert.equal(short.samples[short.samples.length - 1], 0);
  });

  it('mixes channels down and resamples 48 kHz, 44.1 kHz and 8 kHz to 16 kHz, keeping the tone', async () => {
    for (const rate of [48_000, 44_100, 8_000]) {
      const left = tone(440, 2, rate);
      const { samples, seconds } = await decode(wavFile([left, left], { sampleRate: rate, bits: 32, float: true }));
      assert.equal(seconds, Math.floor((left.length * 16_000) / rate) / 16_000);
      assert.ok(Math.abs(frequency(samples) - 440) < 5, `${rate} Hz: ${frequency(samples)} Hz`);
      assert.ok(Math.abs(peak(samples) - 0.5) < 0.05, `${rate} Hz: peak ${peak(samples)}`);
    }
  });

  it('filters out what 16 kHz cannot hold instead of aliasing it', async () => {
    const { samples } = await decode(wavFile([tone(11_000, 1, 48_000)], { sampleRate: 48_000 }));
    assert.ok(peak(samples) < 0.05, `an 11 kHz tone leaks through at ${peak(samples)}`);
    const kept = await decode(wavFile([tone(6_000, 1, 48_000)], { sampleRate: 48_000 }));
    assert.ok(peak(kept.samples) > 0.45, `a 6 kHz tone is kept (${peak(kept.samples)})`);
  });

  it('reads 8, 24 and 32-bit PCM, 64-bit float, WAVE_FORMAT_EXTENSIBLE and files with extra chunks', async () => {
    const input = tone(300, 1.5);
    for (const options of [{ bits: 8 }, { bits: 24 }, { bits: 32 }, { bits: 64, float: true }, { bits: 16, extensible: true }, { bits: 24, extraChunk: true }] as const) {
      const { samples } = await decode(wavFile([input], options));
      const tolerance = options.bits === 8 ? 0.02 : 1e-3;
      for (let i = 0; i < input.length; i += 499) assert.ok(Math.abs(samples[i] - input[i]) < tolerance, `${JSON.stringify(options)} at ${i}`);
    }
  });

  it('refuses broken WAV files and empty audio before decoding', () => {
    assert.throws(() => prepareAudio({ bytes: Buffer.alloc(0), fileName: 'a.wav' }), /empty/);
    const noData = Buffer.from(wavFile([tone(440, 0.1)]).subarray(0, 36));
    assert.throws(() => prepareAudio({ bytes: noData, fileName: 'a.wav' }), /not a valid WAV file: it has no "data" chunk/);
  });
});

describe('transcription with the engine', () => {
  it('answers every response_format in the shape OpenAI does', async () => {
    const json = await ok(TRANSCRIPTIONS, { model: 'tiny-whisper' });
    assert.deepEqual(Object.keys(json).sort(), ['text', 'usage']);
    assert.equal(typeof json.text, 'string');
    assert.ok(json.text.length > 0, 'the synthetic model always says something');
    assert.deepEqual(json.usage, { type: 'duration', seconds: 3 });

    const verbose = await ok(TRANSCRIPTIONS, { model: 'tiny-whisper', response_format: 'verbose_json', timestamp_granularities: ['segment'] });
    assert.deepEqual(Object.keys(verbose).sort(), ['duration', 'language', 'segments', 'task', 'text', 'usage']);
    assert.equal(verbose.task, 'transcribe');
    assert.equal(verbose.language, 'english');
    assert.equal(verbose.duration, 3);
    assert.ok(verbose.segments.length > 0);
    for (const [index, segment] of verbose.segments.entries()) {
      assert.deepEqual(Object.keys(segment).sort(), ['end', 'id', 'start', 'text']);
      assert.equal(segment.id, index);
      assert.ok(segment.start >= 0 && segment.start <= segment.end && segment.end <= 3, JSON.stringify(segment));
      assert.match(segment.text, /^ \S/);
    }
    assert.equal(verbose.text, verbose.segments.map((segment: Json) => segment.text.trim()).join(' '));

    const text = await ok(TRANSCRIPTIONS, { model: 'tiny-whisper', response_format: 'text' });
    assert.equal(typeof text, 'string');
    const srt = await ok(TRANSCRIPTIONS, { model: 'tiny-whisper', response_format: 'srt' });
    assert.match(srt, /^1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n\S.*\n\n$/);
    const vtt = await ok(TRANSCRIPTIONS, { model: 'tiny-whisper', response_format: 'vtt' });
    assert.match(vtt, /^WEBVTT\n\n\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n\S.*\n\n$/);
  });

  it('takes model, prompt, language and temperature as multipart-style strings too, and serves several requests in turn', async () => {
    const answers = await Promise.all([
      ok(TRANSCRIPTIONS, { model: 'tiny-whisper', prompt: 'ba ko\u0000 mi', temperature: '0.2', language: 'en' }),
      ok(TRANSCRIPTIONS, {}),
      ok(TRANSCRIPTIONS, { model: 'tiny-whisper', language: 'EN' }),
    ]);
    for (const answer of answers) assert.equal(typeof answer.text, 'string');
  });

  it('translates and detects the language with a multilingual model', async () => {
    const translated = await ok(TRANSLATIONS, { model: 'whisper-1', response_format: 'verbose_json' }, undefined, multilingual);
    assert.equal(translated.task, 'translate');
    assert.equal(translated.language, 'english');
    const detected = await ok(TRANSCRIPTIONS, { model: 'whisper-1', response_format: 'verbose_json' }, undefined, multilingual);
    assert.match(detected.language, /^[a-z ]+$/);
    const german = await ok(TRANSCRIPTIONS, { model: 'whisper-1', response_format: 'verbose_json', language: 'de' }, undefined, multilingual);
    assert.equal(german.language, 'german');
    const unknown = await refused(TRANSCRIPTIONS, { model: 'whisper-1', language: 'xx' }, undefined, { on: multilingual });
    assert.equal(unknown.param, 'language');
  });

  it('refuses what an English-only model or whisper through this binding cannot do, naming the parameter', async () => {
    assert.equal((await refused(TRANSLATIONS, { model: 'tiny-whisper' })).param, 'model');
    assert.equal((await refused(TRANSCRIPTIONS, { model: 'tiny-whisper', language: 'de' })).param, 'language');
    assert.equal((await refused(TRANSCRIPTIONS, { model: 'tiny-whisper', language: 'not a; language' })).param, 'language');
    assert.equal((await refused(TRANSCRIPTIONS, { model: 'tiny-whisper', response_format: 'xml' })).param, 'response_format');
    assert.match((await refused(TRANSCRIPTIONS, { model: 'tiny-whisper', timestamp_granularities: ['word'] })).message, /word timestamps/);
    assert.equal((await refused(TRANSCRIPTIONS, { model: 'tiny-whisper', temperature: 1.5 })).param, 'temperature');
    assert.equal((await refused(TRANSCRIPTIONS, { model: 'tiny-whisper', stream: 'true' })).param, 'stream');
    assert.equal((await refused(TRANSCRIPTIONS, { model: 'tiny-whisper', include: ['logprobs'] })).param, 'include');
    assert.equal((await refused(TRANSCRIPTIONS, { model: 'tiny-whisper' }, Buffer.alloc(0))).param, 'file');
  });

  it('keeps language models and the whisper model apart', async () => {
    assert.match((await refused(TRANSCRIPTIONS, { model: 'tiny' })).message, /`tiny` is a language model/);
    assert.equal((await refused(TRANSCRIPTIONS, { model: 'nobody' }, undefined, { status: 404 })).code, 'model_not_found');
    assert.match((await refused('/v1/chat/completions', { model: 'tiny-whisper', messages: [{ role: 'user', content: 'hi' }] }, null)).message, /speech-to-text/);
    const chat = await send('/v1/completions', { model: 'tiny', prompt: 'the cat', max_tokens: 2 }, null);
    assert.equal(chat.kind === 'response' && chat.status, 200);
    assert.deepEqual(engine.models.sort(), ['tiny', 'tiny-whisper']);
    assert.equal(engine.whisper?.name, 'tiny-whisper');
  });

  it('answers audio with a clear 400 when the engine has no whisper model', async () => {
    const llmOnly = await createEngine({ gpu: false, models: [{ path: join(dir, 'tiny.gguf'), contextSize: 64, sequences: 1, threads: THREADS }] });
    try {
      const error = await refused(TRANSCRIPTIONS, { model: 'tiny' }, undefined, { on: llmOnly });
      assert.match(error.message, /no whisper model.*--whisper-model/);
      assert.equal(llmOnly.whisper, null);
    } finally {
      await llmOnly.close();
    }
  });

  it('stops a transcription that is cancelled or times out, and the next one still runs', async () => {
    const long = wavFile([tone(440, 90)]);
    const controller = new AbortController();
    const cancelled = send(TRANSCRIPTIONS, { model: 'tiny-whisper' }, long, { signal: controller.signal });
    setTimeout(() => controller.abort(), 100);
    assert.deepEqual(await cancelled, { kind: 'network_error', message: 'aborted' });
    const timedOut = await send(TRANSCRIPTIONS, { model: 'tiny-whisper' }, long, { timeoutMs: 150 });
    assert.equal(timedOut.kind, 'timeout');
    assert.equal(typeof (await ok(TRANSCRIPTIONS, { model: 'tiny-whisper' })).text, 'string');
  });

  it('turns a crash of whisper.cpp into a 500 for that request (retryable), and the next one restarts it', async () => {
    // Ten minutes of audio: twenty 30-second windows, seconds of work, so it is surely still running when the crash comes.
    const pending = send(TRANSCRIPTIONS, { model: 'tiny-whisper' }, wavFile([tone(440, 600)]));
    // The engine's child processes are `node -e <whisper child source>`: crash them the hard way.
    await new Promise((resolve) => setTimeout(resolve, 800));
    const children = execFileSync('ps', ['--ppid', String(process.pid), '-o', 'pid=,args='], { encoding: 'utf8' })
      .split('\n')
      .filter((line) => line.includes(' -e ') && line.includes('whisper'))
      .map((line) => Number.parseInt(line.trim(), 10));
    assert.ok(children.length >= 1, 'found the whisper processes');
    for (const pid of children) process.kill(pid, 'SIGSEGV');
    const crashed = await pending;
    assert.equal(crashed.kind, 'response');
    if (crashed.kind !== 'response') return;
    assert.equal(crashed.status, 500);
    assert.match((crashed.body as Json).error.message, /whisper\.cpp process stopped/);
    assert.equal(typeof (await ok(TRANSCRIPTIONS, { model: 'tiny-whisper' })).text, 'string');
    assert.equal(typeof (await ok(TRANSCRIPTIONS, { model: 'whisper-1' }, speech, multilingual)).text, 'string');
  });
});

describe('other formats through ffmpeg', () => {
  const mp3 = Buffer.concat([Buffer.from('ID3\u0003\u0000\u0000\u0000\u0000\u0000\u0000'), Buffer.alloc(64, 7)]);
  let fakeBin: string;

  before(async () => {
    fakeBin = join(dir, 'bin');
    await mkdir(fakeBin);
  });

  /** An "ffmpeg" on PATH that answers `script` (run by node) instead. */
  async function fakeFfmpeg(script: string): Promise<void> {
    const path = join(fakeBin, 'ffmpeg');
    await writeFile(path, `#!${process.execPath}\n${script}\n`);
    await chmod(path, 0o755);
  }

  it('explains that ffmpeg is needed when it is not installed', async () => {
    const error = await withPath(join(dir, 'no-such-dir'), () => refused(TRANSCRIPTIONS, { model: 'tiny-whisper' }, mp3));
    assert.equal(error.param, 'file');
    assert.match(error.message, /MP3 audio, not a PCM WAV file.*ffmpeg, which is not installed/);
    const mulaw = wavFile([tone(440, 1)], { bits: 8, formatTag: 7 });
    assert.match((await withPath(join(dir, 'no-such-dir'), () => refused(TRANSCRIPTIONS, { model: 'tiny-whisper' }, mulaw))).message, /cannot decode itself \(its encoding \(format tag 7\) is not PCM or float\).*ffmpeg/);
  });

  it('decodes with ffmpeg when it is on PATH: 16 kHz mono float32 from its stdout', async () => {
    await fakeFfmpeg(`
      const args = process.argv.slice(2).join(' ');
      if (!args.includes('-i pipe:0') || !args.includes('-ac 1 -ar 16000 -f f32le pipe:1')) { console.error('unexpected arguments: ' + args); process.exit(2); }
      const input = [];
      process.stdin.on('data', (chunk) => input.push(chunk));
      process.stdin.on('end', () => {
        const samples = new Float32Array(24000).map((_, i) => 0.5 * Math.sin(i / 5));
        process.stdout.write(Buffer.from(samples.buffer));
      });`);
    const answer = await withPath(fakeBin, () => ok(TRANSCRIPTIONS, { model: 'tiny-whisper', response_format: 'verbose_json' }, mp3));
    assert.equal(answer.duration, 1.5);
  });

  it("passes ffmpeg's own complaint on as a 400", async () => {
    await fakeFfmpeg(`process.stdin.resume(); process.stdin.on('end', () => { console.error('pipe:0: Invalid data found when processing input'); process.exit(1); });`);
    const error = await withPath(fakeBin, () => refused(TRANSCRIPTIONS, { model: 'tiny-whisper' }, mp3));
    assert.match(error.message, /ffmpeg could not decode the audio: pipe:0: Invalid data found/);
  });
});
