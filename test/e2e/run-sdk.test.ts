// Batches run to the end through the official SDKs: the OpenAI Node SDK at
// /openai/v1 and the Together TypeScript SDK at /v1, against a real Spool
// whose lines go to the built-in echo model and to a loopback upstream.
// Upload, create, poll to completed/COMPLETED, download both files, and check
// that every line is answered exactly once with what the upstream said, and
// that request_counts and usage add up.
//
// Together SDK quirks (CONTRACT.md): its upload reads TOGETHER_API_BASE_URL
// when the module loads and only works loaded with require; its PUT hands
// fetch a stream body without `duplex: 'half'`, so fetch is patched here.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { loadTogetherSdk, type LoadedTogetherSdk, type TogetherModule } from '../helpers/together-sdk.ts';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI, { toFile } from 'openai';
import type TogetherType from 'together-ai';
import {
  assertEchoOutput,
  assertExactlyOnce,
  byCustomId,
  chatLine,
  cleanupAll,
  endpointOf,
  expectedEcho,
  getBatch,
  makeTempDir,
  parseJsonl,
  pollUntil,
  startHarness,
  stripCreated,
  sumUsage,
  toJsonl,
  type Harness,
  type Json,
} from '../helpers/runner-harness.ts';


const CHAT = '/v1/chat/completions';
const EMBEDDINGS = '/v1/embeddings';

let h: Harness;
let openai: OpenAI;
let Together: TogetherModule;
let together: TogetherType;
let dir: string;
let sdk: LoadedTogetherSdk;

before(async () => {
  h = await startHarness({
    // 'missing' answers 404 model_not_found from the upstream itself.
    upstreams: [{ name: 'fast', kind: 'fast', models: ['fast-*', 'missing'], maxConcurrency: 8 }],
  });
  dir = makeTempDir('spool-sdk-');
  openai = new OpenAI({ apiKey: h.apiKey, baseURL: h.openai, maxRetries: 0 });
  sdk = loadTogetherSdk(h.together);
  Together = sdk.Together;
  together = new Together.Together({ apiKey: h.apiKey, baseURL: h.together, maxRetries: 0 });
});

after(async () => {
  sdk?.restore();
  await cleanupAll();
});

async function openaiWaitDone(id: string) {
  const batch = await pollUntil(
    () => openai.batches.retrieve(id),
    (b) => ['completed', 'failed', 'expired', 'cancelled'].includes(b.status),
    { what: `batch ${id} to finish` },
  );
  assert.equal(batch.status, 'completed', JSON.stringify(batch));
  return batch;
}

async function togetherWaitDone(id: string) {
  const job = await pollUntil(
    () => together.batches.retrieve(id),
    (b) => ['COMPLETED', 'FAILED', 'EXPIRED', 'CANCELLED'].includes(b.status as string),
    { what: `batch ${id} to finish` },
  );
  assert.equal(job.status, 'COMPLETED', JSON.stringify(job));
  return job;
}

async function togetherUpload(name: string, lines: Json[]) {
  const path = join(dir, name);
  writeFileSync(path, toJsonl(lines));
  return together.files.upload(path, 'batch-api', false);
}

