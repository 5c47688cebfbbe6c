// What the chat and completion handlers share once a request is read: hold
// one sequence for the whole request and run each (prompt, choice) through
// the decoding loop, plus the small pieces of the OpenAI response shapes.
import { randomBytes } from 'node:crypto';
import type { Token } from 'node-llama-cpp';
import { ApiError, invalid } from './errors.ts';
import { generate, type Generation } from './generate.ts';
import type { EngineModel } from './model.ts';
import { samplingForChoice, type GenerationParams } from './request.ts';

export type HandlerResult = { status: 200; body: unknown } | ApiError;

export interface PromptRun {
  tokens: Token[];
  /** Token sequences that end the turn (a chat template's markers). */
  stopTokens?: readonly (readonly Token[])[];
  /** Stop strings beyond the request's own (a chat template's textual markers). */
  stopStrings?: readonly string[];
}

/** A 400 for a model that has no context to generate in (an encoder-only embedding model). */
export function noGeneration(model: EngineModel, endpoint: string): ApiError {
  return invalid(`The model \`${model.info.name}\` does not support ${endpoint}.`, 'model');
}

/** The prompt must leave room for at least one generated token; checked before waiting for a sequence. */
export function checkPromptFits(model: EngineModel, tokens: readonly Token[], param: string): ApiError | null {
  const contextSize = model.info.contextSize;
  if (tokens.length < contextSize) return null;
  return invalid(
    `This model's maximum context length is ${contextSize} tokens. However, your ${param} resulted in ${tokens.length} tokens, which leaves no room for a completion. Please reduce the length of the ${param}.`,
    param,
    'context_length_exceeded',
  );
}

/**
 * Generations for every prompt, n choices each, in order (prompt-major, as
 * OpenAI numbers choices), on one leased sequence. `interactive`: someone is
 * waiting on this answer (a real-time request), so it takes the next free
 * sequence ahead of queued batch work.
 */
export async function runChoices(model: EngineModel, prompts: PromptRun[], params: GenerationParams, signal: AbortSignal, interactive = false): Promise<Generation[]> {
  const pool = model.pool;
  if (!pool) throw new Error(`model ${model.info.name} cannot generate`);
  const lease = await pool.acquire({ prefer: prompts[0]?.tokens, signal, urgent: interactive });
  try {
    const results: Generation[] = [];
    for (const prompt of prompts) {
      for (let choice = 0; choice < params.n; choice += 1) {
        results.push(
          await generate(lease.sequence, {
            prompt: prompt.tokens,
            maxTokens: params.maxTokens,
            stopStrings: [...params.stops, ...(prompt.stopStrings ?? [])],
            stopTokens: prompt.stopTokens ?? [],
            sampling: samplingForChoice(params.sampling, choice),
            signal,
          }),
        );
      }
    }
    return results;
  } finally {
    lease.release();
  }
}

export function completionUsage(promptTokens: number, completionTokens: number) {
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}

export function responseId(prefix: string): string {
  return `${prefix}-${randomBytes(12).toString('hex')}`;
}

export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** BOS first where the model's tokenizer wants one (as llama.cpp's own tokenizer adds it). */
export function withBos(model: EngineModel, tokens: Token[]): Token[] {
  const bos = model.model.tokens.bos;
  if (!model.model.tokens.shouldPrependBosToken || bos === null || tokens[0] === bos) return tokens;
  return [bos, ...tokens];
}
