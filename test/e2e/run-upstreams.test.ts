// The worker against every kind of misbehaving upstream, for real: a Spool
// in-process on 127.0.0.1:0 sends each batch line over HTTP to a loopback
// test upstream (test/helpers/upstreams.ts) and we read back the output and
// error files. Each test has a server of its own, so the upstream's stats
// (requests, attempts per body, max in flight) belong to that test alone.
import assert from 'node:assert/strict';
import { MAX_AUDIO_BYTES } from '../../src/upstreams/audio-source.ts';
import { after, describe, it } from 'node:test';
import { AdaptiveLimiter } from '../../src/upstreams/capacity/adaptive-limiter.ts';
import {
  assertEchoOutput,
  assertExactlyOnce,
  byCustomId,
  chatLines,
  cleanupAll,
  endpointOf,
  expectedEchoAudio,
  readResults,
  startHarness,
  startStaticServer,
  submitBatch,
  toJsonl,
  uploadFile,
  createBatch,
  waitForStatus,
  type Json,
} from '../helpers/runner-harness.ts';
import { canonicalBodyKey, type MultipartRecord } from '../helpers/upstreams.ts';

const CHAT = '/v1/chat/completions';

after(cleanupAll);

/** The attempts the upstream saw for each line's body, by custom_id. */
function attemptsByCustomId(lines: Json[], byBody: Map<string, number>): Map<string, number> {
  return new Map(lines.map((line) => [line.custom_id, byBody.get(canonicalBodyKey(line.body)) ?? 0]));
}

async function requestRows(h: Awaited<ReturnType<typeof startHarness>>, batchId: string) {
  return h.app.store.sql.db.selectFrom('requests').select(['custom_id', 'state', 'attempts']).where('batch_id', '=', batchId).execute();
}