describe('batches run to completion through the SDKs', () => {
  it('OpenAI SDK: echo and upstream lines answered exactly once; counts and usage add up; unknown models are invalid_model', async () => {
    const echoLines = Array.from({ length: 15 }, (_, i) => chatLine(`echo-${i + 1}`, 'echo'));
    const upstreamLines = Array.from({ length: 15 }, (_, i) => chatLine(`up-${i + 1}`, 'fast-llama', { temperature: 0.5 }));
    const unserved = [chatLine('nobody-1', 'nobody-serves-this'), chatLine('nobody-2', 'no/such-model')];
    const upstreamMissing = [chatLine('upstream-missing', 'missing')];
    const lines = [...echoLines, ...unserved, ...upstreamLines, ...upstreamMissing];
    const file = await openai.files.create({ file: await toFile(Buffer.from(toJsonl(lines)), 'mixed.jsonl'), purpose: 'batch' });
    const created = await openai.batches.create({ input_file_id: file.id, endpoint: CHAT, completion_window: '24h', metadata: { suite: 'run-sdk' } });
    const batch = await openaiWaitDone(created.id);

    assert.ok(batch.output_file_id && batch.error_file_id);
    const output = parseJsonl(await (await openai.files.content(batch.output_file_id)).text());
    const errors = parseJsonl(await (await openai.files.content(batch.error_file_id)).text());
    assertExactlyOnce(lines.map((l) => l.custom_id), { batch, output, errors });
    assert.deepEqual(batch.request_counts, { total: lines.length, completed: 30, failed: 3 });
    assertEchoOutput(CHAT, byCustomId(lines), output);
    const outputs = byCustomId(output);
    for (const line of echoLines) {
      const got = outputs.get(line.custom_id)!;
      assert.equal(got.response.request_id, got.response.body.id, 'echo answers carry their own id as request_id');
    }
    for (const line of upstreamLines) assert.match(outputs.get(line.custom_id)!.response.request_id, /^req_test_\d+$/);
    assert.equal(h.upstreams.fast.stats.requests, upstreamLines.length + upstreamMissing.length, 'only upstream lines reached the upstream');

    const failures = byCustomId(errors);
    for (const id of ['nobody-1', 'nobody-2']) {
      const line = failures.get(id)!;
      assert.equal(line.error.code, 'invalid_model');
      assert.match(line.error.message, /No upstream serves model/);
      assert.equal(line.response, null);
    }
    const missing = failures.get('upstream-missing')!;
    assert.equal(missing.error.code, 'invalid_model', 'an upstream 404 model_not_found is invalid_model too');
    assert.equal(missing.response.status_code, 404);

    const usage = sumUsage(output);
    assert.ok(usage.input > 0 && usage.output > 0);
    assert.equal(batch.usage?.input_tokens, usage.input, 'usage.input_tokens is the sum over output lines');
    assert.equal(batch.usage?.output_tokens, usage.output, 'usage.output_tokens is the sum over output lines');
    assert.equal(batch.usage?.total_tokens, usage.input + usage.output);
    assert.deepEqual(batch.metadata, { suite: 'run-sdk' });
    for (const stamp of [batch.in_progress_at, batch.finalizing_at, batch.completed_at]) assert.equal(typeof stamp, 'number');

    // Output files are the user's files, with the batch_output purpose.
    const outputFile = await openai.files.retrieve(batch.output_file_id);
    assert.equal(outputFile.purpose, 'batch_output');
    assert.equal(outputFile.bytes, Buffer.byteLength(output.map((l) => JSON.stringify(l)).join('\n') + '\n'));
  });

  it('Together SDK: an embeddings batch runs to COMPLETED, progress 100, answers match the echo vectors', async () => {
    const lines = [
      ...Array.from({ length: 10 }, (_, i) => ({ custom_id: `emb-${i + 1}`, body: { model: 'echo-embed', input: `text number ${i + 1}` } })),
      ...Array.from({ length: 10 }, (_, i) => ({ custom_id: `emb-up-${i + 1}`, body: { model: 'fast-embed', input: [`a ${i}`, `b ${i}`] } })),
    ];
    const file = await togetherUpload('embeddings.jsonl', lines);
    // The SDK's types predate the embeddings batch endpoint; the wire accepts it.
    type CreateParams = Parameters<typeof together.batches.create>[0];
    const { job } = await together.batches.create({ input_file_id: file.id, endpoint: EMBEDDINGS as CreateParams['endpoint'] });
    const done = await togetherWaitDone(job!.id!);
    assert.equal(done.progress, 100);
    assert.ok(done.output_file_id && done.error_file_id);
    assert.equal(typeof done.completed_at, 'string');

    const output = parseJsonl(await (await together.files.content(done.output_file_id)).text());
    const errorText = await (await together.files.content(done.error_file_id)).text();
    assert.equal(errorText, '', 'no line failed: the error file is empty');
    // The same batch read through the OpenAI dialect, for its counts and usage.
    const batch = await getBatch(endpointOf(h), done.id!);
    assertExactlyOnce(lines.map((l) => l.custom_id), { batch, output, errors: [] });
    assertEchoOutput(EMBEDDINGS, byCustomId(lines), output);
    const usage = sumUsage(output);
    assert.equal(batch.usage.input_tokens, usage.input);
    assert.equal(batch.usage.output_tokens, 0, 'embeddings produce no output tokens');
    for (const line of output.filter((l) => l.custom_id.startsWith('emb-up-'))) assert.equal(line.response.body.data.length, 2);

    const outputFile = await together.files.retrieve(done.output_file_id);
    assert.equal(outputFile.purpose, 'batch-api', 'Together clients see output files as batch-api');
    assert.equal((outputFile as unknown as { LineCount: number }).LineCount, lines.length);
  });

  it('Together SDK: a chat batch with a model_id default and an OpenAI-form line', async () => {
    const lines: Json[] = [
      { custom_id: 'no-model', body: { messages: [{ role: 'user', content: 'default model please' }], max_tokens: 4 } },
      chatLine('explicit', 'fast-chat'),
    ];
    const file = await togetherUpload('defaults.jsonl', lines);
    const { job } = await together.batches.create({ input_file_id: file.id, endpoint: CHAT, model_id: 'echo' } as Parameters<
      typeof together.batches.create
    >[0]);
    const done = await togetherWaitDone(job!.id!);
    const output = parseJsonl(await (await together.files.content(done.output_file_id!)).text());
    assert.equal(output.length, 2);
    const answers = byCustomId(output);
    assert.deepEqual(
      stripCreated(answers.get('no-model')!.response.body),
      expectedEcho(CHAT, { ...lines[0].body, model: 'echo' }),
      'a line without body.model runs on the batch model_id',
    );
    assert.equal(answers.get('explicit')!.response.body.model, 'fast-chat');
  });

  it('an all-failing batch completes with an empty output file and a full error file (both SDKs)', async () => {
    const lines = Array.from({ length: 5 }, (_, i) => chatLine(`doomed-${i + 1}`, 'nobody-serves-this'));
    const file = await togetherUpload('doomed.jsonl', lines);
    const { job } = await together.batches.create({ input_file_id: file.id, endpoint: CHAT });
    const done = await togetherWaitDone(job!.id!);
    assert.ok(done.output_file_id, 'an output file even though nothing succeeded');
    assert.equal(await (await together.files.content(done.output_file_id)).text(), '');
    const outputMeta = await together.files.retrieve(done.output_file_id);
    assert.equal(outputMeta.bytes, 0);

    const batch = await openai.batches.retrieve(done.id!);
    assert.equal(batch.status, 'completed');
    assert.deepEqual(batch.request_counts, { total: 5, completed: 0, failed: 5 });
    assert.deepEqual(batch.usage && { input: batch.usage.input_tokens, output: batch.usage.output_tokens }, { input: 0, output: 0 });
    const errors = parseJsonl(await (await openai.files.content(batch.error_file_id!)).text());
    assertExactlyOnce(lines.map((l) => l.custom_id), { batch, output: [], errors });
    for (const line of errors) assert.equal(line.error.code, 'invalid_model');
    assert.equal(await (await openai.files.content(batch.output_file_id!)).text(), '');
  });
});
