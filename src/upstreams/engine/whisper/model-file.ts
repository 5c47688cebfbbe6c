// Checks a whisper.cpp model file before whisper.cpp sees it. The binding
// silences whisper.cpp's log, so a file it rejects only says "Failed to
// initialize Whisper model": walking the file's structure here is what gives
// start-up a one-line reason (not a whisper file, a GGUF, truncated, a
// tensor missing...). Only the headers are read; tensor data is skipped.
//
// The legacy ggml format whisper.cpp loads (see its convert-pt-to-ggml.py):
//   u32 magic 0x67676d6c ("ggml")
//   11 x i32 hparams: n_vocab, n_audio_ctx, n_audio_state, n_audio_head,
//     n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer,
//     n_mels, ftype (+ 1000 x quantization version)
//   mel filters: i32 n_mel, i32 n_fft, n_mel*n_fft f32
//   vocabulary: i32 count, then count x (u32 length, bytes)
//   tensors to the end: i32 n_dims, i32 name length, i32 type, n_dims x i32
//     dims, the name, the data
import { open, stat, type FileHandle } from 'node:fs/promises';
import { EngineLoadError, errorMessage } from '../errors.ts';

export const GGML_MAGIC = 0x67676d6c;
/** English-only models have 51864 tokens, multilingual ones 51865 (51866 for large-v3). */
export const MIN_WHISPER_VOCAB = 51864;
const MAX_WHISPER_VOCAB = 60_000;
// Generous bounds: they only catch garbage read as numbers, never a real model.
const MAX_DIMENSION = 1 << 16;
const MAX_LAYERS = 256;
const MAX_NAME_BYTES = 1024;
const MAX_TOKEN_BYTES = 1024;
const QUANTIZATION_VERSION_FACTOR = 1000;

/** ggml type id -> [bytes per block, elements per block], for the types whisper model files use. */
const GGML_TYPE_SIZES = new Map<number, [number, number]>([
  [0, [4, 1]], // f32
  [1, [2, 1]], // f16
  [2, [18, 32]], // q4_0
  [3, [20, 32]], // q4_1
  [6, [22, 32]], // q5_0
  [7, [24, 32]], // q5_1
  [8, [34, 32]], // q8_0
  [10, [84, 256]], // q2_k
  [11, [110, 256]], // q3_k
  [12, [144, 256]], // q4_k
  [13, [176, 256]], // q5_k
  [14, [210, 256]], // q6_k
  [30, [2, 1]], // bf16
]);
// ggml_ftype runs 0 (all f32), 1 (mostly f16), then the quantizations; whisper.cpp
// itself rejects the ones it cannot map, so only values no ggml ever used fail here.
const MAX_FTYPE = 63;

export interface WhisperFileInfo {
  path: string;
  bytes: number;
  vocabularySize: number;
  /** Multilingual models can detect the language and translate; English-only ones (".en") cannot. */
  multilingual: boolean;
  audioContext: number;
  audioLayers: number;
  textLayers: number;
  state: number;
  mels: number;
  ftype: number;
  tensors: number;
}

const HINT = 'whisper.cpp needs a ggml whisper model (ggml-*.bin from its models/download-ggml-model.sh, or made with its models/convert-pt-to-ggml.py)';

export async function checkWhisperFile(path: string): Promise<WhisperFileInfo> {
  let size: number;
  try {
    const stats = await stat(path);
    if (!stats.isFile()) throw new EngineLoadError('NOT_A_FILE', `whisper model path is not a file: ${path}`);
    size = stats.size;
  } catch (error) {
    if (error instanceof EngineLoadError) throw error;
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new EngineLoadError('NOT_FOUND', `whisper model file not found: ${path}`);
    throw new EngineLoadError('LOAD_FAILED', `cannot read whisper model file ${path}: ${errorMessage(error)}`);
  }
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    throw new EngineLoadError('LOAD_FAILED', `cannot read whisper model file ${path}: ${errorMessage(error)}`);
  }
  try {
    return await walk(new Cursor(handle, size), path, size);
  } catch (error) {
    if (error instanceof EngineLoadError) throw error;
    if (error instanceof Truncated) throw new EngineLoadError('NOT_WHISPER', `whisper model file ${path} is truncated: it ends inside ${error.where}`);
    throw new EngineLoadError('LOAD_FAILED', `cannot read whisper model file ${path}: ${errorMessage(error)}`);
  } finally {
    await handle.close();
  }
}

