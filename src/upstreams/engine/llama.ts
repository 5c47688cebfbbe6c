// The one llama.cpp binding per process. node-llama-cpp ships prebuilt
// binaries in npm packages (@node-llama-cpp/linux-x64 for a CPU, the
// optional CUDA/Vulkan packages for GPUs); `build: 'never'` and
// `skipDownload` make sure it only ever loads one of those and never
// downloads or compiles llama.cpp at run time. Without a usable prebuilt
// binary getLlama fails, and so does loading a model, with a one-line reason.
import { getLlama, LlamaLogLevel, type Llama } from 'node-llama-cpp';
import { EngineLoadError, errorMessage } from './errors.ts';

/** 'auto' uses a GPU when its prebuilt package is installed and works, else the CPU; false always uses the CPU. */
export type EngineGpu = 'auto' | false;

const instances = new Map<string, Promise<Llama>>();

// llama.cpp explains a failed load only in its log ("failed to read key-value
// pairs"...), while the exception says "Failed to load model". While a load
// runs, its error lines are collected for the one-line reason instead of
// being printed.
let capturing: string[] | null = null;
const LOG_SETTLE_MS = 50;

function logger(level: LlamaLogLevel, message: string): void {
  const text = message.trim();
  if (text.length === 0) return;
  if (capturing && (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal)) {
    capturing.push(text);
    return;
  }
  process.stderr.write(`[llama.cpp] ${text}\n`);
}

/** Runs `load`, and on failure hands back llama.cpp's own error lines logged meanwhile. */
export async function withLlamaErrors<T>(load: () => Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown; logged: string[] }> {
  const logged: string[] = [];
  const previous = capturing;
  capturing = logged;
  try {
    return { ok: true, value: await load() };
  } catch (error) {
    // llama.cpp's log lines reach JavaScript a moment after the failure itself.
    await new Promise((resolve) => setTimeout(resolve, LOG_SETTLE_MS));
    return { ok: false, error, logged };
  } finally {
    capturing = previous;
  }
}

/** The shared binding for `gpu`; made on first use and kept for the life of the process. */
export function sharedLlama(gpu: EngineGpu = 'auto'): Promise<Llama> {
  const key = String(gpu);
  let instance = instances.get(key);
  if (!instance) {
    instance = getLlama({
      gpu,
      build: 'never',
      skipDownload: true,
      usePrebuiltBinaries: true,
      progressLogs: false,
      // llama.cpp is chatty at warn level (e.g. about unused special tokens); errors still show.
      logLevel: LlamaLogLevel.error,
      logger,
    }).catch((error: unknown) => {
      instances.delete(key);
      throw new EngineLoadError('LOAD_FAILED', `cannot start llama.cpp (no usable prebuilt binary for ${process.platform}-${process.arch}?): ${errorMessage(error)}`);
    });
    instances.set(key, instance);
  }
  return instance;
}
