// Writes a tiny, random-weight whisper.cpp model (the legacy ggml format
// whisper.cpp loads, see src/upstreams/engine/whisper/model-file.ts), so the
// whisper tests need no model file from outside the repository.
//
// The model is real as far as whisper.cpp is concerned: the standard audio
// context (1500 frames of 80 mel bins, 30 seconds), the real vocabulary size
// (51864 English-only, 51865 multilingual) so its special and timestamp
// tokens sit where whisper.cpp expects them, f16 matrices and f32 vectors as
// convert-pt-to-ggml.py writes them. Tiny are the width (32), the depth (one
// layer each) and the text context (16 positions, where real models have
// 448): whisper.cpp decodes at most n_text_ctx/2 - 4 tokens per 30-second
// window, so a random model that never says end-of-text still finishes a
// window, temperature fallbacks included, in a fraction of a second.
// Weights are random but seeded.
//
// Vocabulary: tokens 0-94 are the printable ASCII characters (whisper.cpp
// looks up " " at decoding time), the rest made-up syllable words. So that
// decoding always yields words (a random model might end at once, or emit
// only timestamps), the decoder's final layer norm has a fixed bias
// direction and the first WORDS word tokens embed along it: their logits
// (whisper ties the output to the token embedding) stay far above end-of-text
// and the timestamps, while the random rest of the network still makes the
// audio pick which word comes next.
import { writeFile } from 'node:fs/promises';
import { normalSource } from './random.ts';

export interface TinyWhisperOptions {
  seed?: number;
  /** 51865-token multilingual vocabulary (can translate and detect language); default English-only. */
  multilingual?: boolean;
}

const STATE = 32;
const HEADS = 2;
const AUDIO_CTX = 1500;
const TEXT_CTX = 16;
const MELS = 80;
const FFT_BINS = 201;
const TEXT_TOKENS = 50256;
const WORDS = 64;
const FIRST_WORD = 95;
const SYLLABLES = ['ba', 'ko', 'mi', 'ra', 'tu', 'le', 'si', 'no', 'pe', 'da', 'gu', 'vi'];

