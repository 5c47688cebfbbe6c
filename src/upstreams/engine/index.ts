// The embedded inference engine (llama.cpp through node-llama-cpp, whisper.cpp
// through @napi-rs/whisper): what the rest of Spool may use. See client.ts for
// the upstream, model.ts and whisper/model.ts for loading.
export { createEngine, type Engine, type EngineOptions } from './client.ts';
export { EngineLoadError } from './errors.ts';
export type { EngineGpu } from './llama.ts';
export { defaultModelName, loadEngineModel, type ChatTemplateInfo, type EngineModel, type EngineModelInfo, type EngineModelOptions, type LoadEngineModelOptions } from './model.ts';
export type { WhisperModelInfo, WhisperModelOptions } from './whisper/model.ts';