describe('the worker against test upstreams', () => {
  it('fast: every line answered once, bodies as the upstream answered them', async () => {
    const h = await startHarness({ upstreams: [{ name: 'fast', kind: 'fast', models: ['fast-*'], maxConcurrency: 8 }] });
    const ep = endpointOf(h);
    const lines = chatLines(60, 'fast-llama');
    const batch = await waitForStatus(ep, (await submitBatch(ep, lines)).id, 'completed');
    const results = await readResults(ep, batch);
    assertExactlyOnce(lines.map((l) => l.custom_id), results);
    assert.equal(results.errors.length, 0);
    assertEchoOutput(CHAT, byCustomId(lines), results.output);
    for (const line of results.output) assert.match(line.response.request_id, /^req_test_\d+$/, 'request_id is the upstream x-request-id');
    const upstream = h.upstreams.fast.stats;
    assert.equal(upstream.requests, lines.length, 'one request per line');
    assert.ok([...upstream.byBody.values()].every((n) => n === 1));
    assert.ok(upstream.maxInFlight <= 8);
    await h.stop();
  });

  it('slow: completes, never over maxConcurrency', async () => {
    const h = await startHarness({ upstreams: [{ name: 'slow', kind: 'slow', delayMs: 40, models: ['slow-*'], maxConcurrency: 3, initialConcurrency: 3 }] });
    const ep = endpointOf(h);
    const lines = chatLines(30, 'slow-llama');
    const batch = await waitForStatus(ep, (await submitBatch(ep, lines)).id, 'completed');
    const results = await readResults(ep, batch);
    assertExactlyOnce(lines.map((l) => l.custom_id), results);
    assert.equal(results.errors.length, 0);
    assertEchoOutput(CHAT, byCustomId(lines), results.output);
    assert.ok(h.upstreams.slow.stats.maxInFlight <= 3, `max in flight ${h.upstreams.slow.stats.maxInFlight}`);
    assert.ok(h.upstreams.slow.stats.maxInFlight >= 2, 'lines do run concurrently');
    await h.stop();
  });

  it('fail-then-succeed (500, 503, then 200): every line succeeds on its third attempt, and the attempts are recorded', async () => {
    const h = await startHarness({
      upstreams: [{ name: 'flaky', kind: 'fail-then-succeed', failuresPerRequest: 2, models: ['flaky-*'], maxConcurrency: 4 }],
      worker: { maxAttempts: 5 },
    });
    const ep = endpointOf(h);
    const lines = chatLines(20, 'flaky-llama');
    const batch = await waitForStatus(ep, (await submitBatch(ep, lines)).id, 'completed');
    const results = await readResults(ep, batch);
    assertExactlyOnce(lines.map((l) => l.custom_id), results);
    assert.equal(results.errors.length, 0, `no line failed: ${JSON.stringify(results.errors[0])}`);
    assertEchoOutput(CHAT, byCustomId(lines), results.output);

    const stats = h.upstreams.flaky.stats;
    for (const [customId, attempts] of attemptsByCustomId(lines, stats.byBody)) assert.equal(attempts, 3, `upstream attempts of ${customId}`);
    assert.equal(stats.byStatus[500], lines.length);
    assert.equal(stats.byStatus[503], lines.length);
    assert.equal(stats.byStatus[200], lines.length);
    for (const row of await requestRows(h, batch.id)) {
      assert.equal(row.state, 'succeeded');
      assert.equal(row.attempts, 3, `attempts recorded for ${row.custom_id}`);
    }
    await h.stop();
  });

  it('429 with Retry-After: each retry waits at least Retry-After, and eventually every line succeeds', async () => {
    const retryAfterMs = 150;
    // Reached through a recording proxy, so each attempt's arrival and answer are timestamped.
    const spool = await startHarness({
      upstreams: [{ name: 'limited', kind: 'rate-limit', rateLimitEvery: 3, retryAfterMs, recorded: true, models: ['limited-*'], maxConcurrency: 4 }],
      worker: { maxAttempts: 25 },
    });
    const upstream = spool.upstreams.limited;
    const proxy = spool.proxies.limited;
    const ep = endpointOf(spool);
    const lines = chatLines(24, 'limited-llama');
    const batch = await waitForStatus(ep, (await submitBatch(ep, lines)).id, 'completed');
    const results = await readResults(ep, batch);
    assertExactlyOnce(lines.map((l) => l.custom_id), results);
    assert.equal(results.errors.length, 0, `no line failed: ${JSON.stringify(results.errors[0])}`);
    assertEchoOutput(CHAT, byCustomId(lines), results.output);

    assert.ok((upstream.stats.byStatus[429] ?? 0) > 0, 'the upstream did rate-limit');
    // Every 429'd body came back no sooner than Retry-After after the 429 was answered.
    const byKey = new Map<string, typeof proxy.events>();
    for (const event of proxy.events) byKey.set(event.key, [...(byKey.get(event.key) ?? []), event]);
    let checked = 0;
    for (const events of byKey.values()) {
      for (let i = 0; i + 1 < events.length; i++) {
        if (events[i].status !== 429) continue;
        const gap = events[i + 1].receivedAt - events[i].respondedAt!;
        assert.ok(gap >= retryAfterMs - 1, `a retry came back ${gap} ms after a 429 with Retry-After ${retryAfterMs} ms`);
        checked += 1;
      }
      assert.equal(events.at(-1)!.status, 200, 'each body ends with a 200');
    }
    assert.ok(checked > 0, 'some retries were checked');
    await spool.stop();
  });

  it('reset connections: retried, every line succeeds', async () => {
    const h = await startHarness({ upstreams: [{ name: 'reset', kind: 'reset', models: ['reset-*'], maxConcurrency: 4 }], worker: { maxAttempts: 25 } });
    const ep = endpointOf(h);
    const lines = chatLines(24, 'reset-llama');
    const batch = await waitForStatus(ep, (await submitBatch(ep, lines)).id, 'completed');
    const results = await readResults(ep, batch);
    assertExactlyOnce(lines.map((l) => l.custom_id), results);
    assert.equal(results.errors.length, 0, `no line failed: ${JSON.stringify(results.errors[0])}`);
    assertEchoOutput(CHAT, byCustomId(lines), results.output);
    const stats = h.upstreams.reset.stats;
    assert.ok(stats.requests > lines.length, `some connections were reset and retried (${stats.requests} requests)`);
    assert.equal(stats.byStatus[200], lines.length, 'exactly one answer per line');
    await h.stop();
  });

  it('hang past requestTimeoutMs with maxAttempts 2: request_timeout error lines after two attempts each', async () => {
    const h = await startHarness({
      upstreams: [{ name: 'hang', kind: 'hang', models: ['hang-*'], maxConcurrency: 8, initialConcurrency: 8 }],
      worker: { requestTimeoutMs: 300, maxAttempts: 2 },
    });
    const ep = endpointOf(h);
    const lines = chatLines(6, 'hang-llama');
    const batch = await waitForStatus(ep, (await submitBatch(ep, lines)).id, 'completed');
    const results = await readResults(ep, batch);
    assertExactlyOnce(lines.map((l) => l.custom_id), results);
    assert.equal(results.output.length, 0);
    assert.equal(results.outputText, '', 'the output file exists and is empty');
    for (const line of results.errors) {
      assert.equal(line.error.code, 'request_timeout', JSON.stringify(line));
      assert.match(line.error.message, /2 attempts/);
      assert.equal(line.response, null, 'no upstream answer to show');
    }
    for (const [customId, attempts] of attemptsByCustomId(lines, h.upstreams.hang.stats.byBody)) assert.equal(attempts, 2, `upstream attempts of ${customId}`);
    await h.stop();
  });

  it('400 always: error lines carry status_code 400 and the upstream body; nothing is retried', async () => {
    const h = await startHarness({ upstreams: [{ name: 'strict', kind: 'bad-request', models: ['bad', 'good'], maxConcurrency: 4 }] });
    const ep = endpointOf(h);
    const bad = chatLines(8, 'bad', 'bad');
    const good = chatLines(4, 'good', 'good');
    const lines = [...bad, ...good];
    const batch = await waitForStatus(ep, (await submitBatch(ep, lines)).id, 'completed');
    const results = await readResults(ep, batch);
    assertExactlyOnce(lines.map((l) => l.custom_id), results);
    assert.deepEqual(results.output.map((l) => l.custom_id).sort(), good.map((l) => l.custom_id).sort());
    assertEchoOutput(CHAT, byCustomId(good), results.output);
    assert.deepEqual(results.errors.map((l) => l.custom_id).sort(), bad.map((l) => l.custom_id).sort());
    for (const line of results.errors) {
      assert.equal(line.error.code, 'invalid_request', JSON.stringify(line));
      assert.match(line.error.message, /rejects every request/, 'the upstream message is quoted');
      assert.equal(line.response.status_code, 400);
      assert.deepEqual(line.response.body, {
        error: { message: 'The model `bad` rejects every request.', type: 'invalid_request_error', param: 'model', code: 'bad_request' },
      });
      assert.match(line.response.request_id, /^req_test_\d+$/);
    }
    const stats = h.upstreams.strict.stats;
    assert.equal(stats.requests, lines.length, 'no retries');
    for (const [customId, attempts] of attemptsByCustomId(lines, stats.byBody)) assert.equal(attempts, 1, `upstream saw ${customId} once`);
    await h.stop();
  });

  it('capacity: maxConcurrency is never exceeded, and the limiter backs off on 429s', async () => {
    const maxConcurrency = 4;
    const overloads: { limitAfter: number; retryAfterMs: number | null | undefined }[] = [];
    const original = AdaptiveLimiter.prototype.onOverload;
    AdaptiveLimiter.prototype.onOverload = function (this: AdaptiveLimiter, retryAfterMs?: number | null) {
      original.call(this, retryAfterMs);
      if (this.max === maxConcurrency) overloads.push({ limitAfter: this.limit, retryAfterMs });
    };
    try {
      const h = await startHarness({
        upstreams: [{ name: 'cap', kind: 'capacity', capacity: 2, delayMs: 40, retryAfterMs: 50, models: ['cap-*'], maxConcurrency, initialConcurrency: maxConcurrency }],
        worker: { maxAttempts: 25 },
      });
      const ep = endpointOf(h);
      const lines = chatLines(40, 'cap-llama');
      const batch = await waitForStatus(ep, (await submitBatch(ep, lines)).id, 'completed');
      const results = await readResults(ep, batch);
      assertExactlyOnce(lines.map((l) => l.custom_id), results);
      assert.equal(results.errors.length, 0, `no line failed: ${JSON.stringify(results.errors[0])}`);
      assertEchoOutput(CHAT, byCustomId(lines), results.output);

      const stats = h.upstreams.cap.stats;
      assert.ok(stats.maxInFlight <= maxConcurrency, `max in flight ${stats.maxInFlight} <= ${maxConcurrency}`);
      assert.ok((stats.byStatus[429] ?? 0) > 0, 'starting at 4 against a capacity of 2 meets 429s');
      assert.ok(overloads.length > 0, 'the 429s reached the limiter');
      assert.ok(
        overloads.some((o) => o.limitAfter < maxConcurrency),
        `the limit came down from ${maxConcurrency}: ${JSON.stringify(overloads.slice(0, 5))}`,
      );
      assert.ok(overloads.every((o) => o.retryAfterMs === 50), 'the Retry-After reached the limiter');
      await h.stop();
    } finally {
      AdaptiveLimiter.prototype.onOverload = original;
    }
  });

  it('audio: a transcription batch whose lines point at an uploaded file id, a data: URL and an http URL', async () => {
    const h = await startHarness({
      upstreams: [{ name: 'fast', kind: 'fast', models: ['fast-*'], maxConcurrency: 4 }],
      // Audio URLs may only reach public addresses unless allowed: let the loopback audio server through.
      config: { audio: { allowedHosts: ['127.0.0.1'] } },
    });
    const ep = endpointOf(h);
    const wav = Buffer.concat([Buffer.from('RIFF0000WAVEfmt '), Buffer.alloc(3200, 7)]);
    const mp3 = Buffer.from('ID3 not really an mp3, but bytes are bytes'.repeat(20));
    const statics = await startStaticServer({ 'speech.mp3': { bytes: mp3, contentType: 'audio/mpeg' } });
    // The upload route only knows jsonl/csv/parquet file types, so an audio upload names one explicitly.
    const audioFile = await uploadFile(ep, wav, 'clip.wav', { purpose: 'batch', file_type: 'jsonl' });
    const dataUrl = `data:audio/wav;base64,${wav.toString('base64')}`;
    const endpoint = '/v1/audio/transcriptions';
    const line = (customId: string, body: Json) => ({ custom_id: customId, method: 'FILE', url: endpoint, body });
    const lines = [
      line('file-echo', { model: 'echo', file: audioFile.id }),
      line('data-echo', { model: 'echo', file: dataUrl, response_format: 'verbose_json', language: 'de' }),
      line('http-echo', { model: 'echo', file: `${statics.url}/speech.mp3`, response_format: 'text' }),
      line('file-upstream', { model: 'fast-whisper', file: audioFile.id }),
      line('data-upstream', { model: 'fast-whisper', file: dataUrl, temperature: 0 }),
      line('missing-file', { model: 'echo', file: 'file-does-not-exist' }),
      line('not-allowed-url', { model: 'echo', file: `${statics.url.replace('127.0.0.1', '127.0.0.2')}/speech.mp3` }),
    ];
    const file = await uploadFile(ep, toJsonl(lines), 'audio.jsonl');
    const created = await createBatch(ep, file.id, { endpoint });
    const batch = await waitForStatus(ep, created.id, 'completed');
    const results = await readResults(ep, batch);
    assertExactlyOnce(lines.map((l) => l.custom_id), results);

    const out = byCustomId(results.output);
    const expect = (customId: string, fields: Record<string, string>, bytes: Buffer, fileName: string) => {
      const got = out.get(customId);
      assert.ok(got, `${customId} succeeded: ${JSON.stringify(results.errors.find((e) => e.custom_id === customId))}`);
      assert.equal(got.response.status_code, 200);
      assert.deepEqual(got.response.body, expectedEchoAudio('transcriptions', fields, bytes, fileName), customId);
    };
    expect('file-echo', { model: 'echo' }, wav, 'clip.wav');
    expect('data-echo', { model: 'echo', response_format: 'verbose_json', language: 'de' }, wav, 'audio.wav');
    expect('http-echo', { model: 'echo', response_format: 'text' }, mp3, 'speech.mp3');
    expect('file-upstream', { model: 'fast-whisper' }, wav, 'clip.wav');
    expect('data-upstream', { model: 'fast-whisper', temperature: '0' }, wav, 'audio.wav');

    const errors = byCustomId(results.errors);
    assert.deepEqual([...errors.keys()].sort(), ['missing-file', 'not-allowed-url']);
    for (const error of errors.values()) assert.equal(error.error.code, 'invalid_request', JSON.stringify(error));
    assert.match(errors.get('missing-file')!.error.message, /file-does-not-exist/);
    assert.match(errors.get('not-allowed-url')!.error.message, /Refused/, 'a loopback address not in audio.allowedHosts is not fetched');

    // The upstream got real multipart: the audio bytes as the file part, the other body fields as text parts.
    const received = h.upstreams.fast.stats.bodies as MultipartRecord[];
    assert.equal(received.length, 2);
    for (const record of received) {
      assert.deepEqual(Buffer.from(record.fileBytes), wav);
      assert.equal(record.fields.model, 'fast-whisper');
      assert.equal('file' in record.fields, false, 'the file is not also sent as a text field');
    }
    assert.deepEqual(received.map((r) => r.fileName).sort(), ['audio.wav', 'clip.wav']);
    await h.stop();
  });

  it('audio URLs that answer an error status (with a body still arriving) are error lines, and the server keeps running', async () => {
    const h = await startHarness({ config: { audio: { allowedHosts: ['127.0.0.1'] } } });
    const ep = endpointOf(h);
    const statics = await startStaticServer({
      'gone.wav': { status: 404, bytes: Buffer.from('no such audio'), contentType: 'text/plain' },
      'broken.wav': { status: 500, unfinishedBody: true },
    });
    const endpoint = '/v1/audio/transcriptions';
    const lines = ['gone.wav', 'broken.wav'].map((name) => ({ custom_id: name, method: 'FILE', url: endpoint, body: { model: 'echo', file: `${statics.url}/${name}` } }));
    const file = await uploadFile(ep, toJsonl(lines), 'bad-audio.jsonl');
    const batch = await waitForStatus(ep, (await createBatch(ep, file.id, { endpoint })).id, 'completed');
    const results = await readResults(ep, batch);
    assertExactlyOnce(lines.map((l) => l.custom_id), results);
    const errors = byCustomId(results.errors);
    assert.match(errors.get('gone.wav')!.error.message, /HTTP 404/);
    assert.match(errors.get('broken.wav')!.error.message, /HTTP 500/);
    for (const error of errors.values()) assert.equal(error.error.code, 'invalid_request');
    await h.stop();
  });

  it('an uploaded file over the audio size limit is an error line, not read into memory', async () => {
    const h = await startHarness({});
    const ep = endpointOf(h);
    const tooBig = Buffer.alloc(MAX_AUDIO_BYTES + 1, 1);
    const audioFile = await uploadFile(ep, tooBig, 'huge.wav', { purpose: 'batch', file_type: 'jsonl' });
    const endpoint = '/v1/audio/transcriptions';
    const lines = [{ custom_id: 'huge', method: 'FILE', url: endpoint, body: { model: 'echo', file: audioFile.id } }];
    const file = await uploadFile(ep, toJsonl(lines), 'huge-audio.jsonl');
    const batch = await waitForStatus(ep, (await createBatch(ep, file.id, { endpoint })).id, 'completed');
    const results = await readResults(ep, batch);
    assertExactlyOnce(['huge'], results);
    const error = byCustomId(results.errors).get('huge')!.error;
    assert.equal(error.code, 'invalid_request');
    assert.match(error.message, new RegExp(`at most ${MAX_AUDIO_BYTES} bytes`));
    await h.stop();
  });
});
