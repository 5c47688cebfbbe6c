// POST /v1/completions on a loaded model: the prompt as written, no template.
// Prompts may be a string, strings, token ids or lists of token ids; every
// prompt gets n choices, numbered prompt-major as OpenAI does. Text prompts
// are tokenized as llama.cpp's server does (BOS first where the model wants
// it, special-token text such as <|im_start|> read as the special token);
// token-id prompts are used exactly as given. max_tokens defaults to 16, as
// on OpenAI's and vLLM's completions endpoints. echo: true puts the prompt in
// front of each choice's text.
import type { Token } from 'node-llama-cpp';
import { ApiError, invalid } from './errors.ts';
import type { EngineModel } from './model.ts';
import { isTokenId, readGenerationParams, type Body } from './request.ts';
import { checkPromptFits, completionUsage, noGeneration, nowSeconds, responseId, runChoices, withBos, type HandlerResult } from './run.ts';

const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;
const MAX_PROMPTS = 64;

interface Prompt {
  text: string;
  tokens: Token[];
}

export async function textCompletion(model: EngineModel, body: Body, signal: AbortSignal, interactive = false): Promise<HandlerResult> {
  if (!model.pool) return noGeneration(model, 'completions');
  const prompts = readPrompts(model, body.prompt);
  if (prompts instanceof ApiError) return prompts;
  const params = readGenerationParams(body, {
    defaultMaxTokens: COMPLETIONS_DEFAULT_MAX_TOKENS,
    vocabularySize: model.info.vocabularySize,
    kind: 'completion',
  });
  if (params instanceof ApiError) return params;
  for (const prompt of prompts) {
    const tooLong = checkPromptFits(model, prompt.tokens, 'prompt');
    if (tooLong) return tooLong;
  }

  const generations = await runChoices(model, prompts.map((prompt) => ({ tokens: prompt.tokens })), params, signal, interactive);
  const echo = body.echo === true;
  return {
    status: 200,
    body: {
      id: responseId('cmpl'),
      object: 'text_completion',
      created: nowSeconds(),
      model: model.info.name,
      choices: generations.map((generation, index) => ({
        index,
        text: echo ? prompts[Math.floor(index / params.n)].text + generation.text : generation.text,
        finish_reason: generation.finishReason,
        logprobs: null,
      })),
      usage: completionUsage(
        prompts.reduce((sum, prompt) => sum + prompt.tokens.length, 0),
        generations.reduce((sum, generation) => sum + generation.completionTokens, 0),
      ),
    },
  };
}

function readPrompts(model: EngineModel, value: unknown): Prompt[] | ApiError {
  const problem = invalid('prompt is required: a string, an array of strings, token ids, or arrays of token ids.', 'prompt');
  let prompts: Prompt[];
  if (typeof value === 'string') {
    prompts = [textPrompt(model, value)];
  } else if (!Array.isArray(value) || value.length === 0) {
    return problem;
  } else if (value.every((item) => typeof item === 'string')) {
    prompts = (value as string[]).map((text) => textPrompt(model, text));
  } else if (value.every(isTokenId)) {
    prompts = [tokenPrompt(model, value as number[])];
  } else if (value.every((item) => Array.isArray(item) && item.length > 0 && item.every(isTokenId))) {
    prompts = (value as number[][]).map((ids) => tokenPrompt(model, ids));
  } else {
    return problem;
  }
  if (prompts.length > MAX_PROMPTS) return invalid(`prompt may hold at most ${MAX_PROMPTS} prompts.`, 'prompt');
  const vocabularySize = model.info.vocabularySize;
  for (const prompt of prompts) {
    if (prompt.tokens.length === 0) return invalid('prompt must not be empty.', 'prompt');
    if (prompt.tokens.some((token) => token >= vocabularySize)) return invalid(`prompt holds a token id outside this model's vocabulary (${vocabularySize} tokens).`, 'prompt');
  }
  return prompts;
}

function textPrompt(model: EngineModel, text: string): Prompt {
  return { text, tokens: withBos(model, model.model.tokenize(text, true)) };
}

function tokenPrompt(model: EngineModel, ids: number[]): Prompt {
  const tokens = ids as Token[];
  const vocabularySize = model.info.vocabularySize;
  const text = tokens.every((token) => token < vocabularySize) ? model.model.detokenize(tokens, false) : '';
  return { text, tokens };
}
