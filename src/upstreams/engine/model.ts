// Loads one GGUF model for the engine: checks the file before llama.cpp sees
// it, loads the weights, makes the context whose sequences serve requests in
// parallel, and picks the chat template. Every failure is an EngineLoadError
// with a one-line reason, so `spool serve` can stop at start-up saying why.
import { open, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { basename, extname, resolve } from 'node:path';
import {
  GeneralChatWrapper,
  resolveChatWrapper,
  type ChatWrapper,
  type LlamaContext,
  type LlamaEmbeddingContext,
  type LlamaModel,
} from 'node-llama-cpp';
import { EngineLoadError, errorMessage } from './errors.ts';
import { sharedLlama, withLlamaErrors, type EngineGpu } from './llama.ts';
import { SequencePool } from './sequence-pool.ts';

export interface EngineModelOptions {
  /** The .gguf file. */
  path: string;
  /** The model name requests use; default the file name without its extension. */
  name?: string;
  /** Tokens of context per sequence (prompt + completion); default the model's training context, at most 4096. */
  contextSize?: number;
  /** Requests evaluated in parallel in one context; default 4. */
  sequences?: number;
  /**
   * CPU threads for evaluation; default (or 0): every core but one, at least
   * one. The spare core keeps the API's event loop responsive, and llama.cpp's
   * threads spin-wait on each other, so oversubscribing the cores slows
   * generation down by orders of magnitude rather than a little.
   */
  threads?: number;
  /**
   * Serve /v1/embeddings: 'auto' (default) when the GGUF is an embedding
   * model (declares a pooling type, or has no decoder); true for any model
   * (a generative model then embeds with its last token); false never.
   */
  embeddings?: boolean | 'auto';
}

export interface ChatTemplateInfo {
  /** 'gguf': the model's own tokenizer.chat_template; 'fallback': it has none, GeneralChatWrapper is used. */
  source: 'gguf' | 'fallback';
  /** node-llama-cpp's wrapper that renders it ('ChatML', 'Jinja', 'General'...). */
  wrapper: string;
}

export interface EngineModelInfo {
  name: string;
  path: string;
  architecture: string;
  contextSize: number;
  sequences: number;
  trainContextSize: number;
  threads: number;
  vocabularySize: number;
  generation: boolean;
  embeddings: boolean;
  chatTemplate: ChatTemplateInfo | null;
}

export interface EngineModel {
  readonly info: EngineModelInfo;
  readonly model: LlamaModel;
  /** null for a model that cannot generate (an encoder-only embedding model). */
  readonly context: LlamaContext | null;
  readonly pool: SequencePool | null;
  readonly chatWrapper: ChatWrapper | null;
  /** The context /v1/embeddings evaluates in; made on first use. */
  embeddingContext(): Promise<LlamaEmbeddingContext>;
  dispose(): Promise<void>;
}

export interface LoadEngineModelOptions extends EngineModelOptions {
  gpu?: EngineGpu;
}

const DEFAULT_SEQUENCES = 4;
const MAX_DEFAULT_CONTEXT = 4096;
const MIN_CONTEXT = 16;
const MAX_SEQUENCES = 256;
const GGUF_MAGIC = 'GGUF';

/** The name a model is served under when none is given: the file name without its extension. */
export function defaultModelName(path: string): string {
  const file = basename(path);
  const extension = extname(file);
  return extension.length > 0 && extension.length < file.length ? file.slice(0, -extension.length) : file;
}

export async function loadEngineModel(options: LoadEngineModelOptions): Promise<EngineModel> {
  checkOptions(options);
  const path = resolve(options.path);
  const name = options.name ?? defaultModelName(path);
  await checkGgufFile(path);

  const llama = await sharedLlama(options.gpu ?? 'auto');
  const loaded = await withLlamaErrors(() => llama.loadModel({ modelPath: path }));
  if (!loaded.ok) {
    // llama.cpp's first logged error usually names the actual problem.
    const detail = loaded.logged.find((line) => !/failed to load model/i.test(line));
    const reason = errorMessage(loaded.error) + (detail ? ` (${detail.replace(/^[\w:]+:\s*/, '')})` : '');
    throw new EngineLoadError('LOAD_FAILED', `cannot load model ${path}: ${reason}`);
  }
  const model = loaded.value;

  const prepared = await withLlamaErrors(() => prepare(model, name, path, options));
  if (prepared.ok) return prepared.value;
  await model.dispose().catch(() => {});
  if (prepared.error instanceof EngineLoadError) throw prepared.error;
  const detail = prepared.logged[0];
  throw new EngineLoadError('CONTEXT_FAILED', `cannot create a context for model ${path}: ${errorMessage(prepared.error)}${detail ? ` (${detail})` : ''}`);
}

async function prepare(model: LlamaModel, name: string, path: string, options: EngineModelOptions): Promise<EngineModel> {
  const insights = model.fileInsights;
  const metadata = model.fileInfo.metadata as unknown as Record<string, Record<string, unknown> | undefined>;
  const architecture = String(model.fileInfo.metadata?.general?.architecture ?? 'unknown');
  const generation = insights.hasDecoder;
  const embeddings = options.embeddings === 'auto' || options.embeddings === undefined ? isEmbeddingModel(metadata, architecture, insights.hasDecoder) : options.embeddings;
  if (insights.hasEncoder && insights.hasDecoder && embeddings) {
    throw new EngineLoadError('INVALID_OPTIONS', `model ${path}: embeddings are not supported for encoder-decoder models`);
  }
  const trainContextSize = model.trainContextSize;
  const contextSize = options.contextSize ?? Math.max(MIN_CONTEXT, Math.min(trainContextSize || MAX_DEFAULT_CONTEXT, MAX_DEFAULT_CONTEXT));
  const sequences = options.sequences ?? DEFAULT_SEQUENCES;
  const threads = options.threads && options.threads > 0 ? options.threads : defaultThreads();

  let context: LlamaContext | null = null;
  let pool: SequencePool | null = null;
  let chatWrapper: ChatWrapper | null = null;
  let chatTemplate: ChatTemplateInfo | null = null;
  if (generation) {
    context = await model.createContext({ contextSize, sequences, threads });
    pool = new SequencePool(Array.from({ length: sequences }, () => context!.getSequence()));
    const template = model.fileInfo.metadata?.tokenizer?.chat_template;
    if (typeof template === 'string' && template.trim() !== '') {
      chatWrapper = resolveChatWrapper(model);
      chatTemplate = { source: 'gguf', wrapper: chatWrapper.wrapperName };
    } else {
      // No template in the file: node-llama-cpp would guess one from the file
      // name; a fixed, documented fallback is easier to reason about.
      chatWrapper = new GeneralChatWrapper();
      chatTemplate = { source: 'fallback', wrapper: chatWrapper.wrapperName };
    }
  }

  let embeddingContext: Promise<LlamaEmbeddingContext> | null = null;
  const info: EngineModelInfo = {
    name,
    path,
    architecture,
    contextSize: context?.contextSize ?? contextSize,
    sequences: generation ? sequences : 0,
    trainContextSize,
    threads,
    vocabularySize: vocabularySize(model),
    generation,
    embeddings,
    chatTemplate,
  };
  return {
    info,
    model,
    context,
    pool,
    chatWrapper,
    embeddingContext() {
      embeddingContext ??= model.createEmbeddingContext({ contextSize, threads }).catch((error: unknown) => {
        embeddingContext = null; // let a later request try again: it may have been memory pressure
        throw error;
      });
      return embeddingContext;
    },
    async dispose() {
      pool?.close();
      const embedding = embeddingContext;
      embeddingContext = null;
      if (embedding) await embedding.then((ctx) => ctx.dispose()).catch(() => {});
      await context?.dispose().catch(() => {});
      await model.dispose().catch(() => {});
    },
  };
}

function checkOptions(options: EngineModelOptions): void {
  const bad = (message: string) => new EngineLoadError('INVALID_OPTIONS', message);
  if (typeof options.path !== 'string' || options.path.length === 0) throw bad('model path is required');
  if (options.name !== undefined && (typeof options.name !== 'string' || options.name.trim() === '')) throw bad(`model ${options.path}: name must be a non-empty string`);
  if (options.contextSize !== undefined && (!Number.isInteger(options.contextSize) || options.contextSize < MIN_CONTEXT)) {
    throw bad(`model ${options.path}: contextSize must be an integer of at least ${MIN_CONTEXT}, got ${options.contextSize}`);
  }
  if (options.sequences !== undefined && (!Number.isInteger(options.sequences) || options.sequences < 1 || options.sequences > MAX_SEQUENCES)) {
    throw bad(`model ${options.path}: sequences must be an integer from 1 to ${MAX_SEQUENCES}, got ${options.sequences}`);
  }
  if (options.threads !== undefined && (!Number.isInteger(options.threads) || options.threads < 0)) {
    throw bad(`model ${options.path}: threads must be a non-negative integer, got ${options.threads}`);
  }
}

/** Fails before llama.cpp sees the file: llama.cpp's own errors for these cases are long and vague. */
async function checkGgufFile(path: string): Promise<void> {
  let size: number;
  try {
    const stats = await stat(path);
    if (!stats.isFile()) throw new EngineLoadError('NOT_A_FILE', `model path is not a file: ${path}`);
    size = stats.size;
  } catch (error) {
    if (error instanceof EngineLoadError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new EngineLoadError('NOT_FOUND', `model file not found: ${path}`);
    throw new EngineLoadError('LOAD_FAILED', `cannot read model file ${path}: ${errorMessage(error)}`);
  }
  let magic = '';
  try {
    const handle = await open(path, 'r');
    try {
      const head = Buffer.alloc(4);
      const { bytesRead } = await handle.read(head, 0, 4, 0);
      magic = head.subarray(0, bytesRead).toString('latin1');
    } finally {
      await handle.close();
    }
  } catch (error) {
    throw new EngineLoadError('LOAD_FAILED', `cannot read model file ${path}: ${errorMessage(error)}`);
  }
  if (magic !== GGUF_MAGIC) {
    const what = size === 0 ? 'it is empty' : `it starts with ${JSON.stringify(magic)}, not "GGUF"`;
    throw new EngineLoadError('NOT_GGUF', `not a GGUF model file (${what}): ${path}`);
  }
}

export function defaultThreads(): number {
  return Math.max(1, availableParallelism() - 1);
}

/** An embedding model declares how it pools token vectors, or is an encoder alone (BERT and kin). */
function isEmbeddingModel(metadata: Record<string, Record<string, unknown> | undefined>, architecture: string, hasDecoder: boolean): boolean {
  if (!hasDecoder) return true;
  // llama.cpp's pooling types: 1 mean, 2 cls, 3 last (0 none, 4 rank: a reranker, not an embedder).
  const pooling = metadata[architecture]?.pooling_type;
  return pooling === 1 || pooling === 2 || pooling === 3;
}

function vocabularySize(model: LlamaModel): number {
  const tokens = model.fileInfo.metadata?.tokenizer?.ggml?.tokens;
  if (Array.isArray(tokens)) return tokens.length;
  let count = 0;
  for (const _ of model.iterateAllTokens()) count += 1;
  return count;
}
