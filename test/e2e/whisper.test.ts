// Audio batches through a real Spool whose embedded engine runs whisper.cpp
// on a tiny random-weight model the test writes (test/helpers/tiny-whisper.ts):
// the output lines have OpenAI's shapes (the text is gibberish), a bad
// whisper file stops start-up with a one-line reason, and audio sent to an
// engine without a whisper model becomes an error line.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startSpool } from '../../src/app.ts';
import { parseConfig } from '../../src/config.ts';
import { EngineLoadError } from '../../src/upstreams/engine/index.ts';
import { writeTinyGguf } from '../helpers/tiny-gguf.ts';
import { writeTinyWhisper } from '../helpers/tiny-whisper.ts';
import {
  call,
  createBatch,
  jsonl,
  makeTempDir,
  parseJsonl,
  removeAllTempDirs,
  startTestSpool,
  uploadBatchFile,
  uploadMultipart,
  waitForBatchStatus,
  type Json,
  type TestSpool,
} from '../helpers/spool.ts';
import { dataUrl, tone, wavFile } from '../helpers/wav.ts';

const THREADS = 1;
const TRANSCRIPTIONS = '/v1/audio/transcriptions';
const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

let dir: string;

before(async () => {
  dir = makeTempDir('spool-whisper-e2e-');
  await writeTinyWhisper(join(dir, 'tiny-whisper.bin'), { seed: 5 });
  await writeTinyGguf(join(dir, 'tiny.gguf'), { seed: 7 });
  writeFileSync(join(dir, 'bad.bin'), 'definitely not a whisper model');
});

after(removeAllTempDirs);

/** Runs a batch of audio lines on `spool` and returns its output and error lines by custom_id. */
async function runAudioBatch(spool: TestSpool, lines: Json[]): Promise<{ batch: Json; output: Map<string, Json>; errors: Map<string, Json> }> {
  const created = await createBatch(spool, await uploadBatchFile(spool, jsonl(lines)), spool.apiKey, { endpoint: TRANSCRIPTIONS });
  const batch = await waitForBatchStatus(`${spool.url}/openai/v1`, spool.apiKey, created.id, ['completed', 'failed'], { deadlineMs: 120_000 });
  assert.equal(batch.status, 'completed', JSON.stringify(batch));
  const read = async (fileId: string | null) => {
    if (!fileId) return new Map<string, Json>();
    const res = await call(`${spool.url}/openai/v1/files/${fileId}/content`, { key: spool.apiKey });
    assert.equal(res.status, 200);
    return new Map(parseJsonl(res.text).map((line) => [line.custom_id as string, line]));
  };
  return { batch, output: await read(batch.output_file_id), errors: await read(batch.error_file_id) };
}

const audioLine = (customId: string, body: Json) => ({ custom_id: customId, method: 'FILE', url: TRANSCRIPTIONS, body });