class Writer {
  private chunks: Buffer[] = [];
  i32(value: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32LE(value);
    this.chunks.push(b);
  }
  u32(value: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(value >>> 0);
    this.chunks.push(b);
  }
  bytes(buffer: Buffer): void {
    this.chunks.push(buffer);
  }
  f32s(values: Float32Array): void {
    this.chunks.push(Buffer.from(values.buffer, values.byteOffset, values.byteLength));
  }
  f16s(values: Float32Array): void {
    const halves = new Uint16Array(values.length);
    for (let i = 0; i < values.length; i += 1) halves[i] = toHalf(values[i]);
    this.chunks.push(Buffer.from(halves.buffer));
  }
  done(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

/** IEEE 754 binary16 bits of `value` (round toward zero; subnormals flush to zero, which random weights never miss). */
function toHalf(value: number): number {
  scratch[0] = value;
  const bits = scratchBits[0];
  const sign = (bits >>> 16) & 0x8000;
  const exponent = ((bits >>> 23) & 0xff) - 127 + 15;
  if (exponent <= 0) return sign;
  if (exponent >= 31) return sign | 0x7c00;
  return sign | (exponent << 10) | ((bits >>> 13) & 0x3ff);
}

export function tokenText(id: number): string {
  if (id < FIRST_WORD) return String.fromCharCode(32 + id);
  let word = '';
  for (let rest = id - FIRST_WORD; ; rest = Math.floor(rest / SYLLABLES.length) - 1) {
    word += SYLLABLES[rest % SYLLABLES.length];
    if (rest < SYLLABLES.length) break;
  }
  return ` ${word}`;
}

export function tinyWhisperModel(options: TinyWhisperOptions = {}): Buffer {
  const random = normalSource(options.seed ?? 1);
  const vocabulary = options.multilingual ? 51865 : 51864;
  const out = new Writer();
  const tensor = (name: string, dims: number[], half: boolean, fill: (index: number) => number) => {
    const values = new Float32Array(dims.reduce((a, b) => a * b, 1));
    for (let i = 0; i < values.length; i += 1) values[i] = fill(i);
    const nameBytes = Buffer.from(name);
    out.i32(dims.length);
    out.i32(nameBytes.length);
    out.i32(half ? 1 : 0);
    for (const dim of dims) out.i32(dim);
    out.bytes(nameBytes);
    if (half) out.f16s(values);
    else out.f32s(values);
  };
  const noise = (scale: number) => () => random() * scale;
  const constant = (value: number) => () => value;

  out.u32(0x67676d6c);
  // n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype (1: f16)
  for (const value of [vocabulary, AUDIO_CTX, STATE, HEADS, 1, TEXT_CTX, STATE, HEADS, 1, MELS, 1]) out.i32(value);

  out.i32(MELS);
  out.i32(FFT_BINS);
  const filters = new Float32Array(MELS * FFT_BINS);
  for (let i = 0; i < filters.length; i += 1) filters[i] = Math.abs(random()) * 0.01;
  out.f32s(filters);

  out.i32(TEXT_TOKENS);
  for (let id = 0; id < TEXT_TOKENS; id += 1) {
    const bytes = Buffer.from(tokenText(id));
    out.u32(bytes.length);
    out.bytes(bytes);
  }

  const block = (prefix: string, cross: boolean) => {
    tensor(`${prefix}mlp_ln.weight`, [STATE], false, constant(1));
    tensor(`${prefix}mlp_ln.bias`, [STATE], false, constant(0));
    tensor(`${prefix}mlp.0.weight`, [STATE, 4 * STATE], true, noise(0.1));
    tensor(`${prefix}mlp.0.bias`, [4 * STATE], false, constant(0));
    tensor(`${prefix}mlp.2.weight`, [4 * STATE, STATE], true, noise(0.1));
    tensor(`${prefix}mlp.2.bias`, [STATE], false, constant(0));
    for (const attention of cross ? ['attn', 'cross_attn'] : ['attn']) {
      tensor(`${prefix}${attention}_ln.weight`, [STATE], false, constant(1));
      tensor(`${prefix}${attention}_ln.bias`, [STATE], false, constant(0));
      tensor(`${prefix}${attention}.query.weight`, [STATE, STATE], true, noise(0.3));
      tensor(`${prefix}${attention}.query.bias`, [STATE], false, constant(0));
      tensor(`${prefix}${attention}.key.weight`, [STATE, STATE], true, noise(0.3));
      tensor(`${prefix}${attention}.value.weight`, [STATE, STATE], true, noise(0.3));
      tensor(`${prefix}${attention}.value.bias`, [STATE], false, constant(0));
      tensor(`${prefix}${attention}.out.weight`, [STATE, STATE], true, noise(0.3));
      tensor(`${prefix}${attention}.out.bias`, [STATE], false, constant(0));
    }
  };

  tensor('encoder.positional_embedding', [STATE, AUDIO_CTX], false, noise(0.1));
  tensor('encoder.conv1.weight', [3, MELS, STATE], true, noise(0.1));
  tensor('encoder.conv1.bias', [1, STATE], false, constant(0));
  tensor('encoder.conv2.weight', [3, STATE, STATE], true, noise(0.1));
  tensor('encoder.conv2.bias', [1, STATE], false, constant(0));
  tensor('encoder.ln_post.weight', [STATE], false, constant(1));
  tensor('encoder.ln_post.bias', [STATE], false, constant(0));
  block('encoder.blocks.0.', false);

  // The bias direction every decoder output leans along (unit length), and the word tokens that embed along it.
  const direction = Float32Array.from({ length: STATE }, () => random());
  const norm = Math.hypot(...direction);
  for (let i = 0; i < STATE; i += 1) direction[i] /= norm;
  tensor('decoder.positional_embedding', [STATE, TEXT_CTX], false, noise(0.1));
  tensor('decoder.token_embedding.weight', [STATE, vocabulary], true, (index) => {
    const token = Math.floor(index / STATE);
    const isWord = token >= FIRST_WORD && token < FIRST_WORD + WORDS;
    return isWord ? 12 * direction[index % STATE] + random() : random() * 0.1;
  });
  tensor('decoder.ln.weight', [STATE], false, noise(0.1));
  tensor('decoder.ln.bias', [STATE], false, (index) => direction[index]);
  block('decoder.blocks.0.', true);
  return out.done();
}

export async function writeTinyWhisper(path: string, options: TinyWhisperOptions = {}): Promise<void> {
  await writeFile(path, tinyWhisperModel(options));
}
