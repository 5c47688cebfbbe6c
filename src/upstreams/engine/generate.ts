// The decoding loop: evaluate a prompt on a leased sequence and sample until
// end-of-generation, a stop sequence, max_tokens or the end of the context.
//
// node-llama-cpp's LlamaCompletion/LlamaChat wrap the same
// LlamaContextSequence.evaluate() loop, but they hide how many tokens were
// generated, shift the context (silently dropping the start of the prompt)
// when it fills, and apply a repeat penalty by default. A batch API needs the
// opposite: exact usage, OpenAI's sampling defaults, and a clear 'length'
// when the context runs out. So the loop lives here, on the public sequence
// API: one sampled token per step, evaluated in whatever batch the context
// forms with the other busy sequences.
import { TokenBias, type LlamaContextSequence, type Token } from 'node-llama-cpp';
import { PromptTooLongError } from './errors.ts';

export interface Sampling {
  /** 0 is greedy decoding. */
  temperature: number;
  /** 1 disables. */
  topP: number;
  /** 0 disables. */
  topK: number;
  /** 0 disables. */
  minP: number;
  /** A uint32; undefined lets llama.cpp pick a random seed. */
  seed: number | undefined;
  /** OpenAI's penalties on tokens already generated, -2..2; 0 disables. */
  frequencyPenalty: number;
  presencePenalty: number;
  /** vLLM's multiplicative repetition penalty; 1 disables. */
  repetitionPenalty: number;
  /** token id -> logit bias (OpenAI logit_bias); end-of-generation tokens cannot be biased. */
  logitBias: ReadonlyMap<number, number> | null;
}

export const DEFAULT_SAMPLING: Sampling = {
  temperature: 1,
  topP: 1,
  topK: 0,
  minP: 0,
  seed: undefined,
  frequencyPenalty: 0,
  presencePenalty: 0,
  repetitionPenalty: 1,
  logitBias: null,
};

export interface GenerationRequest {
  /** Every token of the prompt, BOS included where the model wants one. */
  prompt: readonly Token[];
  /** Most tokens to generate; null: until the context is full. */
  maxTokens: number | null;
  /** Text stop sequences: the output ends before the first one. */
  stopStrings: readonly string[];
  /** Token stop sequences (a chat template's end-of-turn markers): never part of the output. */
  stopTokens: readonly (readonly Token[])[];
  sampling: Sampling;
  signal?: AbortSignal;
}

export interface Generation {
  text: string;
  /** Every token sampled, the end-of-generation or stop-sequence tokens included (as vLLM and llama.cpp count them). */
  completionTokens: number;
  finishReason: 'stop' | 'length';
}

/** Tokens before the output that the detokenizer looks at to get spacing right. */
const DETOKENIZE_CONTEXT_TOKENS = 16;

export async function generate(sequence: LlamaContextSequence, request: GenerationRequest): Promise<Generation> {
  const model = sequence.model;
  const prompt = [...request.prompt];
  const contextSize = sequence.contextSize;
  if (prompt.length === 0) throw new RangeError('the prompt has no tokens');
  if (prompt.length >= contextSize) throw new PromptTooLongError(prompt.length, contextSize);
  const room = contextSize - prompt.length;
  const budget = request.maxTokens === null ? room : Math.min(request.maxTokens, room);
  const { signal } = request;

  throwIfAborted(signal);
  // Keep whatever prefix of the prompt the sequence's cache already holds;
  // at least the last prompt token is evaluated, to get logits to sample from.
  await sequence.adaptStateToTokens(prompt.slice(0, -1), false);
  throwIfAborted(signal);
  const pending = prompt.slice(sequence.nextTokenIndex);

  const detokenizeContext = prompt.slice(-DETOKENIZE_CONTEXT_TOKENS);
  const detokenize = (tokens: Token[]) => model.detokenize(tokens, false, detokenizeContext);
  const longestStop = request.stopStrings.reduce((longest, stop) => Math.max(longest, stop.length), 0);

  const output: Token[] = [];
  let sampled = 0;
  let finishReason: Generation['finishReason'] = 'length';
  let cutAt: number | null = null;
  let checkedUpTo = 0;

  const iterator = sequence.evaluate(pending, evaluateOptions(request.sampling, model, output, budget));
  for await (const token of iterator) {
    sampled += 1;
    if (model.isEogToken(token)) {
      finishReason = 'stop';
      break;
    }
    output.push(token);
    const stopTokens = request.stopTokens.find((stop) => endsWith(output, stop));
    if (stopTokens) {
      output.length -= stopTokens.length;
      finishReason = 'stop';
      break;
    }
    if (request.stopStrings.length > 0) {
      const text = detokenize(output);
      // Only the tail can hold a match that was not there one token ago.
      const found = findFirstStop(text, request.stopStrings, Math.max(0, checkedUpTo - longestStop));
      checkedUpTo = text.length;
      if (found !== null) {
        cutAt = found;
        finishReason = 'stop';
        break;
      }
    }
    if (sampled >= budget) break;
    throwIfAborted(signal);
  }
  throwIfAborted(signal);

  let text = detokenize(output);
  if (cutAt !== null) text = text.slice(0, cutAt);
  return { text, completionTokens: sampled, finishReason };
}

function evaluateOptions(sampling: Sampling, model: LlamaContextSequence['model'], output: Token[], budget: number) {
  const penalties = sampling.frequencyPenalty !== 0 || sampling.presencePenalty !== 0 || sampling.repetitionPenalty !== 1;
  let tokenBias: TokenBias | undefined;
  if (sampling.logitBias && sampling.logitBias.size > 0) {
    tokenBias = new TokenBias(model.tokenizer);
    for (const [token, bias] of sampling.logitBias) tokenBias.set(token as Token, { logit: bias });
  }
  return {
    temperature: sampling.temperature,
    topP: sampling.topP,
    topK: sampling.topK,
    minP: sampling.minP,
    ...(sampling.seed !== undefined ? { seed: sampling.seed } : {}),
    ...(penalties
      ? {
          repeatPenalty: {
            // OpenAI's penalties look at what has been generated so far.
            punishTokens: () => output,
            maxPunishTokens: budget,
            penalty: sampling.repetitionPenalty,
            frequencyPenalty: sampling.frequencyPenalty,
            presencePenalty: sampling.presencePenalty,
          },
        }
      : {}),
    ...(tokenBias ? { tokenBias } : {}),
    yieldEogToken: true,
  };
}

function endsWith(tokens: readonly Token[], suffix: readonly Token[]): boolean {
  if (suffix.length === 0 || suffix.length > tokens.length) return false;
  const offset = tokens.length - suffix.length;
  return suffix.every((token, index) => tokens[offset + index] === token);
}

function findFirstStop(text: string, stops: readonly string[], from: number): number | null {
  let first: number | null = null;
  for (const stop of stops) {
    const at = text.indexOf(stop, from);
    if (at !== -1 && (first === null || at < first)) first = at;
  }
  return first;
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
}