describe('audio batches on the embedded whisper model', () => {
  let spool: TestSpool;

  before(async () => {
    spool = await startTestSpool({ config: { engine: { gpu: false, whisper: { path: join(dir, 'tiny-whisper.bin'), threads: THREADS } } } });
  });

  after(async () => {
    await spool?.stop();
  });

  it('transcribes WAV data: URLs and uploaded files, answering in the requested format', async () => {
    const speech = wavFile([tone(330, 2)]);
    const stereo = wavFile([tone(440, 3, 44_100), tone(550, 3, 44_100)], { sampleRate: 44_100, bits: 24 });
    const upload = await uploadMultipart(`${spool.url}/openai/v1`, spool.apiKey, speech, { purpose: 'batch', file_type: 'jsonl' }, 'clip.wav');
    assert.equal(upload.status, 200, upload.text);
    const lines = [
      audioLine('json', { model: 'tiny-whisper', file: dataUrl(speech) }),
      audioLine('verbose', { model: 'tiny-whisper', file: dataUrl(stereo), response_format: 'verbose_json', language: 'en' }),
      audioLine('srt', { model: 'tiny-whisper', file: upload.json.id, response_format: 'srt' }),
      audioLine('text', { model: 'tiny-whisper', file: dataUrl(speech), response_format: 'text', temperature: 0.3, prompt: 'Spool.' }),
      audioLine('bad-format', { model: 'tiny-whisper', file: dataUrl(speech), response_format: 'xml' }),
      audioLine('not-audio', { model: 'tiny-whisper', file: dataUrl(Buffer.from('hello, this is text'), 'text/plain') }),
    ];
    const { batch, output, errors } = await runAudioBatch(spool, lines);
    assert.deepEqual(batch.request_counts, { total: 6, completed: 4, failed: 2 });

    for (const line of output.values()) assert.equal(line.response.status_code, 200);
    const json = output.get('json')!.response.body;
    assert.deepEqual(Object.keys(json).sort(), ['text', 'usage']);
    assert.ok(typeof json.text === 'string' && json.text.length > 0);
    assert.deepEqual(json.usage, { type: 'duration', seconds: 2 });

    const verbose = output.get('verbose')!.response.body;
    assert.equal(verbose.task, 'transcribe');
    assert.equal(verbose.language, 'english');
    assert.equal(verbose.duration, 3);
    assert.ok(verbose.segments.length > 0);
    for (const segment of verbose.segments) assert.deepEqual(Object.keys(segment).sort(), ['end', 'id', 'start', 'text']);

    assert.match(output.get('srt')!.response.body, /^1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n/);
    assert.equal(typeof output.get('text')!.response.body, 'string');

    assert.equal(errors.get('bad-format')!.error.code, 'invalid_request');
    assert.match(errors.get('bad-format')!.error.message, /response_format must be one of/);
    assert.equal(errors.get('not-audio')!.error.code, 'invalid_request');
    assert.match(errors.get('not-audio')!.error.message, /ffmpeg/);
  });
});

describe('audio without a whisper model', () => {
  it('is an error line saying how to load one, not a crash', async () => {
    const spool = await startTestSpool({ config: { engine: { gpu: false, models: [{ path: join(dir, 'tiny.gguf'), contextSize: 64, sequences: 1, threads: THREADS }] } } });
    try {
      const speech = wavFile([tone(330, 1)]);
      const { batch, errors } = await runAudioBatch(spool, [audioLine('to-llm', { model: 'tiny', file: dataUrl(speech) })]);
      assert.deepEqual(batch.request_counts, { total: 1, completed: 0, failed: 1 });
      const line = errors.get('to-llm')!;
      assert.equal(line.error.code, 'invalid_request');
      assert.match(line.error.message, /no whisper model.*--whisper-model PATH/);
      assert.equal(line.response.status_code, 400);
    } finally {
      await spool.stop();
    }
  });
});

describe('a bad whisper model file', () => {
  it('stops start-up with a one-line reason', async () => {
    const config = parseConfig({ port: 0, dataDir: makeTempDir(), log: { level: 'silent' }, engine: { whisper: { path: join(dir, 'bad.bin') } } });
    const error = await startSpool(config).then(
      () => assert.fail('Spool started'),
      (caught: unknown) => caught,
    );
    assert.ok(error instanceof EngineLoadError);
    assert.match(error.message, /^not a whisper model file \(it starts with "defi", not the ggml magic "lmgg"\); whisper\.cpp needs a ggml whisper model .*bad\.bin$/);
  });

  it('makes `spool serve --whisper-model` and `spool worker --whisper-model` exit 1 saying why', () => {
    for (const command of ['serve', 'worker']) {
      const result = spawnSync(
        process.execPath,
        ['bin/spool.js', command, '--data-dir', makeTempDir(), ...(command === 'serve' ? ['--port', '0'] : []), '--whisper-model', join(dir, 'bad.bin')],
        { cwd: REPO_ROOT, encoding: 'utf8', timeout: 60_000, env: { ...process.env, SPOOL_LOG_LEVEL: 'silent', SPOOL_ADMIN_KEY: 'a-key-for-the-test' } },
      );
      assert.equal(result.status, 1, `${command}: ${result.stdout}${result.stderr}`);
      // Warnings about unrelated SPOOL_* variables of whoever runs the tests may come first; the error is one line.
      const lines = result.stderr.trim().split('\n').filter((line) => !line.startsWith('spool: warning:'));
      assert.equal(lines.length, 1, result.stderr);
      assert.match(lines[0], /^spool: not a whisper model file .*bad\.bin$/);
    }
  });
});
