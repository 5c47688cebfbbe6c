// The program the whisper child process runs (see process.ts for why a child
// process). It is JavaScript source text, started with `node -e`, because it
// must run the same from src/ (through tsx) and from the dist/ bundle, whose
// chunks have no stable file path a child could be started from.
//
// Protocol, over the IPC channel with 'advanced' serialization (typed arrays
// travel as they are):
//   parent -> {type:'load', bindingPath, modelPath, useGpu}
//   child  -> {type:'ready'} | {type:'load-failed', message}
//   parent -> {type:'transcribe', id, samples: Float32Array (16 kHz mono),
//              language ('auto' or a code), translate, prompt, temperature, threads}
//   child  -> {type:'result', id, text, segments: [{text, start, end}] (centiseconds), language}
//           | {type:'failed', id, status: 400|500, message, param}
// One request at a time: the parent never sends the next before the answer.
export const WHISPER_CHILD_SOURCE = String.raw`
'use strict';
const { setImmediate: nextTurn } = require('node:timers/promises');

let binding = null;
let whisper = null;

function send(message) {
  if (process.connected) process.send(message);
}

function message(error) {
  return String((error && error.message) || error).split('\n')[0];
}

// whisper.cpp reports segments through thread-safe callbacks that arrive on
// later event-loop turns, after full() has returned its text. full()'s text is
// the segments' texts joined (untrimmed), so once their non-blank characters
// match, every segment with text has arrived.
async function collectSegments(text, segments) {
  const squash = (value) => value.replace(/\s+/g, '');
  const want = squash(text);
  for (let turn = 0; turn < 1000; turn += 1) {
    if (squash(segments.map((segment) => segment.text).join('')) === want) return;
    await nextTurn();
  }
}

async function transcribe(request) {
  if (request.language !== 'auto' && binding.Whisper.langId(request.language) < 0) {
    send({ type: 'failed', id: request.id, status: 400, param: 'language', message: 'language ' + JSON.stringify(request.language) + ' is not a language whisper knows; use an ISO-639-1 code such as "en" or "de".' });
    return;
  }
  const params = new binding.WhisperFullParams(binding.WhisperSamplingStrategy.Greedy);
  params.nThreads = request.threads;
  params.translate = request.translate;
  params.language = request.language;
  params.temperature = request.temperature;
  if (request.prompt) params.initialPrompt = request.prompt;
  params.printProgress = false;
  params.printRealtime = false;
  params.printTimestamps = false;
  params.printSpecial = false;
  const segments = [];
  params.onNewSegment = (segment) => segments.push(segment);
  let text;
  try {
    text = whisper.full(params, request.samples);
  } catch (error) {
    send({ type: 'failed', id: request.id, status: 500, param: null, message: 'whisper.cpp failed: ' + message(error) });
    return;
  }
  await collectSegments(text, segments);
  const language = binding.Whisper.langFull(whisper.fullLangId) || null;
  send({ type: 'result', id: request.id, text, segments: segments.map((s) => ({ text: s.text, start: s.start, end: s.end })), language });
}

function load(request) {
  try {
    binding = require(request.bindingPath);
  } catch (error) {
    send({ type: 'load-failed', message: 'cannot load the whisper.cpp binding (@napi-rs/whisper) for ' + process.platform + '-' + process.arch + ': ' + message(error) });
    return;
  }
  try {
    whisper = new binding.Whisper(request.modelPath, { useGpu: request.useGpu });
  } catch (error) {
    send({ type: 'load-failed', message: 'whisper.cpp could not load the model: ' + message(error) });
    return;
  }
  send({ type: 'ready' });
}

let work = Promise.resolve();
process.on('message', (request) => {
  work = work.then(() => (request.type === 'load' ? load(request) : transcribe(request))).catch((error) => {
    send({ type: 'failed', id: request.id, status: 500, param: null, message: 'the whisper process failed: ' + message(error) });
  });
});
// The parent went away (or closed the channel): nothing is left to answer to.
process.on('disconnect', () => process.exit(0));
`;