async function walk(cursor: Cursor, path: string, size: number): Promise<WhisperFileInfo> {
  const bad = (why: string) => new EngineLoadError('NOT_WHISPER', `${path} is not a usable whisper model: ${why}`);
  if (size < 4) throw new EngineLoadError('NOT_WHISPER', `not a whisper model file (${size === 0 ? 'it is empty' : `only ${size} bytes`}); ${HINT}: ${path}`);
  const head = await cursor.bytes(4, 'the magic number');
  if (head.readUInt32LE(0) !== GGML_MAGIC) {
    const text = head.toString('latin1');
    const what = text === 'GGUF' ? 'it is a GGUF file, which whisper.cpp does not load' : `it starts with ${JSON.stringify(text)}, not the ggml magic "lmgg"`;
    throw new EngineLoadError('NOT_WHISPER', `not a whisper model file (${what}); ${HINT}: ${path}`);
  }

  const hp: number[] = [];
  for (let i = 0; i < 11; i += 1) hp.push(await cursor.i32('the hyperparameters'));
  const [vocab, audioCtx, audioState, audioHead, audioLayers, textCtx, textState, textHead, textLayers, mels, rawFtype] = hp;
  const ftype = rawFtype % QUANTIZATION_VERSION_FACTOR;
  if (vocab < MIN_WHISPER_VOCAB || vocab > MAX_WHISPER_VOCAB) throw bad(`its vocabulary has ${vocab} tokens; whisper models have ${MIN_WHISPER_VOCAB} or more`);
  for (const [name, value] of [['n_audio_ctx', audioCtx], ['n_text_ctx', textCtx], ['n_audio_state', audioState], ['n_mels', mels]] as const) {
    if (value < 1 || value > MAX_DIMENSION) throw bad(`hyperparameter ${name} is ${value}`);
  }
  if (textState !== audioState) throw bad(`n_text_state (${textState}) differs from n_audio_state (${audioState})`);
  for (const [name, heads] of [['n_audio_head', audioHead], ['n_text_head', textHead]] as const) {
    if (heads < 1 || audioState % heads !== 0) throw bad(`${name} is ${heads}, which does not divide the state size ${audioState}`);
  }
  for (const [name, layers] of [['n_audio_layer', audioLayers], ['n_text_layer', textLayers]] as const) {
    if (layers < 1 || layers > MAX_LAYERS) throw bad(`hyperparameter ${name} is ${layers}`);
  }
  if (rawFtype < 0 || ftype > MAX_FTYPE) throw bad(`unknown weight type (ftype ${rawFtype})`);

  const filterMels = await cursor.i32('the mel filters');
  const filterFft = await cursor.i32('the mel filters');
  if (filterMels < 1 || filterMels > MAX_DIMENSION || filterFft < 1 || filterFft > MAX_DIMENSION) throw bad(`mel filters of ${filterMels} x ${filterFft}`);
  await cursor.skip(filterMels * filterFft * 4, 'the mel filters');

  const tokens = await cursor.i32('the vocabulary');
  if (tokens < 0 || tokens > vocab) throw bad(`its vocabulary lists ${tokens} tokens for a model of ${vocab}`);
  for (let i = 0; i < tokens; i += 1) {
    const length = await cursor.u32('the vocabulary');
    if (length > MAX_TOKEN_BYTES) throw bad(`token ${i} is ${length} bytes long`);
    await cursor.skip(length, 'the vocabulary');
  }

  // Tensors: the encoder has 7 plus 15 per layer, the decoder 4 plus 24 per layer (self- and cross-attention).
  const expected = 11 + 15 * audioLayers + 24 * textLayers;
  let tensors = 0;
  while (cursor.position < size) {
    const dims = await cursor.i32('a tensor header');
    const nameLength = await cursor.i32('a tensor header');
    const type = await cursor.i32('a tensor header');
    if (dims < 1 || dims > 4 || nameLength < 1 || nameLength > MAX_NAME_BYTES) throw bad(`tensor ${tensors + 1} has a malformed header`);
    let elements = 1;
    for (let d = 0; d < dims; d += 1) {
      const extent = await cursor.i32('a tensor header');
      if (extent < 1) throw bad(`tensor ${tensors + 1} has a dimension of ${extent}`);
      elements *= extent;
    }
    const name = (await cursor.bytes(nameLength, 'a tensor name')).toString('utf8');
    const typeSize = GGML_TYPE_SIZES.get(type);
    // A weight type this check does not know: leave the rest of the file to whisper.cpp.
    if (!typeSize) return info();
    await cursor.skip(Math.ceil(elements / typeSize[1]) * typeSize[0], `the data of tensor ${name}`);
    tensors += 1;
  }
  if (tensors !== expected) throw bad(`it holds ${tensors} tensors where its hyperparameters call for ${expected}`);
  return info();

  function info(): WhisperFileInfo {
    return {
      path,
      bytes: size,
      vocabularySize: vocab,
      multilingual: vocab >= MIN_WHISPER_VOCAB + 1,
      audioContext: audioCtx,
      audioLayers,
      textLayers,
      state: audioState,
      mels,
      ftype,
      tensors,
    };
  }
}

class Truncated extends Error {
  constructor(readonly where: string) {
    super(`truncated in ${where}`);
  }
}

/** Sequential little-endian reads over a file handle through a small buffer; skips never read. */
class Cursor {
  private static readonly BUFFER_BYTES = 64 * 1024;
  position = 0;
  private buffer = Buffer.alloc(0);
  private bufferStart = 0;

  constructor(
    private readonly handle: FileHandle,
    private readonly size: number,
  ) {}

  async i32(where: string): Promise<number> {
    return (await this.bytes(4, where)).readInt32LE(0);
  }

  async u32(where: string): Promise<number> {
    return (await this.bytes(4, where)).readUInt32LE(0);
  }

  async bytes(length: number, where: string): Promise<Buffer> {
    if (this.position + length > this.size) throw new Truncated(where);
    const offset = this.position - this.bufferStart;
    if (offset < 0 || offset + length > this.buffer.length) {
      const want = Math.max(length, Cursor.BUFFER_BYTES);
      const buffer = Buffer.alloc(Math.min(want, this.size - this.position));
      const { bytesRead } = await this.handle.read(buffer, 0, buffer.length, this.position);
      if (bytesRead < length) throw new Truncated(where);
      this.buffer = buffer.subarray(0, bytesRead);
      this.bufferStart = this.position;
    }
    const start = this.position - this.bufferStart;
    this.position += length;
    return this.buffer.subarray(start, start + length);
  }

  async skip(length: number, where: string): Promise<void> {
    if (this.position + length > this.size) throw new Truncated(where);
    this.position += length;
  }
}
