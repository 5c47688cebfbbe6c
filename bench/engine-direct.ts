// The engine bench's reference: node-llama-cpp used directly, with no Spool
// around it, in a process of its own so its RSS is measured apart. It loads
// the model with the settings in SPOOL_ENGINE_DIRECT (the same the Spool child
// gets), then answers 'run' calls: every prompt completed greedily, as many at
// once as there are sequences, each sequence taking the next prompt as soon as
// it is free. The decoding loop is the plainest one the public API allows
// (clear the sequence, evaluate, count tokens until end-of-generation or
// max_tokens), so Spool is compared with the least overhead possible.
import { getLlama, LlamaLogLevel, type Token } from 'node-llama-cpp';
import { serveParent } from './lib/child.ts';

export interface DirectOptions {
  path: string;
  sequences: number;
  contextSize: number;
  threads: number;
}

export interface DirectRun {
  prompts: string[];
  maxTokens: number;
}

export interface DirectResult {
  promptTokens: number;
  completionTokens: number;
  ms: number;
}

const options = JSON.parse(process.env.SPOOL_ENGINE_DIRECT ?? '{}') as DirectOptions;
const llama = await getLlama({ gpu: false, build: 'never', skipDownload: true, usePrebuiltBinaries: true, progressLogs: false, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: options.path });
const context = await model.createContext({ contextSize: options.contextSize, sequences: options.sequences, threads: options.threads });
const sequences = Array.from({ length: options.sequences }, () => context.getSequence());

/** Prompt tokens as Spool's /v1/completions makes them: special-token text read as such, BOS first where the model wants it. */
function tokenize(text: string): Token[] {
  const tokens = model.tokenize(text, true);
  const bos = model.tokens.bos;
  return model.tokens.shouldPrependBosToken && bos !== null && tokens[0] !== bos ? [bos, ...tokens] : tokens;
}

async function run({ prompts, maxTokens }: DirectRun): Promise<DirectResult> {
  let next = 0;
  let promptTokens = 0;
  let completionTokens = 0;
  const started = performance.now();
  await Promise.all(
    sequences.map(async (sequence) => {
      while (next < prompts.length) {
        const prompt = tokenize(prompts[next++]);
        promptTokens += prompt.length;
        await sequence.clearHistory();
        let sampled = 0;
        for await (const token of sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
          sampled += 1;
          if (model.isEogToken(token) || sampled >= maxTokens) break;
        }
        completionTokens += sampled;
      }
    }),
  );
  return { promptTokens, completionTokens, ms: performance.now() - started };
}

serveParent({}, { run: (payload) => run(payload as DirectRun) }, async () => {
  await context.dispose();
  await model.dispose();
});
