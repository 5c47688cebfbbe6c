// POST /v1/embeddings on a loaded model that serves them (see
// EngineModelOptions.embeddings); any other model answers 400, as vLLM does
// for a generative model. Inputs may be a string, strings, token ids or lists
// of token ids; each is embedded on its own (BOS/EOS added as the model's
// tokenizer wants) and the vector is L2-normalised, as OpenAI's are.
// `dimensions` must be absent or the model's own size; encoding_format is
// 'float' or 'base64' (little-endian float32).
import type { Token } from 'node-llama-cpp';
import { ApiError, invalid } from './errors.ts';
import type { EngineModel } from './model.ts';
import { isPositiveInteger, isTokenId, type Body } from './request.ts';
import type { HandlerResult } from './run.ts';

const MAX_INPUTS = 2048;

export async function embeddings(model: EngineModel, body: Body, signal: AbortSignal): Promise<HandlerResult> {
  if (!model.info.embeddings) return invalid(`The model \`${model.info.name}\` does not support embeddings.`, 'model');
  if (body.stream === true) return invalid('stream is not supported for embeddings.', 'stream');
  const inputs = readInputs(body.input, model.info.vocabularySize);
  if (inputs instanceof ApiError) return inputs;
  const format = body.encoding_format ?? 'float';
  if (format !== 'float' && format !== 'base64') return invalid("encoding_format must be 'float' or 'base64'.", 'encoding_format');
  const size = model.model.embeddingVectorSize;
  const dimensions = body.dimensions;
  if (dimensions !== undefined && dimensions !== null && (!isPositiveInteger(dimensions) || dimensions !== size)) {
    return invalid(`The model \`${model.info.name}\` only produces ${size}-dimensional embeddings.`, 'dimensions');
  }

  const context = await model.embeddingContext();
  const lengths = inputs.map((input) => context.calculateInputLength(input));
  for (const [index, length] of lengths.entries()) {
    if (length >= model.info.contextSize) {
      return invalid(`This model's maximum context length is ${model.info.contextSize} tokens. However, input ${index} is ${length} tokens. Please reduce the length of the input.`, 'input', 'context_length_exceeded');
    }
  }

  const data: { object: 'embedding'; index: number; embedding: number[] | string }[] = [];
  for (const [index, input] of inputs.entries()) {
    if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
    let vector: readonly number[];
    try {
      ({ vector } = await context.getEmbeddingFor(input));
    } catch (error) {
      // The embedding context may be a little smaller than the generation context the check above used.
      if (error instanceof Error && /longer than the usable context size/i.test(error.message)) {
        return invalid(`input ${index} is too long for this model's context (${lengths[index]} tokens).`, 'input', 'context_length_exceeded');
      }
      throw error;
    }
    const normalised = normalise(vector);
    data.push({ object: 'embedding', index, embedding: format === 'base64' ? float32Base64(normalised) : normalised });
  }
  const promptTokens = lengths.reduce((sum, length) => sum + length, 0);
  return {
    status: 200,
    body: { object: 'list', data, model: model.info.name, usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } },
  };
}

function readInputs(value: unknown, vocabularySize: number): (string | Token[])[] | ApiError {
  let inputs: (string | Token[])[];
  if (typeof value === 'string') inputs = [value];
  else if (!Array.isArray(value) || value.length === 0) inputs = [];
  else if (value.every((item) => typeof item === 'string')) inputs = value as string[];
  else if (value.every(isTokenId)) inputs = [value as Token[]];
  else if (value.every((item) => Array.isArray(item) && item.every(isTokenId))) inputs = value as Token[][];
  else inputs = [];
  if (inputs.length === 0) return invalid('input is required: a string, an array of strings, token ids, or arrays of token ids.', 'input');
  if (inputs.length > MAX_INPUTS) return invalid(`input may hold at most ${MAX_INPUTS} items.`, 'input');
  for (const [index, input] of inputs.entries()) {
    if (input.length === 0) return invalid(`input[${index}] must not be empty.`, 'input');
    if (typeof input !== 'string' && input.some((token) => token >= vocabularySize)) {
      return invalid(`input[${index}] holds a token id outside this model's vocabulary (${vocabularySize} tokens).`, 'input');
    }
  }
  return inputs;
}

function normalise(vector: readonly number[]): number[] {
  let sum = 0;
  for (const value of vector) sum += value * value;
  const norm = Math.sqrt(sum);
  return norm > 0 ? vector.map((value) => value / norm) : [...vector];
}

/** OpenAI's base64 encoding: the little-endian float32 bytes of the vector. */
function float32Base64(vector: number[]): string {
  const floats = Float32Array.from(vector);
  return Buffer.from(floats.buffer, floats.byteOffset, floats.byteLength).toString('base64');
}
